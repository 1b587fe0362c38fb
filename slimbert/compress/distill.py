"""Knowledge distillation into a smaller student.

The student keeps every other teacher layer (DistilBERT), a chosen list or the first k,
or it is a different, smaller pretrained model that shares the teacher's vocabulary. It
learns from a weighted mix of losses (kd_losses.py): soft targets, hard labels, hidden
states and attention maps. Teacher logits are computed once and cached in the stage's
work folder, so a logit-only epoch costs the student's forward/backward alone; the
intermediate losses need the teacher's forward on every batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimbert import distributed
from slimbert.compress.augment import AugmentConfig, augment_by_masked_lm, augment_by_neighbours
from slimbert.compress.config import DistillConfig, KDConfig
from slimbert.compress.kd_losses import attention_kl_loss, hidden_state_loss, kd_loss
from slimbert.compress.student import (
    build_student,
    find_layers,
    resolve_layers,
    uniform_layer_map,
)
from slimbert.compress.trainer import (
    TrainResult,
    evaluate,
    label_tensor,
    predict_logits,
    train,
)
from slimbert.data import EncodedSplit, TextClassificationData, encode_split
from slimbert.errors import ModelError
from slimbert.models import has_classification_head, load_classifier, load_tokenizer, resolve_model

log = logging.getLogger(__name__)


def cached_teacher_logits(teacher, enc: EncodedSplit, work_dir: Path, progress: bool) -> np.ndarray:
    """The teacher's logits on ``enc``, computed once per stage and kept in ``work_dir``.

    Under a multi-process launch every process computes them (no process idles) and only
    the main one writes the file.
    """
    path = work_dir / "teacher_logits.npy"
    if path.is_file():
        logits = np.load(path)
        if len(logits) == len(enc):
            return logits
    main = distributed.is_main()
    logits = predict_logits(teacher, enc, desc="teacher logits", progress=progress and main)
    if main:
        tmp = work_dir / ".teacher_logits.tmp.npy"
        np.save(tmp, logits)
        os.replace(tmp, path)
    return logits


class ProjectedStudent(nn.Module):
    """The student plus TinyBERT's learned projection of its hidden states to the teacher's width.

    Wrapping (rather than keeping the projection beside the model) makes the projection part
    of the trained module: it is checkpointed, resumed and synchronised like any weight, and
    is simply not saved with the student at the end.
    """

    def __init__(self, student: nn.Module, teacher_width: int):
        super().__init__()
        self.student = student
        self.config = student.config
        self.projection = nn.Linear(student.config.hidden_size, teacher_width)

    def forward(self, output_hidden_states: bool = False, **inputs):
        out = self.student(**inputs, output_hidden_states=output_hidden_states)
        if output_hidden_states:
            out.hidden_states = tuple(self.projection(h) for h in out.hidden_states)
        return out


def _hidden_size(model) -> int:
    config = model.config
    return getattr(config, "hidden_size", None) or config.dim


def _disable_attention_dropout(model: nn.Module) -> None:
    """Dropout on attention probabilities would zero entries of the maps the KL compares."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and "attention" in name and "output" not in name:
            module.p = 0.0


def _check_vocabulary(teacher_tokenizer, student_tokenizer, student_source: str, teacher_dir: Path) -> None:
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if t_vocab != s_vocab:
        differ = len(set(t_vocab.items()) ^ set(s_vocab.items()))
        raise ModelError(
            f"incompatible tokenizers: the student {student_source!r} has a vocabulary of "
            f"{len(s_vocab)} tokens and the teacher {teacher_dir} one of {len(t_vocab)} "
            f"({differ} token/id pairs differ). Distillation feeds both the same token ids.",
            hint="pick a student model that shares the teacher's tokenizer (same family and "
            "vocabulary, e.g. a smaller BERT uncased for a BERT uncased teacher), or build "
            "the student from the teacher's own layers (leave student_model out).",
        )


