"""The sentence-embedding task: pooling read from the model's own config, kept inside the
exported ONNX graph, and equal to sentence-transformers' output on PyTorch and ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slimbert.data import encode_split
from slimbert.data.loading import Split
from slimbert.export.config import OnnxExportConfig
from slimbert.export.onnx import export_onnx
from slimbert.models import load_tokenizer
from slimbert.tasks.embedding import OUTPUT_NAMES, TASK, load_sentence_encoder
from tests.conftest import build_tiny_bert

SENTENCES = ["a good film", "a bad film", "great acting and a fine story", "dull",
             "the plot was bad but the acting was good", "good"]


def build_st_folder(folder: Path, pooling: str, normalize: bool, dense: bool = False) -> Path:
    """A sentence-transformers folder around a tiny random BERT, saved by the library itself."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    encoder = build_tiny_bert(folder.parent / f"{folder.name}-encoder", seed=3)
    transformer = Transformer(str(encoder), max_seq_length=48)
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)]
    if dense:
        torch.manual_seed(0)
        modules.append(Dense(32, 16, activation_function=torch.nn.Tanh()))
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def _encoded(folder: Path):
    split = Split(SENTENCES, np.zeros(len(SENTENCES), dtype=np.int64))
    return encode_split(load_tokenizer(folder), split, 48)


def _st_encode(folder: Path, **kwargs) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", **kwargs).encode(SENTENCES, convert_to_numpy=True)


@pytest.mark.parametrize("pooling,normalize,dense", [("mean", True, False), ("mean", False, False),
                                                     ("cls", True, False), ("cls", False, False),
                                                     ("max", False, True)])
def test_encoder_reads_the_models_own_pooling_and_matches_sentence_transformers(
        tmp_path, pooling, normalize, dense):
    from slimbert.runtimes.torch_runtime import predict_logits

    folder = build_st_folder(tmp_path / "st", pooling, normalize, dense)
    encoder = load_sentence_encoder(folder)
    described = encoder.pooling()
    assert described["pooling_mode"] == pooling and described["normalize"] is normalize
    assert described["max_seq_length"] == 48
    ours = predict_logits(encoder, _encoded(folder))
    np.testing.assert_allclose(ours, _st_encode(folder), atol=1e-5)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("pooling,normalize", [("mean", True), ("cls", False)])
def test_onnx_graph_holds_the_pooling_and_opens_in_sentence_transformers(tmp_path, pooling, normalize):
    import onnxruntime as ort

    folder = build_st_folder(tmp_path / "st", pooling, normalize)
    out = tmp_path / "onnx"
    metrics = export_onnx(folder, out, OnnxExportConfig(), _encoded(folder), task="sentence-embedding")
    assert metrics["validation"]["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(out / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    reference = _st_encode(folder)
    enc = _encoded(folder)
    batch = {"input_ids": np.stack([np.pad(x, (0, 12 - len(x))) for x in enc.input_ids]),
             "attention_mask": np.stack([np.pad(np.ones_like(x), (0, 12 - len(x))) for x in enc.input_ids])}
    if "token_type_ids" in {i.name for i in session.get_inputs()}:
        batch["token_type_ids"] = np.zeros_like(batch["input_ids"])
    sentence, tokens, last = session.run(None, batch)
    np.testing.assert_allclose(sentence, reference, atol=1e-4)  # padded to 12: padding does not leak
    np.testing.assert_array_equal(tokens, last)
    # the artifact opens where users already are: PyTorch and the ONNX backend
    np.testing.assert_allclose(_st_encode(out, backend="onnx"), reference, atol=1e-4)


def test_saved_encoder_is_a_sentence_transformers_folder(tmp_path):
    folder = build_st_folder(tmp_path / "st", "mean", True)
    encoder = load_sentence_encoder(folder)
    encoder.save_pretrained(tmp_path / "saved")
    np.testing.assert_allclose(_st_encode(tmp_path / "saved"), _st_encode(folder), atol=1e-6)


def test_plain_encoder_gets_mean_pooling_and_says_so(tiny_encoder, caplog):
    encoder = load_sentence_encoder(tiny_encoder)
    assert encoder.pooling()["pooling_mode"] == "mean"
    assert "no sentence-transformers config" in caplog.text


def test_example_scores_are_per_example():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(40, 8))
    labels = np.repeat([0, 1], 20)
    teacher[labels == 0, 0] += 8.0  # two directions: cosine neighbours share the label
    teacher[labels == 1, 1] += 8.0
    same = TASK.example_scores(teacher, teacher, labels)
    assert set(same) == {"cosine", "recall_at_10", "knn_accuracy"}
    assert all(len(v) == 40 for v in same.values())
    np.testing.assert_allclose(same["cosine"], 1.0)
    np.testing.assert_allclose(same["recall_at_10"], 1.0)
    assert same["knn_accuracy"].mean() == 1.0
    noisy = TASK.example_scores(teacher + rng.normal(size=teacher.shape) * 3, teacher, labels)
    assert noisy["cosine"].mean() < 0.9 and noisy["recall_at_10"].mean() < 0.9
    assert TASK.agreement(teacher, teacher) == pytest.approx(1.0)
