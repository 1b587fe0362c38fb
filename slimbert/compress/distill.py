"""Knowledge distillation into a DistilBERT-style student.

The student keeps every other teacher layer (or a chosen list) and learns from a mix of
soft targets (KL at temperature T, scaled by T^2 as in Hinton et al.), the hard labels,
and optionally the teacher's hidden states (cosine, as DistilBERT). Teacher logits are
computed once and cached in the stage's work folder: with them, a logit-only epoch costs
the student's forward/backward alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from slimbert import distributed
from slimbert.compress.student import LayerChoice, build_student, find_layers, resolve_layers
from slimbert.compress.trainer import (
    TrainConfig,
    TrainResult,
    evaluate,
    label_tensor,
    predict_logits,
    train,
)
from slimbert.data import EncodedSplit, TextClassificationData, encode_split
from slimbert.errors import ModelError
from slimbert.models import has_classification_head, load_classifier, load_tokenizer

log = logging.getLogger(__name__)


class KDSettings(Protocol):
    """What ``distill_into`` reads: TrainConfig's settings plus the loss weights."""

    temperature: float
    alpha_kd: float
    alpha_ce: float
    alpha_hidden: float


@dataclass
class DistillConfig(TrainConfig):
    """Student shape and loss weights (defaults: the DistilBERT recipe on logits)."""

    layers: LayerChoice = "every-other"
    temperature: float = 2.0
    alpha_kd: float = 0.7
    alpha_ce: float = 0.3
    alpha_hidden: float = 0.0
    epochs: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kd_settings(self)


def check_kd_settings(cfg: KDSettings) -> None:
    """The checks every config that trains through ``distill_into`` shares."""
    if cfg.temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {cfg.temperature}")
    weights = (cfg.alpha_kd, cfg.alpha_ce, cfg.alpha_hidden)
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"loss weights alpha_kd={cfg.alpha_kd}, alpha_ce={cfg.alpha_ce}, "
            f"alpha_hidden={cfg.alpha_hidden} must be >= 0 and not all 0"
        )


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, times T^2."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)


def hidden_cosine_loss(student_hidden, teacher_hidden, mapping: list[int],
                       mask: torch.Tensor) -> torch.Tensor:
    """Mean (1 - cosine) between student layer i and teacher layer mapping[i], on real tokens."""
    keep = mask.bool()
    losses = []
    for s_idx, t_idx in enumerate(mapping):
        s = student_hidden[s_idx][keep]
        t = teacher_hidden[t_idx][keep]
        losses.append(1 - F.cosine_similarity(s, t, dim=-1).mean())
    return torch.stack(losses).mean()


def cached_teacher_logits(teacher, enc, work_dir: Path, progress: bool) -> np.ndarray:
    """The teacher's logits on ``enc``, computed once per stage and kept in ``work_dir``.

    Under a multi-process launch every process computes them (no process idles) and only
    the main one writes the file.
    """
    path = work_dir / "teacher_logits.npy"
    if path.is_file():
        return np.load(path)
    main = distributed.is_main()
    logits = predict_logits(teacher, enc, desc="teacher logits", progress=progress and main)
    if main:
        tmp = work_dir / ".teacher_logits.tmp.npy"
        np.save(tmp, logits)
        os.replace(tmp, path)
    return logits