def _build_student(cfg: DistillConfig, teacher, teacher_dir: Path, tokenizer,
                   data: TextClassificationData, attn: str | None, student_dir: Path | None):
    """(student, teacher layers it was copied from or None) for either kind of student."""
    if cfg.student_model is None:
        depth = len(find_layers(teacher)[2])
        layers = resolve_layers("every-other" if cfg.layers is None else cfg.layers, depth)
        return build_student(teacher, layers), layers
    source = student_dir or resolve_model(cfg.student_model)
    _check_vocabulary(tokenizer, load_tokenizer(source), cfg.student_model, teacher_dir)
    student = load_classifier(source, label_names=data.label_names, attn_implementation=attn)
    if cfg.layers is not None:
        student = build_student(student, resolve_layers(cfg.layers, len(find_layers(student)[2])))
    return student, None


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
    student_dir: Path | None = None,
) -> dict[str, Any]:
    """Distil the classifier in ``teacher_dir`` into a student saved to ``out_dir``.

    ``student_dir``: where ``cfg.student_model`` is, when the caller has resolved it (the
    pipeline does for an earlier stage's student).
    """
    if not has_classification_head(teacher_dir):
        raise ModelError(
            f"the teacher {teacher_dir} has no sequence-classification head, so it has no "
            "predictions to distil.",
            hint="fine-tune it first: put a `finetune` stage before `distill` in the recipe "
            "(or `slimbert compress --stage finetune`).",
        )
    tokenizer = load_tokenizer(teacher_dir)
    attn = "eager" if cfg.alpha_attention else None
    teacher = load_classifier(teacher_dir, attn_implementation=attn).eval()
    if teacher.config.num_labels != data.num_labels:
        raise ModelError(
            f"the teacher in {teacher_dir} predicts {teacher.config.num_labels} classes but "
            f"the dataset has {data.num_labels} ({', '.join(data.label_names)}).",
            hint="distil with the dataset the teacher was fine-tuned on.",
        )
    torch.manual_seed(seed)
    student, copied = _build_student(cfg, teacher, teacher_dir, tokenizer, data, attn, student_dir)
    t_depth, s_depth = len(find_layers(teacher)[2]), len(find_layers(student)[2])
    layer_map = cfg.layer_map or uniform_layer_map(s_depth, t_depth)
    _check_layer_map(layer_map, s_depth, t_depth)
    trainee = _with_projection(student, teacher, cfg)
    enc = {name: encode_split(tokenizer, split, max_length) for name, split in data.splits.items()}
    n_original = len(enc["train"])
    if cfg.augment is not None:
        enc["train"] = _augment(enc["train"], cfg.augment, teacher, teacher_dir, tokenizer, seed,
                                progress)
    if cfg.alpha_attention:
        _disable_attention_dropout(trainee)
    # hidden_states[0] is the embedding output; layer i's output is index i + 1
    mapping = [0] + [t + 1 for t in layer_map]
    result = distill_into(trainee, teacher, enc, data.num_labels, cfg, work_dir, seed=seed,
                          mapping=mapping, desc=f"distill {s_depth}L", progress=progress)
    student.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        **_test_scores(student, teacher, enc, data.num_labels),
        "teacher_layers": copied,
        "student_model": cfg.student_model,
        "layer_map": layer_map,
        "train_examples": {"original": n_original, "augmented": len(enc["train"]) - n_original},
        "params": sum(p.numel() for p in student.parameters()),
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        **result.metrics(),
    }


def _test_scores(student, teacher, enc: dict[str, EncodedSplit], num_labels: int) -> dict[str, Any]:
    """Student and teacher on test, unless the test split is withheld (model selection)."""
    if "test" not in enc:
        return {}
    test = evaluate(student, enc["test"], num_labels)
    teacher_test = evaluate(teacher, enc["test"], num_labels)
    return {"test": test, "teacher_test": teacher_test,
            "retention": test["accuracy"] / teacher_test["accuracy"]}


def _check_layer_map(layer_map: list[int], s_depth: int, t_depth: int) -> None:
    if len(layer_map) != s_depth:
        raise ModelError(f"layer_map {layer_map} has {len(layer_map)} entries for a student with "
                         f"{s_depth} layers.", hint="give one teacher layer per student layer.")
    bad = [t for t in layer_map if not 0 <= t < t_depth]
    if bad:
        raise ModelError(f"layer_map entries {bad} are out of range for a teacher with {t_depth} "
                         f"layers (valid: 0..{t_depth - 1}).", hint="use 0-based teacher layer indices.")


def _with_projection(student, teacher, cfg: KDConfig) -> nn.Module:
    """The module to train: the student, wrapped with a projection when widths differ."""
    s_width, t_width = _hidden_size(student), _hidden_size(teacher)
    if s_width == t_width or not cfg.alpha_hidden:
        return student
    if cfg.hidden_loss == "cosine":
        raise ModelError(
            f"the student's hidden states are {s_width} wide and the teacher's {t_width}: a "
            "cosine hidden-state loss needs equal widths.",
            hint="set hidden_loss: mse (learns a projection to the teacher's width, as "
            "TinyBERT does), or alpha_hidden: 0.",
        )
    return ProjectedStudent(student, t_width)


