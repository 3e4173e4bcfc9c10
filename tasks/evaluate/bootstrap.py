"""Percentile-bootstrap confidence intervals of ROC AUC and of FNR at a fixed FPR.

A test split of a few hundred candidates, with a few dozen real ones, measures an AUC to a
few hundredths at best; the interval says how far. Resampling is **stratified by class**:
each resample draws ``n_real`` real and ``n_bogus`` bogus candidates with replacement from
their own class, so every resample holds both classes, the same class counts as the split,
and the same number ``k = floor(fpr * n_bogus)`` of bogus candidates may lie above the FNR
threshold. The interval is the percentile one: the ``(1 - level) / 2`` and ``(1 + level) / 2``
quantiles (``numpy.percentile``, linear interpolation) of the resampled statistic.

Why not ``scipy.stats.bootstrap``: it draws the same stratified resamples (two independent
samples, ``paired=False``), but each statistic would then sort every resample again, costing
``O(B n log n)``. Here the scores are sorted **once**; a resample is a vector of counts (how
often each candidate was drawn), and both statistics follow from cumulative sums of those
counts over the sorted scores in ``O(B n)``: about 0.3 s for 1,000 resamples of 20,000
candidates. The statistics equal :func:`.metrics.roc_auc` and :func:`.metrics.fnr_at_fpr` of
the resampled candidates exactly (ties included; ``tests/test_bootstrap.py`` checks this).

The same ``seed`` gives the same resamples for every model scored on the same rows, so the
intervals of two models on one split are paired: they come from the same resamples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["BOOTSTRAP_LEVEL", "BOOTSTRAP_RESAMPLES", "bootstrap_ci", "bootstrap_replicates"]

#: Resamples per interval.
BOOTSTRAP_RESAMPLES = 1000
#: Confidence level of the intervals.
BOOTSTRAP_LEVEL = 0.95
#: Cells (resamples x candidates) of the count matrices of one block: bounds the memory.
_BLOCK_CELLS = 2_000_000


def _sorted_classes(y: Any, score: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Scores of the real and of the bogus candidates, each sorted; None when undefined."""
    labels = np.asarray(y)
    values = np.asarray(score, np.float64)
    if labels.ndim != 1 or values.shape != labels.shape or not np.isin(labels, (0, 1)).all():
        raise ValueError("y must be 1-D 0/1 labels and score of the same shape")
    pos = labels.astype(bool)
    if pos.all() or not pos.any() or np.isnan(values).any():
        return None
    return np.sort(values[pos]), np.sort(values[~pos])


def _counts(rng: np.random.Generator, n_rows: int, n: int) -> np.ndarray:
    """How often each of ``n`` items is drawn in each of ``n_rows`` resamples of size ``n``.

    Returns int64, shape (n_rows, n); every row sums to ``n``.
    """
    draws = rng.integers(0, n, size=(n_rows, n)) + n * np.arange(n_rows)[:, None]
    return np.bincount(draws.ravel(), minlength=n_rows * n).reshape(n_rows, n)


def _leading_zero_cumsum(counts: np.ndarray) -> np.ndarray:
    """``out[:, j]``: the sum of the first ``j`` counts of each row; shape (b, n + 1)."""
    out = np.zeros((counts.shape[0], counts.shape[1] + 1), np.int64)
    np.cumsum(counts, axis=1, out=out[:, 1:])
    return out


