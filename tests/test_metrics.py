"""Metrics by hand on tiny inputs, against scikit-learn on random data, and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from croissant_cutouts.tasks.evaluate.metrics import (
    RATE_KEYS,
    completeness_by_mag,
    evaluate,
    expected_calibration_error,
    fnr_at_fpr,
    fpr_by_kind,
    mag_bins,
    pr_auc,
    pr_curve,
    rates_at_threshold,
    reliability_table,
    roc_auc,
    roc_curve,
    threshold_at_fpr,
)

nan = float("nan")


@pytest.fixture(scope="module", autouse=True)
def prefect_backend():
    """Replaces conftest's session-wide Prefect server here: pure numpy needs none (saves ~8 s)."""
    yield


def random_scored(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random labels and scores rounded to one decimal, so that ties are common."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)  # both classes
    return y, np.round(rng.normal(size=n) + y, 1)


# --------------------------------------------------------------------------- PR


@pytest.mark.parametrize(
    ("y", "score", "expected"),
    [
        # thresholds 0.9, 0.8, 0.3, 0.1: (R, P) = (.5, 1), (.5, .5), (1, 2/3), (1, .5)
        # AP = .5 * 1 + 0 * .5 + .5 * 2/3 + 0 * .5 = 5/6
        ([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1], 5 / 6),
        # tie at 0.8 enters at once: (R, P) = (.5, .5), then (1, 2/3): .25 + 1/3 = 7/12
        ([1, 0, 1, 0], [0.8, 0.8, 0.3, 0.1], 7 / 12),
        ([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied: the prevalence
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),  # perfect
        # inverted: (R, P) = (0, 0), (0, 0), (.5, 1/3), (1, .5): .5/3 + .5 * .5 = 5/12
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 5 / 12),
        ([1, 1], [0.3, -2.0], 1.0),  # no negative: every call is right
    ],
)
def test_pr_auc_by_hand(y, score, expected):
    assert pr_auc(np.array(y), np.array(score)) == pytest.approx(expected)


@pytest.mark.parametrize(("y", "score"), [([0, 0], [0.1, 0.2]), ([], []), ([0, 1], [0.1, np.nan])])
def test_pr_auc_undefined_is_nan(y, score):
    assert math.isnan(pr_auc(np.array(y, int), np.array(score, float)))


@pytest.mark.parametrize("seed", range(20))
def test_pr_auc_and_roc_auc_match_sklearn(seed):
    y, score = random_scored(seed, 5 + 7 * seed)
    assert pr_auc(y, score) == pytest.approx(average_precision_score(y, score), abs=1e-12)
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_roc_auc_is_the_mann_whitney_statistic(seed):
    """A direct computation, independent of scikit-learn: ranks with ties averaged."""
    from scipy.stats import rankdata

    y, score = random_scored(seed, 9 + 11 * seed)
    score = np.round(score, 1)  # ties between classes
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    u = rankdata(score)[y == 1].sum() - n_pos * (n_pos + 1) / 2
    assert roc_auc(y, score) == pytest.approx(u / (n_pos * n_neg), abs=1e-12)


def test_infinite_scores_rank_outside_the_finite_ones():
    """-inf is never real, +inf always: as if they were just below and above the rest."""
    y = np.array([1, 0, 1, 0, 0, 1])
    score = np.array([np.inf, -np.inf, 0.3, -np.inf, 0.5, 0.2])
    stand_in = np.array([9.0, -9.0, 0.3, -9.0, 0.5, 0.2])
    assert roc_auc(y, score) == roc_auc(y, stand_in)
    assert pr_auc(y, score) == pr_auc(y, stand_in)
    for curve in (roc_curve, pr_curve):
        for got, want in zip(curve(y, score), curve(y, stand_in), strict=True):
            np.testing.assert_array_equal(got, want)
    assert math.isnan(roc_auc(y, np.array([1.0, nan, 0, 0, 0, 0])))


def test_pr_curve_by_hand():
    precision, recall = pr_curve(np.array([1, 0, 1, 0]), np.array([0.8, 0.8, 0.3, 0.1]))
    # start (R 0, P 1); tie 0.8: 1 tp 1 fp; 0.3: 2 tp 1 fp; 0.1: 2 tp 2 fp
    np.testing.assert_allclose(precision, [1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0, 0.5, 1, 1])
    precision, recall = pr_curve(np.array([0, 0]), np.array([0.1, 0.2]))
    assert precision.tolist() == [1.0] and recall.tolist() == [0.0]


def test_pr_curve_steps_integrate_to_pr_auc():
    y, score = random_scored(7, 80)
    precision, recall = pr_curve(y, score)
    assert recall[0] == 0 and recall[-1] == 1 and (np.diff(recall) >= 0).all()
    assert np.sum(np.diff(recall) * precision[1:]) == pytest.approx(pr_auc(y, score))


def test_roc_curve_area_is_roc_auc():
    y, score = random_scored(3, 90)
    fpr, tpr = roc_curve(y, score)
    area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)  # trapezoids: a tie counts 1/2
    assert area == pytest.approx(roc_auc(y, score))


