"""``cutouts verify``: a clean dataset passes; each kind of damage is reported, row by row."""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import os
import pickle
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from croissant_cutouts.flows.build import build_dataset
from croissant_cutouts.flows.cli import main
from croissant_cutouts.tasks.config import Params
from croissant_cutouts.tasks.contract import INDEX_FILE, cutout_sha256
from croissant_cutouts.tasks.verify import (
    DatasetInvalid,
    Problem,
    VerifyReport,
    reading,
    scans,
    streaming,
    verify_dataset,
    verify_task,
)

FILES = Params().override("cutouts", retry_delay_s=0.0, workers=2)
SHARDS = FILES.override("cutouts", layout="shards")


#: A folder in which ``built`` keeps its datasets between test sessions (mutation runs, where
#: every mutant is a new session without a Prefect server: docs/mutation-testing.md).
KEEP = "CUTOUTS_TEST_VERIFY_DATASETS"
_KEPT = bool(os.environ.get(KEEP)) and (Path(os.environ[KEEP]) / "complete").exists()

# The flow runs only to build the datasets; with kept ones, these tests run none.
pytestmark = [] if _KEPT else [pytest.mark.flow]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Input jobs and one dataset per layout, made once by the real flow (create, croissant).

    jid0001, jid0002: 12 rows each, all cut. jid0003: 3 rows, one off the image (rejected).
    jid0004: a truncated image, rejected whole with its 2 catalog rows. With ``$KEEP`` set,
    they are made in that folder by the first session and read from it by later ones.
    """
    kept = os.environ.get(KEEP)
    root = Path(kept) if kept else tmp_path_factory.mktemp("verify")
    out = {"jobs": root / "jobs", "files": root / "files", "shards": root / "shards"}
    if not (root / "complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        _build(root)
        (root / "complete").touch()
    return out


def _build(root: Path) -> None:
    from conftest import SEED_FILES, ramp_image, write_fits

    jobs = root / "jobs"
    catalogs = {
        "jid0003": pd.DataFrame(
            {"x": [3.0, 500.0, 20.2], "y": [4.0, 5.0, 30.7], "match": [-1, 1, 2]}
        ),
        "jid0004": pd.DataFrame({"x": [3.0, 5.0], "y": [4.0, 6.0], "match": [-1, 1]}),
    }
    for j, name in enumerate(("jid0001", "jid0002", "jid0003", "jid0004")):
        job = jobs / name
        job.mkdir(parents=True)
        shape = (70, 90) if name == "jid0002" else (40, 50)
        for k, fname in enumerate(SEED_FILES.values()):
            write_fits(job / fname, ramp_image(shape, j + k) * (k + 1))
        rng = np.random.default_rng(j)
        catalog = catalogs.get(name)
        if catalog is None:
            catalog = pd.DataFrame(
                {
                    "x": rng.uniform(0, shape[1] - 1, 12),
                    "y": rng.uniform(0, shape[0] - 1, 12),
                    "match": np.where(rng.random(12) < 0.3, 1, -1),
                }
            )
        catalog.to_csv(job / "psfcat.csv", index=False)
    diff = jobs / "jid0004" / SEED_FILES["difference"]
    diff.write_bytes(diff.read_bytes()[:3000])
    for layout, params in (("files", FILES), ("shards", SHARDS)):
        summary = build_dataset(str(jobs), str(root / layout), params, ["create", "croissant"])
        assert (summary.cutouts, summary.rejected, summary.jobs_rejected) == (26, 3, 1)


@pytest.fixture
def files(built, tmp_path) -> Path:
    """A private copy of the files-layout dataset, to damage."""
    return _copy(built["files"], tmp_path / "files")


@pytest.fixture
def shards(built, tmp_path) -> Path:
    """A private copy of the shards-layout dataset, to damage."""
    return _copy(built["shards"], tmp_path / "shards")


def _copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".cutouts")))


def _row(ds: Path, job: str = "jid0002", k: int = 3) -> pd.Series:
    """The k-th index row of a job, with its 0-based position as ``index_row``."""
    index = pd.read_csv(ds / "master_index.csv")
    rows = index[index.job_id == job]
    row = rows.iloc[k].copy()
    row["index_row"] = rows.index[k]
    return row


def _only(report, kind: str) -> Problem:
    assert [p.kind for p in report.problems] == [kind], report.lines()
    return report.problems[0]


def _at(problem: Problem, row: pd.Series, file: str | None = None) -> None:
    """The problem names the index row, its cutout, job, catalog row and file."""
    assert problem.index_row == row.index_row
    assert problem.cutout_id == row.cutout_id
    assert problem.job_id == row.job_id
    assert problem.catalog_row == row.catalog_row
    assert problem.file == (file or row.cutout_filename)
    assert f"index row {row.index_row}" in problem.line()


def _rewrite(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)


def _set_sha256(ds: Path, index_row: int, digest: str) -> None:
    """Rewrite one index row's ``sha256``, leaving every other byte of the CSV as it was."""
    path = ds / "master_index.csv"
    index = pd.read_csv(path, dtype=str, keep_default_na=False)
    old = index.at[index_row, "sha256"]
    lines = path.read_text().splitlines(keepends=True)
    assert lines[index_row + 1].count(old) == 1
    lines[index_row + 1] = lines[index_row + 1].replace(old, digest)
    path.write_text("".join(lines))


@pytest.mark.parametrize("layout", ["files", "shards"])
def test_clean_dataset_verifies(built, layout):
    report = verify_dataset(built[layout], built["jobs"])
    assert report.ok, report.lines()
    assert (report.index_rows, report.cutouts, report.jobs) == (26, 26, 4)
    assert report.catalog_rows == 12 + 12 + 3 + 2 and report.reject_rows == 1 + 2 + 1
    assert report.files == (26 if layout == "files" else 3)
    # the index and the ZScale limits (+ one per shard)
    assert report.sha256 == (2 if layout == "files" else 5)
    assert report.recounted == 4
    assert report.summary().startswith("verify: OK, 26 cutouts in ")
    jobs = pd.read_csv(built[layout] / "jobs.csv")
    assert list(jobs.columns) == [
        "job_id",
        "status",
        "catalog_rows",
        "cutouts",
        "rejected_rows",
        "reason",
    ]
    assert jobs[["status", "catalog_rows", "cutouts", "rejected_rows"]].values.tolist() == [
        ["ok", 12, 12, 0],
        ["ok", 12, 12, 0],
        ["ok", 3, 2, 1],
        ["rejected", 2, 0, 2],
    ]
    assert "truncated" in jobs.reason.iloc[3]


# --- files layout: one problem per damaged cutout, at its index row ----------------------


def test_deleted_cutout(files):
    row = _row(files)
    (files / row.cutout_filename).unlink()
    _at(_only(verify_dataset(files), "missing-file"), row)


def test_truncated_cutout(files):
    row = _row(files)
    path = files / row.cutout_filename
    path.write_bytes(path.read_bytes()[:1000])
    problem = _only(verify_dataset(files), "bad-npy")
    _at(problem, row)
    assert "truncated: 1000 bytes" in problem.message


@pytest.mark.parametrize(
    ("value", "kind", "words"),
    [
        (np.nan, "non-finite", "1 NaN"),
        (np.inf, "non-finite", "1 inf"),
        (1.5, "out-of-range", "max 1.5"),
        (-0.25, "out-of-range", "min -0.25"),
    ],
)
def test_bad_value_in_cutout(files, value, kind, words):
    row = _row(files)
    path = files / row.cutout_filename
    tensor = np.load(path)
    tensor[10, 20, 2] = value
    _rewrite(path, tensor)
    problem = _only(verify_dataset(files), kind)
    _at(problem, row)
    assert words in problem.message


def test_values_exactly_0_and_1_are_in_range(files):
    row = _row(files)
    path = files / row.cutout_filename
    tensor = np.load(path)
    tensor[0, 0, :2], tensor[1, 1, :2] = 0.0, 1.0
    (files / "croissant.json").unlink()  # its digest of the index would tell
    _rewrite(path, tensor)
    _set_sha256(files, row.index_row, cutout_sha256(tensor))
    assert verify_dataset(files, require_croissant=False).ok
    tensor[5, 5, 3] = np.nan  # now a NaN too: one line, and 0 and 1 still not out of range
    _rewrite(path, tensor)
    _set_sha256(files, row.index_row, cutout_sha256(tensor))
    problem = _only(verify_dataset(files, require_croissant=False), "non-finite")
    assert problem.message == "1 NaN and 0 inf values"


@pytest.mark.parametrize(
    ("array", "kind"),
    [
        (np.zeros((64, 64, 3), np.float32), "shape"),
        (np.zeros((64, 64, 4), np.float64), "dtype"),
        (np.zeros((64, 64, 4), ">f4"), "dtype"),
        (np.asfortranarray(np.zeros((64, 64, 4), np.float32)), "bad-npy"),
    ],
)
def test_wrong_array_in_cutout(files, array, kind):
    row = _row(files)
    _rewrite(files / row.cutout_filename, array)
    _at(_only(verify_dataset(files), kind), row)


def test_cutouts_folder_gone_and_no_file_descriptor_left_open(files):
    fds = len(os.listdir("/proc/self/fd"))
    shutil.rmtree(files / "cutouts")
    report = verify_dataset(files)
    assert [p.kind for p in report.problems] == ["missing-file"] * 26, report.lines()
    assert report.problems[0].file == _row(files, "jid0001", 0).cutout_filename
    assert report.files == 0
    assert len(os.listdir("/proc/self/fd")) == fds