def _augment(train_enc: EncodedSplit, cfg: AugmentConfig, teacher, teacher_dir: Path, tokenizer,
             seed: int, progress: bool) -> EncodedSplit:
    if cfg.method == "embedding-neighbours":
        embeddings = teacher.get_input_embeddings().weight
        return augment_by_neighbours(train_enc, embeddings, tokenizer, cfg, seed, progress=progress)
    from transformers import AutoModelForMaskedLM

    source = resolve_model(cfg.mlm_model)
    _check_vocabulary(tokenizer, load_tokenizer(source), cfg.mlm_model, teacher_dir)
    try:
        mlm = AutoModelForMaskedLM.from_pretrained(source)
    except Exception as exc:
        raise ModelError(f"could not load a masked-LM model from {source}: {exc}",
                         hint="augment.mlm_model needs a model with an MLM head, e.g. "
                         "bert-base-uncased.") from exc
    return augment_by_masked_lm(train_enc, mlm, tokenizer, cfg, seed, progress=progress)


def distill_into(student, teacher, enc: dict[str, EncodedSplit], num_labels: int, cfg: KDConfig,
                 work_dir: Path, *, seed: int, mapping: list[int] | None = None,
                 desc: str = "distill", progress: bool = True,
                 teacher_train: EncodedSplit | None = None, select_from_step: int = 0,
                 on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train an already-built ``student`` on ``teacher``'s soft targets (and the labels).

    The student may come from layer selection (``distill``), pruning or QAT. ``mapping``
    pairs student hidden states with the teacher's (index 0 is the embeddings; needed only
    for the hidden-state and attention losses; student layer i's attention map pairs with
    teacher layer ``mapping[i + 1] - 1``'s). The student's token ids must be the teacher's:
    both read the same ``enc``, unless ``teacher_train`` gives the teacher's own encoding of
    the training split (same examples, same order; e.g. after the student's vocabulary was
    pruned). Training examples labelled ``augment.GENERATED`` count only in the teacher losses.
    """
    intermediate = cfg.alpha_hidden or cfg.alpha_attention
    if intermediate and (mapping is None or teacher_train is not None):
        raise ModelError("the hidden-state and attention losses need a student-to-teacher layer "
                         "mapping and the same tokenizer for both.",
                         hint="set alpha_hidden: 0 and alpha_attention: 0.")
    work_dir.mkdir(parents=True, exist_ok=True)
    teacher_enc = teacher_train if teacher_train is not None else enc["train"]
    teacher_logits = torch.from_numpy(cached_teacher_logits(teacher, teacher_enc, work_dir, progress))
    labels = enc["train"].labels
    hidden_pairs = list(enumerate(mapping or []))
    attention_pairs = [(s - 1, t - 1) for s, t in hidden_pairs[1:]]

    def loss_fn(model, batch, index):
        want_hidden, want_attn = cfg.alpha_hidden > 0, cfg.alpha_attention > 0
        out = model(**batch, output_hidden_states=want_hidden,
                    **({"output_attentions": True} if want_attn else {}))
        device = out.logits.device
        loss = torch.zeros((), dtype=out.logits.dtype, device=device)
        if cfg.alpha_kd:
            loss = loss + cfg.alpha_kd * kd_loss(out.logits, teacher_logits[index].to(device),
                                                 cfg.temperature)
        if cfg.alpha_ce:
            y = label_tensor(labels, index).to(device)
            real = y >= 0
            if real.any():
                loss = loss + cfg.alpha_ce * F.cross_entropy(out.logits[real], y[real])
        if intermediate:
            with torch.no_grad():  # the teacher joins the student on the training device
                t_out = teacher.to(device)(**batch, output_hidden_states=want_hidden,
                                           output_attentions=want_attn)
            mask = batch["attention_mask"]
            if want_hidden:
                loss = loss + cfg.alpha_hidden * hidden_state_loss(
                    out.hidden_states, t_out.hidden_states, hidden_pairs, mask, cfg.hidden_loss)
            if want_attn:
                loss = loss + cfg.alpha_attention * attention_kl_loss(
                    out.attentions, t_out.attentions, attention_pairs, mask)
        return loss

    return train(student, enc["train"], enc["dev"], num_labels, cfg, loss_fn,
                 work_dir, seed, desc=desc, progress=progress, select_from_step=select_from_step,
                 on_step=on_step)