# --------------------------------------------------------------------------- thresholds


def test_threshold_at_fpr_by_hand():
    y = np.array([0, 0, 0, 0, 1, 1])
    score = np.array([0.0, 1.0, 2.0, 3.0, 2.0, 2.5])
    assert threshold_at_fpr(y, score, 0.25) == 2.0  # k = 1 negative above: 3
    assert threshold_at_fpr(y, score, 0.0) == 3.0  # k = 0: the highest negative
    assert threshold_at_fpr(y, score, 0.5) == 1.0  # k = 2: 2 and 3 above
    assert threshold_at_fpr(y, score, 0.74) == 1.0  # k = floor(2.96) = 2
    assert threshold_at_fpr(y, score, 1.0) == -math.inf  # k = n_neg: everything called real
    # ties: negatives [1, 2, 2, 3]; k = 1 -> 3rd smallest is 2: both 2s are called bogus
    assert threshold_at_fpr(np.array([0, 0, 0, 0, 1]), np.array([1, 2, 2, 3, 5.0]), 0.25) == 2.0
    with pytest.raises(ValueError, match="fpr"):
        threshold_at_fpr(y, score, 1.5)


@pytest.mark.parametrize(
    ("y", "score"),
    [([0, 0, 0], [0.1, 0.2, 0.3]), ([1, 1], [0.1, 0.2]), ([], []), ([0, 1], [nan, 0.2])],
)
def test_threshold_at_fpr_undefined_is_nan(y, score):
    assert math.isnan(threshold_at_fpr(np.array(y, int), np.array(score, float)))
    assert math.isnan(fnr_at_fpr(np.array(y, int), np.array(score, float)))


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.1, 0.29, 0.5, 1.0])
def test_threshold_at_fpr_is_the_lowest_meeting_fpr(fpr):
    y, score = random_scored(11, 300)
    t = threshold_at_fpr(y, score, fpr)
    negatives = score[y == 0]
    assert np.mean(negatives > t) <= fpr + 1e-12  # FPR on its own data <= fpr
    lower = negatives[negatives < t]
    if len(lower):  # the next lower candidate threshold breaks the bound
        assert np.mean(negatives > lower.max()) > fpr
    # fnr_at_fpr is the FNR at that threshold
    assert fnr_at_fpr(y, score, fpr) == rates_at_threshold(y, score, t)["fnr"]


def test_rates_at_threshold_by_hand():
    y = np.array([1, 0, 1, 0, 1])
    score = np.array([0.9, 0.6, 0.2, 0.5, 0.5])
    # called (> 0.5): 0.9 (real), 0.6 (bogus); 0.5 is not above 0.5
    r = rates_at_threshold(y, score, 0.5)
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (1, 1, 1, 2)
    assert all(isinstance(r[k], int) for k in ("tp", "fp", "tn", "fn"))
    assert r["tpr"] == pytest.approx(1 / 3) and r["fnr"] == pytest.approx(2 / 3)
    assert r["fpr"] == 0.5 and r["precision"] == 0.5
    assert r["accuracy"] == pytest.approx(2 / 5)
    assert r["f1"] == pytest.approx(2 / 5)  # 2 tp / (2 tp + fp + fn) = 2 / 5
    everything = rates_at_threshold(y, score, -math.inf)
    assert everything["tpr"] == 1 and everything["fpr"] == 1 and everything["fnr"] == 0
    nothing = rates_at_threshold(y, score, math.inf)
    assert math.isnan(nothing["precision"]) and nothing["f1"] == 0 and nothing["tpr"] == 0


