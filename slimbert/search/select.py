"""Choosing on the selection split, confirming on test: the Pareto front, the pick, its proof.

Candidates are ranked on the split the search selects on: a selection split held out of
the training data (never trained on, never used for early stopping), or dev when the data
is too small to hold one out. A candidate is within the budget when the upper end of its
drop's one-sided interval (``selection_confidence``) is: the fastest of many candidates whose
point estimate merely touches the budget is the one the sample flatters (a winner's curse).
The test split is read once per target, for the artifact chosen there and the teacher, and
the drop between them is reported with the gate's statistics. A confirmed drop beyond the
budget is said plainly, with the next candidate's numbers; the choice is never remade on test.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from slimbert.gate import discordant_pairs, mcnemar_p, paired_bootstrap_ci, score


@dataclass
class Point:
    """One candidate artifact on one target, measured on the selection split."""

    target: str
    artifact: str
    runtime: str
    lineage: list[str]  # stages from the teacher to the artifact
    score: float  # percent
    drop: float  # points below the teacher (negative: better)
    drop_bound: float  # upper end of the drop's one-sided interval: what the budget is held to
    agreement: float  # share of predictions equal to the teacher's
    p50_ms: float  # batch 1
    size_mb: float
    train_seconds: float  # what making its stages cost

    def to_dict(self) -> dict:
        return asdict(self)


def pareto_front(points: list[Point]) -> list[Point]:
    """Points no other point beats on score, latency and size at once."""

    def dominates(a: Point, b: Point) -> bool:
        no_worse = a.score >= b.score and a.p50_ms <= b.p50_ms and a.size_mb <= b.size_mb
        better = a.score > b.score or a.p50_ms < b.p50_ms or a.size_mb < b.size_mb
        return no_worse and better

    return [p for p in points if not any(dominates(q, p) for q in points if q is not p)]


def ranked_within_budget(points: list[Point], max_drop: float) -> list[Point]:
    """Points whose drop bound is within the budget, fastest first (ties: the higher score)."""
    return sorted((p for p in points if p.drop_bound <= max_drop), key=lambda p: (p.p50_ms, -p.score))


def drop_bound(labels: np.ndarray, teacher_preds: np.ndarray, preds: np.ndarray, *, metric: str,
               num_classes: int, confidence: float, seed: int, samples: int = 2000) -> float:
    """Upper end of the drop's one-sided ``confidence`` interval, in points (paired bootstrap,
    as the gate computes it). At 0.5 it is the drop itself."""
    drop = 100 * (score(labels, teacher_preds, metric, num_classes)
                  - score(labels, preds, metric, num_classes))
    if confidence <= 0.5 or np.array_equal(preds, teacher_preds):
        return round(float(drop), 2)
    _, high = paired_bootstrap_ci(labels, teacher_preds, preds, metric=metric, num_classes=num_classes,
                                  samples=samples, confidence=2 * confidence - 1, seed=seed)
    return round(max(float(drop), high), 2)


def resolution_points(examples: int, discordance: float = 0.05, z: float = 1.96) -> float:
    """Half-width in points of the 95% interval of a paired drop on this many examples, at this
    share of examples where teacher and candidate disagree: the inverse of examples_to_resolve."""
    return 100 * z * math.sqrt(discordance / max(examples, 1))


def examples_to_resolve(points: float, discordance: float = 0.05, z: float = 1.96) -> int:
    """Paired examples needed for a 95% interval of +-``points`` on a drop, at this share of
    examples where teacher and candidate disagree (5%: a close student)."""
    return math.ceil(z * z * discordance / (points / 100) ** 2)


def confirm(labels: np.ndarray, teacher_preds: np.ndarray, chosen_preds: np.ndarray, *, metric: str,
            num_classes: int, max_drop: float, confidence: float, seed: int,
            samples: int = 10_000) -> dict:
    """Drop of the chosen artifact against the teacher on test: point, CI and McNemar p."""
    base = score(labels, teacher_preds, metric, num_classes)
    cand = score(labels, chosen_preds, metric, num_classes)
    low, high = paired_bootstrap_ci(labels, teacher_preds, chosen_preds, metric=metric,
                                    num_classes=num_classes, samples=samples, confidence=confidence,
                                    seed=seed)
    b, c = discordant_pairs(labels, teacher_preds, chosen_preds)
    drop = 100 * (base - cand)
    return {"teacher_score": round(100 * base, 2), "test_score": round(100 * cand, 2),
            "test_drop_points": round(drop, 2), "ci_low": round(low, 2), "ci_high": round(high, 2),  # points
            "mcnemar_p": round(mcnemar_p(b, c), 4), "within_budget": drop <= max_drop,
            # what `slimbert gate`'s default verdict says: the interval's upper end within the budget
            "gate_passes": high <= max_drop}
