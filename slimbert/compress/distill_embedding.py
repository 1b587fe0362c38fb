"""Distil a sentence-embedding teacher into a layer-dropped student, on unlabelled text.

sentence-transformers' model-distillation examples train the student to reproduce the
teacher's sentence embeddings with an MSE loss; slimbert adds the cosine distance (1 - cos),
which keeps the direction that retrieval ranks by even where the embeddings are normalised
(there MSE is tiny and its gradient weak), and optionally the token-level hidden-state loss.
Labels are never read: any text column trains it. The student is chosen on dev by its
fidelity to the teacher (``metric: cosine`` or ``recall_at_10``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from slimbert.compress.config import DistillConfig
from slimbert.compress.distill import _check_layer_map, cached_teacher_logits
from slimbert.compress.kd_losses import hidden_state_loss
from slimbert.compress.student import build_student, find_layers, resolve_layers, uniform_layer_map
from slimbert.compress.trainer import predict_logits, train
from slimbert.data import EncodedSplit, TextClassificationData, encode_split
from slimbert.errors import ModelError
from slimbert.models import load_tokenizer
from slimbert.tasks.embedding import TASK, load_sentence_encoder

log = logging.getLogger(__name__)
_EMBEDDING_METRICS = ("cosine", "recall_at_10")


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE on the sentence embeddings plus their mean cosine distance."""
    return F.mse_loss(student, teacher) + (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def _refuse_unsupported(cfg: DistillConfig) -> DistillConfig:
    unsupported = {"student_model": cfg.student_model, "augment": cfg.augment,
                   "alpha_attention": cfg.alpha_attention or None}
    named = [k for k, v in unsupported.items() if v is not None]
    if named:
        raise ModelError(f"distill on the sentence-embedding task does not take {', '.join(named)} yet.",
                         hint="leave them out: the student is built from the teacher's own layers.")
    if cfg.metric not in _EMBEDDING_METRICS:
        if cfg.metric != "accuracy":  # the default, which means "the task's own" here
            raise ModelError(f"metric {cfg.metric!r} is a classification metric; the sentence-embedding "
                             f"student is selected on {' or '.join(_EMBEDDING_METRICS)}.",
                             hint="set metric: cosine (or recall_at_10), or leave it out.")
        cfg = replace(cfg, metric="cosine")
    return cfg


def fidelity(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Mean per-example cosine and neighbour recall@10 of ``candidate`` against the teacher."""
    scores = TASK.example_scores(candidate, reference)
    return {name: float(values.mean()) for name, values in scores.items()}


def distill_embedding(teacher_dir: Path, data: TextClassificationData, cfg: DistillConfig, out_dir: Path,
                      work_dir: Path, *, max_length: int, seed: int = 0,
                      progress: bool = True) -> dict[str, Any]:
    """Distil the sentence-embedding model in ``teacher_dir`` into a student saved to ``out_dir``
    as a sentence-transformers folder (the teacher's pooling, dense and normalisation kept)."""
    cfg = _refuse_unsupported(cfg)
    teacher = load_sentence_encoder(teacher_dir)
    tokenizer = load_tokenizer(teacher_dir)
    torch.manual_seed(seed)
    t_depth = len(find_layers(teacher)[2])
    layers = resolve_layers("every-other" if cfg.layers is None else cfg.layers, t_depth)
    student = build_student(teacher, layers)
    layer_map = cfg.layer_map or uniform_layer_map(len(layers), t_depth)
    _check_layer_map(layer_map, len(layers), t_depth)
    enc: dict[str, EncodedSplit] = {name: encode_split(tokenizer, split, max_length)
                                    for name, split in data.splits.items()}
    work_dir.mkdir(parents=True, exist_ok=True)
    targets = torch.from_numpy(cached_teacher_logits(teacher, enc["train"], work_dir, progress))
    teacher_dev = predict_logits(teacher, enc["dev"])
    pairs = list(enumerate([0] + [t + 1 for t in layer_map]))

    def loss_fn(model, batch, index):
        want_hidden = cfg.alpha_hidden > 0
        out = model(**batch, output_hidden_states=want_hidden)
        loss = cfg.alpha_kd * embedding_loss(out.logits, targets[index].to(out.logits.device))
        if want_hidden:
            with torch.no_grad():
                t_out = teacher.to(out.logits.device)(**batch, output_hidden_states=True)
            loss = loss + cfg.alpha_hidden * hidden_state_loss(out.hidden_states, t_out.hidden_states, pairs,
                                                               batch["attention_mask"], cfg.hidden_loss)
        return loss

    def evaluator(model, dev_enc):
        return fidelity(predict_logits(model, dev_enc), teacher_dev)

    result = train(student, enc["train"], enc["dev"], 0, cfg, loss_fn, work_dir, seed,
                   desc=f"distill {len(layers)}L embeddings", progress=progress, evaluator=evaluator)
    student.save_pretrained(out_dir)
    test = {}
    if "test" in enc:  # withheld while a search selects candidates
        s_test, t_test = predict_logits(student, enc["test"]), predict_logits(teacher, enc["test"])
        labels = enc["test"].labels
        knn = {who: float(TASK.example_scores(out, t_test, labels)["knn_accuracy"].mean())
               for who, out in (("knn_accuracy", s_test), ("teacher_knn_accuracy", t_test))}
        test = {"test": fidelity(s_test, t_test), **knn}
    return {**test, "teacher_layers": layers, "layer_map": layer_map, "pooling": student.pooling(),
            "params": sum(p.numel() for p in student.parameters()),
            "teacher_params": sum(p.numel() for p in teacher.parameters()), **result.metrics()}
