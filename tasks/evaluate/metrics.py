"""Metrics of a binary real/bogus classifier: scikit-learn's, and what it lacks.

ROC and precision-recall curves, ROC AUC and average precision are scikit-learn's
(``sklearn.metrics``), wrapped only to keep this module's conventions (NaN instead of an
exception or a warning when a class is absent; infinite scores allowed). Written here,
because scikit-learn has no such function: the threshold at a target false-positive rate,
the rates at a threshold as one dict, completeness by magnitude, the false-positive rate
per bogus kind, and the calibration table. scikit-learn's ``calibration_curve`` puts a
probability that lies on a bin edge into the lower bin, drops empty bins and gives no
counts; the table here keeps bins ``[lo, hi)`` with exact edges ``i / n_bins`` and is
tested against ``calibration_curve`` away from the edges.

Conventions
-----------
- Labels: 1 real (positive), 0 bogus. Scores: higher means more likely real (logits,
  probabilities or any monotonic score).
- A candidate is *called real* when its score is **strictly above** the threshold.
- Undefined values (a class absent, empty input) are NaN, never an exception.

Threshold-free metrics (:func:`roc_auc`, :func:`pr_auc`, :func:`fnr_at_fpr`) rank the scores;
the rates of :func:`rates_at_threshold` need a threshold, chosen on the validation split with
:func:`threshold_at_fpr` and applied unchanged to the test split. Calibration
(:func:`expected_calibration_error`, :func:`reliability_table`) needs probabilities in [0, 1].
:func:`evaluate` gathers one block of all of these for one model on one split, with 95 %
percentile-bootstrap intervals of ROC AUC and FNR at 1 % FPR when asked (:mod:`.bootstrap`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from croissant_cutouts.tasks.evaluate.bootstrap import bootstrap_ci

__all__ = [
    "RATE_KEYS",
    "binary_metrics",
    "completeness_by_mag",
    "evaluate",
    "expected_calibration_error",
    "fnr_at_fpr",
    "fpr_by_kind",
    "mag_bins",
    "majority_accuracy",
    "pr_auc",
    "pr_curve",
    "rates_at_threshold",
    "reliability_table",
    "roc_auc",
    "roc_curve",
    "threshold_at_fpr",
]

#: The keys of :func:`rates_at_threshold` that :func:`evaluate` copies (the counts stay out).
RATE_KEYS = ("tpr", "fpr", "fnr", "precision", "accuracy", "f1")

_NAN = float("nan")


def _binary(y: Any, name: str = "y") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be a 1-D array of 0/1 labels")
    return arr.astype(bool)


def _scored(y: Any, score: Any, name: str = "score") -> tuple[np.ndarray, np.ndarray]:
    """Labels as bool and scores as float64, of the same shape."""
    pos = _binary(y)
    values = np.asarray(score, np.float64)
    if values.shape != pos.shape:
        raise ValueError(f"{name} shape {values.shape} != y shape {pos.shape}")
    return pos, values


def _ratio(num: float, den: float) -> float:
    """``num / den`` as a float; NaN when ``den`` is 0."""
    return num / den if den else _NAN


def _ordered(score: np.ndarray) -> np.ndarray:
    """``score`` with infinities and NaN moved just outside the finite range, order kept.

    scikit-learn takes finite scores only; ``-inf`` (never real) becomes the next float
    below the lowest finite score, NaN the one below that, ``+inf`` the next above the
    highest. Ties stay ties, so every curve and area is unchanged.
    """
    finite = np.isfinite(score)
    if finite.all():
        return score
    lo, hi = (score[finite].min(), score[finite].max()) if finite.any() else (0.0, 0.0)
    below = np.nextafter(lo, -np.inf)
    out = score.copy()
    out[score == -np.inf] = below
    out[np.isnan(score)] = np.nextafter(below, -np.inf)
    out[score == np.inf] = np.nextafter(hi, np.inf)
    return out


def roc_auc(y: Any, score: Any) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``).

    Equal to the Mann-Whitney U statistic over ``n_pos n_neg``: a tie between a positive
    and a negative counts one half.

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
    pos, score = _scored(y, score)
    if pos.all() or not pos.any() or np.isnan(score).any():
        return _NAN
    return float(skm.roc_auc_score(pos, _ordered(score)))


def pr_auc(y: Any, score: Any) -> float:
    """Average precision: the area under the step-wise precision-recall curve.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct scores ``s_n`` from the highest to
    the lowest, where ``P_n`` and ``R_n`` are the precision and recall when calling real every
    candidate with ``score >= s_n`` (tied scores enter together) and ``R_0 = 0``:
    ``sklearn.metrics.average_precision_score`` (no interpolation). A classifier that
    ranks at random scores about the prevalence ``n_pos / n``.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real (positive), 0 bogus.
    score : array-like of float, shape (n,)
        Higher means more likely real.

    Returns
    -------
    float
        In [0, 1]; 1.0 when every candidate is real; NaN when there is no real candidate
        (empty input included) or any score is NaN.
    """
    pos, score = _scored(y, score)
    if not pos.any() or np.isnan(score).any():
        return _NAN
    if pos.all():
        return 1.0
    return float(skm.average_precision_score(pos, _ordered(score)))


def pr_curve(y: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score threshold, for plotting.

    Point 0 is the start ``(recall 0, precision 1)``; point ``n >= 1`` calls real every
    candidate with ``score >= s_n``, ``s_1 > s_2 > ...`` the distinct scores, so recall rises
    to 1 at the last point (``sklearn.metrics.precision_recall_curve``, in rising recall).
    Drawn as steps (``drawstyle="steps-pre"``), the area under the curve is :func:`pr_auc`.
    NaN scores rank below every other score, tied.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real (positive), 0 bogus.
    score : array-like of float, shape (n,)
        Higher means more likely real.

    Returns
    -------
    precision, recall : numpy.ndarray of float64, shape (n_distinct + 1,)
        Recall non-decreasing from 0 to 1. Without a real candidate (recall undefined), only
        the start point: ``([1.0], [0.0])``.
    """
    pos, score = _scored(y, score)
    if not pos.any():
        return np.array([1.0]), np.array([0.0])
    precision, recall, _ = skm.precision_recall_curve(
        pos, _ordered(score), drop_intermediate=False
    )
    return precision[::-1].copy(), recall[::-1].copy()


