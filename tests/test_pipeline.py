"""The whole contract on small jobs, through the plain functions (no Prefect)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from astropy.visualization import ZScaleInterval

from croissant_cutouts.tasks.contract import INDEX_SCHEMA
from croissant_cutouts.tasks.dataset.cutout import cut_job
from croissant_cutouts.tasks.dataset.index import write_index
from croissant_cutouts.tasks.dataset.normalize import job_limits
from croissant_cutouts.tasks.errors import JobError
from croissant_cutouts.tasks.inputs.load import JobSpec, discover_jobs, load_job, reject_job

CHANNEL_FILES = ["science", "reference", "difference", "score"]


def build(jobs_dir, out_dir):
    results = []
    for spec in discover_jobs(jobs_dir):
        try:
            job = load_job(spec)
        except JobError as exc:
            results.append(reject_job(spec, exc))
            continue
        results.append(cut_job(job, job_limits(job), out_dir, batch=5))
    return write_index(results, out_dir)


def expected_tensor(images, x, y):
    """Independent implementation of the contract for one candidate."""
    r, c = math.floor(y + 0.5), math.floor(x + 0.5)
    out = np.zeros((64, 64, 4), np.float32)
    for k, img in enumerate(images):
        finite = img[np.isfinite(img)]
        if finite.size == 0:
            continue
        vmin, vmax = ZScaleInterval().get_limits(img)
        if vmax <= vmin:
            continue
        pad = np.full((img.shape[0] + 128, img.shape[1] + 128), np.nan)
        pad[64:-64, 64:-64] = img
        win = pad[r - 32 + 64 : r + 32 + 64, c - 32 + 64 : c + 32 + 64]
        norm = np.clip((win - float(vmin)) / (float(vmax) - float(vmin)), 0, 1).astype(np.float32)
        norm[~np.isfinite(norm)] = 0
        out[..., k] = norm
    return out


def test_contract_end_to_end(tmp_path, make_job):
    rng = np.random.default_rng(5)
    shape = (90, 70)
    imgs = [rng.normal(0, 1, shape).astype(np.float32) for _ in range(4)]
    imgs[2][:, :15] = np.nan  # NaN-masked band in difference
    imgs[3][:, :15] = np.nan
    imgs[1][:10] = 0.0  # reference without coverage
    cat = pd.DataFrame(
        {
            "x": [0.0, 69.4, 35.5, 12.2, -3.0, 10.0, 69.6],
            "y": [0.0, 89.49, 44.5, 60.7, 5.0, np.nan, 3.0],
            "match": [-1, 3, -1, 0, -1, -1, -1],
            "flux": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        }
    )
    make_job("jid0002", shape, cat, dict(zip(CHANNEL_FILES, imgs, strict=True)), seed=1)
    make_job("jid0001", (40, 50), seed=2)
    out = tmp_path / "ds"
    summary = build(tmp_path / "jobs", out)

    index = pd.read_csv(out / "master_index.csv")
    assert list(index.columns) == [c.name for c in INDEX_SCHEMA]
    assert index["cutout_id"].tolist() == list(range(len(index)))
    assert index["job_id"].tolist() == sorted(index["job_id"])  # job order
    j2 = index[index.job_id == "jid0002"]
    assert j2["catalog_row"].tolist() == [0, 1, 2, 3]  # catalog order; rows 4-6 rejected
    assert j2["label"].tolist() == [0, 1, 0, 1]
    assert j2["x"].tolist() == [0.0, 69.4, 35.5, 12.2]  # positions unchanged
    assert j2["cutout_filename"].tolist()[1] == "cutouts/jid0002_cutout00001.npy"

    rejects = pd.read_csv(out / "rejects.csv")
    assert rejects[rejects.job_id == "jid0002"]["catalog_row"].tolist() == [4, 5, 6]
    # accounting: index rows + reject rows == catalog rows, per job
    for job_id, n in (("jid0001", 12), ("jid0002", 7)):
        assert (index.job_id == job_id).sum() + (rejects.job_id == job_id).sum() == n

    for _, row in j2.iterrows():
        t = np.load(out / row["cutout_filename"])
        assert t.shape == (64, 64, 4) and t.dtype == np.float32
        assert np.isfinite(t).all() and t.min() >= 0 and t.max() <= 1
        np.testing.assert_array_equal(t, expected_tensor(imgs, row["x"], row["y"]))

    limits = pd.read_csv(out / "zscale_limits.csv")
    assert len(limits) == 8 and set(limits["status"]) == {"ok"}
    assert summary.cutouts == len(index) and summary.real == int((index.label == 1).sum())
    files = sorted(p.name for p in (out / "cutouts").iterdir())
    assert files == sorted(f.split("/")[1] for f in index["cutout_filename"])


def test_constant_and_all_nan_channels(tmp_path, make_job):
    shape = (40, 40)
    imgs = {
        "science": np.full(shape, 3.0, np.float32),
        "difference": np.full(shape, np.nan, np.float32),
    }
    make_job("jid0001", shape, images=imgs)
    out = tmp_path / "ds"
    summary = build(tmp_path / "jobs", out)
    t = np.load(out / "cutouts/jid0001_cutout00000.npy")
    assert not t[..., 0].any() and not t[..., 2].any() and t[..., 1].any()
    assert any("science channel constant" in n for n in summary.notes)
    assert any("difference channel no finite pixels" in n for n in summary.notes)
    status = pd.read_csv(out / "zscale_limits.csv").set_index("channel")["status"]
    assert status["science"] == "constant" and status["difference"] == "no_finite_pixels"


def test_rejected_job_and_accounting(tmp_path, make_job):
    make_job("jid0001")
    bad = make_job("jid0002", images={"score": np.zeros((5, 5), np.float32)})
    (make_job("jid0003") / "psfcat.csv").write_text("")
    out = tmp_path / "ds"
    summary = build(tmp_path / "jobs", out)
    rejects = pd.read_csv(out / "rejects.csv")
    whole = rejects[rejects.catalog_row.isna()]
    assert whole.job_id.tolist() == ["jid0002", "jid0003"]
    assert "differ in shape" in whole.reason.iloc[0] and "psfcat.csv" in whole.reason.iloc[1]
    per_row = rejects[(rejects.job_id == "jid0002") & rejects.catalog_row.notna()]
    assert len(per_row) == 12  # every row of the readable catalog is accounted for
    assert summary.jobs == 3 and summary.jobs_rejected == 2 and summary.cutouts == 12
    assert not list((out / "cutouts").glob("jid0002*")), bad


def test_stale_cutouts_are_pruned(tmp_path, make_job):
    job = make_job("jid0001")
    out = tmp_path / "ds"
    build(tmp_path / "jobs", out)
    assert (out / "cutouts/jid0001_cutout00011.npy").exists()
    pd.DataFrame({"x": [5.0], "y": [5.0], "match": [-1]}).to_csv(job / "psfcat.csv", index=False)
    (out / "cutouts" / ".jid0001_cutout00000.npy.tmp-123").write_bytes(b"half")
    (out / "cutouts" / "user_notes.txt").write_text("not ours")
    # ours by pattern but not the contract's names of listed cutouts: a sixth digit, a
    # job the index does not hold
    (out / "cutouts" / "jid0001_cutout000000.npy").write_bytes(b"x")
    (out / "cutouts" / "jid0009_cutout00000.npy").write_bytes(b"x")
    summary = build(tmp_path / "jobs", out)
    assert sorted(p.name for p in (out / "cutouts").iterdir()) == [
        "jid0001_cutout00000.npy",
        "user_notes.txt",
    ]
    assert summary.pruned == 14


def test_empty_run_writes_empty_tables(tmp_path):
    (tmp_path / "jobs").mkdir()
    summary = build(tmp_path / "jobs", tmp_path / "ds")
    assert summary.cutouts == 0
    assert pd.read_csv(tmp_path / "ds/master_index.csv").columns[0] == "cutout_id"


def test_spec_input_files(make_job):
    job = make_job()
    files = JobSpec(job.name, job).input_files()
    assert [f.name for f in files][-1] == "psfcat.csv" and len(files) == 5


def _copies(base, root, n_jobs: int, n_rows: int) -> list:
    """``n_jobs`` results whose rows files hold ``base``'s rows repeated to ``n_rows``."""
    import dataclasses

    from croissant_cutouts.tasks.contract import cutout_filename
    from croissant_cutouts.tasks.dataset.cutout import rows_path, write_rows

    rows = base.read_rows()
    rows = rows.iloc[np.arange(n_rows) % len(rows)].reset_index(drop=True)
    rows["catalog_row"] = np.arange(n_rows)
    out = []
    for j in range(n_jobs):
        jid = f"jid{j:05d}"
        frame = rows.assign(cutout_filename=[cutout_filename(jid, k) for k in range(n_rows)])
        path = rows_path(root, jid)
        write_rows(path, frame)
        out.append(dataclasses.replace(base, job_id=jid, rows_file=str(path), n_rows=n_rows))
    return out


