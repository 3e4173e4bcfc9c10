"""Smoke-train: reading through Croissant, the dataset's splits, metrics by hand, training,
baselines, report, loading."""

from __future__ import annotations

import json
import math
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from croissant_cutouts.tasks.config import SplitParams, TrainParams
from croissant_cutouts.tasks.contract import CHANNELS, INDEX_FILE, INDEX_SCHEMA, OutsideDataset
from croissant_cutouts.tasks.dataset.croissant import write_croissant
from croissant_cutouts.tasks.dataset.splits import assign_splits
from croissant_cutouts.tasks.evaluate.data import (
    CutoutDataset,
    IndexBatches,
    cap_by_job,
    load_cutout,
    make_loader,
    read_records,
)
from croissant_cutouts.tasks.evaluate.limits import limits_per_row
from croissant_cutouts.tasks.evaluate.metrics import (
    binary_metrics,
    fnr_at_fpr,
    majority_accuracy,
    roc_auc,
)
from croissant_cutouts.tasks.evaluate.model import SmallCNN, resolve_device, train_member
from croissant_cutouts.tasks.evaluate.prepare import prepare_rows
from croissant_cutouts.tasks.evaluate.report import fmt
from croissant_cutouts.tasks.evaluate.train import smoke_train, smoke_train_task
from croissant_cutouts.tasks.infra.digests import sha256_file

N_JOBS, PER_JOB = 5, 30
#: Rows of job 0 whose label is left empty (to be skipped and counted as unlabelled).
UNLABELLED_ROWS = (28, 29)
ROOT = Path(__file__).resolve().parent.parent
FAST = TrainParams(
    epochs=3, batch_size=16, lr=3e-3, seed=0, device="cpu", leakage_check=False
)


def _blob(dy: int = 0, dx: int = 0, sigma: float = 2.5) -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:64]
    return np.exp(-((yy - 32 - dy) ** 2 + (xx - 32 - dx) ** 2) / (2 * sigma**2))


def _cutout(rng: np.random.Generator, label: int, k: int) -> np.ndarray:
    """(64, 64, 4) float32 in [0, 1]: real = centred positive blob in difference and score;
    bogus = noise, a negative centred blob, or an off-centre positive blob."""
    t = rng.normal(0.4, 0.04, (64, 64, 4))
    if label:
        t[..., 0] += 0.3 * _blob()
        t[..., 2] += 0.5 * _blob()
        t[..., 3] += 0.5 * _blob()
    elif k % 3 == 1:
        t[..., 2] -= 0.3 * _blob()
    elif k % 3 == 2:
        dy, dx = rng.choice([-1, 1], 2) * rng.integers(14, 24, 2)
        t[..., 2] += 0.5 * _blob(dy, dx)
    return np.clip(t, 0, 1).astype(np.float32)


def write_unit_limits(root: Path, job_ids) -> None:
    """``zscale_limits.csv`` as the index step writes it, with limits [0, 1] for every job and
    channel: a model with ``scaling="limits"`` then reads the stored values as they are."""
    pd.DataFrame(
        [{"job_id": job, "channel": c, "file": f"{c}.fits", "vmin": 0.0, "vmax": 1.0,
          "status": "ok"} for job in sorted(set(job_ids)) for c in CHANNELS]
    ).to_csv(root / "zscale_limits.csv", index=False, lineterminator="\n")


def _write_dataset(
    root: Path, n_jobs: int = N_JOBS, per_job: int = PER_JOB, splits: bool = True
) -> Path:
    """The learnable dataset; ``splits=False``: every cutout in train (too few jobs to split)."""
    (root / "cutouts").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for j in range(1, n_jobs + 1):
        job = f"jid{j:04d}"
        for k in range(per_job):
            label = int(k % 6 == 0)  # 5 of 30 real: 17 %
            name = f"cutouts/{job}_cutout{k:05d}.npy"
            np.save(root / name, _cutout(rng, label, k))
            unlabelled = j == 1 and k in UNLABELLED_ROWS
            rows.append(
                {
                    "cutout_id": len(rows),
                    "job_id": job,
                    "x": 100.0 + k,
                    "y": 200.0 + k,
                    "label": pd.NA if unlabelled else label,
                    "cutout_filename": name,
                    "flux": 10.0 * k if k % 2 else np.nan,
                    "fwhm": 2.0,
                    "elongation": 1.1,
                    "catalog_row": k,
                    "flags": pd.NA,
                    "score_peak": 3.0 + 6.0 * label + rng.normal(0, 2.0),
                    "truth_mag": 21.0 + k / 10 if label else np.nan,
                    "bogus_kind": None if label else ("noise", "cosmic_ray", "hot_pixel")[k % 3],
                }
            )
    frame = pd.DataFrame(rows)
    frame["split"] = assign_splits(frame, SplitParams()).split if splits else "train"
    frame = frame.reindex(columns=[c.name for c in INDEX_SCHEMA])
    frame = frame.astype({c.name: c.dtype for c in INDEX_SCHEMA})
    frame.to_csv(root / INDEX_FILE, index=False, lineterminator="\n")
    write_unit_limits(root, frame["job_id"])
    write_croissant(root / INDEX_FILE, root / "croissant.json")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """4 jobs x 30 cutouts with a learnable signal; two rows of jid0001 unlabelled."""
    return _write_dataset(tmp_path_factory.mktemp("learnable"))


