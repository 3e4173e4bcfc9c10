"""The parquet output layout: one Parquet file per job, the pixels readable through Croissant."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlcroissant as mlc
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from croissant_cutouts.flows.build import build_dataset
from croissant_cutouts.flows.cli import _params as cli_params
from croissant_cutouts.flows.cli import build_parser
from croissant_cutouts.tasks.config import Params
from croissant_cutouts.tasks.contract import (
    INDEX_SCHEMA,
    cutout_sha256,
    open_parquet,
    open_shard,
    parquet_schema,
)
from croissant_cutouts.tasks.dataset.croissant import write_croissant
from croissant_cutouts.tasks.dataset.cutout import cut_job
from croissant_cutouts.tasks.dataset.normalize import job_limits
from croissant_cutouts.tasks.evaluate.data import CutoutDataset, read_records
from croissant_cutouts.tasks.evaluate.train import smoke_train
from croissant_cutouts.tasks.inputs.load import JobSpec, load_job
from croissant_cutouts.tasks.verify import verify_dataset

FILES = Params().override("cutouts", retry_delay_s=0.0, workers=2)
PARQUET = FILES.override("cutouts", layout="parquet")
SHARDS = FILES.override("cutouts", layout="shards")


def run(jobs, out, params):
    return build_dataset(str(jobs), str(out), params, ["create"])


def _write_jobs(jobs: Path) -> None:
    """jid0001, jid0002: 12 rows each; jid0003: 3 rows, one off the image (rejected)."""
    from conftest import SEED_FILES, ramp_image, write_fits

    for j, name in enumerate(("jid0001", "jid0002", "jid0003")):
        job = jobs / name
        job.mkdir(parents=True)
        shape = (70, 90) if name == "jid0002" else (40, 50)
        for k, fname in enumerate(SEED_FILES.values()):
            write_fits(job / fname, ramp_image(shape, j + k) * (k + 1))
        rng = np.random.default_rng(j)
        catalog = pd.DataFrame({"x": rng.uniform(0, shape[1] - 1, 12),
                                "y": rng.uniform(0, shape[0] - 1, 12),
                                "match": np.where(rng.random(12) < 0.3, 1, -1)})
        if name == "jid0003":
            catalog = pd.DataFrame({"x": [3.0, 500.0, 20.2], "y": [4.0, 5.0, 30.7],
                                    "match": [-1, 1, 2]})
        catalog.to_csv(job / "psfcat.csv", index=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The same jobs in the files and the parquet layouts, made by the real flow."""
    root = tmp_path_factory.mktemp("parquet")
    _write_jobs(root / "jobs")
    for layout, params in (("files", FILES), ("parquet", PARQUET)):
        summary = build_dataset(str(root / "jobs"), str(root / layout), params,
                                ["create", "croissant"])
        assert (summary.cutouts, summary.rejected) == (26, 1)
    return {"jobs": root / "jobs", "files": root / "files", "parquet": root / "parquet"}


@pytest.fixture
def both(built):
    return built["files"], built["parquet"]


@pytest.mark.flow
def test_parquet_files_hold_the_index_and_the_files_layouts_tensors(both):
    files, parquet = both
    ia, ib = pd.read_csv(files / "master_index.csv"), pd.read_csv(parquet / "master_index.csv")
    same = [c for c in ia.columns if c not in ("cutout_filename", "shard", "row")]
    pd.testing.assert_frame_equal(ia[same], ib[same])  # sha256 included: same bytes
    assert (ib["shard"] == "parquet/" + ib["job_id"] + ".parquet").all()
    assert (ib["cutout_filename"] == ib["shard"]).all()
    assert (ib["row"] == ib.groupby("job_id").cumcount()).all()
    assert not (parquet / "cutouts").exists() and not (parquet / "shards").exists()
    assert sorted(p.name for p in (parquet / "parquet").iterdir()) == [
        "jid0001.parquet", "jid0002.parquet", "jid0003.parquet",
    ]
    for job, rows in ib.groupby("job_id"):
        table = pq.read_table(parquet / "parquet" / f"{job}.parquet")
        assert table.schema.equals(parquet_schema())
        assert table.schema.field("image").type == pa.list_(pa.float32(), 16384)
        dtypes = {c.name: c.dtype for c in INDEX_SCHEMA}
        got = table.drop_columns(["image"]).to_pandas().astype(dtypes)
        want = ib.loc[rows.index, list(dtypes)].reset_index(drop=True).astype(dtypes)
        pd.testing.assert_frame_equal(got, want)  # cutout_id and split too
        stack = open_parquet(parquet / "parquet" / f"{job}.parquet")
        assert stack.shape == (len(rows), 64, 64, 4) and stack.dtype == np.float32
        for k, name, digest in zip(rows["row"], ia.loc[rows.index, "cutout_filename"],
                                   rows["sha256"], strict=True):
            assert stack[k].tobytes() == np.load(files / name).tobytes()
            assert cutout_sha256(stack[k]) == digest


