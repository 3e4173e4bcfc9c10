"""``croissant_cutouts.load_dataset``: a released dataset in PyTorch, without the pipeline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from croissant_cutouts import CandidateDataset, load_dataset  # noqa: E402
from croissant_cutouts.tasks.config import TrainParams  # noqa: E402
from croissant_cutouts.tasks.contract import OutsideDataset  # noqa: E402
from croissant_cutouts.tasks.infra.digests import sha256_file  # noqa: E402

LAYOUTS = ("files", "shards", "parquet")
#: Columns that name where a cutout lives: they differ between layouts.
WHERE = {"cutout_path", "shard", "row"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """Six seed-layout jobs of 10 candidates (split by job), in each layout."""
    from conftest import build_plain_dataset, write_seed_jobs

    root = tmp_path_factory.mktemp("loader")
    write_seed_jobs(root / "jobs", n_jobs=6, shape=(48, 56), rows=10)
    return {layout: build_plain_dataset(root / "jobs", root / layout, layout)
            for layout in LAYOUTS}


def _everything(ds: CandidateDataset) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Images, labels and rows of every item, read one item at a time, by cutout_id."""
    items = [ds[i] for i in range(len(ds))]
    images = np.stack([image.numpy() for image, _, _ in items])
    labels = np.array([label for _, label, _ in items])
    # the limits tensors (test_each_record_carries_its_jobs_zscale_limits) as plain lists
    rows = pd.DataFrame([{**row, "limits": row["limits"].tolist()} for _, _, row in items])
    order = np.argsort(rows["cutout_id"].to_numpy())
    return images[order], labels[order], rows.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------- what it returns


@pytest.mark.parametrize("layout", LAYOUTS)
def test_items_are_image_label_row(datasets, layout):
    ds = load_dataset(datasets[layout], split="train")
    index = pd.read_csv(datasets[layout] / "master_index.csv")
    train = index[index["split"] == "train"]
    assert len(ds) == len(train) > 0
    image, label, row = ds[0]
    assert image.shape == (4, 64, 64) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert label in (0, 1) and isinstance(label, int)
    assert set(index.columns) - {"cutout_filename"} <= set(row) | {"cutout_filename"}
    assert row["split"] == "train"
    want = train[train["cutout_id"] == row["cutout_id"]].iloc[0]
    assert (row["job_id"], row["x"], row["y"]) == (want["job_id"], want["x"], want["y"])
    assert label == int(want["label"])
    # the image is the stored cutout, channel-first
    stored = np.load(datasets["files"] / want["cutout_filename"]) if layout == "files" else None
    if stored is not None:
        assert image.numpy().tobytes() == np.ascontiguousarray(stored.transpose(2, 0, 1)).tobytes()


def test_every_layout_gives_the_same_items(datasets):
    base = _everything(load_dataset(datasets["files"], split=None))
    for layout in ("shards", "parquet"):
        images, labels, rows = _everything(load_dataset(datasets[layout], split=None))
        assert images.tobytes() == base[0].tobytes(), layout
        assert (labels == base[1]).all(), layout
        same = [c for c in rows.columns if c not in WHERE]
        pd.testing.assert_frame_equal(rows[same], base[2][same], check_like=True)


def test_splits_partition_the_dataset(datasets):
    path = datasets["shards"]
    every = load_dataset(path, split=None)
    parts = [load_dataset(path, split=s) for s in ("train", "validation", "test")]
    assert sum(len(p) for p in parts) == len(every) == 60
    ids = [set(p.records["cutout_id"]) for p in parts]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    for part, split in zip(parts, ("train", "validation", "test"), strict=True):
        assert set(part.records["split"]) <= {split}


def test_croissant_file_path_and_bad_arguments(datasets, tmp_path):
    path = datasets["files"]
    assert len(load_dataset(path / "croissant.json", split="test")) == len(
        load_dataset(path, split="test"))
    with pytest.raises(ValueError, match=r"unknown split 'val'.*train, validation, test"):
        load_dataset(path, split="val")
    with pytest.raises(FileNotFoundError, match=r"croissant\.json"):
        load_dataset(tmp_path)
    test = load_dataset(path, split="test")
    assert torch.equal(test[-1][0], test[len(test) - 1][0])
    for wrong in (len(test), -len(test) - 1):
        with pytest.raises(IndexError, match="out of range"):
            test[wrong]
        with pytest.raises(IndexError, match="out of range"):
            test.batch([0, wrong])
    one, other = test.row(-1), test[-1][2]
    assert torch.equal(one.pop("limits"), other.pop("limits"))
    assert pd.Series(one).equals(pd.Series(other))  # NaN == NaN here


