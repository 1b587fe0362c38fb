"""The prune stage: one entry point over a registry of pruning methods, then recovery.

Methods (``PRUNE_METHODS``): ``vocab`` drops embedding rows the task never uses (lossless
on the task's texts, no training), ``structured`` removes attention heads and FFN neurons
by importance (smaller matrices: faster everywhere), ``magnitude`` zeroes the smallest
weights (one-shot or gradually during recovery; smaller only when compressed or run on a
sparse kernel), ``movement`` zeroes those that distillation pushes toward zero (scores
learned during recovery, Sanh et al. 2020). Recovery is knowledge distillation
(``distill_into``) from a teacher: by default the unpruned input itself, or an earlier
stage / model folder named in ``recovery.teacher``. Every run ends with the sparsity report
before and after, which is the stage's metrics and so lands in the artifact manifest.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from slimbert.compress.config import PruneConfig
from slimbert.compress.config import RecoveryConfig as RecoveryConfig  # re-exported: the recovery section
from slimbert.compress.distill import distill_into
from slimbert.compress.prune_report import sparsity_report
from slimbert.compress.trainer import evaluate
from slimbert.data import EncodedSplit, TextClassificationData, collate, encode_split
from slimbert.errors import ModelError
from slimbert.models import has_classification_head, load_classifier, load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class PruneJob:
    """What a method works on: the model (changed in place), its tokenizer and the data."""

    model: torch.nn.Module
    tokenizer: Any
    data: TextClassificationData
    cfg: PruneConfig
    max_length: int
    seed: int
    # mask holders: at_step(step) before each recovery step, finish() after recovery
    hooks: list[Any] = field(default_factory=list)


def _importance_batches(job: PruneJob, batch_size: int = 32) -> list[dict[str, torch.Tensor]]:
    train = job.data.splits["train"]
    rng = np.random.default_rng(job.seed)
    index = np.sort(rng.permutation(len(train))[:job.cfg.importance_examples])
    enc = encode_split(job.tokenizer, train.take(index), job.max_length)
    batches = []
    for start in range(0, len(enc), batch_size):
        rows = np.arange(start, min(start + batch_size, len(enc)))
        tensors = {k: torch.from_numpy(v) for k, v in collate(enc, rows).items()}
        tensors["labels"] = torch.from_numpy(enc.labels[rows])
        batches.append(tensors)
    return batches


def _task_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return F.cross_entropy(model(**inputs).logits, batch["labels"])


def _prune_vocab(job: PruneJob) -> dict[str, Any]:
    from slimbert.compress.prune_vocab import prune_vocab

    job.tokenizer, info = prune_vocab(job.model, job.tokenizer, job.data, splits=job.cfg.vocab_splits,
                                      keep_ascii_chars=job.cfg.keep_ascii_chars,
                                      min_count=job.cfg.vocab_min_count)
    return info


def _prune_structured(job: PruneJob) -> dict[str, Any]:
    from slimbert.compress.prune_structured import prune_structured

    batches = _importance_batches(job) if job.cfg.importance == "taylor" else None
    return prune_structured(job.model, heads_fraction=job.cfg.heads_fraction,
                            ffn_fraction=job.cfg.ffn_fraction, scorer=job.cfg.importance,
                            batches=batches, loss_fn=_task_loss, ffn_multiple=job.cfg.ffn_multiple)


def recovery_steps(job: PruneJob) -> int:
    """Optimiser steps of the recovery training: the span of a gradual schedule."""
    rec = job.cfg.recovery
    return math.ceil(len(job.data.splits["train"]) / rec.batch_size) * rec.epochs


def _prune_magnitude(job: PruneJob) -> dict[str, Any]:
    from slimbert.compress.prune_magnitude import MaskHolder

    total = recovery_steps(job) if job.cfg.schedule == "gradual" else 0
    job.hooks.append(MaskHolder(job.model, job.cfg.sparsity, job.cfg.scope, total))
    return {"schedule": job.cfg.schedule, "schedule_steps": total}


def _prune_movement(job: PruneJob) -> dict[str, Any]:
    from slimbert.compress.prune_movement import MovementPruner

    total = recovery_steps(job)
    job.hooks.append(MovementPruner(job.model, job.cfg.sparsity, job.cfg.scope, total,
                                    init=job.cfg.movement_init))
    return {"schedule": job.cfg.schedule, "schedule_steps": total}


PRUNE_METHODS: dict[str, Callable[[PruneJob], dict[str, Any]]] = {
    "vocab": _prune_vocab,
    "structured": _prune_structured,
    "magnitude": _prune_magnitude,
    "movement": _prune_movement,
}


def _recover(job: PruneJob, teacher_dir: Path, enc: dict[str, EncodedSplit], work_dir: Path,
             progress: bool) -> dict[str, Any]:
    cfg = job.cfg.recovery
    teacher = load_classifier(teacher_dir).eval()
    if teacher.config.num_labels != job.data.num_labels:
        raise ModelError(f"the recovery teacher {teacher_dir} predicts {teacher.config.num_labels} "
                         f"classes but the dataset has {job.data.num_labels}.",
                         hint="use a teacher fine-tuned on this dataset.")
    teacher_tokenizer = load_tokenizer(teacher_dir)
    teacher_train = None
    if teacher_tokenizer.get_vocab() != job.tokenizer.get_vocab():  # e.g. the student's vocab was pruned
        teacher_train = encode_split(teacher_tokenizer, job.data.splits["train"], job.max_length)

    def at_step(step: int) -> None:  # gradual pruners follow the trainer's step
        for hook in job.hooks:
            hook.at_step(step)

    same_depth = teacher.config.num_hidden_layers == job.model.config.num_hidden_layers
    mapping = list(range(job.model.config.num_hidden_layers + 1)) if same_depth else None
    result = distill_into(job.model, teacher, enc, job.data.num_labels, cfg, work_dir, seed=job.seed,
                          mapping=mapping, desc=f"recover ({job.cfg.method})", progress=progress,
                          teacher_train=teacher_train,
                          select_from_step=max([h.select_from_step for h in job.hooks] + [0]),
                          on_step=at_step)
    teacher_test = ({"teacher_test": evaluate(teacher, enc["test"], job.data.num_labels)}
                    if "test" in enc else {})
    return {"teacher": str(teacher_dir), **teacher_test, **result.metrics()}


def prune(model_dir: Path, data: TextClassificationData, cfg: PruneConfig, out_dir: Path, work_dir: Path,
          *, max_length: int, seed: int = 0, progress: bool = True,
          teacher_dir: Path | None = None) -> dict[str, Any]:
    """Prune the classifier in ``model_dir`` into ``out_dir`` (model + tokenizer); returns metrics."""
    if not has_classification_head(model_dir):
        raise ModelError(f"{model_dir} has no sequence-classification head; prune a fine-tuned "
                         "classifier so that accuracy can be checked and recovered.",
                         hint="put the prune stage after `finetune` or `distill`.")
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(model_dir)
    model = load_classifier(model_dir).eval()
    before = sparsity_report(model, model_dir)
    selecting = "test" not in data.splits  # model selection: the test split is withheld
    test_before = (None if selecting else
                   evaluate(model, encode_split(tokenizer, data.splits["test"], max_length), data.num_labels))
    job = PruneJob(model, tokenizer, data, cfg, max_length, seed)
    info = PRUNE_METHODS[cfg.method](job)
    enc = {name: encode_split(job.tokenizer, split, max_length) for name, split in data.splits.items()}
    recovery = None
    if cfg.recovery is not None:
        recovery = _recover(job, teacher_dir or model_dir, enc, work_dir, progress)
    for hook in job.hooks:
        info.update(hook.finish())
    test = None if selecting else evaluate(model, enc["test"], data.num_labels)
    model.save_pretrained(out_dir, safe_serialization=True)
    job.tokenizer.save_pretrained(out_dir)
    after = sparsity_report(model, out_dir)
    scores = {} if selecting else {"test": test, "test_before": test_before,
                                   "retention": test["accuracy"] / test_before["accuracy"]}
    return {
        "method": cfg.method, **info, **scores,
        "params": after["params"], "params_before": before["params"],
        "sparsity_report": {"before": before, "after": after},
        "recovery": recovery,
    }