def test_unlisted_cutout_and_leftover_temporary_file(files):
    src = files / _row(files).cutout_filename
    shutil.copy(src, files / "cutouts" / "jid0002_cutout00099.npy")
    shutil.copy(src, files / "cutouts" / ".jid0002_cutout00100.npy.tmp-123-456")  # killed run
    (files / "cutouts" / "README.txt").write_text("a user's note: not ours, not checked")
    report = verify_dataset(files)
    assert _only(report, "unlisted-file").file == "cutouts/jid0002_cutout00099.npy"
    assert any("1 leftover temporary files" in n for n in report.notes)
    # temporaries in the cutouts folder and at the dataset's top level are counted together
    shutil.copy(src, files / "cutouts" / ".jid0002_cutout00101.npy.tmp-123-457")
    (files / ".jobs.csv.tmp-9-9").write_text("half a table")
    (files / ".hidden-note").write_text("not ours")
    (files / "notes.tmp-1").write_text("not hidden, not ours")
    report = verify_dataset(files)
    assert [n for n in report.notes if "leftover" in n] == [
        "3 leftover temporary files of an interrupted run (hidden, '.tmp-' in the name); "
        "the next create removes them"
    ]


def test_changed_byte_in_index_is_a_checksum_mismatch(files):
    path = files / "master_index.csv"
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[5].split(",")
    x = fields[2]  # cutout_id, job_id, x, ...: change the last digit of x
    fields[2] = x[:-1] + ("1" if x[-1] != "1" else "2")
    lines[5] = ",".join(fields)
    path.write_text("".join(lines))
    problem = _only(verify_dataset(files), "checksum")
    assert problem.file == "master_index.csv" and "croissant.json says" in problem.message


def test_deleted_reject_row_is_an_accounting_problem(files):
    path = files / "rejects.csv"
    rejects = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert rejects.loc[0, "job_id"] == "jid0003" and rejects.loc[0, "catalog_row"] == "1"
    rejects.drop(index=0).to_csv(path, index=False)
    problem = _only(verify_dataset(files), "accounting")
    assert (problem.job_id, problem.catalog_row) == ("jid0003", 1)
    assert "neither in master_index.csv nor in rejects.csv" in problem.message


@pytest.mark.parametrize("layout", ["files", "shards"])
def test_duplicated_index_row(built, tmp_path, layout):
    ds = _copy(built[layout], tmp_path / layout)
    path = ds / "master_index.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(8, lines[7])  # data row 6 again, as row 7
    path.write_text("".join(lines))
    problem = _only(verify_dataset(ds), "duplicate-row")
    assert (problem.index_row, problem.file) == (7, "master_index.csv")
    assert "repeats index row 6" in problem.message


def test_rows_that_differ_in_a_column_verify_does_not_read_are_not_exact_repeats(files):
    path = files / "master_index.csv"
    lines = path.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    assert "x" not in reading.INDEX_COLUMNS
    fields = lines[7].split(",")
    fields[header.index("x")] += "1"  # data row 6 again as row 7, its x one digit longer
    lines.insert(8, ",".join(fields))
    path.write_text("".join(lines))
    report = verify_dataset(files, require_croissant=False)
    assert not [p for p in report.problems if "exactly" in p.message], report.lines()
    assert [(p.index_row, p.message) for p in report.problems if p.kind == "duplicate-row"] == [
        (7, "candidate already indexed at index row 6")
    ]


_ROWS = [  # cutout_id, job_id, cutout_filename, catalog_row, ra, note
    "0,jid0001,cutouts/jid0001_cutout00000.npy,0,150.25,a",
    "1,jid0001,cutouts/jid0001_cutout00001.npy,1,150.5,b",
    "1,jid0001,cutouts/jid0001_cutout00001.npy,1,150.5,c",  # row 1 but for the note
    "1,jid0001,cutouts/jid0001_cutout00001.npy,1,150.75,b",  # row 1 but for ra
    "2,jid0001,cutouts/jid0001_cutout00002.npy,2,151.0,d",
    "1,jid0001,cutouts/jid0001_cutout00001.npy,1,150.5,b",  # row 1 exactly
    "1,jid0001,cutouts/jid0001_cutout00001.npy,1,150.75,b",  # row 3 exactly
]