def test_transform_applies_to_each_image(datasets):
    plain = load_dataset(datasets["files"], split="test")
    flipped = load_dataset(datasets["files"], split="test", transform=lambda x: x.flip(-1))
    assert torch.equal(flipped[0][0], plain[0][0].flip(-1))
    batch = flipped.__getitems__([0, 1])
    assert torch.equal(batch[1][0], plain[1][0].flip(-1))


def test_unlabelled_candidates_are_minus_one(datasets, tmp_path):
    """A job without truth has an empty label: -1 in the item and in the row."""
    ds = load_dataset(datasets["files"], split=None)
    records = ds.records.copy()
    records.loc[:4, "label"] = pd.NA
    unlabelled = CandidateDataset(records)
    assert [unlabelled[i][1] for i in range(6)] == [-1] * 5 + [int(ds[5][1])]
    assert unlabelled[0][2]["label"] == -1


# --------------------------------------------------------------------------- with a DataLoader


@pytest.mark.parametrize("layout", ["shards", "parquet"])
def test_dataloader_reads_whole_batches_in_worker_processes(datasets, layout, monkeypatch):
    ds = load_dataset(datasets[layout], split=None)
    by_item = [ds[i] for i in range(len(ds))]
    # the batched path only: DataLoader must call __getitems__, never __getitem__
    monkeypatch.setattr(CandidateDataset, "__getitem__",
                        lambda self, i: pytest.fail("read one item at a time"))
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2)
    seen = 0
    for images, labels, rows in loader:
        n = len(labels)
        assert images.shape == (n, 4, 64, 64) and labels.dtype == torch.int64
        assert isinstance(rows["job_id"], list) and rows["x"].dtype == torch.float64
        for k in range(n):
            image, label, row = by_item[seen + k]
            assert torch.equal(images[k], image) and labels[k] == label
            assert rows["cutout_id"][k] == row["cutout_id"]
        seen += n
    assert seen == len(ds)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_whole_batches_equal_the_collated_items(datasets, layout):
    ds = load_dataset(datasets[layout], split=None, transform=lambda x: x * 2)
    items = torch.utils.data.DataLoader(ds, batch_size=16)
    whole = ds.batches(16, num_workers=2)
    assert len(whole) == len(items) == 4
    for (xa, ya, ra), (xb, yb, rb) in zip(items, whole, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert ra.keys() == rb.keys()
        for key in ra:
            if isinstance(ra[key], list):
                assert ra[key] == rb[key], key
            else:
                assert ra[key].dtype == rb[key].dtype, key
                assert torch.equal(ra[key].nan_to_num(-9), rb[key].nan_to_num(-9)), key
    orders = [torch.cat([b[1] for b in ds.batches(8, shuffle=True, seed=s)]) for s in (1, 1, 2)]
    ids = [torch.cat([b[2]["cutout_id"] for b in ds.batches(8, shuffle=True, seed=s)])
           for s in (1, 2)]
    assert torch.equal(orders[0], orders[1]) and sorted(ids[0].tolist()) == list(range(60))
    assert not torch.equal(ids[0], ids[1])


def test_batched_read_opens_each_file_once(datasets, monkeypatch):
    """Shards layout: a batch over two jobs reads two memory maps, not one per item."""
    import croissant_cutouts.tasks.evaluate.data as data

    opened = []
    real = data.open_shard
    monkeypatch.setattr(data, "open_shard", lambda p: opened.append(p) or real(p))
    ds = load_dataset(datasets["shards"], split=None)
    assert len(opened) == 6  # one per job, when the dataset is made
    ds.__getitems__(list(range(0, 20)))  # two jobs' rows
    assert len(opened) == 6


def test_loading_imports_no_prefect(datasets):
    code = (
        "import sys\n"
        "from croissant_cutouts import load_dataset\n"
        f"ds = load_dataset({str(datasets['parquet'])!r})\n"
        "image, label, row = ds[0]\n"
        "print(tuple(image.shape), [m for m in sys.modules if m.split('.')[0] == 'prefect'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)
    assert done.stdout.strip() == "(4, 64, 64) []"


# --------------------------------------------------------------------------- untrusted datasets


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit_index(path: Path, column: str, value: str, row: int = 3) -> None:
    """Set one index cell and keep croissant.json's sha256 of the index true."""
    index = pd.read_csv(path / "master_index.csv", dtype=str, keep_default_na=False)
    index.loc[row, column] = value
    index.to_csv(path / "master_index.csv", index=False)
    meta = json.loads((path / "croissant.json").read_text())
    for entry in meta["distribution"]:
        if entry.get("contentUrl") == "master_index.csv":
            entry["sha256"] = sha256_file(path / "master_index.csv")
    (path / "croissant.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("climb", ["../outside.npy", "/etc/passwd", "cutouts/../../x.npy"])
def test_cutout_paths_climbing_out_are_refused(datasets, tmp_path, climb):
    path = _copy(datasets["files"], tmp_path / "ds")
    _edit_index(path, "cutout_filename", climb)
    with pytest.raises(OutsideDataset, match=r"cutout_path .* of record 3 \(cutout_id 3\) "
                       "leads outside the dataset folder"):
        load_dataset(path, split=None)


def test_shard_paths_climbing_out_are_refused(datasets, tmp_path):
    path = _copy(datasets["shards"], tmp_path / "ds")
    _edit_index(path, "shard", "../shards/jid0001.npy")
    climbing = re.escape("shard '../shards/jid0001.npy' of record 3")
    with pytest.raises(OutsideDataset, match=climbing):
        load_dataset(path, split=None)


def test_a_folder_linked_outside_is_refused(datasets, tmp_path):
    path = _copy(datasets["files"], tmp_path / "ds")
    os.rename(path / "cutouts", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", path / "cutouts")
    with pytest.raises(OutsideDataset, match=r"'cutouts/.*' leads outside the dataset folder"):
        load_dataset(path, split=None)  # the metadata's FileSet says so first
    # and each record's own path, should the metadata not name the files
    from croissant_cutouts.tasks.evaluate.data import check_record_paths

    frame = pd.DataFrame({"cutout_id": [0, 1], "cutout_path": ["x.npy", "cutouts/a.npy"]})
    with pytest.raises(OutsideDataset, match=r"cutout_path 'cutouts/a.npy' of record 1 "):
        check_record_paths(frame, "cutout_path", path, path / "croissant.json")


@pytest.mark.parametrize("url", ["../master_index.csv", "/tmp/master_index.csv",
                                 "s3://bucket/master_index.csv"])
def test_content_urls_climbing_out_are_refused(datasets, tmp_path, url):
    path = _copy(datasets["files"], tmp_path / "ds")
    meta = json.loads((path / "croissant.json").read_text())
    for entry in meta["distribution"]:
        if entry.get("contentUrl") == "master_index.csv":
            entry["contentUrl"] = url
    (path / "croissant.json").write_text(json.dumps(meta))
    (tmp_path / "master_index.csv").write_text("cutout_id\n0\n")  # bait next to it
    with pytest.raises(OutsideDataset, match=f"path {url!r} leads outside the dataset folder"):
        load_dataset(path, split=None)


def test_fileset_patterns_climbing_out_are_refused(datasets, tmp_path):
    path = _copy(datasets["parquet"], tmp_path / "ds")
    meta = json.loads((path / "croissant.json").read_text())
    sets = [e for e in meta["distribution"] if "includes" in e]
    assert sets
    sets[0]["includes"] = "../*/parquet/*.parquet"
    (path / "croissant.json").write_text(json.dumps(meta))
    with pytest.raises(OutsideDataset, match="leads outside the dataset folder"):
        load_dataset(path, split=None)


def test_smoke_train_and_verify_refuse_a_climbing_dataset(datasets, tmp_path):
    from croissant_cutouts.tasks.evaluate.train import smoke_train
    from croissant_cutouts.tasks.verify.dataset import verify_dataset

    path = _copy(datasets["files"], tmp_path / "ds")
    _edit_index(path, "cutout_filename", "../outside.npy")
    with pytest.raises(OutsideDataset, match=re.escape("cutout_path '../outside.npy' of record 3")):
        smoke_train(path, path / "croissant.json", TrainParams(epochs=1))
    assert not (path / "metrics.json").exists()
    report = verify_dataset(path)
    assert any("'../outside.npy' is not a path inside the dataset" in p.message
               for p in report.problems)
    meta = json.loads((path / "croissant.json").read_text())
    meta["distribution"][0]["contentUrl"] = "../../etc/passwd"
    (path / "croissant.json").write_text(json.dumps(meta))
    report = verify_dataset(path)
    assert any("'../../etc/passwd' leads outside the dataset folder; not read" in p.message
               for p in report.problems)


def test_each_record_carries_its_jobs_zscale_limits(datasets):
    from croissant_cutouts.tasks.contract import CHANNELS

    limits = pd.read_csv(datasets["shards"] / "zscale_limits.csv")
    ds = load_dataset(datasets["shards"], split=None)
    for i in (0, len(ds) - 1):
        _, _, row = ds[i]
        job = limits[limits["job_id"] == row["job_id"]].set_index("channel")
        want = job.loc[list(CHANNELS), ["vmin", "vmax"]].to_numpy(np.float32)
        assert row["limits"].dtype == torch.float32 and row["limits"].shape == (4, 2)
        np.testing.assert_array_equal(row["limits"].numpy(), want)
    _, _, rows = ds.batch(np.arange(7))
    assert rows["limits"].shape == (7, 4, 2)
    collated = next(iter(torch.utils.data.DataLoader(ds, batch_size=7)))[2]["limits"]
    assert torch.equal(collated, rows["limits"])  # what model(images, limits) takes
