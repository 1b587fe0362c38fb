"""Classification metrics computed from integer predictions (numpy only)."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> dict:
    """Accuracy and macro-F1, plus Matthews correlation for binary tasks."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    if labels.size == 0:
        raise ValueError("cannot score an empty split")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, preds), 1)
    tp = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0).astype(float)
    actual = confusion.sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(predicted + actual > 0, 2 * tp / (predicted + actual), 0.0)
    present = actual > 0
    metrics = {
        "accuracy": float(tp.sum() / labels.size),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n": int(labels.size),
    }
    if num_classes == 2:
        (tn, fp), (fn, tp1) = confusion
        denom = np.sqrt(float((tp1 + fp) * (tp1 + fn) * (tn + fp) * (tn + fn)))
        metrics["mcc"] = float((tp1 * tn - fp * fn) / denom) if denom else 0.0
    return metrics
