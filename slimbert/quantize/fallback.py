"""The one fallback search: rank units by sensitivity, fall back the worst k, stop within tolerance.

Quantization error is not spread evenly: a few matmuls (often the classifier head, the
pooler or one FFN output) cause most of it. Every quantization path (ONNX Runtime nodes,
torchao Linear layers, INC Linear layers) repairs an accuracy loss the same way:

1. rank the units: quantize one at a time and measure how far the dev logits move from fp32
   (mean squared error: a continuous score, where a few hundred dev examples make accuracy
   too coarse to rank units), worst first;
2. fall back the k most sensitive units (k = 1, 2, ...), re-quantizing the whole model each
   time, until the dev-accuracy drop is within the tolerance;
3. keep the best variant seen: lowest dev drop, then (a few hundred dev examples tie often)
   the one whose predictions agree most with fp32's. If no k meets the tolerance, the best
   one is kept and the report says the tolerance was not met.

What "fall back" means (fp32, or dynamic INT8) and what a unit is belong to the caller,
which passes two functions: the logits with only one unit quantized, and a variant with a
list of units fallen back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from slimbert.progress import progress_bar
from slimbert.validation import accuracy, agreement, drop_points, logit_mse


@dataclass(frozen=True)
class DevScorer:
    """How a quantized model's dev outputs are judged: the task's score (a fraction, higher is
    better; accuracy on the labels for classification, the mean cosine to fp32's embeddings
    for sentence embeddings) and its agreement with fp32's outputs."""

    score: Callable[[np.ndarray], float]
    agree: Callable[[np.ndarray], float]
    metric: str = "accuracy"

    def drop_and_agreement(self, fp32_logits: np.ndarray, logits: np.ndarray) -> tuple[float, float, float]:
        """(score, drop in points from fp32's, agreement with fp32) of ``logits``."""
        value = self.score(logits)
        return value, drop_points(self.score(fp32_logits), value), self.agree(logits)


def label_scorer(fp32_logits: np.ndarray, labels: np.ndarray) -> DevScorer:
    """Classification: accuracy on the dev labels, agreement of predicted labels with fp32's."""
    return DevScorer(lambda logits: accuracy(logits, labels), lambda logits: agreement(logits, fp32_logits))


def task_scorer(task: str, fp32_logits: np.ndarray, labels: np.ndarray) -> DevScorer:
    """The dev scorer of ``task`` (slimbert.tasks): its ``dev_score`` and ``agreement``."""
    from slimbert.tasks import get_task

    impl = get_task(task).load()
    return DevScorer(lambda logits: impl.dev_score(logits, fp32_logits, labels),
                     lambda logits: impl.agreement(fp32_logits, logits), impl.dev_metric)


@dataclass
class Trial:
    """One variant: the units it fell back, what it cost on dev, and the model itself."""

    units: list[str]
    dev_drop_points: float
    agreement: float  # with fp32's predictions
    model: Any = None  # the caller's variant (a graph module); None where the caller rebuilds it

    def key(self) -> tuple[float, float]:
        """Smaller is better: the drop, then the disagreement with fp32."""
        return self.dev_drop_points, -self.agreement


@dataclass
class FallbackReport:
    """What the search did, written into the stage's manifest by ``to_dict``.

    ``units_key``/``unit_key`` name the units the way each stage's manifest always has
    ("fallback_nodes"/"node" for ONNX graphs, "fp32_layers"/"layer" for PyTorch), so the
    reports stay readable by what reads them.
    """

    tolerance_points: float
    initial_dev_drop_points: float
    units_key: str
    unit_key: str
    chosen: list[str] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] | None = None
    tries: list[Trial] = field(default_factory=list)
    final: Trial | None = None

    @property
    def met(self) -> bool:
        drop = self.final.dev_drop_points if self.final else self.initial_dev_drop_points
        return drop <= self.tolerance_points

    def to_dict(self, show: Callable[[str], str] = str) -> dict[str, Any]:
        out: dict[str, Any] = {"tolerance_points": self.tolerance_points,
                               "initial_dev_drop_points": self.initial_dev_drop_points,
                               self.units_key: [show(u) for u in self.chosen], "met": self.met}
        if self.sensitivity is not None:
            out["sensitivity"] = [{**r, self.unit_key: show(r[self.unit_key])} for r in self.sensitivity]
            out["tries"] = [{self.units_key: len(t.units), "dev_drop_points": t.dev_drop_points,
                             "agreement": t.agreement} for t in self.tries]
        if self.final is not None:
            out["final_dev_drop_points"] = self.final.dev_drop_points
            out["final_agreement"] = self.final.agreement
        return out


def rank_units(units: Sequence[str], quantize_only: Callable[[str], np.ndarray], fp32_logits: np.ndarray,
               labels: np.ndarray, *, unit_key: str, progress: bool = False,
               scorer: DevScorer | None = None) -> list[dict[str, Any]]:
    """Per unit: the dev-logit MSE and score change when only it is quantized, worst first."""
    scorer = scorer or label_scorer(fp32_logits, labels)
    rows = []
    for unit in progress_bar(list(units), enabled=progress, desc="sensitivity", leave=False):
        logits = quantize_only(unit)
        rows.append({unit_key: unit, "logit_mse": logit_mse(fp32_logits, logits),
                     "dev_drop_points": scorer.drop_and_agreement(fp32_logits, logits)[1]})
    return sorted(rows, key=lambda r: (r["logit_mse"], r["dev_drop_points"]), reverse=True)


def fallback_search(*, units: Callable[[], Sequence[str]], quantize_only: Callable[[str], np.ndarray],
                    fall_back: Callable[[list[str]], tuple[np.ndarray, Any]], initial_logits: np.ndarray,
                    initial_model: Any, fp32_logits: np.ndarray, labels: np.ndarray, tolerance: float,
                    max_units: int, units_key: str, unit_key: str, progress: bool = False,
                    scorer: DevScorer | None = None) -> tuple[Trial, FallbackReport]:
    """Fall back the most sensitive of ``units()`` until the dev drop <= ``tolerance`` points.

    ``quantize_only(unit)``: dev logits with only that unit quantized (the ranking).
    ``fall_back(units)``: dev logits and the model with those units fallen back. Returns the
    best variant (the initial one when it already meets the tolerance) and the report.
    ``scorer``: the task's dev score (default: accuracy on ``labels``).
    """
    scorer = scorer or label_scorer(fp32_logits, labels)

    def trial(chosen: list[str], logits: np.ndarray, model: Any) -> Trial:
        _, drop, agree = scorer.drop_and_agreement(fp32_logits, logits)
        return Trial(chosen, drop, agree, model)

    best = trial([], initial_logits, initial_model)
    report = FallbackReport(tolerance, best.dev_drop_points, units_key, unit_key)
    if best.dev_drop_points <= tolerance:
        return best, report
    ranking = rank_units(units(), quantize_only, fp32_logits, labels, unit_key=unit_key, progress=progress,
                         scorer=scorer)
    report.sensitivity, report.tries = ranking, [replace(best, model=None)]
    limit = min(max_units, len(ranking))
    for k in progress_bar(range(1, limit + 1), enabled=progress, desc="fallback", leave=False):
        chosen = [r[unit_key] for r in ranking[:k]]
        current = trial(chosen, *fall_back(chosen))
        report.tries.append(replace(current, model=None))  # only the best variant is held
        if current.key() < best.key():
            best = current
        if current.dev_drop_points <= tolerance:
            break
    report.chosen, report.final = best.units, replace(best, model=None)
    return best, report