def test_index_is_streamed_a_few_jobs_at_a_time(tmp_path, make_job, monkeypatch):
    """write_index holds a few bytes per row across jobs, not the whole index."""
    import tracemalloc

    from croissant_cutouts.tasks.dataset import index as index_step

    monkeypatch.setattr(index_step, "_WRITE_ROWS", 1000)  # a batch: 5 of these jobs

    data = load_job(JobSpec("jid0001", make_job("jid0001")))
    base = cut_job(data, job_limits(data), tmp_path / "cut")
    peaks = {}
    for n_jobs in (10, 20, 60):  # the first: lazy imports (scipy for truth links), not counted
        out = tmp_path / f"ds{n_jobs}"
        results = _copies(base, out, n_jobs, 200)
        tracemalloc.start()
        summary = write_index(results, out)
        peaks[n_jobs] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        index = pd.read_csv(out / "master_index.csv")
        assert summary.cutouts == len(index) == 200 * n_jobs
        assert index["cutout_id"].tolist() == list(range(200 * n_jobs))
        assert index["job_id"].is_monotonic_increasing
    per_row = (peaks[60] - peaks[20]) / (200 * 40)
    assert per_row < 350, f"write_index holds {per_row:.0f} bytes per index row"


def test_index_written_in_batches_is_the_index_written_at_once(tmp_path, make_job, monkeypatch):
    """Batches of whole jobs (here 1 or 2 jobs each) give the very same tables."""
    from croissant_cutouts.tasks.dataset import index as index_step

    for name in ("jid0001", "jid0002", "jid0003"):
        make_job(name)
    build(tmp_path / "jobs", tmp_path / "once")
    monkeypatch.setattr(index_step, "_WRITE_ROWS", 13)  # a job has 12 rows
    build(tmp_path / "jobs", tmp_path / "batched")
    for name in ("master_index.csv", "rejects.csv", "jobs.csv", "zscale_limits.csv"):
        once, batched = (tmp_path / d / name for d in ("once", "batched"))
        assert once.read_bytes() == batched.read_bytes(), name
