"""Smoke-train: reading through Croissant, split by job, metrics, determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.config import TrainParams
from tasks.croissant import write_croissant
from tasks.cutout import npy_bytes
from tasks.index import INDEX_SCHEMA
from tasks.train import (
    binary_metrics,
    fnr_at_fpr,
    read_records,
    roc_auc,
    smoke_train,
    split_by_job,
)


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    """5 jobs x 40 cutouts; real ones have a centred blob in difference and score."""
    root = tmp_path_factory.mktemp("learnable")
    (root / "cutouts").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    blob = np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / 8.0)
    rows = []
    for j in range(5):
        for k in range(40):
            label = int(k % 5 == 0)
            t = rng.uniform(0.3, 0.5, (64, 64, 4)).astype(np.float32)
            if label:
                t[..., 2] += 0.5 * blob
                t[..., 3] += 0.5 * blob
            else:
                t[..., 0] += 0.3 * np.roll(blob, (rng.integers(-20, 20), 15), axis=(0, 1))
            name = f"cutouts/jid{j:04d}_cutout{k:05d}.npy"
            (root / name).write_bytes(npy_bytes(np.clip(t, 0, 1).astype(np.float32)))
            rows.append({"cutout_id": len(rows), "job_id": f"jid{j:04d}", "x": 1.0, "y": 2.0,
                         "label": label, "cutout_filename": name, "flux": np.nan,
                         "fwhm": np.nan, "elongation": np.nan, "catalog_row": k, "flags": None})
    pd.DataFrame(rows)[[c.name for c in INDEX_SCHEMA]].to_csv(root / "master_index.csv",
                                                              index=False)
    write_croissant(root / "master_index.csv", root / "croissant.json")
    return root


def test_read_records_through_croissant(learnable):
    frame = read_records(learnable / "croissant.json")
    assert len(frame) == 200 and frame["cutout_path"].map(lambda p: p.startswith("/")).all()
    assert set(frame["job_id"]) == {f"jid{j:04d}" for j in range(5)}


def test_split_by_job():
    jobs = np.repeat(["a", "b", "c", "d"], 5)
    labels = np.tile([0, 1, 0, 0, 0], 4)
    tr, va = split_by_job(jobs, labels, 0.25, seed=1)
    assert not set(jobs[tr]) & set(jobs[va]) and len(set(jobs[va])) == 1
    tr2, va2 = split_by_job(jobs, labels, 0.25, seed=1)
    assert (va == va2).all()
    assert len({tuple(split_by_job(jobs, labels, 0.25, s)[1]) for s in range(10)}) > 1
    with pytest.raises(ValueError, match="at least 2 jobs"):
        split_by_job(np.array(["a", "a"]), np.array([0, 1]), 0.5, 0)


def test_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))
    # 100 negatives 0..99, 1 % FPR allows one negative above the threshold (98)
    neg = np.arange(100.0)
    y2 = np.r_[np.zeros(100), np.ones(4)]
    s2 = np.r_[neg, [97.0, 98.0, 98.5, 120.0]]
    assert fnr_at_fpr(y2, s2, 0.01) == 0.5
    assert np.isnan(fnr_at_fpr(np.zeros(3), np.arange(3.0)))
    m = binary_metrics(np.array([1, 0, 1, 0]), np.array([0.9, 0.6, 0.2, 0.1]))
    assert m == {"accuracy": 0.5, "precision": 0.5, "recall": 0.5}
    assert np.isnan(binary_metrics(np.array([1, 0]), np.array([0.1, 0.2]))["precision"])


def test_smoke_train_learns_and_reports(learnable, tmp_path):
    params = TrainParams(epochs=4, batch_size=32, lr=3e-3, val_fraction=0.4, seed=0)
    metrics = smoke_train(learnable, params=params, output=tmp_path / "m.json")
    on_disk = json.loads((tmp_path / "m.json").read_text())
    assert on_disk == metrics
    counts = metrics["counts"]
    assert sum(c["real"] + c["bogus"] for c in counts.values()) == 200
    assert metrics["n_jobs"] == {"train": 3, "validation": 2}
    assert len(metrics["loss"]["train"]) == len(metrics["loss"]["validation"]) == 4
    v = metrics["validation"]
    for key in ("roc_auc", "accuracy", "precision", "recall", "fnr_at_1pct_fpr",
                "majority_class_accuracy"):
        assert key in v
    assert v["majority_class_accuracy"] == pytest.approx(0.8)
    assert v["roc_auc"] > 0.9
    again = smoke_train(learnable, params=params, output=tmp_path / "m2.json")
    metrics.pop("seconds"), again.pop("seconds")
    assert again == metrics
