"""The sharded output layout: same tensors as the files layout, one .npy per job."""

from __future__ import annotations

import hashlib
import io
import json

import mlcroissant as mlc
import numpy as np
import pandas as pd
import pytest

import croissant_cutouts.tasks.dataset.croissant as croissant_mod
import croissant_cutouts.tasks.infra.digests as digests_mod
from croissant_cutouts.flows.build import build_dataset
from croissant_cutouts.flows.cli import _params as cli_params
from croissant_cutouts.flows.cli import build_parser
from croissant_cutouts.tasks.config import Params, load_params
from croissant_cutouts.tasks.dataset.croissant import write_croissant
from croissant_cutouts.tasks.dataset.cutout import cut_job
from croissant_cutouts.tasks.dataset.normalize import job_limits
from croissant_cutouts.tasks.inputs.load import JobSpec, load_job

FILES = Params().override("cutouts", retry_delay_s=0.0, workers=2)
SHARDS = FILES.override("cutouts", layout="shards")


def run(jobs, out, params):
    return build_dataset(str(jobs), str(out), params, ["create"])


@pytest.mark.flow
def test_shards_hold_the_files_layouts_tensors(tmp_path, three_jobs):
    files, shards = tmp_path / "files", tmp_path / "shards"
    a, b = run(three_jobs, files, FILES), run(three_jobs, shards, SHARDS)
    assert (a.cutouts, a.rejected) == (b.cutouts, b.rejected) == (26, 1)
    ia, ib = pd.read_csv(files / "master_index.csv"), pd.read_csv(shards / "master_index.csv")
    same = [c for c in ia.columns if c not in ("cutout_filename", "shard", "row")]
    pd.testing.assert_frame_equal(ia[same], ib[same])
    assert list(ia.columns) == list(ib.columns)
    assert ia["shard"].isna().all() and ia["row"].isna().all()
    assert (ib["shard"] == "shards/" + ib["job_id"] + ".npy").all()
    assert (ib["cutout_filename"] == ib["shard"]).all()
    assert (ib["row"] == ib.groupby("job_id").cumcount()).all()
    assert not (shards / "cutouts").exists()
    assert sorted(p.name for p in (shards / "shards").iterdir()) == [
        "jid0001.npy",
        "jid0002.npy",
        "jid0003.npy",
    ]
    for job, rows in ib.groupby("job_id"):
        raw = (shards / "shards" / f"{job}.npy").read_bytes()
        stack = np.load(io.BytesIO(raw))
        assert stack.shape == (len(rows), 64, 64, 4) and stack.dtype == np.float32
        buf = io.BytesIO()
        np.save(buf, stack)
        assert buf.getvalue() == raw  # exactly what np.save writes
        for k, name in zip(rows["row"], ia.loc[rows.index, "cutout_filename"], strict=True):
            assert stack[k].tobytes() == np.load(files / name).tobytes()
    limits = "zscale_limits.csv", "rejects.csv"
    assert all((files / f).read_bytes() == (shards / f).read_bytes() for f in limits)


@pytest.mark.flow
def test_switching_layout_removes_the_other_layouts_files(tmp_path, three_jobs):
    out = tmp_path / "ds"
    run(three_jobs, out, FILES)
    assert len(list((out / "cutouts").glob("*.npy"))) == 26
    run(three_jobs, out, SHARDS)
    assert list((out / "cutouts").glob("*.npy")) == []
    assert len(list((out / "shards").glob("*.npy"))) == 3
    back = run(three_jobs, out, FILES)  # cached results of the first run, files gone: recut
    assert back.from_cache == 0
    assert list((out / "shards").glob("*.npy")) == []
    index = pd.read_csv(out / "master_index.csv")
    assert all((out / f).is_file() for f in index["cutout_filename"])
    again = run(three_jobs, out, FILES)
    assert again.from_cache == 3


