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
)
from croissant_cutouts.tasks.dataset.cutout import JobCutouts
from croissant_cutouts.tasks.dataset.splits import SplitAssignment, SplitError, assign_splits
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
    split_notes: list[str] = []
    index = _index(tables.frames, splits, split_notes)
    paths = {name: out_dir / name for name in (INDEX_FILE, REJECTS_FILE, LIMITS_FILE, JOBS_FILE)}
    _write_csv(index, paths[INDEX_FILE])
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
    _finish_parquet(out_dir, index)
    pruned = _prune(out_dir, set(index["cutout_filename"]))  # files, shards or parquet
    labels = index["label"]
    return IndexSummary(
        out_dir=out_dir,
        index_path=paths[INDEX_FILE],
        rejects_path=paths[REJECTS_FILE],
        limits_path=paths[LIMITS_FILE],
        jobs=len(results),
        jobs_rejected=sum(isinstance(r, JobRejection) for r in results),
        cutouts=len(index),
        real=int((labels == 1).sum()),
        bogus=int((labels == 0).sum()),
        rows_rejected=sum(1 for _, k, _ in tables.rejects if k is not pd.NA),
        pruned=pruned,
        notes=tables.notes + split_notes,
        split_notes=split_notes,
    )


@dataclass
class _Tables:
    """The rows of the dataset's tables, gathered from the per-job results."""

    frames: list[pd.DataFrame] = field(default_factory=list)  # index rows, per job
    rejects: list[tuple] = field(default_factory=list)  # job_id, catalog_row, reason
    limits: list[tuple] = field(default_factory=list)  # job_id, channel, file, vmin, vmax, status
    notes: list[str] = field(default_factory=list)
    jobs: list[tuple] = field(default_factory=list)  # one row of jobs.csv per job


def _tables(results: list[JobCutouts | JobRejection]) -> _Tables:
    """Every job's rows for each table, in the order of ``results``."""
    t = _Tables()
    for res in results:
        if isinstance(res, JobRejection):
            n = res.n_catalog_rows
            t.jobs.append((res.job_id, "rejected", n, 0, n, res.reason))
            t.rejects.append((res.job_id, pd.NA, res.reason))
            t.rejects.extend((res.job_id, k, f"job rejected: {res.reason}") for k in range(n))
            continue
        t.jobs.append(
            (res.job_id, "ok", res.n_catalog_rows, len(res.rows), len(res.row_rejects), "")
        )
        frame = res.rows.copy()
        frame.insert(0, "job_id", res.job_id)
        t.frames.append(frame)
        t.rejects.extend((res.job_id, k, why) for k, why in res.row_rejects)
        for ch in CHANNELS:
            lim = res.limits[ch]
            t.limits.append((res.job_id, ch, res.image_files[ch], lim.vmin, lim.vmax, lim.status))
        t.notes.extend(f"{res.job_id}: {n}" for n in res.notes)
    return t


def _index(
    frames: list[pd.DataFrame], splits: SplitParams | None, notes: list[str]
) -> pd.DataFrame:
    """``master_index.csv``: ids, the split of every row, the schema's columns and dtypes."""
    names = [c.name for c in INDEX_SCHEMA]
    if frames:
        index = pd.concat(frames, ignore_index=True)
    else:
        index = pd.DataFrame({n: [] for n in names if n != "cutout_id"})
    index.insert(0, "cutout_id", range(len(index)))
    try:
        assignment = assign_splits(index, splits)
    except SplitError as exc:  # a dataset too small to split is still a dataset
        assignment = SplitAssignment(np.full(len(index), "train", object), "none", 0, 0)
        notes.append(f"every cutout is in the train split: {exc}")
    index["split"] = assignment.split
    notes.extend(assignment.notes)
    extra = [c for c in index.columns if c not in names]
    return index.reindex(columns=names + extra).astype({c.name: c.dtype for c in INDEX_SCHEMA})


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


def _prune(out_dir: Path, listed: set[str]) -> int:
    removed = 0
    for sub, pattern in _OURS.items():
        folder = out_dir / sub
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name
            stale = pattern.match(name) and f"{sub}/{name}" not in listed
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
