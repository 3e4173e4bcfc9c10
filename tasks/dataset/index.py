"""Index step: ``master_index.csv``, ``rejects.csv`` and ``zscale_limits.csv``.

Columns come from :data:`tasks.contract.INDEX_SCHEMA`, declared once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from croissant_cutouts.tasks.config import SplitParams
from croissant_cutouts.tasks.contract import (
    CHANNELS,
    CUTOUT_DIR,
    INDEX_FILE,
    INDEX_SCHEMA,
    JOBS_FILE,
    LIMITS_FILE,
    PARQUET_DIR,
    REJECTS_FILE,
    SHARD_DIR,
    cutout_filename,
)
from croissant_cutouts.tasks.dataset.cutout import JobCutouts
from croissant_cutouts.tasks.dataset.splits import (
    SplitError,
    assign_splits,
    by_value,
    group_keys,
    split_keys,
)
from croissant_cutouts.tasks.errors import JobRejection
from croissant_cutouts.tasks.infra.atomic import TMP_MARK, atomic_output

__all__ = [
    "IndexSummary",
    "JobRejection",
    "index_task",
    "write_index",
]

log = logging.getLogger(__name__)


_OURS = {
    CUTOUT_DIR: re.compile(r"^jid.*_cutout\d{5,}\.npy$"),
    SHARD_DIR: re.compile(r"^jid.*\.npy$"),
    PARQUET_DIR: re.compile(r"^jid.*\.parquet$"),
}
#: Columns of a parquet-layout file that only the index step knows.
_PARQUET_LATE = ("cutout_id", "split")


@dataclass
class IndexSummary:
    """Counts and paths of a written index (small; returned by the index task)."""

    out_dir: Path
    index_path: Path
    rejects_path: Path
    limits_path: Path
    jobs: int
    jobs_rejected: int
    cutouts: int
    real: int
    bogus: int
    rows_rejected: int
    pruned: int
    notes: list[str]
    #: Those of ``notes`` about the splits (a scoring run, whose splits mean nothing, omits them).
    split_notes: list[str] = field(default_factory=list)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_output(path, "w") as fh:
        df.to_csv(fh, index=False, lineterminator="\n")


def write_index(
    results: list[JobCutouts | JobRejection],
    out_dir: str | Path,
    splits: SplitParams | None = None,
) -> IndexSummary:
    """Write the dataset's tables from per-job results, in job-name order.

    The ``split`` column is assigned here, over the whole index, by
    :func:`tasks.dataset.splits.assign_splits` with ``splits`` (default ``SplitParams()``): by sky
    field, else by job, never by cutout. An index with too few fields and jobs to split
    puts every cutout in ``train`` and says so in the notes (training then refuses it).

    Writes ``master_index.csv``, ``rejects.csv``, ``zscale_limits.csv`` and ``jobs.csv``,
    each atomically. ``jobs.csv`` has one row per job: ``job_id``, ``status`` (``ok`` or
    ``rejected``), ``catalog_rows`` (rows of its catalog; 0 when unreadable), ``cutouts``,
    ``rejected_rows`` and the ``reason`` of a rejected job: the totals that ``cutouts
    verify`` checks the index and the rejects against.

    Memory: the index is streamed, a few jobs' rows (:meth:`JobCutouts.read_rows`) at a
    time; across jobs only the rows that decide the splits (a few per job,
    :func:`tasks.dataset.splits.split_keys`) and each job's listed catalog rows are held,
    so a run of many jobs never holds the whole index.

    Parquet layout: fills the ``cutout_id`` and ``split`` columns of each job's Parquet file
    (the cutout step leaves them null), rewriting a file atomically only where they differ.

    Also removes cutout files, shards and Parquet files of ours
    (``cutouts/jid*_cutoutNNNNN.npy``, ``shards/jid*.npy``, ``parquet/jid*.parquet``) that
    the new index does not list, such as leftovers of an earlier run with other inputs or
    another layout, and temporary files of interrupted runs, so the index and the folder
    always agree.
    """
    out_dir = Path(out_dir)
    results = sorted(results, key=lambda r: r.job_id)
    tables = _tables(results)
    cut = [r for r in results if isinstance(r, JobCutouts)]
    split_notes: list[str] = []
    split, extra = _splits(cut, splits, split_notes)
    paths = {name: out_dir / name for name in (INDEX_FILE, REJECTS_FILE, LIMITS_FILE, JOBS_FILE)}
    listing = _stream_index(cut, split, extra, out_dir, paths[INDEX_FILE])
    _write_csv(
        pd.DataFrame(tables.rejects, columns=["job_id", "catalog_row", "reason"]).astype(
            {"catalog_row": "Int64"}
        ),
        paths[REJECTS_FILE],
    )
    _write_csv(
        pd.DataFrame(tables.limits, columns=["job_id", "channel", "file", "vmin", "vmax",
                                             "status"]),
        paths[LIMITS_FILE],
    )
    _write_csv(
        pd.DataFrame(tables.jobs, columns=["job_id", "status", "catalog_rows", "cutouts",
                                           "rejected_rows", "reason"]),
        paths[JOBS_FILE],
    )
    pruned = _prune(out_dir, listing)  # files, shards or parquet
    return IndexSummary(
        out_dir=out_dir,
        index_path=paths[INDEX_FILE],
        rejects_path=paths[REJECTS_FILE],
        limits_path=paths[LIMITS_FILE],
        jobs=len(results),
        jobs_rejected=sum(isinstance(r, JobRejection) for r in results),
        cutouts=listing.rows,
        real=sum(r.real for r in cut),
        bogus=sum(r.bogus for r in cut),
        rows_rejected=sum(1 for _, k, _ in tables.rejects if k is not pd.NA),
        pruned=pruned,
        notes=tables.notes + split_notes,
        split_notes=split_notes,
    )


@dataclass
class _Tables:
    """The rows of the small tables, gathered from the per-job results."""

    rejects: list[tuple] = field(default_factory=list)  # job_id, catalog_row, reason
    limits: list[tuple] = field(default_factory=list)  # job_id, channel, file, vmin, vmax, status
    notes: list[str] = field(default_factory=list)
    jobs: list[tuple] = field(default_factory=list)  # one row of jobs.csv per job


def _tables(results: list[JobCutouts | JobRejection]) -> _Tables:
    """Every job's rows for each small table, in the order of ``results``."""
    t = _Tables()
    for res in results:
        if isinstance(res, JobRejection):
            n = res.n_catalog_rows
            t.jobs.append((res.job_id, "rejected", n, 0, n, res.reason))
            t.rejects.append((res.job_id, pd.NA, res.reason))
            t.rejects.extend((res.job_id, k, f"job rejected: {res.reason}") for k in range(n))
            continue
        t.jobs.append((res.job_id, "ok", res.n_catalog_rows, res.n_rows, len(res.row_rejects), ""))
        t.rejects.extend((res.job_id, k, why) for k, why in res.row_rejects)
        for ch in CHANNELS:
            lim = res.limits[ch]
            t.limits.append((res.job_id, ch, res.image_files[ch], lim.vmin, lim.vmax, lim.status))
        t.notes.extend(f"{res.job_id}: {n}" for n in res.notes)
    return t