def test_shard_is_streamed_in_batches_and_atomic(tmp_path, make_job, monkeypatch):
    job = load_job(JobSpec("jid0001", make_job("jid0001", shape=(50, 60), seed=4)))
    limits = job_limits(job)
    whole = cut_job(job, limits, tmp_path / "one", batch=1000, layout="shards")
    batched = cut_job(job, limits, tmp_path / "many", batch=5, layout="shards")
    shard = "shards/jid0001.npy"
    assert (tmp_path / "one" / shard).read_bytes() == (tmp_path / "many" / shard).read_bytes()
    assert whole.read_rows().equals(batched.read_rows())

    from conftest import fail_second_batch

    fail_second_batch(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        cut_job(job, limits, tmp_path / "broken", batch=5, layout="shards")
    assert list((tmp_path / "broken" / "shards").iterdir()) == []  # no partial, no temp file


@pytest.mark.flow
def test_croissant_lists_every_shard_with_its_sha256(tmp_path, three_jobs, monkeypatch):
    out = tmp_path / "ds"
    run(three_jobs, out, SHARDS)
    path = write_croissant(out / "master_index.csv", out / "croissant.json")
    meta = json.loads(path.read_text())
    objects = {d["@id"]: d for d in meta["distribution"]}
    assert not [d for d in meta["distribution"] if d["@type"] == "cr:FileSet"]
    for job in ("jid0001", "jid0002", "jid0003"):
        obj = objects[f"shard-{job}"]
        assert obj["contentUrl"] == f"shards/{job}.npy"
        want = hashlib.sha256((out / "shards" / f"{job}.npy").read_bytes()).hexdigest()
        assert obj["sha256"] == want
    records = list(mlc.Dataset(jsonld=str(path)).records("transient_candidates"))
    index = pd.read_csv(out / "master_index.csv")
    assert len(records) == len(index)
    first = records[0]
    assert first["transient_candidates/shard"] == b"shards/jid0001.npy"
    assert first["transient_candidates/row"] == 0

    # digests are remembered while a shard is unchanged, recomputed when it is replaced
    seen = []
    def spy(p):
        seen.append(p)
        return hashlib.sha256(b"").hexdigest()

    monkeypatch.setattr(croissant_mod, "sha256_file", spy)  # the index
    monkeypatch.setattr(digests_mod, "sha256_file", spy)  # the shards, via sha256_files
    write_croissant(out / "master_index.csv", out / "croissant.json")
    # the index and the ZScale limits are always hashed
    assert [p.name for p in seen] == ["master_index.csv", "zscale_limits.csv"]
    seen.clear()
    stack = np.load(out / "shards" / "jid0002.npy")
    tmp = out / "shards" / "new.npy"
    np.save(tmp, stack)
    tmp.replace(out / "shards" / "jid0002.npy")  # same bytes, new file: hashed again
    write_croissant(out / "master_index.csv", out / "croissant.json")
    assert [p.name for p in seen] == ["master_index.csv", "jid0002.npy", "zscale_limits.csv"]


def test_layout_param_and_flags(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("cutouts:\n  layout: rapid\n")
    with pytest.raises(ValueError, match="input_layout"):
        load_params(bad)
    args = build_parser().parse_args(
        [
            "create",
            "--layout",
            "shards",
            "--input_layout",
            "rapid",
            "--task-runner",
            "dask",
            "--workers",
            "3",
        ]
    )
    opts = cli_params(args).cutouts
    assert (opts.layout, opts.input_layout, opts.task_runner, opts.workers) == (
        "shards",
        "rapid",
        "dask",
        3,
    )
    args = build_parser().parse_args(["create", "--dask-address", "tcp://10.0.0.1:8786"])
    opts = cli_params(args).cutouts
    assert (opts.task_runner, opts.dask_address, opts.layout) == (
        "dask",
        "tcp://10.0.0.1:8786",
        "files",
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["create", "--layout", "rapid"])