@pytest.mark.parametrize("chunk", [1, 2, 4096])
def test_exact_repeats_by_row_hash_across_chunks(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(reading, "_INDEX_CHUNK_ROWS", chunk)
    header = "cutout_id,job_id,cutout_filename,catalog_row,ra,note"
    (tmp_path / INDEX_FILE).write_text("\n".join([header, *_ROWS]) + "\n")
    problems: list[Problem] = []
    index = streaming.load_index(tmp_path, problems)
    assert [(p.kind, p.index_row, p.job_id, p.message) for p in problems] == [
        ("duplicate-row", 5, "jid0001", "repeats index row 1 exactly"),
        ("duplicate-row", 6, "jid0001", "repeats index row 3 exactly"),
    ]
    assert index.pos.tolist() == [0, 1, 2, 3, 4] and index.rows_read == 7
    assert index.cutout_id.tolist() == [0, 1, 1, 1, 2]
    chunks = list(reading.index_chunks(tmp_path))
    assert len(chunks) == -(-7 // chunk)
    frame = pd.concat([c for c, _ in chunks], ignore_index=True)
    assert list(frame.columns) == list(reading.INDEX_REQUIRED)  # ra and note not kept
    assert all(h.dtype == np.uint64 for _, h in chunks)
    # the kept columns alone would find more repeats: rows are hashed whole
    assert len(set(reading.row_hashes(frame).tolist())) == 3


@pytest.mark.parametrize("seed", range(5))
def test_rows_seen_in_earlier_chunks_are_found_whatever_the_chunks(seed):
    """Each row's first occurrence, as one global pass over all the rows would find it."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 300, 3000).astype(np.uint64)  # many repeats, near and far
    _, first_at, which = np.unique(hashes, return_index=True, return_inverse=True)
    want = first_at[which]
    seen, got, start = streaming._SeenRows(), np.arange(len(hashes)), 0
    reported: list[tuple[int, int]] = []

    def report(chunk, i, first, at):
        reported.append((at + i, first))

    while start < len(hashes):
        stop = start + int(rng.integers(1, 200))
        before = len(reported)
        mask = seen.add(hashes[start:stop], start, report, None)
        assert mask.sum() == len(reported) - before
        start = stop
    for row, first in reported:
        got[row] = first
    assert got.tolist() == want.tolist()
    lengths = [len(run) for run, _ in seen.runs]
    assert sum(lengths) == len(set(hashes.tolist()))
    assert all(later * 2 < earlier for earlier, later in itertools.pairwise(lengths))


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "cutout_id,job_id\n1,2\n",
        "cutout_id,job_id,cutout_filename,catalog_row,ra\n",
        "cutout_id,job_id,cutout_filename,catalog_row\n0,j,f,0\n1,j,f\n2,j,f,2\n",
        "cutout_id,job_id,cutout_filename,catalog_row\n0,j,f,0\n1,j,f,1\n2,j,f,2,9\n",
        'cutout_id,job_id,cutout_filename,catalog_row\n0,j,f,0\n1,j,"f,1\n',
    ],
    ids=["missing", "empty", "lacks-columns", "header-only", "short-row", "long-row", "quote"],
)
def test_read_index_reads_as_read_table(tmp_path, monkeypatch, text):
    monkeypatch.setattr(reading, "_INDEX_CHUNK_ROWS", 1)
    if text is not None:
        (tmp_path / INDEX_FILE).write_text(text)
    got: list[Problem] = []
    want: list[Problem] = []
    index = streaming.load_index(tmp_path, got)
    frame = reading.read_table(tmp_path, INDEX_FILE, reading.INDEX_REQUIRED, want)
    assert [p for p in got if p.kind == "table"] == want  # (a short row's cell is bad too)
    assert (index is None) == (frame is None)
    if frame is not None:
        kept = [c for c in reading.INDEX_COLUMNS if c in frame]
        chunks = pd.concat([c for c, _ in reading.index_chunks(tmp_path)], ignore_index=True)
        pd.testing.assert_frame_equal(chunks, frame[kept].reset_index(drop=True))
        assert index.rows_read == len(frame)
        assert index.job.tolist() == frame["job_id"].tolist()
        groups = list(streaming.index_groups(tmp_path, index))  # pass 2: all rows, one group
        assert len(groups) == (len(frame) > 0)
        assert [j for g in groups for j in g.job] == frame["job_id"].tolist()
        names = [g.file_name(i) for g in groups for i in range(len(g.pos))]
        assert names == frame["cutout_filename"].tolist()


def test_parsed_index_quotes_the_text_it_read(tmp_path, monkeypatch):
    """Cells whose text is not the plain integer are quoted as written; others rebuilt."""
    monkeypatch.setattr(reading, "_INDEX_CHUNK_ROWS", 2)
    rows = [
        "0,j,f,0,s,0", "007,j,cutouts/é.npy,1,s, 1", "-3,j,,2,s,x", "3,j, f ,3,s,",
        "4.0,j,f,4,s,-2", 'five,j,"c,d.npy",5,s,2.0',
    ]
    text = "cutout_id,job_id,cutout_filename,catalog_row,shard,row\n" + "\n".join(rows) + "\n"
    (tmp_path / INDEX_FILE).write_text(text, encoding="utf-8")
    problems: list[Problem] = []
    (index,) = streaming.index_groups(tmp_path, streaming.load_index(tmp_path, problems))
    assert [index.text("cutout_id", i) for i in range(6)] == ["0", "007", "-3", "3", "4.0", "five"]
    assert [index.text("row", i) for i in range(6)] == ["0", " 1", "x", "", "-2", "2.0"]
    assert index.cutout_id.tolist() == [0, 7, -3, 3, 4, -1]
    names = [index.file_name(i) for i in range(6)]
    assert names == ["f", "cutouts/é.npy", "", " f ", "f", "c,d.npy"]
    assert index.odd == {"cutout_id": {1: "007", 2: "-3", 4: "4.0", 5: "five"},
                         "row": {1: " 1", 2: "x", 5: "2.0"}}
    assert [p.message for p in problems] == ["cutout_id 'five' is not an integer"]


def test_index_columns_hold_what_verify_reads():
    assert set(scans.PARQUET_KEYS) <= set(reading.INDEX_COLUMNS)
    assert set(reading.INDEX_REQUIRED) <= set(reading.INDEX_COLUMNS)


def _wide_index(path: Path, n: int, columns: int = 40) -> None:
    """An index of ``n`` rows and ``columns`` columns of plausible text, all rows distinct."""
    rng = np.random.default_rng(7)
    ids = np.arange(n).astype(str)
    job = np.char.add("jid", np.char.zfill((np.arange(n) // 200 + 1).astype(str), 4))
    row = (np.arange(n) % 200).astype(str)
    cols = {
        "cutout_id": ids,
        "job_id": job,
        "cutout_filename": np.char.add(
            np.char.add(np.char.add("cutouts/", job), "_cutout"), np.char.add(row, ".npy")
        ),
        "catalog_row": row,
        "split": rng.choice(["train", "val", "test"], n),
        "injected": rng.choice(["True", "False"], n),
        "truth_id": np.where(rng.random(n) < 0.5, "", ids),
        "sha256": np.array([f"{k:064x}" for k in rng.integers(0, 2**63, n)]),
    }
    floats = np.round(rng.normal(100, 50, 1000), 6).astype(str)
    for k in range(columns - len(cols)):  # a float's digits, then the row's: distinct rows
        cols[f"value{k}"] = np.char.add(floats[rng.integers(0, 1000, n)], ids)
    lines = [",".join(cols), *map(",".join, zip(*cols.values(), strict=True))]
    path.write_text("\n".join(lines) + "\n")


#: Arrow pools that counted a test's allocations: kept, since arrays made in a pool free
#: their memory through it (a pool gone before its arrays is a crash).
_POOLS: list[pa.MemoryPool] = []


def test_reading_the_index_holds_little_per_row(tmp_path, monkeypatch):
    """Peak memory of reading and parsing a 40-column index, per row: the kept columns.

    Python allocations (tracemalloc) plus Arrow's (the ``str`` columns, off the Python
    heap); chunks of 256 rows, so that the one chunk read at a time weighs little in the
    figure. Reading every column whole, as verify once did, took about 1,900 bytes a row;
    parsing the kept columns once all were read, about 680.
    """
    monkeypatch.setattr(reading, "_INDEX_CHUNK_ROWS", 256)
    n = 10_000
    _wide_index(tmp_path / INDEX_FILE, n)
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    _POOLS.append(pool)
    before = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        problems: list[Problem] = []
        kept = len(streaming.load_index(tmp_path, problems).pos)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(before)
    assert problems == [] and kept == n
    per_row = (peak + pool.max_memory()) / n
    assert per_row < 600, f"{per_row:.0f} bytes a row"  # about 450 (680 parsed whole)


def _set_cell(ds: Path, index_row: int, column: str, value: str) -> None:
    """Rewrite one index cell; croissant.json goes, since its index digest would tell."""
    path = ds / "master_index.csv"
    index = pd.read_csv(path, dtype=str, keep_default_na=False)
    index.at[index_row, column] = value
    index.to_csv(path, index=False, lineterminator="\n")
    (ds / "croissant.json").unlink(missing_ok=True)


@pytest.mark.parametrize("name", ["../outside.npy", "/etc/passwd"])
def test_a_cutout_path_outside_the_dataset_is_an_index_problem(files, name):
    row = _row(files)
    _set_cell(files, row.index_row, "cutout_filename", name)
    report = verify_dataset(files, require_croissant=False)
    index = [p for p in report.problems if p.kind == "index"]
    assert [(p.index_row, p.file, p.job_id, p.catalog_row) for p in index] == 2 * [
        (row.index_row, "master_index.csv", row.job_id, row.catalog_row)
    ], report.lines()
    assert index[0].message == (
        f"cutout_filename {name!r}, the contract's name is {row.cutout_filename!r}"
    )
    assert index[1].message == f"cutout_filename {name!r} is not a path inside the dataset"


def test_a_shard_row_listed_twice(shards):
    first, second = _row(shards, "jid0002", 3), _row(shards, "jid0002", 7)
    _set_cell(shards, second.index_row, "row", str(int(first.row)))
    report = verify_dataset(shards, require_croissant=False)
    twice = [p for p in report.problems if "already listed" in p.message]
    assert [(p.kind, p.index_row, p.file) for p in twice] == [
        ("index", second.index_row, "shards/jid0002.npy")
    ], report.lines()
    assert twice[0].message == f"shard row 3 is already listed at index row {first.index_row}"
    gap = [p for p in report.problems if p.message.startswith("shard rows must be")]
    assert [(p.job_id, p.file) for p in gap] == [("jid0002", "shards/jid0002.npy")]


def test_index_cells_that_are_not_integers(files):
    first, second = _row(files, "jid0002", 3), _row(files, "jid0002", 5)
    _set_cell(files, first.index_row, "cutout_id", "inf")
    _set_cell(files, second.index_row, "catalog_row", "1.5")
    report = verify_dataset(files, require_croissant=False)
    bad = [p for p in report.problems if p.message.endswith("is not an integer")]
    assert [(p.kind, p.file, p.index_row, p.message) for p in bad] == [
        ("index", "master_index.csv", first.index_row, "cutout_id 'inf' is not an integer"),
        ("index", "master_index.csv", second.index_row, "catalog_row '1.5' is not an integer"),
    ], report.lines()
    assert (bad[0].cutout_id, bad[0].catalog_row) == (None, first.catalog_row)
    assert (bad[1].cutout_id, bad[1].catalog_row) == (second.cutout_id, None)


def _index_problems(ds: Path, words: str) -> list[tuple]:
    report = verify_dataset(ds, require_croissant=False)
    found = [p for p in report.problems if p.kind == "index" and words in p.message]
    return [(p.index_row, p.job_id, p.file, p.message) for p in found]


def test_cutout_ids_must_count_rows_from_0(files):
    _set_cell(files, 5, "cutout_id", "99")
    assert _index_problems(files, "cutout_id is") == [
        (
            5,
            "jid0001",
            "master_index.csv",
            "cutout_id is 99, expected 5: ids must be 0 .. 25 in row order "
            "(1 rows differ from here on)",
        )
    ]


def test_rows_must_be_in_job_then_catalog_order(files):
    path = files / "master_index.csv"
    index = pd.read_csv(path, dtype=str, keep_default_na=False)
    others = [c for c in index.columns if c != "cutout_id"]
    index.loc[[3, 4], others] = index.loc[[4, 3], others].to_numpy()  # catalog rows 4, 3
    index.to_csv(path, index=False, lineterminator="\n")
    (files / "croissant.json").unlink()
    assert _index_problems(files, "order") == [
        (
            4,
            "jid0001",
            "master_index.csv",
            "rows are not in job order, then catalog order, from here on",
        )
    ]
    index.loc[[3, 4], others] = index.loc[[4, 3], others].to_numpy()  # back
    index.loc[[11, 12], others] = index.loc[[12, 11], others].to_numpy()  # jid0002 first
    index.to_csv(path, index=False, lineterminator="\n")
    assert [p[:2] for p in _index_problems(files, "order")] == [(12, "jid0001")]


@pytest.mark.parametrize(
    ("column", "value", "words", "file"),
    [
        ("shard", "", "mixes layouts: 25 rows name a shard, 1 do not", "master_index.csv"),
        (
            "shard",
            "shards/jid0002.npy",
            "shard 'shards/jid0002.npy', cutout_filename 'shards/jid0001.npy': both must be "
            "'shards/jid0001.npy'",
            "master_index.csv",
        ),
        ("row", "-1", "row '-1' is not a shard row", "shards/jid0001.npy"),
        ("row", "two", "row 'two' is not a shard row", "shards/jid0001.npy"),
    ],
)
def test_shard_columns_of_the_index(shards, column, value, words, file):
    _set_cell(shards, 5, column, value)
    assert _index_problems(shards, words) == [(5, "jid0001", file, words)]


def test_candidate_indexed_twice(files):
    path = files / "master_index.csv"
    index = pd.read_csv(path, dtype=str, keep_default_na=False)
    index.loc[26] = index.loc[25]  # jid0003, catalog row 2 again, under a new cutout_id
    index.loc[26, "cutout_id"] = "26"
    index.to_csv(path, index=False)
    problem = _only(verify_dataset(files, require_croissant=False), "duplicate-row")
    assert (problem.index_row, problem.job_id, problem.catalog_row) == (26, "jid0003", 2)
    assert "already indexed at index row 25" in problem.message


def test_candidate_indexed_and_rejected(files):
    with open(files / "rejects.csv", "a") as fh:
        fh.write("jid0003,0,made up\n")
    problem = _only(verify_dataset(files), "accounting")
    assert (problem.index_row, problem.job_id, problem.catalog_row) == (24, "jid0003", 0)
    assert "indexed and also rejected (rejects.csv row 4)" in problem.message
    assert problem.file == "master_index.csv"


def test_bytes_after_the_array_in_a_cutout(files):
    row = _row(files)
    path = files / row.cutout_filename
    path.write_bytes(path.read_bytes() + b"\0" * 7)  # the array still loads; 7 bytes too many
    problem = _only(verify_dataset(files), "bad-npy")
    _at(problem, row)
    assert problem.message == "7 bytes after the array"


# --- shards layout ------------------------------------------------------------------------


def test_changed_value_in_shard_is_a_digest_mismatch_at_its_row(shards):
    row = _row(shards, "jid0002", 4)
    stack = np.load(shards / row.shard, mmap_mode="r+")
    stack[row.row, 1, 2, 3] = 0.5 if stack[row.row, 1, 2, 3] != 0.5 else 0.25  # still valid
    stack.flush()
    del stack
    problem = _only(verify_dataset(shards), "digest")  # not also the shard's checksum
    _at(problem, row, "shards/jid0002.npy")
    assert f"shard row {row.row}: data bytes hash to sha256" in problem.message


def test_changed_shard_with_matching_index_sha256_is_a_checksum_mismatch(shards):
    """croissant.json's file digests still catch what the index's sha256 would not."""
    row = _row(shards, "jid0002", 4)
    stack = np.load(shards / row.shard, mmap_mode="r+")
    stack[row.row, 1, 2, 3] = 0.5 if stack[row.row, 1, 2, 3] != 0.5 else 0.25
    stack.flush()
    digest = cutout_sha256(np.array(stack[row.row]))
    del stack
    _set_sha256(shards, row.index_row, digest)
    report = verify_dataset(shards)
    got = sorted((p.kind, p.file) for p in report.problems)
    assert got == [("checksum", "master_index.csv"), ("checksum", "shards/jid0002.npy")], got


def test_nan_in_shard_names_the_row(shards):
    row = _row(shards, "jid0002", 7)
    stack = np.load(shards / row.shard, mmap_mode="r+")
    stack[row.row, 0, 0, 0] = np.nan
    stack.flush()
    del stack
    problem = _only(verify_dataset(shards), "non-finite")  # not also a checksum line
    _at(problem, row, "shards/jid0002.npy")
    assert f"shard row {row.row}:" in problem.message


def test_deleted_and_short_shard(shards):
    (shards / "shards" / "jid0001.npy").unlink()
    _rewrite(shards / "shards" / "jid0002.npy", np.zeros((11, 64, 64, 4), np.float32))
    report = verify_dataset(shards)
    got = [(p.kind, p.file, p.job_id) for p in report.problems]
    assert got == [
        ("missing-file", "shards/jid0001.npy", "jid0001"),
        ("shape", "shards/jid0002.npy", "jid0002"),
    ], report.lines()
    assert "shard holds 11 cutouts, the index lists 12" in report.problems[1].message


def test_shard_row_gap(shards):
    path = shards / "master_index.csv"
    index = pd.read_csv(path, dtype=str, keep_default_na=False)
    index.loc[3, "row"] = "12"  # jid0001 rows 0..11: row 3 missing, 12 listed instead
    index.to_csv(path, index=False)
    report = verify_dataset(shards, require_croissant=False)
    problems = [p for p in report.problems if p.kind != "checksum"]
    assert [(p.kind, p.file) for p in problems] == [("index", "shards/jid0001.npy")]
    assert "3 missing, 12 listed instead" in problems[0].message


def test_bytes_after_the_array_in_a_shard(shards):
    path = shards / "shards" / "jid0001.npy"
    path.write_bytes(path.read_bytes() + b"\0" * 5)
    report = verify_dataset(shards, require_croissant=False)
    got = [(p.kind, p.file, p.job_id, p.message) for p in report.problems]
    assert got == [("bad-npy", "shards/jid0001.npy", "jid0001", "5 bytes after the array")]


def test_shards_read_in_blocks_keep_their_row_numbers(shards, monkeypatch):
    """A shard longer than one read block: digests and problems keep their shard row."""
    import croissant_cutouts.tasks.verify.scans as verify_mod

    monkeypatch.setattr(verify_mod, "_SHARD_BLOCK", 5)  # jid0002's 12 rows: 5 + 5 + 2
    report = verify_dataset(shards)
    assert report.ok and report.digests == 26, report.lines()
    row = _row(shards, "jid0002", 11)
    stack = np.load(shards / row.shard, mmap_mode="r+")
    stack[row.row, 0, 0, 1] = np.inf
    stack.flush()
    del stack
    problem = _only(verify_dataset(shards), "non-finite")
    _at(problem, row, "shards/jid0002.npy")
    assert problem.message.startswith(f"shard row {row.row}:") and row.row == 11


# --- tables, croissant, recount ------------------------------------------------------------


def test_missing_and_unreadable_tables(files):
    (files / "master_index.csv").unlink()
    (files / "jobs.csv").write_bytes(b"\xff\xfe\x00garbage\x00")
    report = verify_dataset(files)
    lines = report.lines()
    assert ("table", "master_index.csv") in [(p.kind, p.file) for p in report.problems]
    assert ("table", "jobs.csv") in [(p.kind, p.file) for p in report.problems]
    assert not report.ok and len(lines) == len(report.problems)
    assert str(report).splitlines()[-1].startswith("verify: 2 problems (2 table); 0 cutouts")
    assert verify_dataset(files.parent / "nowhere").problems[0].kind == "table"


def test_table_problems_say_what_is_wrong(files):
    (files / "jobs.csv").unlink()
    (files / "master_index.csv").write_text("")
    rejects = pd.read_csv(files / "rejects.csv", dtype=str, keep_default_na=False)
    rejects.drop(columns="catalog_row").to_csv(files / "rejects.csv", index=False)
    report = verify_dataset(files, require_croissant=False)
    got = [(p.kind, p.file, p.message) for p in report.problems]
    assert got == [
        ("table", "master_index.csv", "unreadable: empty file"),
        ("table", "rejects.csv", "lacks column(s) catalog_row"),
        ("table", "jobs.csv", "file missing"),
    ], report.lines()
    assert "jobs.csv missing: catalog row totals were not checked" in report.notes
    gone = files.parent / "nowhere"
    assert [(p.kind, p.message) for p in verify_dataset(gone).problems] == [
        ("table", f"dataset folder {gone} does not exist")
    ]


def test_croissant_json_unreadable_or_without_a_distribution(files, tmp_path):
    path = files / "croissant.json"
    doc = json.loads(path.read_text())
    path.write_text("{not json")
    problem = _only(verify_dataset(files), "croissant")
    assert problem.file == "croissant.json" and problem.message.startswith("unreadable: ")
    path.write_text(json.dumps({"name": "x"}))
    assert _only(verify_dataset(files), "croissant").message == "has no distribution list"
    doc["distribution"] += ["not an object", {"@type": "cr:FileSet", "contentUrl": "nowhere"}]
    elsewhere = tmp_path / "described.json"  # a croissant.json kept outside the dataset
    for obj in doc["distribution"]:  # its paths are relative to the croissant.json
        if isinstance(obj, dict) and "contentUrl" in obj:
            obj["contentUrl"] = os.path.relpath(files / obj["contentUrl"], tmp_path)
        if isinstance(obj, dict) and "includes" in obj:
            obj["includes"] = os.path.relpath(files / obj["includes"], tmp_path)
    elsewhere.write_text(json.dumps(doc))
    path.unlink()
    report = verify_dataset(files, croissant=elsewhere)
    # the index and the limits: the FileSet is not a file
    assert report.ok and report.sha256 == 2, report.lines()
    elsewhere.write_text("[]")
    problem = _only(verify_dataset(files, croissant=elsewhere), "croissant")
    assert (problem.file, problem.message) == (str(elsewhere), "has no distribution list")


def test_croissant_must_describe_the_index_and_every_shard(shards):
    """Each FileObject is checked past a broken one; the index and each shard need one."""
    path = shards / "croissant.json"
    doc = json.loads(path.read_text())
    by_url = {o["contentUrl"]: o for o in doc["distribution"] if "contentUrl" in o}
    blank, gone, bad_sha = (by_url[f"shards/jid000{k}.npy"] for k in (2, 3, 1))
    del blank["@id"]  # named by its name then
    blank["contentUrl"] = ""
    gone["contentUrl"] = "shards/gone.npy"
    bad_sha["sha256"] = "0" * 64
    no_url = by_url["master_index.csv"]
    del no_url["contentUrl"]
    doc["distribution"] = [no_url, blank, gone, bad_sha]
    path.write_text(json.dumps(doc))
    report = verify_dataset(shards)
    got = [(p.kind, p.file, p.message) for p in report.problems]
    assert got == [
        ("croissant", "croissant.json", "FileObject 'master_index.csv' has no contentUrl"),
        ("croissant", "croissant.json", "FileObject 'jid0002.npy' has no contentUrl"),
        (
            "croissant",
            "shards/gone.npy",
            "FileObject 'shard-jid0003': contentUrl 'shards/gone.npy' is missing",
        ),
        ("checksum", "shards/jid0001.npy", got[3][2]),
        ("croissant", "croissant.json", "no FileObject for master_index.csv"),
        ("croissant", "croissant.json", "no FileObject describes shard shards/jid0002.npy"),
        ("croissant", "croissant.json", "no FileObject describes shard shards/jid0003.npy"),
    ], report.lines()
    assert got[3][2].endswith(", croissant.json says 0000000000000000...")


def test_croissant_required_unless_told(files):
    (files / "croissant.json").unlink()
    assert _only(verify_dataset(files), "croissant").file == "croissant.json"
    assert verify_dataset(files, require_croissant=False).ok


def test_recount_from_input_folders(built, files, tmp_path):
    jobs = Path(shutil.copytree(built["jobs"], tmp_path / "jobs"))
    catalog = jobs / "jid0001" / "psfcat.csv"
    catalog.write_text(catalog.read_text() + "7.0,8.0,-1\n")
    (jobs / "jid0009").mkdir()  # a job the dataset does not hold: a note, not a problem
    report = verify_dataset(files, jobs)
    problem = _only(report, "input-count")
    assert problem.job_id == "jid0001" and "has 13 rows, jobs.csv says 12" in problem.message
    assert any("jid0009" in n for n in report.notes)
    assert verify_dataset(files, tmp_path / "missing").problems[0].kind == "input-count"


def test_recount_goes_on_past_an_absent_job_and_names_an_unreadable_catalog(built, files, tmp_path):
    jobs = Path(shutil.copytree(built["jobs"], tmp_path / "jobs"))
    shutil.rmtree(jobs / "jid0001")  # first in order: the recount goes on past it
    (jobs / "jid0002" / "psfcat.csv").unlink()
    catalog = jobs / "jid0003" / "psfcat.csv"
    catalog.write_text(catalog.read_text() + "7.0,8.0,-1\n")
    report = verify_dataset(files, jobs)
    got = [(p.kind, p.job_id, p.file, p.message) for p in report.problems]
    assert [g[:3] for g in got] == [
        ("input-count", "jid0002", None),
        ("input-count", "jid0003", None),
    ]
    assert got[0][3].startswith("catalog unreadable now (job jid0002: ")
    assert got[0][3].endswith("); jobs.csv says 12 rows")
    assert got[1][3] == "the input catalog has 4 rows, jobs.csv says 3"
    assert f"1 jobs of the dataset have no folder in {jobs}: jid0001" in report.notes
    assert report.recounted == 3
    assert report.problems[0].line().startswith("input-count: job jid0002: catalog unreadable")
    gone = tmp_path / "missing"
    problem = _only(verify_dataset(files, gone), "input-count")
    assert str(gone) in problem.message and problem.job_id is None
    assert problem.line() == f"input-count: {problem.message}"


def test_remote_input_is_not_recounted_or_recut(files, capsys):
    """An object-store URL stays a URL (``Path`` made it ``s3:/bucket``, a missing folder)."""
    report = verify_dataset(files, "s3://bucket/jobs", deep=True)
    assert report.ok and (report.recounted, report.recut) == (0, 0), report.lines()
    assert report.notes == [
        "input s3://bucket/jobs is remote: catalog rows not recounted",
        "input s3://bucket/jobs is remote: cutouts not cut again",
    ]
    assert main(["verify", "-d", str(files), "-i", "s3://bucket/jobs"]) == 0
    assert "note: input s3://bucket/jobs is remote: catalog rows not recounted" in _lines(capsys)


def test_problems_at_the_first_index_row_carry_cutout_id_0(files):
    row = _row(files, "jid0001", 0)
    assert (row.index_row, row.cutout_id) == (0, 0)
    (files / row.cutout_filename).unlink()
    _at(_only(verify_dataset(files), "missing-file"), row)


def test_without_jobs_csv_the_input_gives_the_totals(built, files):
    (files / "jobs.csv").unlink()  # a dataset written before jobs.csv existed
    assert _only(verify_dataset(files), "table").file == "jobs.csv"
    path = files / "rejects.csv"
    rejects = pd.read_csv(path, dtype=str, keep_default_na=False)
    rejects.drop(index=0).to_csv(path, index=False)  # jid0003's off-image row
    report = verify_dataset(files, built["jobs"])
    got = [(p.kind, p.job_id, p.catalog_row) for p in report.problems]
    assert got == [("table", None, None), ("accounting", "jid0003", 1)], report.lines()
    assert report.jobs == 4 and report.catalog_rows == 29  # jid0004 counted from its catalog


def test_task_raises_with_the_problem_lines(files):
    row = _row(files)
    (files / row.cutout_filename).unlink()
    with pytest.raises(
        DatasetInvalid, match=r"missing-file: cutouts/jid0002_cutout\d+\.npy"
    ) as err:
        verify_task.fn(str(files))
    again = pickle.loads(pickle.dumps(err.value))  # crosses process boundaries intact
    assert str(again) == str(err.value) and again.report.problems == err.value.report.problems
    assert repr(again.report.problems[0]).startswith("Problem(kind='missing-file', message=")
    (files / "cutouts" / row.cutout_filename.split("/")[1]).write_bytes(b"")  # empty file now
    with pytest.raises(DatasetInvalid, match="empty file"):
        verify_task.fn(str(files))


def test_cli(built, files, capsys):
    assert main(["verify", "-d", str(built["shards"]), "-i", str(built["jobs"])]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("verify: OK, 26 cutouts in 3")
    row = _row(files)
    tensor = np.load(files / row.cutout_filename)
    tensor[0, 0, 0] = np.nan
    _rewrite(files / row.cutout_filename, tensor)
    assert main(["verify", "-d", str(files)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"non-finite: {row.cutout_filename} (index row {row.index_row}, cutout_id "
        f"{row.cutout_id}, job jid0002, catalog row {row.catalog_row}): 1 NaN and 0 inf values"
    )
    assert out[-1].startswith("verify: 1 problem (1 non-finite); 26 cutouts in 26 files")
    (files / "croissant.json").unlink()
    assert main(["verify", "-d", str(files), "--no-croissant"]) == 1  # the NaN is still there


def test_a_job_in_two_splits_and_an_unknown_split(files):
    (files / "croissant.json").unlink()
    index = pd.read_csv(files / "master_index.csv", dtype=str, keep_default_na=False)
    assert set(index["split"]) == {"train", "validation", "test"}  # 3 usable jobs: 1 / 1 / 1
    rows = index.index[index["job_id"] == "jid0002"]
    other = next(s for s in ("train", "test") if s != index.at[rows[0], "split"])
    index.loc[rows[3], "split"] = other
    index.loc[rows[5], "split"] = "holdout"
    index.to_csv(files / "master_index.csv", index=False, lineterminator="\n")
    report = verify_dataset(files, require_croissant=False)
    assert sorted(p.kind for p in report.problems) == ["split", "split"], report.lines()
    unknown = next(p for p in report.problems if "holdout" in p.message)
    assert unknown.index_row == rows[5] and unknown.job_id == "jid0002"
    spread = next(p for p in report.problems if "in 3 splits" in p.message)
    assert "job_id jid0002" in spread.message and spread.index_row == rows[0]


def test_a_job_in_exactly_two_splits_and_an_empty_split(files):
    (files / "croissant.json").unlink()
    index = pd.read_csv(files / "master_index.csv", dtype=str, keep_default_na=False)
    rows = index.index[index["job_id"] == "jid0002"]
    was = index.at[rows[0], "split"]
    other = next(s for s in ("train", "test") if s != was)
    index.loc[rows[3], "split"] = other
    index.loc[2, "split"] = ""
    index.to_csv(files / "master_index.csv", index=False, lineterminator="\n")
    report = verify_dataset(files, require_croissant=False)
    got = [(p.kind, p.index_row, p.job_id, p.file, p.message) for p in report.problems]
    sides = ", ".join(sorted([was, other]))
    first = index.at[0, "split"]
    assert got == [
        (
            "split",
            2,
            "jid0001",
            "master_index.csv",
            "split '' is not one of train, validation, test",
        ),
        (
            "split",
            0,
            "jid0001",
            "master_index.csv",
            f"job_id jid0001 is in 2 splits (, {first}): the test split would see what "
            "training saw",
        ),
        (
            "split",
            rows[0],
            "jid0002",
            "master_index.csv",
            f"job_id jid0002 is in 2 splits ({sides}): the test split would see what training saw",
        ),
    ], report.lines()


# --- integrity: every cutout's bytes against its sha256, and cut again with --deep ---------


def _flip_bit(path: Path, start: int) -> None:
    """Flip the lowest bit of the first value in (0, 1) of the cutout at byte ``start``.

    The value moves by one unit in the last place, so it stays finite and inside [0, 1]:
    only the cutout's digest can tell.
    """
    with open(path, "r+b") as fh:
        fh.seek(start)
        values = np.frombuffer(fh.read(64 * 64 * 4 * 4), "<f4")
        j = int(np.flatnonzero((values > 0) & (values < 1))[0])
        fh.seek(start + 4 * j)
        byte = fh.read(1)[0]
        fh.seek(start + 4 * j)
        fh.write(bytes([byte ^ 1]))


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_index_has_a_sha256_per_cutout_identical_in_both_layouts(built):
    files = pd.read_csv(built["files"] / "master_index.csv")
    shards = pd.read_csv(built["shards"] / "master_index.csv")
    assert files["sha256"].str.fullmatch("[0-9a-f]{64}").all()
    assert files["sha256"].tolist() == shards["sha256"].tolist()
    for row in files.itertuples():
        data = (built["files"] / row.cutout_filename).read_bytes()[-64 * 64 * 4 * 4 :]
        assert hashlib.sha256(data).hexdigest() == row.sha256
    stack = np.load(built["shards"] / "shards" / "jid0002.npy")
    rows = shards[shards.job_id == "jid0002"]
    assert [cutout_sha256(stack[r]) for r in rows["row"]] == rows["sha256"].tolist()


def test_flipped_bit_in_a_cutout_file(files, capsys):
    row = _row(files)
    path = files / row.cutout_filename
    _flip_bit(path, path.stat().st_size - 64 * 64 * 4 * 4)
    tensor = np.load(path)
    assert np.isfinite(tensor).all() and tensor.min() >= 0 and tensor.max() <= 1
    problem = _only(verify_dataset(files), "digest")
    _at(problem, row)
    assert main(["verify", "-d", str(files)]) == 1
    assert _lines(capsys)[0].startswith(
        f"digest: {row.cutout_filename} (index row {row.index_row}, "
    )


def test_flipped_bit_in_a_shard_row(shards, capsys):
    row = _row(shards, "jid0001", 5)
    path = shards / row.shard
    offset = np.load(path, mmap_mode="r").offset
    _flip_bit(path, offset + int(row.row) * 64 * 64 * 4 * 4)
    stack = np.load(path)
    assert np.isfinite(stack).all() and stack.min() >= 0 and stack.max() <= 1
    problem = _only(verify_dataset(shards), "digest")  # not also the shard's checksum
    _at(problem, row, "shards/jid0001.npy")
    assert problem.message.startswith(f"shard row {row.row}: ")
    assert main(["verify", "-d", str(shards)]) == 1
    assert _lines(capsys)[0].startswith(f"digest: shards/jid0001.npy (index row {row.index_row}, ")


def test_bad_sha256_value_in_the_index(files):
    (files / "croissant.json").unlink()
    row = _row(files)
    _set_sha256(files, row.index_row, "not-a-digest")
    problem = _only(verify_dataset(files, require_croissant=False), "index")
    assert (
        problem.index_row == row.index_row and "'not-a-digest' is not a SHA-256" in problem.message
    )


def test_every_shard_row_is_checked_past_one_with_a_bad_sha256(shards):
    (shards / "croissant.json").unlink()
    bad, flipped = _row(shards, "jid0001", 2), _row(shards, "jid0001", 5)
    _set_sha256(shards, bad.index_row, "not-a-digest")
    path = shards / flipped.shard
    _flip_bit(path, np.load(path, mmap_mode="r").offset + int(flipped.row) * 64 * 64 * 4 * 4)
    report = verify_dataset(shards, require_croissant=False)
    assert [(p.kind, p.index_row) for p in report.problems] == [
        ("index", bad.index_row),
        ("digest", flipped.index_row),
    ], report.lines()
    assert report.problems[1].message.startswith(f"shard row {int(flipped.row)}: data bytes")
    assert report.digests == 25


def test_index_without_sha256_column_is_noted(files):
    (files / "croissant.json").unlink()
    path = files / "master_index.csv"
    pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns="sha256").to_csv(
        path, index=False
    )
    report = verify_dataset(files, require_croissant=False)
    assert report.ok and report.digests == 0, report.lines()
    assert any("no sha256 column" in n for n in report.notes)


@pytest.mark.parametrize("renumber", [False, True])
def test_dropped_index_row_names_the_file(files, capsys, renumber):
    row = _row(files)
    path = files / "master_index.csv"
    index = pd.read_csv(path, dtype=str, keep_default_na=False).drop(index=row.index_row)
    if renumber:  # cutout_id still 0 .. N-1
        index["cutout_id"] = [str(i) for i in range(len(index))]
    index.to_csv(path, index=False, lineterminator="\n")
    report = verify_dataset(files)
    kinds = sorted({p.kind for p in report.problems})
    # the gap in cutout_id, else the index's changed bytes (croissant.json), and the row
    assert kinds == ["accounting", "checksum" if renumber else "index", "unlisted-file"], (
        report.lines()
    )
    unlisted = next(p for p in report.problems if p.kind == "unlisted-file")
    assert unlisted.file == row.cutout_filename
    assert main(["verify", "-d", str(files)]) == 1
    assert f"unlisted-file: {row.cutout_filename}: not listed in master_index.csv" in _lines(capsys)


@pytest.mark.parametrize(
    ("layout", "stray"),
    [("files", "cutouts/jid0002_cutout00099.npy"), ("shards", "shards/jid0099.npy")],
)
def test_stray_npy_names_the_file(built, tmp_path, capsys, layout, stray):
    ds = _copy(built[layout], tmp_path / layout)
    source = ds / _row(ds).cutout_filename
    shutil.copy(source, ds / stray)
    assert _only(verify_dataset(ds), "unlisted-file").file == stray
    assert main(["verify", "-d", str(ds)]) == 1
    assert _lines(capsys)[0] == f"unlisted-file: {stray}: not listed in master_index.csv"


@pytest.mark.parametrize("layout", ["files", "shards"])
def test_deep_passes_on_an_untouched_dataset(built, capsys, layout):
    report = verify_dataset(built[layout], built["jobs"], deep=True)
    assert report.ok, report.lines()
    assert (report.recut, report.digests) == (26, 26)
    assert "26 cutouts cut again and compared" in report.summary()
    assert main(["verify", "-d", str(built[layout]), "-i", str(built["jobs"]), "--deep"]) == 0
    assert _lines(capsys)[-1].startswith("verify: OK, 26 cutouts in ")


def _swap_in(ds: Path, row: pd.Series, other: pd.Series) -> None:
    """Replace ``row``'s cutout by ``other``'s (a valid cutout) and its sha256 to match.

    croissant.json goes, since its index digest would tell; only a recut can then see it.
    """
    if row.shard == row.shard:  # not NaN: shards layout
        stack = np.load(ds / row.shard, mmap_mode="r+")
        stack[int(row.row)] = stack[int(other.row)]
        stack.flush()
        del stack
    else:
        shutil.copy(ds / other.cutout_filename, ds / row.cutout_filename)
    _set_sha256(ds, row.index_row, other.sha256)
    (ds / "croissant.json").unlink()


@pytest.mark.parametrize("layout", ["files", "shards"])
def test_deep_catches_a_swapped_cutout_with_a_matching_sha256(built, tmp_path, capsys, layout):
    ds = _copy(built[layout], tmp_path / layout)
    row, other = _row(ds, "jid0002", 3), _row(ds, "jid0002", 5)
    _swap_in(ds, row, other)
    jobs = str(built["jobs"])
    assert verify_dataset(ds, jobs, require_croissant=False).ok  # only --deep can tell
    problem = _only(verify_dataset(ds, jobs, require_croissant=False, deep=True), "recut")
    _at(problem, row, row.shard if layout == "shards" else None)
    assert "values differ from the candidate cut again from" in problem.message
    assert "jid0002" in problem.message
    fresh, stored = np.load(built[layout] / _held(row)), np.load(ds / _held(other))
    if layout == "shards":
        fresh, stored = fresh[int(row.row)], stored[int(other.row)]
    largest = float(np.abs(fresh.astype(np.float64) - stored).max())
    assert f"(largest difference {largest:.3g})" in problem.message and largest > 0
    head = f"shard row {int(row.row)}: " if layout == "shards" else ""
    assert problem.message.startswith(f"{head}{int((fresh != stored).sum())} of 16384 values")
    assert main(["verify", "-d", str(ds), "-i", jobs, "--no-croissant"]) == 0
    capsys.readouterr()
    assert main(["verify", "-d", str(ds), "-i", jobs, "--no-croissant", "--deep"]) == 1
    assert _lines(capsys)[0].startswith(f"recut: {problem.file} (index row {row.index_row}, ")


def _held(row: pd.Series) -> str:
    return row.shard if row.shard == row.shard else row.cutout_filename


@pytest.mark.parametrize("layout", ["files", "shards"])
def test_deep_reports_a_damaged_cutout_once_and_recuts_the_rest(built, tmp_path, layout):
    """One cause, one line: a cutout a file check reported is not also cut again."""
    ds = _copy(built[layout], tmp_path / layout)
    row = _row(ds, "jid0001", 5)
    if layout == "files":
        path = ds / row.cutout_filename
        _flip_bit(path, path.stat().st_size - 64 * 64 * 4 * 4)
    else:
        path = ds / row.shard
        _flip_bit(path, np.load(path, mmap_mode="r").offset + int(row.row) * 64 * 64 * 4 * 4)
    report = verify_dataset(ds, built["jobs"], deep=True)
    _at(_only(report, "digest"), row, _held(row))
    assert report.recut == 25


def test_deep_skips_the_rows_of_a_shard_with_a_problem(built, tmp_path):
    ds = _copy(built["shards"], tmp_path / "shards")
    _rewrite(ds / "shards" / "jid0002.npy", np.zeros((11, 64, 64, 4), np.float32))
    report = verify_dataset(ds, built["jobs"], deep=True, require_croissant=False)
    assert [(p.kind, p.file) for p in report.problems] == [("shape", "shards/jid0002.npy")]
    assert report.recut == 26 - 12


def test_deep_in_small_batches(built):
    report = verify_dataset(built["shards"], built["jobs"], deep=True, batch=5)
    assert report.ok and report.recut == 26, report.lines()


def test_deep_notes_the_jobs_the_input_no_longer_has(built, tmp_path):
    jobs = Path(shutil.copytree(built["jobs"], tmp_path / "jobs"))
    shutil.rmtree(jobs / "jid0001")
    report = verify_dataset(built["files"], jobs, deep=True, require_croissant=False)
    assert report.recut == 26 - 12
    assert f"12 cutouts of 1 jobs not cut again: no job folder in {jobs} (jid0001)" in (
        report.notes
    )
    assert not [p for p in report.problems if p.kind == "recut"]


def test_deep_names_a_job_it_cannot_load_again(built, tmp_path):
    jobs = Path(shutil.copytree(built["jobs"], tmp_path / "jobs"))
    (jobs / "jid0002" / "psfcat.csv").write_text("not,a\ncatalog\n")
    report = verify_dataset(built["files"], jobs, deep=True, require_croissant=False)
    recut = [p for p in report.problems if p.kind == "recut"]
    assert [(p.job_id, p.file) for p in recut] == [("jid0002", None)], report.lines()
    why = f"cannot load the job again from {jobs / 'jid0002'}: psfcat.csv: "  # the reason only
    assert recut[0].message.startswith(why), recut[0].message
    assert report.recut == 26 - 12


def test_deep_names_a_cutout_it_cannot_read_again(built, monkeypatch):
    row = _row(built["files"], "jid0002", 4)
    real = np.load

    def load(path, *args, **kwargs):
        if Path(path).name == Path(row.cutout_filename).name:
            raise OSError("device gone")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", load)
    report = verify_dataset(built["files"], built["jobs"], deep=True)
    problem = _only(report, "recut")
    _at(problem, row)
    assert problem.message == "cannot read the cutout now: OSError: device gone"
    assert report.recut == 25


def test_deep_needs_the_input(files, capsys):
    assert main(["verify", "-d", str(files), "--deep"]) == 2
    assert "--deep needs -i" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs input_dir"):
        verify_dataset(files, deep=True)


def test_deep_reports_a_candidate_the_input_no_longer_has(built, files, tmp_path):
    jobs = Path(shutil.copytree(built["jobs"], tmp_path / "jobs"))
    catalog = jobs / "jid0003" / "psfcat.csv"
    catalog.write_text("".join(catalog.read_text().splitlines(keepends=True)[:3]))  # rows 0, 1
    report = verify_dataset(files, jobs, deep=True)
    recut = [p for p in report.problems if p.kind == "recut"]
    assert [(p.job_id, p.catalog_row, p.file) for p in recut] == [
        ("jid0003", 2, "cutouts/jid0003_cutout00002.npy")
    ], report.lines()
    assert "the input catalog has no row 2 (2 rows)" in recut[0].message


def test_deep_reports_candidates_the_input_rejects_now(built, files, tmp_path):
    """A row that no longer parses, and one whose position is now off the image."""
    jobs = Path(shutil.copytree(built["jobs"], tmp_path / "jobs"))
    catalog = jobs / "jid0001" / "psfcat.csv"
    table = pd.read_csv(catalog)
    table["x"] = table["x"].astype(object)
    table.loc[2, "x"], table.loc[7, "x"] = "nan", -500.0
    table.to_csv(catalog, index=False)
    report = verify_dataset(files, jobs, deep=True)
    recut = [p for p in report.problems if p.kind == "recut"]
    assert [(p.catalog_row, p.file) for p in recut] == [
        (2, "cutouts/jid0001_cutout00002.npy"),
        (7, "cutouts/jid0001_cutout00007.npy"),
    ], report.lines()
    for problem in recut:
        _at(problem, _row(files, "jid0001", problem.catalog_row))
        assert problem.message.startswith("the input rejects this catalog row now: ")
    assert recut[0].message.endswith("x 'nan' is not a finite number")
    assert recut[1].message.endswith("is outside the 40x50 image")
    assert report.recut == 26 - 2


# --- accounting: each check against a one-line mutation of it ------------------------------


def _append(path: Path, line: str) -> None:
    with open(path, "a") as fh:
        fh.write(line + "\n")


def test_a_job_with_every_row_rejected_is_still_accounted(files):
    """jid0003 with no indexed row (only rejects) and not rejected whole: still checked."""
    (files / "croissant.json").unlink()
    path = files / "master_index.csv"
    index = pd.read_csv(path, dtype=str, keep_default_na=False)
    for name in index.loc[index.job_id == "jid0003", "cutout_filename"]:
        (files / name).unlink()
    index[index.job_id != "jid0003"].to_csv(path, index=False, lineterminator="\n")
    _append(files / "rejects.csv", "jid0003,0,made up")  # row 2 now nowhere
    report = verify_dataset(files, require_croissant=False)
    problem = _only(report, "accounting")
    assert (problem.job_id, problem.catalog_row) == ("jid0003", 2), report.lines()
    assert problem.message == "neither in master_index.csv nor in rejects.csv"


def test_reject_row_at_the_catalog_row_count_is_beyond_the_catalog(files):
    _append(files / "rejects.csv", "jid0003,3,made up")  # jid0003 has rows 0, 1, 2
    problem = _only(verify_dataset(files), "accounting")
    assert (problem.job_id, problem.catalog_row, problem.file) == ("jid0003", 3, "rejects.csv")
    assert problem.message == "beyond the catalog's 3 rows (jobs.csv)"


def test_index_row_at_the_catalog_row_count_is_beyond_the_catalog(files):
    (files / "croissant.json").unlink()
    path = files / "master_index.csv"
    index = pd.read_csv(path, dtype=str, keep_default_na=False)
    i = index.index[(index.job_id == "jid0003") & (index.catalog_row == "2")][0]
    new = "cutouts/jid0003_cutout00003.npy"
    (files / index.at[i, "cutout_filename"]).rename(files / new)
    index.loc[i, ["catalog_row", "cutout_filename"]] = ["3", new]
    index.to_csv(path, index=False, lineterminator="\n")
    report = verify_dataset(files, require_croissant=False)
    got = [(p.kind, p.file, p.catalog_row, p.message) for p in report.problems]
    assert got == [
        ("accounting", "master_index.csv", 3, "beyond the catalog's 3 rows (jobs.csv)"),
        ("accounting", None, 2, "neither in master_index.csv nor in rejects.csv"),
    ], report.lines()


def test_row_listed_twice_in_rejects(files):
    path = files / "rejects.csv"
    lines = path.read_text().splitlines()
    assert lines[1].startswith("jid0003,1,")
    _append(path, lines[1])
    problem = _only(verify_dataset(files), "accounting")
    assert (problem.job_id, problem.catalog_row, problem.file) == ("jid0003", 1, "rejects.csv")
    assert problem.message == "rejects.csv rows 0 and 4 both reject it"


def test_job_marked_rejected_with_indexed_rows(files):
    path = files / "jobs.csv"
    jobs = pd.read_csv(path, dtype=str, keep_default_na=False)
    jobs.loc[jobs.job_id == "jid0001", "status"] = "rejected"
    jobs.to_csv(path, index=False, lineterminator="\n")
    _append(files / "rejects.csv", "jid0001,,made up")  # its whole-job row, so only one cause
    problem = _only(verify_dataset(files), "accounting")
    assert problem.job_id == "jid0001"
    assert problem.message == "jobs.csv says rejected, yet 12 rows are indexed"


def test_reject_row_whose_catalog_row_is_not_an_integer(files):
    _append(files / "rejects.csv", "jid0003,two,made up")
    problem = _only(verify_dataset(files), "accounting")
    assert (problem.job_id, problem.file) == ("jid0003", "rejects.csv")
    assert problem.message == "rejects.csv row 4: catalog_row 'two' is not an integer"  # 0-based


def _edit_jobs(ds: Path, edit) -> None:
    path = ds / "jobs.csv"
    jobs = edit(pd.read_csv(path, dtype=str, keep_default_na=False))
    jobs.to_csv(path, index=False, lineterminator="\n")


@pytest.mark.parametrize("count", ["-1", "twelve", ""])
def test_jobs_csv_count_that_is_not_a_count(files, count):
    def edit(jobs):
        jobs.loc[jobs.job_id == "jid0001", "catalog_rows"] = count
        return jobs

    _edit_jobs(files, edit)
    report = verify_dataset(files)
    got = [(p.kind, p.job_id, p.file, p.message) for p in report.problems]
    assert got == [
        ("table", "jid0001", "jobs.csv", f"catalog_rows {count!r} is not a count"),
        ("accounting", "jid0001", None, "in master_index.csv or rejects.csv but not in jobs.csv"),
    ], report.lines()
    assert (report.jobs, report.catalog_rows) == (3, 17)


def test_jobs_csv_with_a_job_twice_and_an_empty_job(files):
    def edit(jobs):
        empty = {"job_id": "jid0009", "status": "ok", "catalog_rows": "0", "cutouts": "0"}
        extra = pd.DataFrame([jobs.iloc[1].to_dict(), {**empty, "rejected_rows": "0"}])
        return pd.concat([jobs, extra.fillna("")], ignore_index=True)

    _edit_jobs(files, edit)
    report = verify_dataset(files)
    got = [(p.kind, p.job_id, p.file, p.message) for p in report.problems]
    assert got == [("table", "jid0002", "jobs.csv", "job listed twice")], report.lines()
    assert (report.jobs, report.catalog_rows) == (5, 29)


def _set_status(jobs: pd.DataFrame, job: str, status: str) -> pd.DataFrame:
    jobs.loc[jobs.job_id == job, "status"] = status
    return jobs


@pytest.mark.parametrize(
    ("job", "status", "kind", "file", "message"),
    [
        (
            "jid0004",
            "ok",
            "accounting",
            None,
            "rejects.csv rejects the whole job, jobs.csv says ok",
        ),
        ("jid0001", "done", "table", "jobs.csv", "status 'done', expected 'ok' or 'rejected'"),
    ],
)
def test_jobs_csv_status_against_the_tables(files, job, status, kind, file, message):
    _edit_jobs(files, lambda jobs: _set_status(jobs, job, status))
    report = verify_dataset(files)
    got = [(p.kind, p.job_id, p.file, p.message) for p in report.problems]
    assert got == [(kind, job, file, message)], report.lines()


def test_a_rejected_job_without_its_whole_job_reject_row(files):
    lines = (files / "rejects.csv").read_text().splitlines(keepends=True)
    (files / "rejects.csv").write_text("".join(line for line in lines if ",," not in line))
    report = verify_dataset(files)
    got = [(p.kind, p.job_id, p.message) for p in report.problems]
    assert got == [
        (
            "accounting",
            "jid0004",
            "jobs.csv says rejected, rejects.csv has no whole-job row (empty catalog_row)",
        )
    ], report.lines()


def test_a_job_missing_from_jobs_csv(files):
    _edit_jobs(files, lambda jobs: jobs[jobs.job_id != "jid0003"])
    report = verify_dataset(files)
    assert [(p.kind, p.job_id, p.message) for p in report.problems] == [
        ("accounting", "jid0003", "in master_index.csv or rejects.csv but not in jobs.csv")
    ], report.lines()


@pytest.mark.parametrize(
    ("job", "column", "value", "held"),
    [("jid0001", "cutouts", "11", 12), ("jid0003", "rejected_rows", "0", 1)],
)
def test_jobs_csv_counts_that_disagree_with_the_tables(files, job, column, value, held):
    path = files / "jobs.csv"
    jobs = pd.read_csv(path, dtype=str, keep_default_na=False)
    jobs.loc[jobs.job_id == job, column] = value
    jobs.to_csv(path, index=False, lineterminator="\n")
    problem = _only(verify_dataset(files), "accounting")
    assert (problem.job_id, problem.file) == (job, "jobs.csv")
    assert problem.message == f"jobs.csv says {column}={value}, the tables hold {held}"


# --- the report ---------------------------------------------------------------------------


def test_report_text_counts_kinds_and_shortens_long_lists(tmp_path):
    problems = [Problem("dtype", "dtype >f4", file="cutouts/a.npy")] + [
        Problem("missing-file", "file missing", file=f"cutouts/c{i}.npy") for i in range(3)
    ]
    report = VerifyReport(tmp_path, problems=problems, cutouts=5, files=4, jobs=2)
    assert list(report.kinds().items()) == [("missing-file", 3), ("dtype", 1)]  # KINDS order
    assert report.summary().startswith(
        "verify: 4 problems (3 missing-file, 1 dtype); 5 cutouts in 4 files checked"
    )
    assert report.lines() == [p.line() for p in problems]
    assert report.lines(4) == report.lines()  # all shown: no line about more
    assert report.lines(1) == [problems[0].line(), "... and 3 more problems"]
    err = DatasetInvalid(report, limit=1)
    assert str(err).splitlines() == [
        f"dataset {tmp_path} fails verification:",
        problems[0].line(),
        "... and 3 more problems",
        report.summary(),
    ]
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.limit) == (str(err), 1)
    many = VerifyReport(tmp_path, problems=[problems[1]] * 51)
    assert str(DatasetInvalid(many)).splitlines()[-2] == "... and 1 more problems"  # 50 shown
    one = VerifyReport(tmp_path, problems=[problems[1]])
    assert one.summary().startswith("verify: 1 problem (1 missing-file); ")
    plain = Problem("index", "m", job_id=np.str_("jid0001"), index_row=np.int64(3))
    assert type(plain.job_id) is str and type(plain.index_row) is int  # JSON-able, picklable


@pytest.mark.parametrize(
    ("name", "inside"),
    [
        ("cutouts/jid1_0.npy", True),
        ("cutouts/./jid1_0.npy", True),
        ("cutouts/jid1..2_0.npy", True),
        ("shards/jid1.npy", True),
        ("", False),
        ("/etc/passwd", False),
        ("../outside.npy", False),
        ("cutouts/../../outside.npy", False),
        ("cutouts/..", False),
        ("s3://bucket/cutouts/jid1_0.npy", False),
        ("file:cutouts/jid1_0.npy", False),
        (None, False),
    ],
)
def test_inside_dataset_is_the_plain_relative_path_rule(name, inside):
    from croissant_cutouts.tasks.contract import inside_dataset

    assert inside_dataset(name) is inside


@pytest.mark.parametrize("mode", [[], ["--rss"]])
def test_memory_benchmark_reports_every_phase_and_leaves_verify_as_it_was(built, tmp_path, mode):
    import json

    from conftest import load_benchmark

    bench = load_benchmark("bench_verify_memory")
    before = {name: getattr(*bench._owner(name)) for name in bench.PHASES}
    out = tmp_path / "memory.json"
    assert bench.main([str(built["files"]), "--out", str(out), *mode]) == 0
    result = json.loads(out.read_text())
    assert result["ok"] and result["rows"] == 26  # 12 + 12 + 2 cut (one row is off the image)
    phases = [p["phase"] for p in result["phases"]]
    assert phases[0] == "load_index" and phases[-1] == "check_accounting"
    assert {"IndexChecks.finish", "FileChecks.run", "check_unlisted"} <= set(phases)
    key = "rss_peak_mib" if mode else "peak"
    assert all(isinstance(p[key], int) and p[key] > 0 for p in result["phases"])
    assert {name: getattr(*bench._owner(name)) for name in bench.PHASES} == before


def test_the_index_text_comes_from_malloc_while_verifying(built, monkeypatch):
    """Arrow's own pool would keep the freed index text for the rest of the run."""
    import pyarrow as pa

    from croissant_cutouts.tasks.verify import dataset as verify_module

    during = []
    load_index = verify_module.load_index

    def recording(*args, **kwargs):
        during.append(pa.default_memory_pool().backend_name)
        return load_index(*args, **kwargs)

    monkeypatch.setattr(verify_module, "load_index", recording)
    before = pa.default_memory_pool().backend_name
    assert verify_dataset(built["files"]).ok
    assert during == ["system"]
    assert pa.default_memory_pool().backend_name == before != "system"


def test_each_listed_file_is_read_from_its_own_folder():
    """Names sorted, then each one's folder: neighbours share one object, none is guessed."""
    from croissant_cutouts.tasks.verify import tensors

    names = ["cutouts/x", "cutouts/y", "cutouts/sub/z", "cutouts/w", "top", "cut/q",
             "cutouts-b/x", "cutouts/", "", "/a", "cutouts/é/x"]
    for order in (names, sorted(names)):
        got = tensors._folders(np.array([n.encode() for n in order], dtype=bytes))
        assert [f.decode() for f in got] == [n.rpartition("/")[0] for n in order]
    got = tensors._folders(np.array([n.encode() for n in names], dtype=bytes))
    assert got[0] is got[1]


# --------------------------------------------------------------------------------------
# two passes over the index: rules over all rows, then the files in groups of whole jobs


def test_groups_start_only_where_no_job_spans_the_cut():
    """A job's rows, scattered, keep the rows between them in its group."""
    codes = np.array([0, 0, 1, 1, 0, 2, 2, 3, 4, 3], np.int32)  # job 0 around job 1; 3 around 4
    assert streaming._bounds(codes, 5).tolist() == [0, 5, 7, 10]
    assert streaming._bounds(np.zeros(4, np.int32), 1).tolist() == [0, 4]
    assert streaming._bounds(np.empty(0, np.int32), 0).tolist() == [0]
    bounds = np.array([0, 5, 7, 10])
    assert streaming._cuts(bounds, 1) == [0, 5, 7, 10]
    assert streaming._cuts(bounds, 6) == [0, 7, 10]
    assert streaming._cuts(bounds, 100) == [0, 10]


def test_index_groups_hold_whole_jobs_in_row_order(tmp_path, monkeypatch):
    monkeypatch.setattr(reading, "_INDEX_CHUNK_ROWS", 3)
    jobs = ["a", "a", "b", "a", "c", "c", "d", "d", "d", "e", "e", "b"]  # a, b scattered
    rows = [f"{i},{j},f{i},{i},s{i}" for i, j in enumerate(jobs)]
    rows.insert(5, rows[4])  # an exact repeat: left out by both passes
    text = "cutout_id,job_id,cutout_filename,catalog_row,shard\n" + "\n".join(rows) + "\n"
    (tmp_path / INDEX_FILE).write_text(text)
    problems: list[Problem] = []
    index = streaming.load_index(tmp_path, problems)
    assert [p.message for p in problems] == ["repeats index row 4 exactly"]
    assert index.bounds.tolist() == [0, 12]  # b's last row is the last row
    assert index.pos.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]
    jobs[-1] = "e"  # b no longer scattered: a's rows end at row 3
    rows = [f"{i},{j},f{i},{i},s{i}" for i, j in enumerate(jobs)]
    (tmp_path / INDEX_FILE).write_text(text.splitlines()[0] + "\n" + "\n".join(rows) + "\n")
    index = streaming.load_index(tmp_path, [])
    assert index.bounds.tolist() == [0, 4, 6, 9, 12]
    for size, sizes in ((1, [4, 2, 3, 3]), (3, [4, 5, 3]), (5, [6, 6]), (99, [12])):
        groups = list(streaming.index_groups(tmp_path, index, size))
        assert [len(g.pos) for g in groups] == sizes
        assert [j for g in groups for j in g.job] == jobs
        assert [s for g in groups for s in g.shard] == [f"s{i}" for i in range(12)]