def _write_sharded(files_root: Path, root: Path) -> Path:
    """The same jobs and cutouts as the files-layout dataset at ``files_root``, sharded."""
    index = pd.read_csv(files_root / INDEX_FILE, dtype={c.name: c.dtype for c in INDEX_SCHEMA})
    (root / "shards").mkdir(parents=True)
    rows = []
    for job, part in index.groupby("job_id", sort=True):
        shard = f"shards/{job}.npy"
        np.save(root / shard, np.stack([np.load(files_root / f) for f in part["cutout_filename"]]))
        part = part.copy()
        part["cutout_filename"] = part["shard"] = shard
        part["row"] = np.arange(len(part))
        rows.append(part)
    frame = pd.concat(rows).astype({c.name: c.dtype for c in INDEX_SCHEMA})
    frame.to_csv(root / INDEX_FILE, index=False, lineterminator="\n")
    write_unit_limits(root, frame["job_id"])
    write_croissant(root / INDEX_FILE, root / "croissant.json")
    return root


@pytest.fixture(scope="module")
def index(dataset) -> pd.DataFrame:
    return pd.read_csv(dataset / INDEX_FILE, dtype={"label": "Int64"})


@pytest.fixture(scope="module")
def sharded(dataset, tmp_path_factory) -> Path:
    """The ``dataset`` fixture's jobs and cutouts in the shards layout."""
    return _write_sharded(dataset, tmp_path_factory.mktemp("sharded"))


# --------------------------------------------------------------------------- reading


def test_read_records_through_croissant(dataset, index):
    frame = read_records(dataset / "croissant.json")
    assert len(frame) == len(index)
    assert {"cutout_id", "job_id", "label", "cutout_path", "x", "y"} <= set(frame.columns)
    assert not any(c.startswith("transient_candidates/") for c in frame.columns)
    assert frame["job_id"].tolist() == index["job_id"].tolist()
    assert all(isinstance(j, str) for j in frame["job_id"])
    assert frame["label"].isna().sum() == len(UNLABELLED_ROWS)
    assert frame["label"].dropna().tolist() == index["label"].dropna().tolist()
    paths = [Path(p) for p in frame["cutout_path"]]
    assert all(p.is_absolute() and p.is_file() for p in paths)
    assert paths[0] == (dataset / index["cutout_filename"][0]).resolve()


def test_read_records_of_a_sharded_dataset(sharded, dataset, index):
    frame = read_records(sharded / "croissant.json")
    assert frame["job_id"].tolist() == index["job_id"].tolist()
    assert frame["row"].dtype == "Int64"
    assert frame["row"].tolist() == [k for _ in range(N_JOBS) for k in range(PER_JOB)]
    expected = [str((sharded / "shards" / f"{j}.npy").resolve()) for j in index["job_id"]]
    assert frame["cutout_path"].tolist() == frame["shard"].tolist() == expected
    files = read_records(dataset / "croissant.json")
    assert files["row"].isna().all() and files["shard"].isna().all()


def test_read_records_with_croissant_outside_the_root(dataset, tmp_path):
    """Paths are relative to the index's folder, wherever croissant.json is written."""
    meta = write_croissant(dataset / INDEX_FILE, tmp_path / "meta" / "croissant.json")
    frame = read_records(meta, root=dataset)  # the dataset folder, given
    assert all(Path(p).is_file() for p in frame["cutout_path"])
    assert Path(frame["cutout_path"][0]).parent == (dataset / "cutouts").resolve()
    with pytest.raises(OutsideDataset, match="leads outside the dataset folder"):
        read_records(meta)  # by default the folder of croissant.json: the index is outside
    inside = write_croissant(dataset / INDEX_FILE, dataset / "meta" / "croissant.json")
    assert read_records(inside, root=dataset).equals(frame)  # ../master_index.csv, inside


# --------------------------------------------------------------------------- splitting

def test_cap_keeps_whole_jobs_deterministically():
    jobs = np.repeat(["a", "b", "c", "d"], [10, 20, 30, 40])
    assert cap_by_job(jobs, None, 0).all()
    assert cap_by_job(jobs, 100, 0).all()
    keep = cap_by_job(jobs, 55, seed=2)
    assert keep.sum() <= 55
    for job in set(jobs):
        assert keep[jobs == job].all() or not keep[jobs == job].any()
    assert (keep == cap_by_job(jobs, 55, seed=2)).all()
    with pytest.raises(ValueError, match="fewer than 2 whole jobs"):
        cap_by_job(jobs, 25, seed=0)
    # with splits, each split's first job is taken first: every split keeps a job
    splits = np.repeat(["train", "train", "validation", "test"], [10, 20, 30, 40])
    for seed in range(5):
        keep = cap_by_job(jobs, 95, seed=seed, splits=splits)
        assert set(splits[keep]) == {"train", "validation", "test"} and keep.sum() <= 95


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize(
    ("y", "score", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),  # perfect
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0),  # inverted
        ([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # 3 of 4 pairs ordered
        ([0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9], 0.875),  # one pos/neg tie counts 1/2: 3.5 / 4
        ([1, 0, 0, 0], [-2.0, -3.0, -1.0, -1.0], 1 / 3),  # logits, tie among negatives
    ],
)
def test_roc_auc_by_hand(y, score, expected):
    assert roc_auc(np.array(y), np.array(score)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("y", "score"),
    [([1, 1], [0.1, 0.2]), ([0, 0, 0], [0.1, 0.2, 0.3]), ([0, 1], [0.1, np.nan])],
)
def test_roc_auc_undefined_is_nan(y, score):
    assert math.isnan(roc_auc(np.array(y), np.array(score)))