def _job_frame(res: JobCutouts) -> pd.DataFrame:
    """A job's index rows with its ``job_id`` as the first column."""
    frame = res.read_rows()
    frame.insert(0, "job_id", res.job_id)
    return frame


@dataclass
class _SplitMap:
    """The split of each group (``by``: the rule of :func:`tasks.dataset.splits.split_groups`;
    "none": every row in train)."""

    by: str
    of_key: dict[str, str] = field(default_factory=dict)

    def of(self, frame: pd.DataFrame) -> np.ndarray:
        """The split of every row of ``frame`` (index rows), as shared ``str`` objects."""
        if self.by == "none":
            return np.full(len(frame), "train", object)
        keys = pd.Series(group_keys(frame, self.by))
        return by_value(keys, self.of_key.__getitem__)


def _splits(
    cut: list[JobCutouts], splits: SplitParams | None, notes: list[str]
) -> tuple[_SplitMap, list[str]]:
    """The split of every group of rows, and the columns beyond the schema.

    Reads each job's rows once and keeps only the rows that decide the splits
    (:func:`tasks.dataset.splits.split_keys`: a few per job), so memory does not grow with
    the cutouts; ``notes`` gets the split notes. Extra columns are listed in order of first
    appearance (as a concatenation of the jobs' rows would order them).
    """
    names = {c.name for c in INDEX_SCHEMA}
    extra: dict[str, None] = {}
    parts = []
    for res in cut:
        frame = _job_frame(res)
        extra.update((c, None) for c in frame.columns if c not in names)
        parts.append(split_keys(frame))
    keys = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"job_id": []})
    try:
        assignment = assign_splits(keys, splits)
    except SplitError as exc:  # a dataset too small to split is still a dataset
        notes.append(f"every cutout is in the train split: {exc}")
        return _SplitMap("none"), list(extra)
    notes.extend(assignment.notes)
    groups = group_keys(keys, assignment.by) if len(keys) else []
    return _SplitMap(assignment.by, dict(zip(groups, assignment.split, strict=True))), list(extra)


@dataclass
class _Listing:
    """What the index lists, compactly: shard and parquet names, and per job its cutout
    files' catalog rows (sorted int64), so pruning a folder of millions of cutout files
    does not hold millions of names."""

    shards: set[str] = field(default_factory=set)
    catalog_rows: dict[str, np.ndarray] = field(default_factory=dict)
    rows: int = 0  # index rows added

    def add(self, frame: pd.DataFrame) -> None:
        """Add index rows (whole jobs: ``job_id``, ``catalog_row``, ``shard``)."""
        self.rows += len(frame)
        shard = frame["shard"].astype("string").fillna("")
        self.shards.update(s for s in shard.unique() if s)
        files = frame[(shard == "").to_numpy(bool)]
        for job_id, rows in files.groupby("job_id", sort=False)["catalog_row"]:
            self.catalog_rows[str(job_id)] = np.sort(rows.to_numpy(np.int64))

    def lists(self, name: str) -> bool:
        """True when ``name`` (relative to the dataset root) is a file the index lists."""
        if name in self.shards:
            return True
        job_id, sep, tail = name.removeprefix(f"{CUTOUT_DIR}/").rpartition("_cutout")
        rows = self.catalog_rows.get(job_id)
        if not sep or rows is None or not tail.removesuffix(".npy").isdigit():
            return False
        k = int(tail.removesuffix(".npy"))
        at = int(np.searchsorted(rows, k))
        return at < len(rows) and rows[at] == k and cutout_filename(job_id, k) == name


