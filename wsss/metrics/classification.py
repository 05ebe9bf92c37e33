"""Classifier metrics: per-class average precision and its mean (mAP)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class APResult:
    mean: float
    per_class: list[float | None]


def average_precision(scores: np.ndarray, targets: np.ndarray) -> APResult:
    """Per-class average precision (area under the precision-recall curve, step-wise, as in
    scikit-learn) and their mean over classes with at least one positive.

    ``scores``: (N, K) floats; ``targets``: (N, K) in {0, 1}.
    """
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets)
    per_class: list[float | None] = []
    for k in range(scores.shape[1]):
        positives = targets[:, k] > 0
        if not positives.any():
            per_class.append(None)
            continue
        order = np.argsort(-scores[:, k], kind="stable")
        s, hits = scores[order, k], positives[order]
        # Treat tied scores as one threshold: evaluate only at the last index of each tie run.
        last = np.r_[np.diff(s) != 0, True]
        tp = np.cumsum(hits)[last]
        precision = tp / (np.flatnonzero(last) + 1)
        recall = tp / positives.sum()
        per_class.append(float(np.sum(np.diff(np.r_[0.0, recall]) * precision)))
    valid = [a for a in per_class if a is not None]
    return APResult(float(np.mean(valid)) if valid else float("nan"), per_class)