def test_an_index_changed_between_the_passes_is_reported(files, monkeypatch):
    from croissant_cutouts.tasks.verify import dataset as verify_module

    load = verify_module.load_index

    def then_append(root, *args):
        index = load(root, *args)
        _append(root / INDEX_FILE, (root / INDEX_FILE).read_text().splitlines()[-1])
        return index

    monkeypatch.setattr(verify_module, "load_index", then_append)
    report = verify_dataset(files, require_croissant=False)
    assert [(p.kind, p.file, p.message) for p in report.problems] == [
        ("table", INDEX_FILE, "changed while it was being verified: verify again")
    ]


def _damage_across_jobs(ds: Path, layout: str) -> None:
    """Problems of every kind that groups could split: rows out of order, a repeated
    candidate, a job in two splits, a changed cutout, a missing or unlisted file, a shard
    row missing from the index."""
    path = ds / INDEX_FILE
    index = pd.read_csv(path, dtype=str, keep_default_na=False)
    first = int(np.flatnonzero(index["job_id"] == "jid0002")[0])
    moved = index.iloc[[first]]
    index = pd.concat([index.drop(index.index[first]), moved, moved])  # jid0002 spans jid0003
    index.loc[index.index[2], "split"] = "test" if index["split"].iat[2] != "test" else "val"
    if layout == "shards":
        index = index.drop(index.index[5])  # jid0001's shard row 5 no longer listed
    index.to_csv(path, index=False, lineterminator="\n")
    (ds / "croissant.json").unlink()
    if layout == "files":
        listed = index["cutout_filename"]
        (ds / listed.iat[1]).unlink()
        _flip_bit(ds / listed.iat[20], 128)
        shutil.copy(ds / listed.iat[3], ds / "cutouts" / "jid0001_cutout00099.npy")
    else:
        _flip_bit(ds / "shards" / "jid0002.npy", 128 + 3 * 64 * 64 * 4 * 4)


