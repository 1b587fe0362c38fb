"""What `slimbert optimize` searches and what it must respect (torch-free: recipes parse fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DISTILL_VARIANTS = ("kd", "kd-aug")


@dataclass
class PruneFractions:
    """One structured-pruning setting: fraction of heads per layer and of FFN neurons removed."""

    heads: float = 0.25
    ffn: float = 0.4

    def __post_init__(self) -> None:
        for name in ("heads", "ffn"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"prune {name} fraction must be in [0, 1), got {getattr(self, name)}")


@dataclass
class OptimizeConfig:
    """The search: targets, accuracy budget, time budget, and the space of candidates.

    Candidates are compared on a selection split held out of the training data (``selection``;
    dev when the data is too small to spare one); the test split is read once, for the
    artifact chosen per target, and its drop against the teacher is confirmed with the
    gate's statistics (paired bootstrap CI, McNemar).
    """

    targets: list[str] = field(default_factory=lambda: ["ort-cpu"])
    max_drop: float = 1.0  # points of `metric` the chosen artifact may lose against the teacher
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    time_budget_min: float | None = None  # None: no limit
    # student depths: a fraction of the teacher's layers (< 1) or a layer count (>= 1);
    # the teacher itself is always a candidate (depth "none")
    depths: list[float] = field(default_factory=lambda: [2 / 3, 1 / 2, 1 / 3])
    # kd-aug (+0.6 points for a 3-layer student in docs/results.md) costs 5x a kd epoch: opt in;
    # by default the search of the built-in default fits an hour on 2 cores
    distill: list[Literal["kd", "kd-aug"]] = field(default_factory=lambda: ["kd"])
    # the prune-student example's setting, and a heavier one for targets with a looser budget
    prune: list[PruneFractions] = field(default_factory=lambda: [PruneFractions(),
                                                                  PruneFractions(heads=0.5, ffn=0.6)])
    vocab: bool = True  # also try each model with the vocabulary the training texts use
    # successive halving: every (depth, recipe) first trains `short_epochs`, the best
    # `survivors` by dev score then train `epochs` and go on to pruning and quantization
    short_epochs: int = 1
    epochs: int = 6
    survivors: int = 2
    lr: float = 1e-4  # students and pruning recovery (the distillation ablation's setting)
    batch_size: int = 32
    seq_len: int = 128  # latency is p50 at batch 1 and this many tokens
    bench_budget_s: float = 2.0  # seconds of latency timing per artifact and runtime
    confidence: float = 0.95
    # share of the training examples held out to rank candidates: no candidate trains or
    # early-stops on it (dev does that), so its scores are not flattered by fitting. Searches
    # on data whose held-out share would be under strategy.MIN_SELECTION_EXAMPLES rank on dev. 0: dev.
    selection: float = 0.15
    # a candidate is within the budget when its drop, at this one-sided confidence on the
    # ranking split, is: the margin against the winner's curse of picking the fastest of
    # many noisy candidates. 0.5: the point estimate alone.
    selection_confidence: float = 0.8
    # how each INT8 candidate picks its scheme (quantize-onnx `schemes:`): measure every scheme
    # on dev and keep the fastest within its tolerance (the default), or take the instruction-set
    # table's (8-16 times fewer quantizations per candidate: a quicker, less exact search)
    int8_schemes: Literal["measure", "table"] = "measure"

    def __post_init__(self) -> None:
        if self.max_drop < 0:
            raise ValueError(f"max_drop must be >= 0 points, got {self.max_drop}")
        if not self.targets:
            raise ValueError("targets must name at least one runtime (e.g. [ort-cpu])")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            raise ValueError(f"time_budget_min must be > 0 minutes, got {self.time_budget_min}")
        if any(d <= 0 for d in self.depths):
            raise ValueError(f"depths must be fractions of the teacher's layers or layer counts > 0, "
                             f"got {self.depths}")
        if self.short_epochs < 1 or self.epochs < self.short_epochs:
            raise ValueError(f"need 1 <= short_epochs <= epochs, got {self.short_epochs} and {self.epochs}")
        if self.depths and not self.distill:
            raise ValueError(f"the search space has no students: depths {self.depths} but no distill "
                             "recipe; name one (kd, kd-aug), or set depths: [] to search quantization alone")
        if self.survivors < 1:
            raise ValueError(f"survivors must be >= 1, got {self.survivors}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if not 0.5 <= self.selection_confidence < 1:
            raise ValueError(f"selection_confidence must be in [0.5, 1), got {self.selection_confidence}")
        if not 0 <= self.selection < 0.5:
            raise ValueError(f"selection must be a share of the training examples in [0, 0.5), "
                             f"got {self.selection}")
