"""Metrics of a binary real/bogus classifier, as plain numpy functions.

Conventions
-----------
- Labels: 1 real (positive), 0 bogus. Scores: higher means more likely real (logits,
  probabilities or any monotonic score).
- A candidate is *called real* when its score is **strictly above** the threshold.
- Undefined values (a class absent, empty input) are NaN, never an exception.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "binary_metrics",
    "fnr_at_fpr",
    "majority_accuracy",
    "roc_auc",
    "roc_curve",
]


def _binary(y: Any, name: str = "y") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be a 1-D array of 0/1 labels")
    return arr.astype(bool)


def roc_auc(y: Any, score: Any) -> float:
    """Area under the ROC curve, by ranks (Mann-Whitney U).

    ``AUC = (sum of the ranks of the positives - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``
    with tied scores given their average rank, so a tie between a positive and a negative
    counts one half.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real (positive), 0 bogus.
    score : array-like of float, shape (n,)
        Higher means more likely real (logits or probabilities).

    Returns
    -------
    float
        In [0, 1]; NaN when either class is absent or any score is NaN.
    """
    pos = _binary(y)
    score = np.asarray(score, np.float64)
    if score.shape != pos.shape:
        raise ValueError(f"score shape {score.shape} != y shape {pos.shape}")
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0 or np.isnan(score).any():
        return float("nan")
    ranks = rankdata(score)  # ties get the mean of the ranks they span
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def fnr_at_fpr(y: Any, score: Any, fpr: float = 0.01) -> float:
    """False-negative rate at the lowest threshold whose false-positive rate is <= ``fpr``.

    A candidate is called real when ``score > threshold``. With ``k = floor(fpr * n_neg)``
    negatives allowed above it, the threshold is the ``(n_neg - k)``-th smallest negative
    score (``-inf`` when ``k = n_neg``); FNR is the fraction of positives with
    ``score <= threshold``.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real, 0 bogus.
    score : array-like of float, shape (n,)
        Higher means more likely real.
    fpr : float
        Allowed false-positive rate, in [0, 1].

    Returns
    -------
    float
        In [0, 1]; NaN when either class is absent or any score is NaN.
    """
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    pos = _binary(y)
    score = np.asarray(score, np.float64)
    if score.shape != pos.shape:
        raise ValueError(f"score shape {score.shape} != y shape {pos.shape}")
    negatives = np.sort(score[~pos])
    if not pos.any() or len(negatives) == 0 or np.isnan(score).any():
        return float("nan")
    allowed = math.floor(fpr * len(negatives) + 1e-9)  # guard 0.29 * 100 = 28.999...
    threshold = -np.inf if allowed >= len(negatives) else negatives[-allowed - 1]
    return float(np.mean(score[pos] <= threshold))


def binary_metrics(y: Any, prob: Any, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision and recall when calling real ``prob > threshold``.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real, 0 bogus.
    prob : array-like of float, shape (n,)
        Probability of being real, in [0, 1].
    threshold : float

    Returns
    -------
    dict
        ``accuracy``, ``precision`` (NaN when nothing is called real), ``recall`` (NaN
        when there is no real candidate); all NaN for empty input.
    """
    truth = _binary(y)
    pred = np.asarray(prob, np.float64) > threshold
    if pred.shape != truth.shape:
        raise ValueError(f"prob shape {pred.shape} != y shape {truth.shape}")
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    nan = float("nan")
    return {
        "accuracy": float(np.mean(pred == truth)) if len(truth) else nan,
        "precision": tp / (tp + fp) if tp + fp else nan,
        "recall": tp / (tp + fn) if tp + fn else nan,
    }


def majority_accuracy(y_train: Any, y_val: Any) -> float:
    """Accuracy on ``y_val`` of always predicting the majority class of ``y_train``.

    A tie in ``y_train`` predicts bogus (0). NaN when either array is empty.
    """
    train, val = _binary(y_train, "y_train"), _binary(y_val, "y_val")
    if len(train) == 0 or len(val) == 0:
        return float("nan")
    majority = bool(train.sum() * 2 > len(train))
    return float(np.mean(val == majority))


def roc_curve(y: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score threshold (from (0, 0) to (1, 1))."""
    y = _binary(y)
    score = np.asarray(score, np.float64)
    if y.all() or not y.any():
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    order = np.argsort(-score, kind="stable")
    s, t = score[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # end of each tie group
    tps, fps = np.cumsum(t)[last], np.cumsum(~t)[last]
    return np.r_[0.0, fps / (~y).sum()], np.r_[0.0, tps / y.sum()]