#: Index rows gathered before one write: bounds memory (about 1 KiB a row while written)
#: and keeps pandas' per-call cost off small jobs.
_WRITE_ROWS = 16_384


def _stream_index(
    cut: list[JobCutouts], split: _SplitMap, extra: list[str], out_dir: Path, path: Path
) -> _Listing:
    """Write ``master_index.csv`` a few whole jobs at a time; finish their Parquet files.

    Columns: :data:`INDEX_SCHEMA` with its dtypes, then ``extra``; ``cutout_id`` counts
    rows from 0 across jobs in order, ``split`` from each row's group (``split``). Jobs
    are gathered until they hold :data:`_WRITE_ROWS` rows, then written together.
    Returns what the index lists, for :func:`_prune`.
    """
    columns = [c.name for c in INDEX_SCHEMA] + extra
    dtypes = {c.name: c.dtype for c in INDEX_SCHEMA}
    listing = _Listing()
    pending: list[pd.DataFrame] = []
    start = 0

    def flush(fh) -> None:
        nonlocal start
        frame = pd.concat(pending, ignore_index=True)
        pending.clear()
        stop = start + len(frame)
        frame.insert(0, "cutout_id", range(start, stop))
        frame["split"] = split.of(frame)
        frame = frame.reindex(columns=columns).astype(dtypes)
        frame.to_csv(fh, index=False, header=False, lineterminator="\n")
        _finish_parquet(out_dir, frame)
        listing.add(frame)
        start = stop

    with atomic_output(path, "w") as fh:
        pd.DataFrame({n: [] for n in columns}).astype(dtypes).to_csv(
            fh, index=False, lineterminator="\n"
        )
        for res in cut:
            pending.append(_job_frame(res))
            if sum(map(len, pending)) >= _WRITE_ROWS:
                flush(fh)
        if pending:
            flush(fh)
    return listing


def _finish_parquet(out_dir: Path, index: pd.DataFrame) -> int:
    """Write the index's ``cutout_id`` and ``split`` into each parquet-layout file.

    Only the two columns are read to compare (Parquet is columnar); a file that differs is
    read memory-mapped, its columns replaced, and rewritten atomically (same row groups'
    pixels, same bytes). Returns the number of files rewritten.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = index["shard"].astype("string")
    ours = shards.str.endswith(".parquet").fillna(False).to_numpy(bool)
    if not ours.any():
        return 0
    rewritten = 0
    for name, rows in index[ours].groupby(shards[ours].to_numpy(), sort=True):
        path = out_dir / name
        rows = rows.sort_values("row")
        want = {
            "cutout_id": pa.array(rows["cutout_id"].to_numpy(np.int64), pa.int64()),
            "split": pa.array(rows["split"].astype(str).to_list(), pa.string()),
        }
        try:
            with pa.memory_map(str(path)) as source:
                have = pq.read_table(source, columns=list(_PARQUET_LATE))
            if all(have.column(c).combine_chunks().equals(v) for c, v in want.items()):
                continue
            with pa.memory_map(str(path)) as source:
                table = pq.read_table(source)
        except (pa.ArrowException, OSError) as exc:
            raise OSError(
                f"{path}: cannot write cutout_id and split into job {rows['job_id'].iat[0]}'s "
                f"parquet file ({' '.join(str(exc).split())}); delete it and run again"
            ) from exc
        for column, values in want.items():
            at = table.schema.get_field_index(column)
            table = table.set_column(at, table.schema.field(column), values)
        groups = pq.ParquetFile(path).metadata.row_group(0).num_rows
        with atomic_output(path, "wb") as fh:
            pq.write_table(table, fh, compression="none", use_dictionary=False,
                           row_group_size=groups)
        rewritten += 1
    return rewritten


def _prune(out_dir: Path, listing: _Listing) -> int:
    """Remove our cutout files, shards and Parquet files that ``listing`` does not list."""
    removed = 0
    for sub, pattern in _OURS.items():
        folder = out_dir / sub
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name
            stale = pattern.match(name) and not listing.lists(f"{sub}/{name}")
            if stale or (name.startswith(".") and TMP_MARK in name):
                entry.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("removed %d cutout files the index does not list", removed)
    return removed


@task(name="index", cache_policy=NO_CACHE, persist_result=False)
def index_task(
    results: list[JobCutouts | JobRejection], out_dir: str, splits: SplitParams | None = None
) -> IndexSummary:
    """Prefect task: :func:`write_index`."""
    return write_index(results, out_dir, splits)