def test_rates_at_threshold_undefined():
    bogus_only = rates_at_threshold(np.array([0, 0]), np.array([0.1, 0.9]), 0.5)
    assert (bogus_only["tp"], bogus_only["fp"], bogus_only["tn"], bogus_only["fn"]) == (0, 1, 1, 0)
    assert math.isnan(bogus_only["tpr"]) and math.isnan(bogus_only["fnr"])
    assert bogus_only["fpr"] == 0.5 and bogus_only["precision"] == 0
    empty = rates_at_threshold(np.array([], int), np.array([]), 0.5)
    assert empty["tp"] == 0 and all(math.isnan(empty[k]) for k in RATE_KEYS)
    for r in (
        rates_at_threshold(np.array([0, 1]), np.array([0.1, 0.9]), nan),  # no threshold
        rates_at_threshold(np.array([0, 1]), np.array([0.1, nan]), 0.5),  # a NaN score
    ):
        assert all(math.isnan(v) for v in r.values())


# --------------------------------------------------------------------------- calibration


def test_ece_by_hand():
    y = np.array([1, 0, 1, 0])
    prob = np.array([0.9, 0.8, 0.3, 0.1])
    # 2 bins: [0, .5) holds .3, .1 (frac 1/2, mean .2); [.5, 1] holds .9, .8 (1/2, .85)
    # ECE = 2/4 * .3 + 2/4 * .35 = .325
    assert expected_calibration_error(y, prob, 2) == pytest.approx(0.325)
    # 10 bins: one each: (.1 + .8 + .7 + .1) / 4
    assert expected_calibration_error(y, prob) == pytest.approx(0.425)
    # 1 bin: |mean y - mean prob| = |.5 - .525|
    assert expected_calibration_error(y, prob, 1) == pytest.approx(0.025)


def test_ece_properties():
    # perfectly calibrated bins: 1 of 4 real at .25, 3 of 4 real at .75
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    prob = np.array([0.25] * 4 + [0.75] * 4)
    assert expected_calibration_error(y, prob) == 0.0
    # a constant probability c scores |prevalence - c|
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    for c in (0.0, 0.3, 1.0):
        expected = abs(y.mean() - c)
        assert expected_calibration_error(y, np.full(200, c)) == pytest.approx(expected)
    # one class only is fine; empty and NaN are undefined
    assert expected_calibration_error(np.zeros(3, int), np.array([0.0, 0.1, 0.2])) == (
        pytest.approx(0.1)
    )
    assert math.isnan(expected_calibration_error(np.array([], int), np.array([])))
    assert math.isnan(expected_calibration_error(np.array([0, 1]), np.array([0.2, nan])))


@pytest.mark.parametrize("prob", [[0.5, 1.1], [-0.1, 0.5], [0.5, np.inf]])
def test_ece_rejects_non_probabilities(prob):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([0, 1]), np.array(prob))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_table(np.array([0, 1]), np.array(prob))


def test_ece_rejects_bad_bins():
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(np.array([0, 1]), np.array([0.1, 0.2]), 0)


