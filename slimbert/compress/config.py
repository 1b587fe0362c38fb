"""The training stages' settings: fine-tune, distil, prune (and the loss mix they share).

Plain dataclasses, importable without torch: parsing a recipe and planning a run
(`slimbert run --dry-run`) read them, and that must stay quick. The training code that
uses them is beside them, in trainer.py, finetune.py, distill.py and prune.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from slimbert.errors import ModelError
from slimbert.schema import field_defaults

MIXED_PRECISION = ("no", "bf16", "fp16")


# classification's dev metrics, then the sentence-embedding task's (fidelity to the teacher)
DEV_METRICS = ("accuracy", "macro_f1", "mcc", "cosine", "recall_at_10")


@dataclass
class TrainConfig:
    """Optimisation settings shared by every training stage."""

    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    patience: int = 2  # epochs without dev improvement before stopping; 0 = never stop
    metric: str = "accuracy"  # dev metric for early stopping / best checkpoint
    evals_per_epoch: int = 1
    checkpoint_every: int = 100  # optimiser steps between resumable checkpoints
    length_pool: int = 50  # batches per length-sorted pool (less padding); 1 = random batches
    mixed_precision: str = "no"  # "bf16" (GPU or CPU) or "fp16" (GPU, with loss scaling)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.metric not in DEV_METRICS:
            raise ValueError(f"metric must be one of {', '.join(DEV_METRICS)}, got {self.metric!r}")
        if self.evals_per_epoch < 1 or self.checkpoint_every < 1 or self.length_pool < 1:
            raise ValueError("evals_per_epoch, checkpoint_every and length_pool must be >= 1")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
                             f"got {self.mixed_precision!r}")


@dataclass
class FinetuneConfig(TrainConfig):
    """Full fine-tuning with cross-entropy (defaults reach 86-87% on rt-snippets)."""


@dataclass
class AugmentConfig:
    """How many new sentences per training sentence, and how they differ from it."""

    copies: int = 4
    method: Literal["embedding-neighbours", "masked-lm"] = "embedding-neighbours"
    replace_prob: float = 0.4  # chance that each single-token word is replaced (TinyBERT: 0.4)
    neighbours: int = 15  # candidates per word, one drawn at random (TinyBERT: 15)
    mlm_model: str | None = None  # masked-lm only: hub id or folder of a model with an MLM head

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise ValueError(f"augment.copies must be >= 1, got {self.copies}")
        if not 0 < self.replace_prob <= 1:
            raise ValueError(f"augment.replace_prob must be in (0, 1], got {self.replace_prob}")
        if self.neighbours < 1:
            raise ValueError(f"augment.neighbours must be >= 1, got {self.neighbours}")
        if self.method == "masked-lm" and not self.mlm_model:
            raise ValueError("augment.method masked-lm needs augment.mlm_model: a model with a "
                             "masked-LM head that shares the tokenizer (e.g. bert-base-uncased)")


# a list of teacher layer indices, "every-other" (DistilBERT) or "first-<k>"
LayerChoice = list[int] | Literal["every-other"] | str


def parse_first_k(choice: str) -> int:
    """k of a "first-<k>" layer choice; ValueError (a recipe error) for anything else."""
    head, _, count = choice.partition("-")
    if head != "first" or not count.isdigit():
        raise ValueError(f"layers must be a list of layer indices, 'every-other' or 'first-<k>' "
                         f"(e.g. first-3), got {choice!r}")
    return int(count)


def resolve_layers(choice: LayerChoice, depth: int) -> list[int]:
    """Teacher layer indices the student keeps."""
    if choice == "every-other":
        return list(range(0, depth, 2))
    if isinstance(choice, str):
        k = parse_first_k(choice)
        if not 1 <= k <= depth:
            raise ModelError(f"layers: {choice} asks for {k} layers of a model with {depth}.",
                             hint=f"use first-1 .. first-{depth}.")
        return list(range(k))
    layers = list(choice)
    if not layers:
        raise ModelError("the student's layer list is empty.", hint="keep at least one layer.")
    bad = [i for i in layers if not 0 <= i < depth]
    if bad:
        raise ModelError(
            f"student layers {bad} are out of range for a teacher with {depth} layers "
            f"(valid: 0..{depth - 1}).",
            hint="pick indices of existing teacher layers.",
        )
    if sorted(set(layers)) != layers:
        raise ModelError(
            f"student layers {layers} must be distinct and increasing.",
            hint=f"e.g. {sorted(set(layers))}.",
        )
    return layers


@dataclass
class KDConfig(TrainConfig):
    """The loss mix of every stage that trains through ``distill_into``."""

    temperature: float = 2.0
    alpha_kd: float = 0.7
    alpha_ce: float = 0.3
    alpha_hidden: float = 0.0
    alpha_attention: float = 0.0  # MiniLM: KL between self-attention distributions
    hidden_loss: Literal["cosine", "mse"] = "cosine"  # mse: through a projection if widths differ

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        weights = {"alpha_kd": self.alpha_kd, "alpha_ce": self.alpha_ce,
                   "alpha_hidden": self.alpha_hidden, "alpha_attention": self.alpha_attention}
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            listed = ", ".join(f"{k}={v}" for k, v in weights.items())
            raise ValueError(f"loss weights {listed} must be >= 0 and not all 0")


@dataclass
class DistillConfig(KDConfig):
    """Student shape, loss weights (defaults: the DistilBERT recipe on logits), augmentation."""

    # teacher layers to copy ("every-other", "first-<k>" or a list); with student_model,
    # layers of that model to keep (default: all)
    layers: LayerChoice | None = None
    # the student to start from: a smaller pretrained model (hub id, folder, asset), or in a
    # recipe an earlier distill stage's student (TinyBERT's two phases)
    student_model: str | None = None
    layer_map: list[int] | None = None  # teacher layer each student layer imitates; default uniform
    augment: AugmentConfig | None = None
    epochs: int = 4
    # training seed (new layers' init, batch order, dropout, augmentation); None: the recipe's
    # seed, which also draws the split, so seeds here vary training on one fixed split
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.layers, str) and self.layers != "every-other":
            parse_first_k(self.layers)
        if self.layer_map is not None and not self.layer_map:
            raise ValueError("layer_map must list one teacher layer per student layer, got []")


@dataclass
class RecoveryConfig(KDConfig):
    """Distillation after pruning: the pruned model learns the teacher's soft targets back.

    Hidden-state and attention losses pair layers one to one, so they need a teacher of the
    same depth and tokenizer (the unpruned input, typically).
    """

    epochs: int = 2
    teacher: str | None = None  # earlier stage or model folder; None: the unpruned input


# the settings each method reads; any other method's setting is a mistake if it is changed
METHOD_SETTINGS = {
    "vocab": {"vocab_splits", "vocab_min_count", "keep_ascii_chars"},
    "structured": {"heads_fraction", "ffn_fraction", "ffn_multiple", "importance", "importance_examples"},
    "magnitude": {"sparsity", "scope", "schedule"},
    "movement": {"sparsity", "scope", "schedule", "movement_init"},
}


@dataclass
class PruneConfig:
    """What to prune and how much; ``recovery`` (optional) trains the pruned model back."""

    method: Literal["vocab", "structured", "magnitude", "movement"] = "vocab"
    # vocab: the splits whose texts choose the kept tokens (test stays unseen, an honest
    # measure of new text), how often a token must occur there to be kept, and whether the
    # ASCII characters stay too, so unseen words split into pieces, not [UNK]
    vocab_splits: list[str] = field(default_factory=lambda: ["train", "dev"])
    vocab_min_count: int = 1
    keep_ascii_chars: bool = True
    # structured: fraction of heads (per layer) and FFN neurons (same count per layer) removed
    heads_fraction: float = 0.25
    ffn_fraction: float = 0.4
    ffn_multiple: int = 1  # round the kept FFN size down to a multiple of this (faster GEMMs)
    importance: Literal["taylor", "magnitude"] = "taylor"
    importance_examples: int = 1024  # training examples the Taylor scores average over
    # magnitude, movement: fraction of encoder linear weights zeroed
    sparsity: float = 0.5
    # movement: scores start at |w| (magnitude's ranking, reordered by training) or at zero
    movement_init: Literal["magnitude", "zero"] = "magnitude"
    # global, per-layer, or 2:4 (2 of every 4 consecutive weights: NVIDIA sparse tensor cores)
    scope: Literal["global", "per-layer", "2:4"] = "global"
    schedule: Literal["one-shot", "gradual"] = "one-shot"
    recovery: RecoveryConfig | None = None

    def __post_init__(self) -> None:
        self._check_settings_fit_the_method()
        for name in ("heads_fraction", "ffn_fraction", "sparsity"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.ffn_multiple < 1:
            raise ValueError(f"ffn_multiple must be >= 1, got {self.ffn_multiple}")
        if not self.vocab_splits:
            raise ValueError("vocab_splits must name at least one split (e.g. [train, dev])")
        if self.vocab_min_count < 1:
            raise ValueError(f"vocab_min_count must be >= 1, got {self.vocab_min_count}")
        if self.importance_examples < 1:
            raise ValueError(f"importance_examples must be >= 1, got {self.importance_examples}")
        if self.scope == "2:4" and (self.sparsity != 0.5 or self.schedule != "one-shot"):
            raise ValueError("scope 2:4 is exactly 50% sparse and one-shot: set sparsity: 0.5 and "
                             "schedule: one-shot (recovery training keeps the pattern)")
        if self.method == "magnitude" and self.schedule == "gradual" and self.recovery is None:
            raise ValueError("schedule: gradual prunes during recovery training; add a `recovery:` "
                             "section (or use schedule: one-shot)")
        if self.method == "movement" and (self.schedule != "gradual" or self.recovery is None
                                          or self.scope == "2:4"):
            raise ValueError("movement pruning learns which weights to keep while training: set "
                             "schedule: gradual, a `recovery:` section, and scope: per-layer or global")

    def _check_settings_fit_the_method(self) -> None:
        """A setting the method ignores, or one that prunes nothing, is refused: never a silent no-op."""
        defaults = field_defaults(self)
        others = set().union(*METHOD_SETTINGS.values()) - METHOD_SETTINGS[self.method]
        stray = sorted(name for name in others if getattr(self, name) != defaults[name])
        if stray:
            owners = {name: [m for m, names in METHOD_SETTINGS.items() if name in names] for name in stray}
            raise ValueError(f"method {self.method} does not use {', '.join(stray)} ("
                             + "; ".join(f"{n}: {'/'.join(m)}" for n, m in owners.items())
                             + f"); remove it or set method: {owners[stray[0]][0]}")
        if self.method in ("magnitude", "movement") and self.sparsity == 0:
            raise ValueError(f"sparsity 0 prunes nothing; {self.method} needs a sparsity in (0, 1)")
        if self.method == "structured" and self.heads_fraction == 0 and self.ffn_fraction == 0:
            raise ValueError("heads_fraction and ffn_fraction are both 0: nothing would be pruned")


def check_distill_input(cfg: DistillConfig, model_config: dict) -> None:
    """Refuse, at plan time, teacher layers the input model does not have (``layers: [0, 99]``
    on a 6-layer teacher): the config and the teacher's config.json say so without torch."""
    depth = model_config.get("num_hidden_layers", model_config.get("n_layers"))
    if cfg.student_model is None and cfg.layers is not None and isinstance(depth, int):
        resolve_layers(cfg.layers, depth)
