"""The training settings every training stage shares, in a module that imports no torch.

Recipes are parsed and planned (``run --dry-run``) from config dataclasses alone; keeping
them here lets the quantization-aware training config (``slimbert/quantize/config.py``)
extend ``KDConfig`` without importing the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MIXED_PRECISION = ("no", "bf16", "fp16")


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
        if self.metric not in ("accuracy", "macro_f1", "mcc"):
            raise ValueError(f"metric must be accuracy, macro_f1 or mcc, got {self.metric!r}")
        if self.evals_per_epoch < 1 or self.checkpoint_every < 1 or self.length_pool < 1:
            raise ValueError("evals_per_epoch, checkpoint_every and length_pool must be >= 1")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
                             f"got {self.mixed_precision!r}")



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