@pytest.mark.flow
def test_croissant_yields_the_pixels_of_the_files_layout(both):
    files, parquet = both
    path = parquet / "croissant.json"
    meta = json.loads(path.read_text())
    sets = [d for d in meta["distribution"] if d["@type"] == "cr:FileSet"]
    assert [(s["@id"], s["includes"], s["encodingFormat"]) for s in sets] == [
        ("parquet-files", "parquet/*.parquet", "application/x-parquet")
    ]
    objects = {d["@id"]: d for d in meta["distribution"]}
    for job in ("jid0001", "jid0002", "jid0003"):
        assert objects[f"parquet-{job}"]["contentUrl"] == f"parquet/{job}.parquet"
        assert len(objects[f"parquet-{job}"]["sha256"]) == 64
    image = next(f for rs in meta["recordSet"] if rs["@id"] == "transient_candidates"
                 for f in rs["field"] if f["@id"] == "transient_candidates/image")
    assert (image["dataType"], image["isArray"], image["arrayShape"]) == (
        "sc:Float", True, "64,64,4"
    )
    dataset = mlc.Dataset(jsonld=str(path))
    assert not dataset.metadata.ctx.issues.errors and not dataset.metadata.ctx.issues.warnings
    index = pd.read_csv(files / "master_index.csv").set_index("cutout_id")
    seen = []
    for record in dataset.records("transient_candidates"):
        cutout_id = int(record["transient_candidates/cutout_id"])
        pixels = np.asarray(record["transient_candidates/image"], np.float32).reshape(64, 64, 4)
        want = np.load(files / index.loc[cutout_id, "cutout_filename"])
        assert pixels.tobytes() == want.tobytes()
        assert record["transient_candidates/split"] in (b"train", b"validation", b"test")
        seen.append(cutout_id)
    assert sorted(seen) == list(index.index)


@pytest.mark.flow
def test_switching_layouts_leaves_no_stale_files(tmp_path, three_jobs):
    out = tmp_path / "ds"
    run(three_jobs, out, PARQUET)
    assert len(list((out / "parquet").glob("*.parquet"))) == 3
    run(three_jobs, out, SHARDS)
    assert list((out / "parquet").glob("*.parquet")) == []
    run(three_jobs, out, FILES)
    assert list((out / "shards").glob("*.npy")) == []
    back = run(three_jobs, out, PARQUET)  # the parquet files are gone: recut
    assert back.from_cache == 0
    assert list((out / "cutouts").glob("*.npy")) == []
    assert len(list((out / "parquet").glob("*.parquet"))) == 3
    inodes = {p.name: p.stat().st_ino for p in (out / "parquet").iterdir()}
    again = run(three_jobs, out, PARQUET)
    assert again.from_cache == 3
    # cutout_id and split unchanged: the index step leaves the files alone
    assert {p.name: p.stat().st_ino for p in (out / "parquet").iterdir()} == inodes


