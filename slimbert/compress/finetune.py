"""Fine-tune a pretrained encoder into the teacher classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from slimbert.compress.config import FinetuneConfig
from slimbert.compress.trainer import evaluate, label_tensor, train
from slimbert.data import TextClassificationData, encode_split
from slimbert.models import load_classifier, load_tokenizer


def finetune(
    model_dir: Path,
    data: TextClassificationData,
    cfg: FinetuneConfig,
    out_dir: Path,
    work_dir: Path,
    *,
    max_length: int,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune the model in ``model_dir`` on ``data``; save it to ``out_dir``."""
    tokenizer = load_tokenizer(model_dir)
    torch.manual_seed(seed)  # the new classification head's initialisation follows the seed
    model = load_classifier(model_dir, data.label_names)
    enc = {name: encode_split(tokenizer, split, max_length) for name, split in data.splits.items()}
    labels = enc["train"].labels

    def loss_fn(m, batch, index):
        logits = m(**batch).logits
        return F.cross_entropy(logits, label_tensor(labels, index).to(logits.device))

    result = train(model, enc["train"], enc["dev"], data.num_labels, cfg, loss_fn,
                   work_dir, seed, desc="finetune", progress=progress)
    test = {"test": evaluate(model, enc["test"], data.num_labels)} if "test" in enc else {}
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {**test, **result.metrics()}