def threshold_at_fpr(y: Any, score: Any, fpr: float = 0.01) -> float:
    """The lowest threshold whose false-positive rate is <= ``fpr``.

    A candidate is called real when ``score > threshold``. With ``k = floor(fpr * n_neg)``
    negatives allowed above it, the threshold is the ``(n_neg - k)``-th smallest negative
    score (``-inf`` when ``k = n_neg``: everything is called real). Tied negatives at the
    threshold are all called bogus, so the FPR on these data is ``<= k / n_neg <= fpr``.

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
        In the units of ``score``; NaN when either class is absent or any score is NaN.

    Raises
    ------
    ValueError
        ``fpr`` outside [0, 1].
    """
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    pos, score = _scored(y, score)
    negatives = np.sort(score[~pos])
    if not pos.any() or len(negatives) == 0 or np.isnan(score).any():
        return _NAN
    allowed = math.floor(fpr * len(negatives) + 1e-9)  # guard 0.29 * 100 = 28.999...
    return -math.inf if allowed >= len(negatives) else float(negatives[-allowed - 1])


def fnr_at_fpr(y: Any, score: Any, fpr: float = 0.01) -> float:
    """False-negative rate at the lowest threshold whose false-positive rate is <= ``fpr``.

    A candidate is called real when ``score > threshold``. With ``k = floor(fpr * n_neg)``
    negatives allowed above it, the threshold is the ``(n_neg - k)``-th smallest negative
    score (``-inf`` when ``k = n_neg``; :func:`threshold_at_fpr`); FNR is the fraction of
    positives with ``score <= threshold``.

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
    threshold = threshold_at_fpr(y, score, fpr)
    if math.isnan(threshold):
        return _NAN
    pos, score = _scored(y, score)
    return float(np.mean(score[pos] <= threshold))


def rates_at_threshold(y: Any, score: Any, threshold: float) -> dict[str, float]:
    """Confusion counts and rates when calling real ``score > threshold``.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real, 0 bogus.
    score : array-like of float, shape (n,)
        Higher means more likely real.
    threshold : float
        In the units of ``score``; ``-inf`` calls everything real, ``+inf`` nothing.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``tn``, ``fn`` (int); ``tpr = tp / (tp + fn)``, ``fpr = fp / (fp +
        tn)``, ``fnr = fn / (tp + fn)``, ``precision = tp / (tp + fp)``, ``accuracy = (tp +
        tn) / n``, ``f1 = 2 tp / (2 tp + fp + fn)`` (float, NaN when the denominator is 0).
        A NaN threshold (none could be chosen) or any NaN score makes every entry NaN,
        the counts included.
    """
    pos, score = _scored(y, score)
    if math.isnan(threshold) or np.isnan(score).any():
        return dict.fromkeys(("tp", "fp", "tn", "fn", *RATE_KEYS), _NAN)
    called = score > threshold
    tp = int((called & pos).sum())
    fp = int((called & ~pos).sum())
    fn = int((~called & pos).sum())
    tn = len(pos) - tp - fp - fn
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "tpr": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
        "fnr": _ratio(fn, tp + fn),
        "precision": _ratio(tp, tp + fp),
        "accuracy": _ratio(tp + tn, len(pos)),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


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
    """False- and true-positive rates at every distinct score threshold, (0, 0) to (1, 1).

    ``sklearn.metrics.roc_curve`` with every point kept; with one class only, the diagonal.
    NaN scores rank below every other score, tied.
    """
    pos, score = _scored(y, score)
    if pos.all() or not pos.any():
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    fpr, tpr, _ = skm.roc_curve(pos, _ordered(score), drop_intermediate=False)
    return fpr, tpr


# --------------------------------------------------------------------------- calibration


def _prob_bins(
    y: Any, prob: Any, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities, bin edges and the bin of every finite probability.

    Bin ``i`` holds ``i / n_bins <= prob < (i + 1) / n_bins``; the last bin also holds 1.
    The bin index of a NaN probability is ``n_bins`` (outside every bin).
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    truth, p = _scored(y, prob, "prob")
    finite = ~np.isnan(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError("prob must lie in [0, 1] (probabilities, not logits)")
    edges = np.arange(n_bins + 1) / n_bins  # exactly i / n_bins, as the bins are defined
    idx = np.minimum(np.searchsorted(edges, p, side="right") - 1, n_bins - 1)
    return truth, p, edges, np.where(finite, idx, n_bins)


def expected_calibration_error(y: Any, prob: Any, n_bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins.

    ``ECE = sum_b (n_b / N) |frac_real_b - mean_prob_b|``, with bin ``b`` holding
    ``b / n_bins <= prob < (b + 1) / n_bins`` (the last bin also holds 1.0); empty bins add
    nothing. 0 for a perfectly calibrated model; a constant probability ``c`` scores
    ``|prevalence - c|``.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real, 0 bogus.
    prob : array-like of float, shape (n,)
        Probability of being real, in [0, 1] (e.g. ``sigmoid(logit)``).
    n_bins : int
        Number of bins, >= 1.

    Returns
    -------
    float
        In [0, 1]; NaN for empty input or any NaN probability.

    Raises
    ------
    ValueError
        A probability outside [0, 1] (infinities included), or ``n_bins < 1``.
    """
    truth, p, _, idx = _prob_bins(y, prob, n_bins)
    if len(p) == 0 or np.isnan(p).any():
        return _NAN
    # (n_b / N) |sum_y_b / n_b - sum_p_b / n_b| = |sum_y_b - sum_p_b| / N
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=truth, minlength=n_bins)
    return float(np.abs(sum_y - sum_p).sum() / len(p))