def test_parquet_is_streamed_in_batches_and_atomic(tmp_path, make_job, monkeypatch):
    job = load_job(JobSpec("jid0001", make_job("jid0001", shape=(50, 60), seed=4)))
    limits = job_limits(job)
    whole = cut_job(job, limits, tmp_path / "one", batch=1000, layout="parquet")
    batched = cut_job(job, limits, tmp_path / "many", batch=5, layout="parquet")
    name = "parquet/jid0001.parquet"
    assert whole.read_rows().equals(batched.read_rows())
    one, many = open_shard(tmp_path / "one" / name), open_shard(tmp_path / "many" / name)
    assert one.tobytes() == many.tobytes()
    assert pq.ParquetFile(tmp_path / "many" / name).metadata.num_row_groups == -(-len(one) // 5)

    from conftest import fail_second_batch

    fail_second_batch(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        cut_job(job, limits, tmp_path / "broken", batch=5, layout="parquet")
    assert list((tmp_path / "broken" / "parquet").iterdir()) == []  # no partial, no temp file


def test_open_parquet_refuses_other_files(tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"image": pa.array([[1.0, 2.0]], pa.list_(pa.float32()))}), bad)
    with pytest.raises(ValueError, match="expected fixed_size_list"):
        open_parquet(bad)
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="not a readable parquet-layout file"):
        open_parquet(bad)


def test_layout_flag():
    args = build_parser().parse_args(["create", "--layout", "parquet"])
    assert cli_params(args).cutouts.layout == "parquet"
    assert Params().override("cutouts", layout="parquet").cutouts.layout == "parquet"
    with pytest.raises(ValueError):
        Params().override("cutouts", layout="feather")


# --------------------------------------------------------------------------- verify


def _damaged(built, tmp_path) -> Path:
    return Path(shutil.copytree(built["parquet"], tmp_path / "ds",
                                ignore=shutil.ignore_patterns(".cutouts")))


def _rewrite(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path, compression="none", use_dictionary=False, row_group_size=5)


def _edit_image(path: Path, change) -> None:
    """Rewrite a parquet-layout file with ``change(stack)`` applied to its cutouts in place."""
    table = pq.read_table(path)
    stack = np.array(open_parquet(path))
    change(stack)
    _rewrite(path, table.set_column(table.schema.get_field_index("image"), "image",
                                    parquet_table_image(stack)))


@pytest.mark.flow
def test_a_clean_parquet_dataset_verifies(built):
    report = verify_dataset(built["parquet"], built["jobs"], deep=True)  # and cut again
    assert report.problems == [], report.lines()
    assert (report.files, report.cutouts, report.digests) == (3, 26, 26)


@pytest.mark.flow
def test_verify_reports_a_damaged_value_at_its_row(built, tmp_path):
    ds = _damaged(built, tmp_path)

    def spike(stack):  # one value out of [0, 1]
        stack[3, 10, 20, 2] = 2.5

    _edit_image(ds / "parquet" / "jid0002.parquet", spike)
    report = verify_dataset(ds, built["jobs"])
    kinds = {p.kind for p in report.problems}
    assert "out-of-range" in kinds, report.lines()
    problem = next(p for p in report.problems if p.kind == "out-of-range")
    assert (problem.file, problem.job_id, problem.catalog_row) == (
        "parquet/jid0002.parquet", "jid0002", 3
    )
    assert problem.message.startswith("shard row 3: 1 values outside [0, 1]")


@pytest.mark.flow
def test_verify_reports_a_changed_value_by_its_sha256(built, tmp_path):
    ds = _damaged(built, tmp_path)
    path = ds / "parquet" / "jid0001.parquet"

    def nudge(stack):  # the next float up: still in range
        stack[7, 0, 0, 0] = np.nextafter(stack[7, 0, 0, 0], np.float32(1))

    _edit_image(path, nudge)
    report = verify_dataset(ds, built["jobs"])
    digest = [p for p in report.problems if p.kind == "digest"]
    assert [(p.file, p.catalog_row) for p in digest] == [("parquet/jid0001.parquet", 7)]