@pytest.mark.parametrize("layout", ["files", "shards"])
def test_the_report_does_not_depend_on_how_the_index_is_grouped(built, tmp_path, monkeypatch,
                                                                layout):
    ds = _copy(built[layout], tmp_path / layout)
    _damage_across_jobs(ds, layout)
    reports = {}
    for rows in (1, 2, 10_000):
        monkeypatch.setattr(streaming, "_GROUP_ROWS", rows)
        report = verify_dataset(ds, built["jobs"], require_croissant=False, deep=True)
        reports[rows] = report
    kinds = {p.kind for p in reports[1].problems}
    assert {"index", "duplicate-row", "split", "digest"} <= kinds, reports[1].lines()
    if layout == "files":
        assert {"missing-file", "unlisted-file"} <= kinds
    assert len(list(streaming.index_groups(ds, streaming.load_index(ds, []), 1))) == 2
    for report in (reports[2], reports[10_000]):
        assert report.problems == reports[1].problems
        assert report.notes == reports[1].notes
        counts = ("files", "cutouts", "digests", "recut", "jobs", "catalog_rows")
        assert [getattr(report, c) for c in counts] == [getattr(reports[1], c) for c in counts]


def _held_and_group_peak(root: Path, n: int) -> tuple[int, int, int]:
    """Traced bytes held after pass 1 over an index of ``n`` rows, the peak above that
    while pass 2 gives it in groups of 1,000 rows, and what pass 2 left."""
    _wide_index(root / INDEX_FILE, n, columns=12)
    tracemalloc.start()
    try:
        index = streaming.load_index(root, [])
        gc.collect()  # pandas frames leave reference cycles: garbage is not what is held
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        groups = sum(1 for _ in streaming.index_groups(root, index, 1_000))
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(index) == n and groups == n // 1_000  # jobs of 200 rows
    return held, peak - held, after - held


def test_verify_holds_a_few_bytes_per_index_row(tmp_path, monkeypatch):
    """Pass 1 keeps 21 bytes a row (job code, catalog row, cutout id); pass 2 holds one
    group at a time, so its peak does not grow with the index."""
    monkeypatch.setattr(reading, "_INDEX_CHUNK_ROWS", 256)
    small = _held_and_group_peak(tmp_path, 6_000)
    large = _held_and_group_peak(tmp_path, 24_000)
    per_row = (large[0] - small[0]) / 18_000
    assert per_row < 24, f"{per_row:.0f} bytes a row"
    assert large[1] < small[1] * 1.2 + 100_000, (small, large)  # about 1.2 MB both
    # the groups were dropped: less is left than one group of 1,000 parsed rows (about 130
    # KB), and no more after 24 groups than after 6 (first-use caches: up to about 60 KB)
    assert large[2] < 100_000 and small[2] < 100_000, (small, large)
    assert large[2] < small[2] + 20_000, (small, large)