def reliability_table(y: Any, prob: Any, n_bins: int = 10) -> pd.DataFrame:
    """Calibration per equal-width probability bin (the data of a reliability diagram).

    Bins as in :func:`expected_calibration_error`.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real, 0 bogus.
    prob : array-like of float, shape (n,)
        Probability of being real, in [0, 1].
    n_bins : int
        Number of bins, >= 1.

    Returns
    -------
    pandas.DataFrame
        ``n_bins`` rows, columns ``bin_lo``, ``bin_hi`` (float), ``n`` (int, candidates in
        the bin), ``mean_prob`` (mean probability), ``frac_real`` (fraction labelled real);
        the last two NaN for an empty bin, and in every bin when any probability is NaN
        (``n`` then counts the finite ones).

    Raises
    ------
    ValueError
        A probability outside [0, 1], or ``n_bins < 1``.
    """
    truth, p, edges, idx = _prob_bins(y, prob, n_bins)
    finite = idx < n_bins
    n = np.bincount(idx[finite], minlength=n_bins)
    sum_p = np.bincount(idx[finite], weights=p[finite], minlength=n_bins)
    sum_y = np.bincount(idx[finite], weights=truth[finite], minlength=n_bins)
    defined = (n > 0) & bool(finite.all())
    mean_prob = np.divide(sum_p, n, out=np.full(n_bins, np.nan), where=defined)
    frac_real = np.divide(sum_y, n, out=np.full(n_bins, np.nan), where=defined)
    return pd.DataFrame(
        {
            "bin_lo": edges[:-1],
            "bin_hi": edges[1:],
            "n": n.astype(np.int64),
            "mean_prob": mean_prob,
            "frac_real": frac_real,
        }
    )