@pytest.mark.flow
def test_verify_reports_truncated_missing_and_unlisted_files(built, tmp_path):
    ds = _damaged(built, tmp_path)
    raw = (ds / "parquet" / "jid0001.parquet").read_bytes()
    (ds / "parquet" / "jid0001.parquet").write_bytes(raw[: len(raw) // 2])
    (ds / "parquet" / "jid0002.parquet").unlink()
    shutil.copy(ds / "parquet" / "jid0003.parquet", ds / "parquet" / "jid0099.parquet")
    report = verify_dataset(ds, built["jobs"], require_croissant=False)
    found = {(p.kind, p.file) for p in report.problems}
    assert ("bad-parquet", "parquet/jid0001.parquet") in found, report.lines()
    assert ("missing-file", "parquet/jid0002.parquet") in found
    assert ("unlisted-file", "parquet/jid0099.parquet") in found
    bad = next(p for p in report.problems if p.kind == "bad-parquet")
    assert bad.job_id == "jid0001" and "not readable Parquet" in bad.message


@pytest.mark.flow
def test_verify_reports_parquet_columns_that_disagree_with_the_index(built, tmp_path):
    ds = _damaged(built, tmp_path)
    path = ds / "parquet" / "jid0003.parquet"
    table = pq.read_table(path)
    ids = pa.array(table.column("cutout_id").to_numpy()[::-1].copy())  # two rows swapped
    _rewrite(path, table.set_column(0, table.schema.field("cutout_id"), ids))
    report = verify_dataset(ds, built["jobs"], require_croissant=False)
    found = [(p.kind, p.file, p.catalog_row, p.message) for p in report.problems]
    assert found == [
        ("bad-parquet", "parquet/jid0003.parquet", 0,
         "shard row 0: column cutout_id is '25', master_index.csv says '24'"),
        ("bad-parquet", "parquet/jid0003.parquet", 2,
         "shard row 1: column cutout_id is '24', master_index.csv says '25'"),
    ], report.lines()


def parquet_table_image(stack: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(stack.reshape(-1)), 16384)


# --------------------------------------------------------------------------- training


def _as_parquet(files_root: Path, root: Path) -> Path:
    """The files-layout dataset at ``files_root`` rewritten in the parquet layout."""
    from croissant_cutouts.tasks.contract import parquet_table

    dtypes = {c.name: c.dtype for c in INDEX_SCHEMA}
    index = pd.read_csv(files_root / "master_index.csv", dtype=dtypes)
    (root / "parquet").mkdir(parents=True)
    rows = []
    for job, part in index.groupby("job_id", sort=True):
        name = f"parquet/{job}.parquet"
        stack = np.stack([np.load(files_root / f) for f in part["cutout_filename"]])
        part = part.assign(cutout_filename=name, shard=name, row=np.arange(len(part)))
        pq.write_table(parquet_table(part, stack), root / name, compression="none")
        rows.append(part)
    frame = pd.concat(rows).astype(dtypes)
    frame.to_csv(root / "master_index.csv", index=False, lineterminator="\n")
    shutil.copyfile(files_root / "zscale_limits.csv", root / "zscale_limits.csv")
    write_croissant(root / "master_index.csv", root / "croissant.json")
    return root


def test_smoke_train_reads_the_parquet_layout(tmp_path):
    from test_train import FAST, _write_dataset

    files = _write_dataset(tmp_path / "files")
    parquet = _as_parquet(files, tmp_path / "parquet")
    a, b = read_records(files / "croissant.json"), read_records(parquet / "croissant.json")
    same = [c for c in a.columns if c not in ("cutout_path", "shard", "row")]
    pd.testing.assert_frame_equal(a[same], b[same])
    assert "image" not in b.columns and (b["row"] >= 0).all()
    fa = CutoutDataset(a["cutout_path"], a["label"].fillna(0), in_memory=False)
    fb = CutoutDataset(b["cutout_path"], b["label"].fillna(0), rows=b["row"])
    order = np.random.default_rng(0).permutation(len(a))[:40]
    xa, xb = fa.__getitems__(order)[0], fb.__getitems__(order)[0]
    assert xa.numpy().tobytes() == xb.numpy().tobytes()
    params = FAST.model_copy(update={"epochs": 1})
    metrics = smoke_train(parquet, params=params, output=tmp_path / "m.json")
    assert metrics["layout"] == "parquet"
    assert len(metrics["loss"]["train"]) == 1 and metrics["train_cutouts_per_s"] > 0