def _statistics(
    pos: np.ndarray, neg: np.ndarray, pos_counts: np.ndarray, neg_counts: np.ndarray, fpr: float
) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and FNR at ``fpr`` of resamples given as counts over sorted scores.

    Parameters
    ----------
    pos, neg : numpy.ndarray of float64, shapes (n_pos,) and (n_neg,)
        Sorted scores of the real and of the bogus candidates (NaN-free).
    pos_counts, neg_counts : numpy.ndarray of int, shapes (b, n_pos) and (b, n_neg)
        Times each candidate is drawn in each of ``b`` resamples; rows sum to ``n_pos`` and
        ``n_neg``.
    fpr : float
        Allowed false-positive rate, in [0, 1].

    Returns
    -------
    auc, fnr : numpy.ndarray of float64, shape (b,)
        Per resample: the Mann-Whitney AUC (a tie counts one half) and the fraction of real
        candidates with ``score <= t``, ``t`` the ``(n_neg - k)``-th smallest drawn bogus
        score, ``k = floor(fpr * n_neg)`` (``-inf``, so FNR 0, when ``k = n_neg``).
    """
    n_pos, n_neg = len(pos), len(neg)
    neg_cum = _leading_zero_cumsum(neg_counts)  # drawn bogus among the j lowest
    below = neg_cum[:, np.searchsorted(neg, pos, side="left")]
    tied = neg_cum[:, np.searchsorted(neg, pos, side="right")] - below
    auc = (pos_counts * (below + 0.5 * tied)).sum(axis=1) / (n_pos * n_neg)
    allowed = math.floor(fpr * n_neg + 1e-9)  # as metrics.threshold_at_fpr
    if allowed >= n_neg:
        return auc, np.zeros(len(auc))
    # the (n_neg - allowed)-th smallest drawn bogus score: sorted slot j with cum[j+1] >= m
    slot = (neg_cum[:, 1:] < n_neg - allowed).sum(axis=1)
    threshold = neg[slot]
    at_or_below = np.searchsorted(pos, threshold, side="right")
    pos_cum = _leading_zero_cumsum(pos_counts)
    fnr = pos_cum[np.arange(len(slot)), at_or_below] / n_pos
    return auc, fnr


def bootstrap_replicates(
    y: Any,
    score: Any,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    fpr: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and FNR at ``fpr`` of ``n_resamples`` class-stratified bootstrap resamples.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real, 0 bogus.
    score : array-like of float, shape (n,)
        Higher means more likely real (any monotonic score; infinities allowed).
    n_resamples : int
        Resamples ``B`` (at least 1).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed and rows give the same resamples.
    fpr : float
        Allowed false-positive rate of the FNR threshold, in [0, 1].

    Returns
    -------
    auc, fnr : numpy.ndarray of float64, shape (B,)
        Dimensionless, in [0, 1]; all NaN when a class is absent or a score is NaN.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    classes = _sorted_classes(y, score)
    if classes is None:
        return np.full(n_resamples, np.nan), np.full(n_resamples, np.nan)
    pos, neg = classes
    rng = np.random.default_rng(seed)
    step = max(1, _BLOCK_CELLS // (len(pos) + len(neg)))
    auc, fnr = np.empty(n_resamples), np.empty(n_resamples)
    for start in range(0, n_resamples, step):
        rows = min(step, n_resamples - start)
        pos_counts, neg_counts = _counts(rng, rows, len(pos)), _counts(rng, rows, len(neg))
        block = slice(start, start + rows)
        auc[block], fnr[block] = _statistics(pos, neg, pos_counts, neg_counts, fpr)
    return auc, fnr


def bootstrap_ci(
    y: Any,
    score: Any,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = BOOTSTRAP_LEVEL,
    fpr: float = 0.01,
) -> dict[str, list[float]]:
    """Percentile-bootstrap intervals of ROC AUC and of FNR at ``fpr`` (class-stratified).

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real, 0 bogus.
    score : array-like of float, shape (n,)
        Higher means more likely real.
    n_resamples : int
        Resamples (default :data:`BOOTSTRAP_RESAMPLES`).
    seed : int
        Seed of the resampling (:func:`bootstrap_replicates`).
    level : float
        Confidence level, in (0, 1) (default 0.95: the 2.5th and 97.5th percentiles).
    fpr : float
        Allowed false-positive rate of the FNR threshold, in [0, 1].

    Returns
    -------
    dict
        ``roc_auc`` and ``fnr_at_fpr``: ``[lo, hi]`` (dimensionless, ``lo <= hi``); both
        ``[nan, nan]`` when a class is absent or a score is NaN.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    auc, fnr = bootstrap_replicates(y, score, n_resamples, seed, fpr)
    if np.isnan(auc).any():
        return {"roc_auc": [math.nan] * 2, "fnr_at_fpr": [math.nan] * 2}
    q = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    return {
        "roc_auc": np.percentile(auc, q).tolist(),
        "fnr_at_fpr": np.percentile(fnr, q).tolist(),
    }