# --------------------------------------------------------------------------- breakdowns


def mag_bins(mag: Any, width: float = 0.5) -> np.ndarray:
    """Magnitude bin edges on a grid of ``width`` that cover every finite magnitude.

    From ``floor(min / width) * width`` to ``ceil(max / width) * width``, step ``width``; at
    least one bin (a single magnitude on a grid line gets ``[m, m + width]``).

    Parameters
    ----------
    mag : array-like of float
        Magnitudes (AB); NaN, infinities and None are ignored.
    width : float
        Bin width in magnitudes, > 0.

    Returns
    -------
    numpy.ndarray of float64, shape (n_bins + 1,)
        Increasing edges; empty when there is no finite magnitude.

    Raises
    ------
    ValueError
        ``width`` not positive and finite.
    """
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a positive number, got {width}")
    values = np.asarray(mag, np.float64).ravel()
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.empty(0, np.float64)
    lo_k = math.floor(values.min() / width)
    hi_k = max(math.ceil(values.max() / width), lo_k + 1)
    edges = np.arange(lo_k, hi_k + 1) * width
    # floating point: a grid line computed as k * width may land just past the data
    if edges[0] > values.min():
        edges = np.r_[edges[0] - width, edges]
    if edges[-1] < values.max():
        edges = np.r_[edges, edges[-1] + width]
    return edges


def completeness_by_mag(y: Any, called: Any, mag: Any, edges: Any) -> pd.DataFrame:
    """Fraction of real candidates called real, per bin of true magnitude.

    Only rows with ``y == 1`` and a finite ``mag`` count. Bin ``i`` holds ``edges[i] <=
    mag < edges[i + 1]``; the last bin also holds ``edges[-1]``; magnitudes outside the
    edges are left out.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real, 0 bogus.
    called : array-like of bool, shape (n,)
        True where the classifier calls the candidate real (``score > threshold``).
    mag : array-like of float, shape (n,)
        Truth magnitude (AB) of the matched injection; NaN/None where there is none.
    edges : array-like of float, shape (n_bins + 1,)
        Strictly increasing bin edges (e.g. :func:`mag_bins`).

    Returns
    -------
    pandas.DataFrame
        One row per bin (none when fewer than 2 edges), columns ``mag_lo``, ``mag_hi``
        (float), ``n_real``, ``recovered`` (int), ``completeness = recovered / n_real``
        (float, NaN for an empty bin).

    Raises
    ------
    ValueError
        Shapes differ, or ``edges`` is not 1-D, finite and strictly increasing.
    """
    truth = _binary(y)
    hit = _binary(called, "called")
    m = np.asarray(mag, np.float64)
    e = np.asarray(edges, np.float64)
    if hit.shape != truth.shape or m.shape != truth.shape:
        raise ValueError(f"called {hit.shape} and mag {m.shape} must match y {truth.shape}")
    if e.ndim != 1 or not np.isfinite(e).all() or (np.diff(e) <= 0).any():
        raise ValueError("edges must be a 1-D, finite, strictly increasing array")
    n_bins = max(len(e) - 1, 0)
    if n_bins:
        keep = truth & np.isfinite(m) & (m >= e[0]) & (m <= e[-1])
        idx = np.minimum(np.searchsorted(e, m[keep], side="right") - 1, n_bins - 1)
        n_real = np.bincount(idx, minlength=n_bins)
        recovered = np.bincount(idx[hit[keep]], minlength=n_bins)
    else:
        n_real = recovered = np.zeros(0, np.int64)
    completeness = np.divide(
        recovered, n_real, out=np.full(n_bins, np.nan), where=n_real > 0, casting="unsafe"
    )
    return pd.DataFrame(
        {
            "mag_lo": e[:-1] if n_bins else np.zeros(0),
            "mag_hi": e[1:] if n_bins else np.zeros(0),
            "n_real": n_real.astype(np.int64),
            "recovered": recovered.astype(np.int64),
            "completeness": completeness,
        }
    )