def test_fnr_at_fpr_by_hand():
    # 100 negatives 0..99: 1 % allows one negative above the threshold, so it is 98.
    y = np.r_[np.zeros(100), np.ones(4)]
    score = np.r_[np.arange(100.0), [97.0, 98.0, 98.5, 120.0]]
    assert fnr_at_fpr(y, score, 0.01) == 0.5  # 97 and 98 are not above 98
    assert fnr_at_fpr(y, score, 0.0) == 0.75  # threshold 99: only 120 is above
    assert fnr_at_fpr(y, score, 1.0) == 0.0  # every negative may pass: threshold -inf
    # ties: negatives [0, 1, 2, 3], 25 % allows one above, threshold 2; positive 2 is not above
    assert fnr_at_fpr(np.array([0, 0, 0, 0, 1, 1]), np.array([0, 1, 2, 3, 2, 2.5]), 0.25) == 0.5
    # 0.29 * 100 is 28.999... in floating point; 29 negatives may still pass
    assert fnr_at_fpr(y, np.r_[np.arange(100.0), [70.5, 70.5, 70.5, 70.5]], 0.29) == 0.0
    assert fnr_at_fpr(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0


@pytest.mark.parametrize("y", [[0, 0, 0], [1, 1, 1]])
def test_fnr_at_fpr_absent_class_is_nan(y):
    assert math.isnan(fnr_at_fpr(np.array(y), np.arange(3.0)))


def test_binary_metrics_by_hand():
    m = binary_metrics(np.array([1, 0, 1, 0, 0]), np.array([0.9, 0.6, 0.2, 0.1, 0.5]))
    assert m == {"accuracy": 0.6, "precision": 0.5, "recall": 0.5}  # 0.5 is not above 0.5
    nothing_called = binary_metrics(np.array([1, 0]), np.array([0.1, 0.2]))
    assert math.isnan(nothing_called["precision"]) and nothing_called["recall"] == 0.0
    assert math.isnan(binary_metrics(np.array([0, 0]), np.array([0.7, 0.2]))["recall"])


def test_majority_accuracy_by_hand():
    assert majority_accuracy(np.array([0, 0, 1]), np.array([0, 1, 0, 0])) == 0.75
    assert majority_accuracy(np.array([1, 1, 0]), np.array([0, 1, 0, 0])) == 0.25
    assert majority_accuracy(np.array([0, 1]), np.array([0, 1, 0, 0])) == 0.75  # tie: bogus
    assert math.isnan(majority_accuracy(np.array([0, 1]), np.array([], int)))


# --------------------------------------------------------------------------- data, model


def test_cutout_dataset_is_channel_first_in_both_modes(dataset, index):
    paths = [dataset / p for p in index["cutout_filename"][:6]]
    stored = np.load(paths[3])
    eager = CutoutDataset(paths, np.ones(6), in_memory=True)
    lazy = CutoutDataset(paths, np.ones(6), in_memory=False)
    assert eager.in_memory and not lazy.in_memory
    for data in (eager, lazy):
        x, y = data[3]
        assert x.shape == (4, 64, 64) and x.dtype == torch.float32 and y.item() == 1.0
        for c in range(4):
            np.testing.assert_array_equal(x[c].numpy(), stored[..., c])
    assert CutoutDataset(paths, np.ones(6)).in_memory  # small: auto loads into memory


def _datasets(files_root: Path, sharded_root: Path) -> dict[str, CutoutDataset]:
    """The same items read every way: files in memory and lazily, shards mapped and in memory,
    and a mix (first two jobs from files, the rest from shards)."""
    files = read_records(files_root / "croissant.json")
    shards = read_records(sharded_root / "croissant.json")
    labels = files["label"].fillna(0).to_numpy()
    mixed = np.arange(len(files)) < 2 * PER_JOB
    mixed_paths = np.where(mixed, files["cutout_path"], shards["cutout_path"])
    mixed_rows = shards["row"].mask(mixed)
    return {
        "files in memory": CutoutDataset(files["cutout_path"], labels, in_memory=True),
        "files lazy": CutoutDataset(files["cutout_path"], labels, in_memory=False),
        "shards mapped": CutoutDataset(shards["cutout_path"], labels, rows=shards["row"]),
        "shards in memory": CutoutDataset(
            shards["cutout_path"], labels, in_memory=True, rows=shards["row"]
        ),
        "mixed": CutoutDataset(mixed_paths, labels, rows=mixed_rows),
    }


def test_loader_batches_are_byte_identical_across_layouts(dataset, sharded, index):
    sets = _datasets(dataset, sharded)
    assert not sets["shards mapped"].in_memory and len(sets["shards mapped"].shard_paths) == N_JOBS
    assert sets["files in memory"].in_memory and not sets["files lazy"].in_memory
    stored = np.stack([np.load(dataset / f) for f in index["cutout_filename"]])
    expected = np.ascontiguousarray(stored.transpose(0, 3, 1, 2))
    for seed in (0, 7):
        batches = {}
        for name, data in sets.items():
            loader = make_loader(data, batch_size=16, shuffle=True, seed=seed)
            batches[name] = [(x.numpy().tobytes(), y.numpy().tobytes()) for x, y in loader]
            assert len(batches[name]) == len(loader) == math.ceil(len(index) / 16)
        reference = batches.pop("files in memory")
        for name, got in batches.items():
            assert got == reference, name
    order = np.concatenate(list(IndexBatches(len(index), 16, shuffle=True, seed=7)))
    x, y = sets["shards mapped"].__getitems__(order)
    assert x.shape == (len(index), 4, 64, 64) and x.dtype == torch.float32 and x.is_contiguous()
    assert x.numpy().tobytes() == expected[order].tobytes()
    assert y.shape == (len(index),) and y.dtype == torch.float32


def test_shuffling_is_deterministic_per_seed_and_epoch():
    def epochs(seed: int, n_epochs: int = 3) -> list[list[int]]:
        batches = IndexBatches(100, 32, shuffle=True, seed=seed)
        return [np.concatenate(list(batches)).tolist() for _ in range(n_epochs)]

    first = epochs(3)
    assert first == epochs(3)  # same seed, same sequence of epochs
    assert all(sorted(e) == list(range(100)) for e in first)  # each epoch a permutation
    assert first[0] != first[1] != first[2]  # reshuffled every epoch
    assert epochs(4) != first
    assert [len(b) for b in IndexBatches(100, 32, shuffle=True)] == [32, 32, 32, 4]
    assert np.concatenate(list(IndexBatches(100, 32))).tolist() == list(range(100))
    state = torch.random.get_rng_state()
    data = CutoutDataset([], np.zeros(0))
    loader = make_loader(data, 8, shuffle=True, seed=3)
    assert list(loader) == []
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone


def test_sharded_dataset_pickles_without_its_maps(sharded):
    shards = read_records(sharded / "croissant.json")
    data = CutoutDataset(shards["cutout_path"], np.zeros(len(shards)), rows=shards["row"])
    blob = pickle.dumps(data)
    assert len(blob) < 100_000  # no cutout data inside
    again = pickle.loads(blob)
    assert torch.equal(again.__getitems__([5, 70])[0], data.__getitems__([5, 70])[0])


def test_cutout_reading_checks_shapes_rows_and_falls_back(tmp_path):
    tensor = np.random.default_rng(0).random((64, 64, 4), dtype=np.float32)
    np.save(tmp_path / "fortran.npy", np.asfortranarray(tensor))
    np.save(tmp_path / "plain.npy", tensor)
    np.save(tmp_path / "bad.npy", np.zeros((4, 64, 64), np.float32))
    np.save(tmp_path / "shard.npy", np.stack([tensor, tensor[::-1]]))
    np.save(tmp_path / "bad_shard.npy", np.zeros((2, 4, 64, 64), np.float32))
    paths = [tmp_path / "plain.npy", tmp_path / "fortran.npy"]
    x, _ = CutoutDataset(paths, [0, 1], in_memory=False).__getitems__([0, 1])
    np.testing.assert_array_equal(x[0].numpy(), tensor.transpose(2, 0, 1))
    np.testing.assert_array_equal(x[1].numpy(), tensor.transpose(2, 0, 1))
    with pytest.raises(ValueError, match=r"expected a \(64, 64, 4\) float32"):
        CutoutDataset([tmp_path / "bad.npy"], [0], in_memory=False)[0]
    with pytest.raises(ValueError, match="float32 shard"):
        CutoutDataset([tmp_path / "bad_shard.npy"], [0], rows=[0])
    with pytest.raises(ValueError, match="beyond the end of their shard"):
        CutoutDataset([tmp_path / "shard.npy"] * 2, [0, 0], rows=[1, 2])
    x, _ = CutoutDataset([tmp_path / "shard.npy"], [0], rows=[1])[0]
    np.testing.assert_array_equal(x.numpy(), tensor[::-1].transpose(2, 0, 1))


def test_loader_serves_shards_fast(tmp_path):
    """Meaningful but not flaky: the benchmark measures ~100k cutouts/s here; ask for 5k."""
    rng = np.random.default_rng(0)
    n_shards, per_shard = 4, 1024
    paths, rows = [], []
    for k in range(n_shards):
        np.save(tmp_path / f"jid{k}.npy", rng.random((per_shard, 64, 64, 4), np.float32))
        paths += [tmp_path / f"jid{k}.npy"] * per_shard
        rows += range(per_shard)
    data = CutoutDataset(paths, np.zeros(len(paths)), rows=rows)
    loader = make_loader(data, batch_size=64, shuffle=True, seed=0)
    best = math.inf
    for _ in range(3):  # the first epoch also maps the pages
        t0 = time.perf_counter()
        n = sum(len(x) for x, _ in loader)
        best = min(best, time.perf_counter() - t0)
    assert n == len(data)
    assert n / best > 5_000, f"{n / best:.0f} cutouts/s"


def test_load_cutout_rejects_wrong_shape(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((4, 64, 64), np.float32))
    with pytest.raises(ValueError, match=r"expected a \(64, 64, 4\) float32"):
        load_cutout(tmp_path / "bad.npy")


def test_small_cnn_gives_one_logit_per_cutout():
    torch.manual_seed(0)
    assert SmallCNN()(torch.rand(3, 4, 64, 64)).shape == (3,)


def test_limit_scaling_undoes_the_stored_zscale_signed_and_in_one_unit():
    from croissant_cutouts.tasks.evaluate.model import LimitScale

    g = torch.Generator().manual_seed(0)
    value = torch.randn(2, 4, 64, 64, generator=g) * 0.1  # image units, inside the limits
    value[:, 2, 30, 32] = -0.25  # a negative lobe in the difference
    limits = torch.tensor([[-0.5, 0.5], [-0.3, 0.6], [-0.4, 0.4], [-6.0, 6.0]])
    limits = torch.stack([limits, 2 * limits])  # a second job with twice the widths
    vmin, width = limits[..., 0], limits[..., 1] - limits[..., 0]
    stored = (value - vmin[..., None, None]) / width[..., None, None]  # as the contract stores
    out = LimitScale()(stored, limits)
    unit = torch.stack([width[:, 2]] * 3 + [width[:, 3]], dim=1)  # D's width; the score's own
    torch.testing.assert_close(out, value / unit[..., None, None], atol=1e-6, rtol=1e-5)
    assert float(out[0, 2, 30, 32]) < 0  # the lobe stays negative
    bad = limits.clone()
    bad[0, 1] = torch.tensor([float("nan"), float("nan")])  # an unusable reference: zeros
    bad[1, 2] = torch.tensor([0.3, 0.3])  # a constant difference: zeros, the others in units
    out = LimitScale()(stored, bad)
    zeros = torch.zeros(64, 64)
    assert torch.equal(out[0, 1], zeros) and torch.equal(out[1, 2], zeros)
    torch.testing.assert_close(out[1, 0], stored[1, 0] * width[1, 0] + vmin[1, 0])
    assert torch.isfinite(out).all()


def test_small_cnn_crop_reads_only_the_central_square():
    from croissant_cutouts.tasks.evaluate.model import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(width=4, scaling="limits", crop=32).eval()
    x = torch.rand(2, 4, 64, 64)
    limits = torch.tensor([[0.0, 1.0]] * 4).expand(2, 4, 2)
    y = x.clone()
    y[..., :16, :] = 0.0  # outside rows and columns 16 .. 47 nothing counts
    y[..., :, 48:] = 1.0
    with torch.no_grad():
        assert torch.equal(model(x, limits), model(y, limits))
        x[..., 16, 16] += 1.0
        assert not torch.equal(model(x, limits), model(y, limits))
        with pytest.raises(ValueError, match=r"call model\(x, limits\)"):
            model(x)
    for crop in (8, 24, 80):
        with pytest.raises(ValueError, match="crop must be a multiple of 16"):
            SmallCNN(crop=crop)
    with pytest.raises(ValueError, match="unknown scaling 'zscale'"):
        SmallCNN(scaling="zscale")
    assert SmallCNN()(torch.rand(1, 4, 64, 64)).shape == (1,)  # no scaling: no limits needed


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            resolve_device("cuda")


# --------------------------------------------------------------------------- training


def _no_nan_tokens(text: str) -> dict:
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in metrics.json")

    return json.loads(text, parse_constant=refuse)


def test_smoke_train_learns_reports_and_repeats(dataset, index, tmp_path):
    params = FAST.model_copy(update={"leakage_check": True})
    metrics = smoke_train(dataset, params=params)  # default croissant.json and metrics.json

    on_disk = _no_nan_tokens((dataset / "metrics.json").read_text())
    assert on_disk == metrics
    assert set(metrics) >= {
        "dataset", "params", "packages", "device", "seed", "epochs", "splits", "models",
        "completeness_vs_mag", "fpr_by_kind", "leakage", "target", "loss", "validation",
        "test", "n_jobs", "counts", "seconds", "unlabelled", "layout", "train_cutouts_per_s",
        "plots",
    }
    assert (metrics["device"], metrics["seed"], metrics["epochs"]) == ("cpu", 0, FAST.epochs)
    assert metrics["layout"] == "files" and metrics["train_cutouts_per_s"] > 0
    assert metrics["unlabelled"] == len(UNLABELLED_ROWS)
    # the dataset's own splits (5 jobs, no field: by job, 3 / 1 / 1)
    assert metrics["splits"]["by"] == "job"
    assert metrics["n_jobs"] == {"train": 3, "validation": 1, "test": 1}
    counts = metrics["splits"]["counts"]
    labelled = index["label"].dropna()
    assert sum(c["real"] for c in counts.values()) == (labelled == 1).sum()
    assert sum(c["bogus"] for c in counts.values()) == (labelled == 0).sum()
    assert sum(c["unlabelled"] for c in counts.values()) == len(UNLABELLED_ROWS)
    for name in ("validation", "test"):
        assert counts[name]["real"] > 0 and counts[name]["bogus"] > 0
    assert len(metrics["loss"]["train"]) == len(metrics["loss"]["validation"]) == FAST.epochs
    # identity and reproducibility record
    ident = metrics["dataset"]
    assert ident["croissant_sha256"] == sha256_file(dataset / "croissant.json")
    assert ident["index_sha256"] == sha256_file(dataset / INDEX_FILE)
    assert metrics["params"]["train"]["seed"] == 0 and "test" in metrics["params"]["splits"]
    assert {"python", "torch", "numpy", "scikit-learn", "mlcroissant"} <= set(metrics["packages"])
    # models, each judged on the test split at a threshold chosen on validation
    models = metrics["models"]
    assert set(models) == {"cnn", "gradient_boosting", "score_peak", "majority"}
    test_rows = counts["test"]["real"] + counts["test"]["bogus"]
    for name, block in models.items():
        t = block["test"]
        assert t["n"] == test_rows and t["real"] == counts["test"]["real"], name
        assert t["threshold"] == block["validation"]["threshold"], name
        assert block["validation"]["fpr"] <= 0.01, name  # the rule that chose it
    assert metrics["test"] == models["cnn"]["test"]
    assert models["cnn"]["test"]["roc_auc"] > 0.9, metrics
    assert models["majority"]["test"]["roc_auc"] == 0.5
    assert models["majority"]["test"]["pr_auc"] == pytest.approx(
        counts["test"]["real"] / test_rows
    )
    assert models["score_peak"]["test"]["ece"] is None  # a peak is not a probability
    assert models["score_peak"]["test"]["roc_auc"] > 0.8  # the fixture's peaks separate
    assert metrics["leakage"]["random_split_test_auc"] is not None
    assert metrics["leakage"]["gap"] == pytest.approx(
        metrics["leakage"]["random_split_test_auc"] - models["cnn"]["test"]["roc_auc"]
    )
    assert len(metrics["loss_random_split"]["train"]) == FAST.epochs
    # truth magnitudes and bogus kinds of the test rows are counted
    assert sum(r["n_real"] for r in metrics["completeness_vs_mag"]) == counts["test"]["real"]
    assert sum(r["n_bogus"] for r in metrics["fpr_by_kind"]) == counts["test"]["bogus"]
    assert {r["kind"] for r in metrics["fpr_by_kind"]} == {"noise", "cosmic_ray", "hot_pixel"}
    # pictures and the report next to metrics.json
    for name in ("roc", "pr", "reliability", "loss", "completeness", "gallery"):
        png = dataset / metrics["plots"][name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (dataset / "report.md").read_text()
    assert ident["croissant_sha256"] in report and "plots/roc.png" in report
    for name in ("loss.csv", "roc.csv", "pr.csv"):
        assert (dataset / "plots" / name).stat().st_size > 0
    # the model as a file: it scores the test split as the run did, at the chosen threshold
    _check_saved_model(dataset, metrics, index)
    assert "## Model card" in report and metrics["model"]["sha256"] in report

    again = smoke_train(dataset, dataset / "croissant.json", params, output=tmp_path / "m.json")
    assert _deterministic(again) == _deterministic(metrics)
    # the same report and pictures, byte for byte (no timings in them)
    assert (tmp_path / "report.md").read_bytes() == (dataset / "report.md").read_bytes()
    for png in sorted((dataset / "plots").glob("*.png")):
        assert (tmp_path / "plots" / png.name).read_bytes() == png.read_bytes(), png.name


def _check_saved_model(
    folder: Path, metrics: dict, index: pd.DataFrame, dataset: Path | None = None
) -> None:
    """``model.pt`` in ``folder`` scores the test cutouts of ``dataset`` (default: ``folder``)
    as the run did."""
    import torch

    from croissant_cutouts.tasks.evaluate.artifact import load_model

    dataset = dataset or folder
    saved = metrics["model"]
    assert saved["file"] == "model.pt" and saved["sha256"] == sha256_file(folder / "model.pt")
    model, meta = load_model(folder / "model.pt")
    assert meta["threshold"] == saved["threshold"] == metrics["models"]["cnn"]["test"]["threshold"]
    assert meta["threshold_on"] == "validation" and meta["contract_version"] == 1
    assert meta["dataset"]["index_sha256"] == metrics["dataset"]["index_sha256"]
    test = index[(index["split"] == "test") & index["label"].notna()]
    x = np.stack([np.load(dataset / f) for f in test["cutout_filename"]]).transpose(0, 3, 1, 2)
    limits = limits_per_row(pd.read_csv(dataset / "zscale_limits.csv"), test["job_id"])
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x)),
                       torch.from_numpy(limits)).numpy()
    assert roc_auc(test["label"].to_numpy(int), logits) == pytest.approx(
        metrics["models"]["cnn"]["test"]["roc_auc"], abs=1e-6
    )


