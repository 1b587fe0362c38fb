"""Fixtures: a tiny random BERT classifier and a small, learnable sentiment dataset.

Everything is built in the test (no network, no cache): a WordPiece vocabulary from the
dataset's words, a 4-layer BERT with perturbed weights (all-zero biases break ONNX
quantizers), and CSV files whose labels a model can learn in a few steps.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun", "moving", "smart"]
NEGATIVE = ["bad", "awful", "dull", "boring", "weak", "messy", "tedious", "flat"]
NEUTRAL = ["the", "movie", "film", "plot", "is", "was", "a", "very", "and", "story", "cast"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_sentences(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        cue = POSITIVE if label == "pos" else NEGATIVE
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(2, 10))]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randint(0, len(words)), rng.choice(cue))
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, tmp_path_factory, monkeypatch):
    """No test reaches the network or the user's caches; each test has its own cache."""
    monkeypatch.setenv("SLIMBERT_CACHE", str(tmp_path / "slimbert-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    # training on CPU is bitwise reproducible (CUDA's embedding backward is not): the resume
    # and seed tests hold on GPU machines too; `-m gpu` tests lift this to train on CUDA
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory) -> Path:
    """400 labelled sentences in one CSV (splits are carved from it)."""
    folder = tmp_path_factory.mktemp("data")
    return write_csv(folder / "reviews.csv", make_sentences(400, seed=1))


def build_tiny_bert(folder: Path, *, layers: int = 4, num_labels: int | None = None, seed: int = 0,
                    hidden: int = 32, extra_words: tuple[str, ...] = ()) -> Path:
    """Save a tiny random BERT (+ tokenizer) to ``folder``; with num_labels, a classifier."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    words = sorted(set(POSITIVE + NEGATIVE + NEUTRAL + list(extra_words)))
    vocab.write_text("\n".join(SPECIAL + words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    if num_labels:
        config.num_labels = num_labels
        config.id2label = {i: n for i, n in enumerate(["neg", "pos"][:num_labels])}
        config.label2id = {n: i for i, n in config.id2label.items()}
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A pretrained-style encoder without a classification head (like MiniLM)."""
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "encoder")


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    """A BERT classifier with 2 labels (neg, pos) and 4 layers."""
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "classifier", num_labels=2)


def tiny_recipe(model: Path, csv: Path, stages: list[dict], **dataset) -> dict:
    return {
        "name": "tiny",
        "model": str(model),
        "seed": 0,
        "dataset": {"source": str(csv), "max_length": 32, **dataset},
        "stages": stages,
    }


def launch(nproc: int, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``torchrun`` ``nproc`` CPU processes (gloo over loopback) of ``python ARGS`` in the repo."""
    repo = Path(__file__).resolve().parents[1]
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
           "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # no network needed
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(port), *args]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)


# the tiny dataset, split and encoded for the tiny classifier (export and quantization tests)
@pytest.fixture(scope="module")
def tiny_data(sentiment_csv):
    from slimbert.data import DatasetConfig, load_dataset

    return load_dataset(DatasetConfig(source=str(sentiment_csv)))


@pytest.fixture(scope="module")
def dev_enc(tiny_data, tiny_classifier):
    from slimbert.data import encode_split
    from slimbert.models import load_tokenizer

    return encode_split(load_tokenizer(tiny_classifier), tiny_data.splits["dev"], 32)


@pytest.fixture(scope="module")
def train_enc(tiny_data, tiny_classifier):
    from slimbert.data import encode_split
    from slimbert.models import load_tokenizer

    return encode_split(load_tokenizer(tiny_classifier), tiny_data.splits["train"], 32)


def token_batch(rows: int, seq: int, *, seed: int = 0, pad_first_row: bool = True) -> dict:
    """Random in-vocabulary token ids for the tiny models; half of row 0 is padding."""
    import numpy as np

    ids = np.random.default_rng(seed).integers(5, 30, size=(rows, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    if pad_first_row:
        mask[0, seq // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


@pytest.fixture(scope="module")
def exported(tiny_classifier, dev_enc, tmp_path_factory):
    """The tiny classifier exported to ONNX (fused), with the export's metrics."""
    from slimbert.export.onnx import OnnxExportConfig, export_onnx

    out = tmp_path_factory.mktemp("onnx")
    metrics = export_onnx(tiny_classifier, out, OnnxExportConfig(), dev_enc)
    return out, metrics