def fpr_by_kind(y: Any, called: Any, kind: Any) -> pd.DataFrame:
    """False-positive rate per kind of bogus candidate.

    Only rows with ``y == 0`` and a known kind count; None, NaN and empty (or blank)
    strings mean unknown.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real, 0 bogus.
    called : array-like of bool, shape (n,)
        True where the classifier calls the candidate real.
    kind : array-like, shape (n,)
        Kind of bogus (e.g. ``"cosmic_ray"``); compared as stripped strings.

    Returns
    -------
    pandas.DataFrame
        One row per kind, sorted by kind; columns ``kind`` (str), ``n_bogus``,
        ``false_positives`` (int), ``fpr = false_positives / n_bogus`` (float).
    """
    truth = _binary(y)
    hit = _binary(called, "called")
    kinds = pd.Series(np.asarray(kind, dtype=object))
    if hit.shape != truth.shape or kinds.shape != truth.shape:
        raise ValueError(f"called {hit.shape} and kind {kinds.shape} must match y {truth.shape}")
    known = kinds.notna().to_numpy()
    text = kinds.where(known, "").astype(str).str.strip().to_numpy(dtype=str)
    keep = ~truth & known & (text != "")
    names, idx = np.unique(text[keep], return_inverse=True)
    n_bogus = np.bincount(idx, minlength=len(names))
    false_positives = np.bincount(idx[hit[keep]], minlength=len(names))
    return pd.DataFrame(
        {
            "kind": names.astype(object),
            "n_bogus": n_bogus.astype(np.int64),
            "false_positives": false_positives.astype(np.int64),
            "fpr": false_positives / np.maximum(n_bogus, 1),
        }
    )


# --------------------------------------------------------------------------- one block


def evaluate(
    y: Any,
    score: Any,
    threshold: float | None,
    prob: Any = None,
    resamples: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of one model on one split, as one flat dict.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        1 real, 0 bogus.
    score : array-like of float, shape (n,)
        Higher means more likely real (logits, probabilities or any score).
    threshold : float or None
        Decision threshold in the units of ``score``, chosen elsewhere (on the validation
        split, e.g. by :func:`threshold_at_fpr`); None or NaN when none could be chosen.
    prob : array-like of float, shape (n,), optional
        Probability of being real, in [0, 1], for the calibration error; None when the score
        is not a probability.
    resamples : int
        With ``resamples > 0``, also the 95 % percentile-bootstrap intervals of ``roc_auc``
        and ``fnr_at_1pct_fpr`` from that many class-stratified resamples of the rows
        (:func:`.bootstrap.bootstrap_ci`); 0: no intervals.
    seed : int
        Seed of the resampling: the same seed and rows give the same resamples.

    Returns
    -------
    dict
        ``n``, ``real``, ``bogus`` (int); threshold-free ``roc_auc``, ``pr_auc``,
        ``fnr_at_1pct_fpr`` (at the threshold that gives FPR <= 1 % on *this* split);
        with ``resamples``, ``roc_auc_ci95`` and ``fnr_at_1pct_fpr_ci95`` (``[lo, hi]``,
        dimensionless) right after their point values; ``threshold`` (float); at that
        threshold ``tpr``, ``fpr``, ``fnr``, ``precision``, ``accuracy``, ``f1``
        (:func:`rates_at_threshold`); ``ece`` (:func:`expected_calibration_error` with 10
        bins, NaN without ``prob``). Undefined values are NaN.
    """
    pos, values = _scored(y, score)
    t = _NAN if threshold is None else float(threshold)
    rates = rates_at_threshold(pos, values, t)
    block: dict[str, Any] = {
        "n": len(pos),
        "real": int(pos.sum()),
        "bogus": int((~pos).sum()),
        "roc_auc": roc_auc(pos, values),
    }
    ci = bootstrap_ci(pos, values, resamples, seed, fpr=0.01) if resamples > 0 else None
    if ci is not None:
        block["roc_auc_ci95"] = ci["roc_auc"]
    block["pr_auc"] = pr_auc(pos, values)
    block["fnr_at_1pct_fpr"] = fnr_at_fpr(pos, values, 0.01)
    if ci is not None:
        block["fnr_at_1pct_fpr_ci95"] = ci["fnr_at_fpr"]
    return {
        **block,
        "threshold": t,
        **{key: rates[key] for key in RATE_KEYS},
        "ece": _NAN if prob is None else expected_calibration_error(pos, prob),
    }