def _deterministic(metrics: dict, skip: tuple[str, ...] = ()) -> dict:
    """Metrics without the timings (and the layout, and ``skip``)."""
    return {
        k: v
        for k, v in metrics.items()
        if k not in ("seconds", "train_cutouts_per_s", "layout", "plots", *skip)
    }


def test_smoke_train_is_the_same_on_shards_and_files(dataset, sharded, tmp_path):
    params = FAST.model_copy(update={"epochs": 2, "seed": 3})
    files = smoke_train(dataset, params=params, output=tmp_path / "files.json")
    shards = smoke_train(sharded, params=params, output=tmp_path / "shards.json")
    assert (files["layout"], shards["layout"]) == ("files", "shards")
    assert shards["train_cutouts_per_s"] > 0
    same = ("dataset", "model")  # other files, other digests (model.pt records them)
    assert _deterministic(shards, same) == _deterministic(files, same)
    assert {k: v for k, v in shards["model"].items() if k != "sha256"} == {
        k: v for k, v in files["model"].items() if k != "sha256"
    }
    assert json.loads((tmp_path / "shards.json").read_text()) == shards


def test_smoke_train_task_caps_by_whole_jobs(dataset):
    params = FAST.model_copy(update={"epochs": 1, "max_cutouts": 90, "seed": 1})
    metrics = smoke_train_task.fn(str(dataset), None, params)  # the Prefect task's body
    assert metrics["n_jobs"] == {"train": 1, "validation": 1, "test": 1}  # a job per split
    used = sum(sum(c.values()) for c in metrics["counts"].values())
    assert used <= 90 and used + metrics["dropped_by_max_cutouts"] == N_JOBS * PER_JOB - 2
    assert len(metrics["loss"]["train"]) == 1
    assert json.loads((dataset / "metrics.json").read_text())["n_jobs"] == metrics["n_jobs"]


