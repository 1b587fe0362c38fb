"""Sentence-embedding metrics, per example where the statistic allows (numpy only).

Per-example scores are what the gate's paired bootstrap resamples: the mean of a resample
is the metric on it. Spearman correlation is not a mean of anything, so it takes the
resample's indices and is recomputed on them.
"""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def cosine_fidelity(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine of each example's candidate and reference embeddings (1.0: the same direction)."""
    if candidate.shape != reference.shape:
        raise ValueError(f"embeddings of shape {candidate.shape} and {reference.shape} cannot be compared")
    return np.sum(_unit(candidate) * _unit(reference), axis=1)


def nearest(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Indices of each example's ``k`` nearest others by cosine, nearest first (itself excluded)."""
    n = len(embeddings)
    k = min(k, n - 1)
    if k < 1:
        raise ValueError("neighbours need at least two examples")
    unit = _unit(embeddings)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def neighbour_recall(candidate: np.ndarray, reference: np.ndarray, k: int = 10) -> np.ndarray:
    """Per example: the share of its ``k`` nearest reference neighbours the candidate keeps."""
    ref, cand = nearest(reference, k), nearest(candidate, k)
    width = ref.shape[1]
    return np.array([len(set(r) & set(c)) / width for r, c in zip(ref, cand, strict=True)])


def knn_correct(embeddings: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    """Per example: 1 where the majority label of its ``k`` nearest others is its own label.

    Leave-one-out within the split; ties go to the label whose neighbours are nearer in sum.
    """
    labels = np.asarray(labels)
    neighbours = nearest(embeddings, k)
    unit = _unit(embeddings)
    out = np.zeros(len(labels))
    for i, row in enumerate(neighbours):
        sims = unit[row] @ unit[i]
        votes: dict[int, tuple[int, float]] = {}
        for label, sim in zip(labels[row], sims, strict=True):
            count, total = votes.get(int(label), (0, 0.0))
            votes[int(label)] = (count + 1, total + float(sim))
        predicted = max(votes, key=lambda lab: votes[lab])
        out[i] = float(predicted == labels[i])
    return out


def pair_similarity(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair's two embeddings (what STS scores are compared with)."""
    return np.sum(_unit(first) * _unit(second), axis=1)


def spearman(similarity: np.ndarray, gold: np.ndarray, index: np.ndarray | None = None) -> float:
    """Spearman rank correlation of predicted similarities with human scores (on ``index``)."""
    from scipy.stats import spearmanr

    if index is not None:
        similarity, gold = similarity[index], gold[index]
    return float(spearmanr(similarity, gold).statistic)