def test_reliability_table_by_hand():
    t = reliability_table(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 1.0]), 4)
    assert list(t.columns) == ["bin_lo", "bin_hi", "n", "mean_prob", "frac_real"]
    assert t["bin_lo"].tolist() == [0, 0.25, 0.5, 0.75]
    assert t["bin_hi"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert t["n"].tolist() == [0, 1, 0, 3]  # 1.0 belongs to the last bin
    assert t["mean_prob"].iloc[1] == pytest.approx(0.3) and t["frac_real"].iloc[1] == 1.0
    assert t["mean_prob"].iloc[3] == pytest.approx(0.9)  # (.9 + .8 + 1) / 3
    assert t["frac_real"].iloc[3] == pytest.approx(1 / 3)
    assert t[["mean_prob", "frac_real"]].iloc[[0, 2]].isna().all().all()  # empty bins


def test_reliability_bins_are_half_open_at_exact_edges():
    # 0.29 * 100 = 28.999... in floating point; 0.29 still belongs to [0.29, 0.30)
    t = reliability_table(np.array([0, 1, 0]), np.array([0.29, 0.5, 0.0]), 100)
    assert t["n"].iloc[29] == 1 and t["n"].iloc[28] == 0
    assert t["n"].iloc[50] == 1 and t["n"].iloc[0] == 1
    # ECE agrees with the table
    table = reliability_table(*random_calibration(5))
    y, prob = random_calibration(5)
    filled = table[table["n"] > 0]
    ece = np.sum(filled["n"] / len(y) * np.abs(filled["frac_real"] - filled["mean_prob"]))
    assert expected_calibration_error(y, prob) == pytest.approx(ece)


def test_reliability_table_matches_sklearn_away_from_bin_edges():
    """scikit-learn's calibration_curve gives the same fractions and means (non-empty bins)."""
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(11)
    prob = rng.uniform(size=500)
    prob = prob[np.abs(prob * 10 - np.round(prob * 10)) > 1e-6]  # none on an edge
    y = (rng.uniform(size=len(prob)) < prob).astype(int)
    table = reliability_table(y, prob, 10)
    frac, mean = calibration_curve(y, prob, n_bins=10)
    filled = table[table["n"] > 0]
    np.testing.assert_allclose(filled["frac_real"], frac, rtol=0, atol=1e-12)
    np.testing.assert_allclose(filled["mean_prob"], mean, rtol=0, atol=1e-12)


def random_calibration(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prob = np.round(rng.uniform(size=300), 2)
    return (rng.uniform(size=300) < prob).astype(int), prob


def test_reliability_table_undefined():
    empty = reliability_table(np.array([], int), np.array([]), 3)
    assert len(empty) == 3 and empty["n"].sum() == 0 and empty["mean_prob"].isna().all()
    with_nan = reliability_table(np.array([0, 1]), np.array([0.1, nan]), 2)
    assert with_nan["n"].tolist() == [1, 0] and with_nan["frac_real"].isna().all()


# --------------------------------------------------------------------------- breakdowns


def test_mag_bins():
    np.testing.assert_array_equal(mag_bins([19.2, 20.0]), [19.0, 19.5, 20.0])
    np.testing.assert_array_equal(mag_bins([21.26, 18.74, nan, np.inf]), np.arange(18.5, 21.6, 0.5))
    np.testing.assert_array_equal(mag_bins([20.0]), [20.0, 20.5])  # at least one bin
    np.testing.assert_array_equal(mag_bins([20.2], width=1.0), [20.0, 21.0])
    assert mag_bins([nan, None]).size == 0 and mag_bins([]).size == 0
    for values, width in (([0.3, 0.7], 0.1), ([1e-9, 25.31], 0.3)):
        edges = mag_bins(values, width)
        assert edges[0] <= min(values) and edges[-1] >= max(values)
        np.testing.assert_allclose(np.diff(edges), width)
    with pytest.raises(ValueError, match="width"):
        mag_bins([20.0], 0.0)


def test_completeness_by_mag_by_hand():
    y = np.array([1, 1, 1, 0, 1, 1, 1])
    called = np.array([True, False, True, True, False, True, True])
    mag = np.array([19.2, 19.7, 20.0, 19.1, nan, 18.0, 19.5])
    # real rows with a magnitude inside [19, 20]: 19.2 (hit), 19.7 (miss), 20.0 (hit: the last
    # bin is closed), 19.5 (hit: lower edge of bin 2); 19.1 is bogus, NaN and 18.0 drop out
    t = completeness_by_mag(y, called, mag, [19.0, 19.5, 20.0])
    assert list(t.columns) == ["mag_lo", "mag_hi", "n_real", "recovered", "completeness"]
    assert t["mag_lo"].tolist() == [19.0, 19.5] and t["mag_hi"].tolist() == [19.5, 20.0]
    assert t["n_real"].tolist() == [1, 3] and t["recovered"].tolist() == [1, 2]
    assert t["completeness"].tolist() == [1.0, pytest.approx(2 / 3)]
    empty_bin = completeness_by_mag(y, called, mag, [30.0, 31.0])
    assert empty_bin["n_real"].tolist() == [0] and math.isnan(empty_bin["completeness"].iloc[0])
    none = completeness_by_mag(y, called, mag, mag_bins([]))
    assert none.empty and list(none.columns) == list(t.columns)
    with pytest.raises(ValueError, match="increasing"):
        completeness_by_mag(y, called, mag, [20.0, 19.0])


def test_fpr_by_kind_by_hand():
    y = np.array([0, 0, 0, 0, 1, 0, 0, 0])
    called = np.array([1, 0, 0, 1, 1, 0, 1, 1], bool)
    kind = np.array(["star", "cr", None, nan, "cr", "", "cr", " star "], dtype=object)
    # bogus with a kind: star (called), cr (not), cr (called), " star " (called);
    # the real "cr" and the unknown kinds (None, NaN, "") are skipped
    t = fpr_by_kind(y, called, kind)
    assert list(t.columns) == ["kind", "n_bogus", "false_positives", "fpr"]
    assert t["kind"].tolist() == ["cr", "star"]  # sorted
    assert t["n_bogus"].tolist() == [2, 2] and t["false_positives"].tolist() == [1, 2]
    assert t["fpr"].tolist() == [0.5, 1.0]
    empty = fpr_by_kind(np.array([1]), np.array([True]), ["cr"])
    assert empty.empty and list(empty.columns) == list(t.columns)
    assert fpr_by_kind(np.array([0]), np.array([False]), pd.Series([None])).empty


# --------------------------------------------------------------------------- evaluate


def test_evaluate_by_hand():
    y = np.array([1, 0, 1, 0])
    score = np.array([0.9, 0.8, 0.3, 0.1])
    m = evaluate(y, score, 0.5, prob=score)
    assert list(m) == [
        "n", "real", "bogus", "roc_auc", "pr_auc", "fnr_at_1pct_fpr", "threshold",
        "tpr", "fpr", "fnr", "precision", "accuracy", "f1", "ece",
    ]  # fmt: skip
    assert (m["n"], m["real"], m["bogus"]) == (4, 2, 2)
    assert m["roc_auc"] == 0.75  # pairs: .9>.8, .9>.1, .3<.8, .3>.1
    assert m["pr_auc"] == pytest.approx(5 / 6)
    assert m["fnr_at_1pct_fpr"] == 0.5  # threshold .8 (no negative may pass): .3 missed
    assert m["threshold"] == 0.5
    # called: .9 (real), .8 (bogus); missed .3; rejected .1
    assert all(m[k] == 0.5 for k in ("tpr", "fpr", "fnr", "precision", "accuracy", "f1"))
    assert m["ece"] == pytest.approx(0.425)
    assert math.isnan(evaluate(y, score, 0.5)["ece"])  # no probability: no calibration


def test_evaluate_undefined():
    empty = evaluate(np.array([], int), np.array([]), None)
    assert (empty["n"], empty["real"], empty["bogus"]) == (0, 0, 0)
    assert all(math.isnan(v) for k, v in empty.items() if k not in ("n", "real", "bogus"))
    bogus_only = evaluate(np.zeros(3, int), np.array([0.1, 0.6, 0.2]), 0.5, [0.1, 0.6, 0.2])
    assert math.isnan(bogus_only["roc_auc"]) and math.isnan(bogus_only["pr_auc"])
    assert bogus_only["fpr"] == pytest.approx(1 / 3) and math.isnan(bogus_only["tpr"])
    assert bogus_only["ece"] == pytest.approx(0.3)  # (.1 + .6 + .2) / 3