def distill(
    teacher_dir: Path,
    data: TextClassificationData,
    cfg: DistillConfig,
    out_dir: Path,
    work_dir: Path,
    *,
    max_length: int,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Distil the classifier in ``teacher_dir`` into a student saved to ``out_dir``."""
    if not has_classification_head(teacher_dir):
        raise ModelError(
            f"the teacher {teacher_dir} has no sequence-classification head, so it has no "
            "predictions to distil.",
            hint="fine-tune it first: put a `finetune` stage before `distill` in the recipe "
            "(or `slimbert compress --stage finetune`).",
        )
    tokenizer = load_tokenizer(teacher_dir)
    teacher = load_classifier(teacher_dir).eval()
    if teacher.config.num_labels != data.num_labels:
        raise ModelError(
            f"the teacher in {teacher_dir} predicts {teacher.config.num_labels} classes but "
            f"the dataset has {data.num_labels} ({', '.join(data.label_names)}).",
            hint="distil with the dataset the teacher was fine-tuned on.",
        )
    depth = len(find_layers(teacher)[2])
    layers = resolve_layers(cfg.layers, depth)
    torch.manual_seed(seed)
    student = build_student(teacher, layers)
    enc = {name: encode_split(tokenizer, split, max_length) for name, split in data.splits.items()}
    # hidden_states[0] is the embedding output; teacher layer i's output is index i + 1
    mapping = [0] + [i + 1 for i in layers]
    result = distill_into(student, teacher, enc, data.num_labels, cfg, work_dir, seed=seed,
                          mapping=mapping, desc=f"distill {len(layers)}L", progress=progress)
    test = evaluate(student, enc["test"], data.num_labels)
    teacher_test = evaluate(teacher, enc["test"], data.num_labels)
    student.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        "test": test,
        "teacher_test": teacher_test,
        "retention": test["accuracy"] / teacher_test["accuracy"],
        "teacher_layers": layers,
        "params": sum(p.numel() for p in student.parameters()),
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        **result.metrics(),
    }


def distill_into(student, teacher, enc: dict[str, EncodedSplit], num_labels: int, cfg: KDSettings,
                 work_dir: Path, *, seed: int, mapping: list[int] | None = None,
                 desc: str = "distill", progress: bool = True,
                 teacher_train: EncodedSplit | None = None, select_from_step: int = 0) -> TrainResult:
    """Train an already-built ``student`` on ``teacher``'s soft targets (and the labels).

    The student may come from layer selection (``distill``) or from pruning; ``mapping``
    pairs student hidden states with the teacher's for the hidden-state loss (needed only
    when ``cfg.alpha_hidden`` > 0). The student's token ids must be the teacher's: both
    read the same ``enc``, unless ``teacher_train`` gives the teacher's own encoding of the
    training split (same examples, same order; e.g. after the student's vocabulary was pruned).
    """
    if cfg.alpha_hidden and (mapping is None or teacher_train is not None):
        raise ModelError("the hidden-state loss (alpha_hidden > 0) needs a student-to-teacher "
                         "layer mapping and the same tokenizer for both.", hint="set alpha_hidden: 0.")
    work_dir.mkdir(parents=True, exist_ok=True)
    teacher_enc = teacher_train if teacher_train is not None else enc["train"]
    teacher_logits = torch.from_numpy(cached_teacher_logits(teacher, teacher_enc, work_dir, progress))
    labels = enc["train"].labels

    def loss_fn(model, batch, index):
        out = model(**batch, output_hidden_states=cfg.alpha_hidden > 0)
        device = out.logits.device
        loss = torch.zeros((), dtype=out.logits.dtype, device=device)
        if cfg.alpha_kd:
            loss = loss + cfg.alpha_kd * kd_loss(out.logits, teacher_logits[index].to(device),
                                                 cfg.temperature)
        if cfg.alpha_ce:
            loss = loss + cfg.alpha_ce * F.cross_entropy(out.logits, label_tensor(labels, index).to(device))
        if cfg.alpha_hidden:
            with torch.no_grad():  # the teacher joins the student on the training device
                t_hidden = teacher.to(device)(**batch, output_hidden_states=True).hidden_states
            loss = loss + cfg.alpha_hidden * hidden_cosine_loss(
                out.hidden_states, t_hidden, mapping, batch["attention_mask"])
        return loss

    return train(student, enc["train"], enc["dev"], num_labels, cfg, loss_fn,
                 work_dir, seed, desc=desc, progress=progress, select_from_step=select_from_step)
