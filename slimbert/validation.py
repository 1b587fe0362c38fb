"""How far a converted or quantized model's outputs are from its source's, in one place.

Every exporter checks its file against PyTorch, and every quantizer measures what INT8 cost
on dev; they all compare logits the same way, count agreeing predictions the same way and
express an accuracy loss in the same unit (points, 0-100), so a manifest's numbers mean one
thing whichever stage wrote them.
"""

from __future__ import annotations

import numpy as np


def agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of examples whose predicted class (argmax of the logits) is the same in both."""
    return float((reference.argmax(-1) == candidate.argmax(-1)).mean())


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """The largest absolute logit difference and the prediction agreement."""
    return {
        "max_abs_diff": float(np.abs(reference - candidate).max()),
        "agreement": agreement(reference, candidate),
    }


def logit_mse(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean squared logit difference: a continuous score (a few hundred dev examples make
    accuracy too coarse to rank what a change did)."""
    return float(np.mean((candidate - reference) ** 2))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of examples whose predicted class is the label."""
    return float((logits.argmax(-1) == labels).mean())


def drop_points(reference_accuracy: float, candidate_accuracy: float) -> float:
    """Accuracy lost, in points (0-100): what every tolerance in a recipe is written in."""
    return 100 * (reference_accuracy - candidate_accuracy)
