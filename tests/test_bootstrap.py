"""Bootstrap intervals of ROC AUC and FNR at 1 % FPR: exact per resample, stratified, seeded."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from croissant_cutouts.tasks.evaluate.bootstrap import (
    _counts,
    _statistics,
    bootstrap_ci,
    bootstrap_replicates,
)
from croissant_cutouts.tasks.evaluate.metrics import evaluate, fnr_at_fpr, roc_auc


def _scores(n: int, seed: int = 0, real: float = 0.1, shift: float = 2.0, ties: bool = True):
    """Labels and scores of a classifier that separates the classes by ``shift`` sigma."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < real).astype(np.int64)
    y[:2] = [0, 1]  # both classes, whatever n
    score = rng.normal(0.0, 1.0, n) + shift * y
    return y, np.round(score, 1) if ties else score


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.25, 1.0])
def test_each_resample_gives_the_metrics_of_its_resampled_candidates(fpr):
    """Counts over sorted scores give what roc_auc and fnr_at_fpr give on the drawn rows."""
    y, score = _scores(300, seed=1)
    score[:5] = [-np.inf, np.inf, -np.inf, 0.3, 0.3]  # infinities and ties across classes
    pos, neg = np.sort(score[y == 1]), np.sort(score[y == 0])
    rng = np.random.default_rng(5)
    pos_counts, neg_counts = _counts(rng, 20, len(pos)), _counts(rng, 20, len(neg))
    assert (pos_counts.sum(axis=1) == len(pos)).all() and (neg_counts.sum(axis=1) == len(neg)).all()
    auc, fnr = _statistics(pos, neg, pos_counts, neg_counts, fpr)
    labels = np.r_[np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)]
    for b in range(20):
        drawn = np.r_[np.repeat(pos, pos_counts[b]), np.repeat(neg, neg_counts[b])]
        assert auc[b] == pytest.approx(roc_auc(labels, drawn), abs=1e-12)
        assert fnr[b] == pytest.approx(fnr_at_fpr(labels, drawn, fpr), abs=1e-12)


def test_interval_contains_the_point_estimate():
    y, score = _scores(2000, seed=2, shift=1.5)
    ci = bootstrap_ci(y, score, seed=0)
    assert ci["roc_auc"][0] < roc_auc(y, score) < ci["roc_auc"][1]
    assert ci["fnr_at_fpr"][0] < fnr_at_fpr(y, score, 0.01) < ci["fnr_at_fpr"][1]
    assert 0 <= ci["roc_auc"][0] <= ci["roc_auc"][1] <= 1


def test_interval_narrows_with_more_data():
    widths = {}
    for n in (400, 10_000):
        y, score = _scores(n, seed=3, shift=1.5, ties=False)
        ci = bootstrap_ci(y, score, seed=0)
        widths[n] = {k: hi - lo for k, (lo, hi) in ci.items()}
    for key in ("roc_auc", "fnr_at_fpr"):
        # the width falls about as 1 / sqrt(n): 5 times here; ask for half of that
        assert widths[10_000][key] < widths[400][key] / 2.5, (key, widths)


def test_the_seed_decides_the_resamples():
    y, score = _scores(500, seed=4)
    first = bootstrap_replicates(y, score, 200, seed=7)
    again = bootstrap_replicates(y, score, 200, seed=7)
    other = bootstrap_replicates(y, score, 200, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert bootstrap_ci(y, score, 200, seed=7) == bootstrap_ci(y, score, 200, seed=7)
    # rows in another order: the same sorted scores, so the same resamples
    order = np.random.default_rng(0).permutation(len(y))
    assert bootstrap_ci(y[order], score[order], 200, seed=7) == bootstrap_ci(y, score, 200, 7)


def test_perfect_and_useless_classifiers():
    y = np.r_[np.zeros(300, np.int64), np.ones(20, np.int64)]
    perfect = bootstrap_ci(y, np.r_[np.zeros(300), np.ones(20)])
    assert perfect == {"roc_auc": [1.0, 1.0], "fnr_at_fpr": [0.0, 0.0]}
    tied = bootstrap_ci(y, np.zeros(len(y)))  # every score equal: AUC 1/2, nothing called real
    assert tied == {"roc_auc": [0.5, 0.5], "fnr_at_fpr": [1.0, 1.0]}


def test_every_resample_holds_both_classes():
    """One real among 200: unstratified, about a third of the resamples would hold none."""
    y = np.r_[np.zeros(199, np.int64), 1]
    score = np.r_[np.linspace(0.0, 1.0, 199), 0.9]
    auc, fnr = bootstrap_replicates(y, score, 500, seed=0)
    assert np.isfinite(auc).all() and np.isfinite(fnr).all()  # the real one is always drawn
    assert set(np.unique(fnr)) <= {0.0, 1.0}  # one real: found or missed
    assert auc.min() < roc_auc(y, score) < auc.max()  # the bogus draws still vary


@pytest.mark.parametrize(
    ("y", "score"),
    [([1, 1, 1], [0.1, 0.2, 0.3]), ([0, 0], [0.1, 0.2]), ([0, 1], [0.1, np.nan]), ([], [])],
)
def test_undefined_intervals_are_nan(y, score):
    ci = bootstrap_ci(np.array(y, np.int64), np.array(score, np.float64), 50)
    assert all(math.isnan(v) for pair in ci.values() for v in pair)


def test_bad_arguments_raise():
    y, score = _scores(50)
    for kwargs in ({"n_resamples": 0}, {"fpr": 1.5}, {"level": 1.0}):
        with pytest.raises(ValueError):
            bootstrap_ci(y, score, **kwargs)
    with pytest.raises(ValueError, match="0/1"):
        bootstrap_ci(np.full(3, 2), np.zeros(3))


def test_evaluate_adds_intervals_next_to_their_values():
    y, score = _scores(1000, seed=5)
    plain = evaluate(y, score, 1.0)
    assert "roc_auc_ci95" not in plain and "fnr_at_1pct_fpr_ci95" not in plain
    block = evaluate(y, score, 1.0, resamples=300, seed=2)
    keys = list(block)
    assert keys.index("roc_auc_ci95") == keys.index("roc_auc") + 1
    assert keys.index("fnr_at_1pct_fpr_ci95") == keys.index("fnr_at_1pct_fpr") + 1
    assert {k: v for k, v in block.items() if not k.endswith("_ci95")} == plain
    ci = bootstrap_ci(y, score, 300, seed=2)
    assert block["roc_auc_ci95"] == ci["roc_auc"]
    assert block["fnr_at_1pct_fpr_ci95"] == ci["fnr_at_fpr"]


def test_twenty_thousand_cutouts_take_well_under_a_second():
    """Measured about 0.35 s on one loaded core; the bound leaves room for a busy machine."""
    y, score = _scores(20_000, seed=6)
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        bootstrap_ci(y, score, 1000, seed=0)
        best = min(best, time.perf_counter() - t0)
    assert best < 2.0, f"{best:.2f} s"