def _plain(values) -> list:
    return [None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v
            for v in values]


@pytest.mark.flow
def test_fast_record_reading_equals_mlcroissant(tmp_path, make_job):
    """The pandas path gives mlcroissant's values; an index not matching its sha256 fails."""
    from croissant_cutouts.flows.build import build_dataset
    from croissant_cutouts.tasks.config import Params

    for k in range(3):
        make_job(f"jid000{k + 1}", seed=k)
    out = tmp_path / "ds"
    build_dataset(str(tmp_path / "jobs"), str(out), Params(), ["create", "croissant"])
    meta = out / "croissant.json"
    slow, fast = read_records(meta, engine="mlcroissant"), read_records(meta)
    assert list(slow.columns) == list(fast.columns) and len(slow) == len(fast) == 36
    for column in slow.columns:
        assert _plain(slow[column]) == _plain(fast[column]), column

    index = pd.read_csv(out / "master_index.csv")
    index.loc[0, "label"] = 1 - index.loc[0, "label"]  # sha256 no longer matches the metadata
    index.to_csv(out / "master_index.csv", index=False)
    # the fast path refuses it, and mlcroissant then fails on the hash as it always did
    with pytest.raises(Exception, match=r"Download\(master_index\.csv\)"):
        read_records(meta)


def test_dihedral_turns_each_cutout_into_one_of_its_eight_orientations():
    from croissant_cutouts.tasks.evaluate.model import dihedral

    x = torch.arange(5 * 2 * 4 * 4, dtype=torch.float32).reshape(5, 2, 4, 4)
    out = dihedral(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for a, b in zip(x, out, strict=True):
        orientations = [torch.rot90(v, k, dims=(-2, -1)) for v in (a, a.flip(-1))
                        for k in range(4)]
        assert any(torch.equal(b, o) for o in orientations)
    again = dihedral(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    many = dihedral(x[:1].repeat(40, 1, 1, 1), torch.Generator().manual_seed(1))
    assert len({tuple(m[0].flatten().tolist()) for m in many}) == 8  # all eight occur


def test_smoke_train_with_augmentation_and_best_epoch(dataset, tmp_path):
    params = FAST.model_copy(update={"augment": True, "keep_best": True, "epochs": 2})
    metrics = smoke_train(dataset, params=params, output=tmp_path / "m.json")
    assert metrics["models"]["cnn"]["test"]["roc_auc"] > 0.8
    assert metrics["params"]["train"]["augment"] and metrics["params"]["train"]["keep_best"]
    assert metrics["weights_from_epoch"] in (1, 2)


def test_smoke_train_an_ensemble_saves_and_scores_as_one_model(dataset, index, tmp_path):
    params = FAST.model_copy(update={"members": 2, "epochs": 2, "keep_best": True})
    metrics = smoke_train(dataset, params=params, output=tmp_path / "metrics.json")
    one = smoke_train(dataset, params=params.model_copy(update={"members": 1}),
                      output=tmp_path / "one" / "metrics.json")
    assert len(metrics["weights_from_epoch"]) == 2
    assert metrics["weights_from_epoch"][0] == one["weights_from_epoch"]  # member 0 = seed 0
    assert metrics["models"]["cnn"]["description"].startswith("ensemble of 2 x SmallCNN")
    assert len(metrics["loss"]["train"]) == 2
    assert metrics["models"]["cnn"]["test"]["roc_auc"] > 0.8
    _check_saved_model(tmp_path, metrics, index, dataset)
    # the baseline's calls are broken down as the CNN's are, on the same test rows
    for name in ("cnn", "gradient_boosting"):
        block = metrics["models"][name]
        assert sum(r["n_bogus"] for r in block["fpr_by_kind"]) == block["test"]["bogus"]
        assert sum(r["n_real"] for r in block["completeness_vs_mag"]) == block["test"]["real"]
    assert metrics["models"]["cnn"]["fpr_by_kind"] == metrics["fpr_by_kind"]
    # bench_science.py reads what metrics.json really holds
    from conftest import load_benchmark

    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    summary = load_benchmark("bench_science").summarise(on_disk)
    assert summary["train_step_seconds"] == on_disk["seconds"] > 0
    assert summary["train_cutouts_per_s"] == on_disk["train_cutouts_per_s"] > 0
    assert summary["models"]["gradient_boosting"]["roc_auc"] == (
        metrics["models"]["gradient_boosting"]["test"]["roc_auc"])


@pytest.mark.parametrize("orientations", [1, 8])
def test_train_member_reports_every_epoch_to_its_hook(dataset, orientations):
    """on_epoch sees each epoch's logits of every held-out side, scored as the returned ones
    are (in that many orientations); the last are those returned."""
    params = FAST.model_copy(update={"epochs": 2, "scaling": "none",
                                     "orientations": orientations})
    prep = prepare_rows(dataset / "croissant.json", params, root=dataset)
    seen: list[tuple[int, dict]] = []
    run = train_member(prep.data, prep.y, prep.sides, params, torch.device("cpu"),
                       on_epoch=lambda epoch, logits: seen.append((epoch, logits)))
    assert [epoch for epoch, _ in seen] == [1, 2]
    for _, logits in seen:
        assert set(logits) == {"validation", "test"}
        assert len(logits["test"]) == prep.sides["test"].sum()
    assert not np.array_equal(seen[0][1]["test"], seen[1][1]["test"])  # it learnt in between
    for side in ("validation", "test"):
        np.testing.assert_array_equal(seen[-1][1][side], run.logits[side])
    from croissant_cutouts.tasks.evaluate.model import _side_loaders, predict_logits

    assert run.model.orientations == orientations  # and scores so, as the hook saw it:
    again = predict_logits(run.model, _side_loaders(prep.data, prep.sides, "cpu")["test"])
    np.testing.assert_allclose(again, run.logits["test"], rtol=1e-5, atol=1e-5)


def test_learning_curve_benchmark_on_the_learnable_dataset(dataset, tmp_path):
    """benchmarks/bench_learning_curve.py: nested training groups, per-epoch metrics, table."""
    from conftest import load_benchmark

    bench = load_benchmark("bench_learning_curve")
    (tmp_path / "params.yaml").write_text(
        "train:\n  batch_size: 16\n  lr: 0.003\n  device: cpu\n  members: 3\n")
    out = tmp_path / "curve.json"
    assert bench.main(["--dataset", str(dataset), "--params", str(tmp_path / "params.yaml"),
                       "--fields", "1,2", "--epochs", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    one, two = result["points"]["1"], result["points"]["2"]
    assert len(one["fields"]) == 1 and set(one["fields"]) < set(two["fields"])  # nested
    assert one["train_real"] + one["train_bogus"] < two["train_real"] + two["train_bogus"]
    for point in (one, two):
        assert len(point["epochs"]) == 2  # one network, not the params' three members
        for side in ("validation", "test"):
            assert 0 <= point["epochs"][-1][side]["fnr_at_1pct_fpr"] <= 1
            assert 0 <= point["gradient_boosting"][side]["roc_auc"] <= 1
    assert two["epochs"][-1]["test"]["roc_auc"] > 0.8
    table = out.with_suffix(".md").read_text().splitlines()
    assert table[2].startswith("| 1 | ") and table[3].startswith("| 2 | ")
    assert table[-1].startswith("| 2 | ")  # the epoch table's last row
    with pytest.raises(SystemExit, match=r"--fields \[9\]: the training split has \d"):
        bench.main(["--dataset", str(dataset), "--fields", "1,9", "--out", str(out)])


def test_smoke_train_on_a_dataset_too_small_to_split(tmp_path, caplog):
    """Every cutout in train: trained anyway, judged on the training set and labelled so."""
    root = _write_dataset(tmp_path / "small", n_jobs=2, splits=False)
    params = FAST.model_copy(update={"leakage_check": True, "keep_best": True, "epochs": 2})
    with caplog.at_level("INFO"):
        metrics = smoke_train(root, params=params)
    assert _no_nan_tokens((root / "metrics.json").read_text()) == metrics
    assert (metrics["evaluated_on"], metrics["held_out"], metrics["threshold_on"]) == (
        "train", False, "train")
    assert metrics["caution"].startswith("TRAINING-SET FIGURES: no held-out split")
    assert "2 job(s)" in metrics["caution"]
    assert metrics["splits"]["by"] == "none"
    assert metrics["n_jobs"] == {"train": 2, "validation": 0, "test": 0}
    assert metrics["threshold_rule"].endswith("training-set FPR <= 1 %")
    labelled = 2 * PER_JOB - len(UNLABELLED_ROWS)
    for name, block in metrics["models"].items():
        assert block["validation"] is None, name
        assert block["test"]["n"] == labelled, name  # every labelled cutout, in train
        assert block["test"]["fpr"] <= 0.01, name  # the threshold was chosen on these rows
        lo, hi = block["test"]["roc_auc_ci95"]
        assert lo <= block["test"]["roc_auc"] <= hi, name
    assert metrics["validation"] is None and metrics["test"] == metrics["models"]["cnn"]["test"]
    assert metrics["target"]["met"] is None and metrics["target"]["beats_baselines"] is None
    assert metrics["leakage"]["random_split_test_auc"] is None  # nothing held out to compare
    assert metrics["leakage"]["field_split_test_auc"] is None
    assert metrics["loss_random_split"] is None
    assert metrics["weights_from_epoch"] == 2  # no validation: the last epoch's weights
    assert metrics["loss"]["validation"] == [None, None]
    assert sum(r["n_bogus"] for r in metrics["fpr_by_kind"]) == metrics["test"]["bogus"]
    report = (root / "report.md").read_text().splitlines()
    assert report[2] == f"> **{metrics['caution']}.**"
    assert "## Models (training set)" in report
    messages = [r.getMessage() for r in caplog.records]
    assert "no held-out split: the metrics are training-set figures" in messages
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []  # no warning here


def test_smoke_train_reports_bootstrap_intervals_reproducibly(dataset, tmp_path):
    params = FAST.model_copy(update={"epochs": 1})
    metrics = smoke_train(dataset, params=params, output=tmp_path / "a.json")
    assert metrics["bootstrap"]["resamples"] == 1000 and metrics["bootstrap"]["seed"] == 0
    assert (metrics["evaluated_on"], metrics["held_out"], metrics["caution"]) == (
        "test", True, None)
    for name, block in metrics["models"].items():
        test = block["test"]
        for key in ("roc_auc", "fnr_at_1pct_fpr"):
            lo, hi = test[f"{key}_ci95"]
            assert lo <= test[key] <= hi, (name, key)
        assert "roc_auc_ci95" not in block["validation"]  # intervals for the test split only
    assert metrics["models"]["majority"]["test"]["roc_auc_ci95"] == [0.5, 0.5]
    report = (tmp_path / "report.md").read_text()
    cnn = metrics["models"]["cnn"]["test"]
    assert f"[{fmt(cnn['roc_auc_ci95'][0])}, {fmt(cnn['roc_auc_ci95'][1])}]" in report
    again = smoke_train(dataset, params=params, output=tmp_path / "b.json")
    assert again["models"] == metrics["models"]


def test_smoke_train_without_a_test_split_judges_on_validation(tmp_path):
    """``splits.test: 0``: thresholds and metrics on the validation split, still held out."""
    root = _write_dataset(tmp_path / "no_test", splits=False)
    index = pd.read_csv(root / INDEX_FILE, dtype={c.name: c.dtype for c in INDEX_SCHEMA})
    no_test = SplitParams(train=0.8, validation=0.2, test=0)
    index["split"] = assign_splits(index, no_test).split
    index.to_csv(root / INDEX_FILE, index=False, lineterminator="\n")
    write_croissant(root / INDEX_FILE, root / "croissant.json")
    metrics = smoke_train(root, params=FAST.model_copy(update={"epochs": 1}), splits=no_test)
    assert (metrics["evaluated_on"], metrics["threshold_on"]) == ("validation", "validation")
    assert metrics["held_out"] is True and metrics["caution"] is None
    assert metrics["n_jobs"]["test"] == 0 and metrics["n_jobs"]["validation"] == 1
    for block in metrics["models"].values():
        assert block["test"]["n"] == block["validation"]["n"] == PER_JOB
        assert block["test"]["roc_auc"] == block["validation"]["roc_auc"]
    assert isinstance(metrics["target"]["met"], bool)
