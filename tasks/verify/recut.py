"""``--deep``: every indexed candidate cut again from its input job and compared."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.contract import (
    CHANNELS,
    CUTOUT_DTYPE,
    CUTOUT_SHAPE,
    inside_dataset,
    open_shard,
)
from croissant_cutouts.tasks.dataset.cutout import (
    candidate_pixels,
    make_tensors,
    position_rejects,
)
from croissant_cutouts.tasks.dataset.normalize import job_limits
from croissant_cutouts.tasks.errors import JobError
from croissant_cutouts.tasks.inputs.catalogs import LabelOptions
from croissant_cutouts.tasks.inputs.load import (
    JobData,
    JobSpec,
    discover_jobs,
    load_job,
    open_image,
)
from croissant_cutouts.tasks.inputs.remote import is_remote
from croissant_cutouts.tasks.verify.reading import ParsedIndex
from croissant_cutouts.tasks.verify.report import Problem, VerifyReport
from croissant_cutouts.tasks.verify.scans import ROW_FLOATS

__all__ = [
    "recut_jobs",
    "rows_to_recut",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# deep: every indexed candidate cut again from its input job folder


def rows_to_recut(index: ParsedIndex, file_problems: dict[str, Sequence]) -> np.ndarray:
    """Mask of the kept index rows to cut again: scanned, with no problem in their cutout.

    A row whose file (or shard row) was reported by a file check, or was never scanned
    (unsafe path, bad shard row), is left out: one cause, one line. ``file_problems`` (of
    :class:`tasks.verify.tensors.FileChecks`) names every scanned shard and only the
    cutout files with a problem: a cutout file inside the dataset was scanned.
    """
    bad: dict[str, set[int | None]] = {
        name: {r for _, _, r in found} for name, found in file_problems.items()
    }
    sharded = index.shard != ""
    keep = index.catalog_ok.copy()
    for i in np.flatnonzero(keep):
        name = index.shard[i] if sharded[i] else index.file_name(i)
        found = bad.get(name)
        if not sharded[i]:
            keep[i] = found is None and inside_dataset(name)
        elif found is None:
            keep[i] = False
        elif not index.row_ok[i] or None in found or index.row[i] in found:
            keep[i] = False
    return keep


def recut_jobs(
    root: Path,
    groups: Iterable[ParsedIndex],
    file_problems: dict[str, Sequence],
    input_dir: Path | str,
    input_layout: str,
    labels: LabelOptions | None,
    batch: int,
    report: VerifyReport,
) -> None:
    """Cut the indexed candidates again, job by job, and compare them with the dataset's.

    ``groups``: the index in groups of whole jobs (:func:`tasks.verify.streaming.index_groups`);
    the rows of each that :func:`rows_to_recut` picks (``file_problems`` of the file checks)
    are cut. Each job of the index with a folder in ``input_dir`` is loaded with the plain
    :func:`tasks.inputs.load.load_job`, its ZScale limits recomputed
    (:func:`tasks.dataset.normalize.job_limits`) and its indexed candidates cut in batches of
    ``batch`` (``tasks.dataset.cutout.make_tensors``) from the memory-mapped images, at the
    positions of the input catalog's rows named by ``catalog_row``. Memory: one group of the
    index, one job's catalog and one batch of fresh and stored cutouts at a time.
    """
    if is_remote(str(input_dir)):
        report.notes.append(f"input {input_dir} is remote: cutouts not cut again")
        return
    try:
        specs = {s.job_id: s for s in discover_jobs(input_dir, input_layout)}
    except FileNotFoundError:
        return  # an input-count problem already says so
    absent: dict[str, int] = {}
    for index in groups:
        chosen = np.flatnonzero(rows_to_recut(index, file_problems))
        by_job = pd.Series(chosen).groupby(index.job[chosen], sort=False)  # job order
        for job, members in by_job:
            picked = members.to_numpy()
            spec = specs.get(job)
            if spec is None:
                absent[job] = absent.get(job, 0) + len(picked)
                continue
            spec = dataclasses.replace(spec, labels=labels or LabelOptions())
            _recut_job(root, index, spec, picked, batch, report)
    if absent:
        report.notes.append(
            f"{sum(absent.values())} cutouts of {len(absent)} jobs not cut again: no job "
            f"folder in {input_dir} ({', '.join(list(absent)[:10])}"
            f"{' ...' if len(absent) > 10 else ''})"
        )


def _why(exc: BaseException) -> str:
    return exc.message if isinstance(exc, JobError) else f"{type(exc).__name__}: {exc}"


def _recut_job(
    root: Path,
    index: ParsedIndex,
    spec: JobSpec,
    rows: np.ndarray,
    batch: int,
    report: VerifyReport,
) -> None:
    """One job of :func:`recut_jobs`: ``rows`` are its kept index rows to cut again."""
    try:
        data = load_job(spec)
        limits = job_limits(data)
    except (JobError, OSError, ValueError) as exc:
        report.problems.append(
            Problem(
                "recut",
                f"cannot load the job again from {spec.path}: {_why(exc)}",
                job_id=spec.job_id,
            )
        )
        return
    rows, at = _recuttable(index, data, rows, report)
    table = data.table
    r, c = candidate_pixels(table["x"].to_numpy()[at], table["y"].to_numpy()[at])
    images = {ch: open_image(data.images[ch]) for ch in CHANNELS}
    shards: dict[str, np.ndarray] = {}
    for start in range(0, len(rows), batch):
        part = slice(start, start + batch)
        fresh = make_tensors(images, limits, r[part], c[part])
        stored, read = _stored_cutouts(root, index, rows[part], shards, report)
        _compare_cutouts(index, rows[part][read], fresh[read], stored[read], spec, report)


def _recuttable(
    index: ParsedIndex, data: JobData, rows: np.ndarray, report: VerifyReport
) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose catalog row the input still cuts, and that row's position in the table.

    A ``catalog_row`` the input catalog lacks, or one the input rejects now (a bad row, or
    a position off the image), is a ``recut`` problem.
    """
    table = data.table
    catalog = table["catalog_row"].to_numpy(np.int64)
    refused = dict(data.row_rejects)
    for pos, why in position_rejects(table["x"], table["y"], data.shape).items():
        refused.setdefault(int(catalog[pos]), why)
    at = pd.Index(catalog).get_indexer(index.catalog_row[rows])
    usable = np.ones(len(rows), bool)
    for j, i in enumerate(rows):
        k = int(index.catalog_row[i])
        why = None
        if at[j] < 0:
            why = f"the input catalog has no row {k} ({len(table)} rows)"
        elif k in refused:
            why = f"the input rejects this catalog row now: {refused[k]}"
        if why is not None:
            usable[j] = False
            report.problems.append(
                Problem("recut", why, file=_cutout_file(index, i), **index.where(int(i)))
            )
    return rows[usable], at[usable]


def _cutout_file(index: ParsedIndex, i: int) -> str:
    return index.shard[i] or index.file_name(i)


def _stored_cutouts(
    root: Path,
    index: ParsedIndex,
    rows: np.ndarray,
    shards: dict[str, np.ndarray],
    report: VerifyReport,
) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's cutouts of ``rows``, shape (m, 64, 64, 4) ``<f4``, and a mask of those read.

    Shards (``.npy``, or a parquet-layout file's ``image`` column) are opened once per job
    (``shards`` keeps them); a file that cannot be
    read now (changed since it was scanned) is a ``recut`` problem.
    """
    out = np.zeros((len(rows), *CUTOUT_SHAPE), CUTOUT_DTYPE)
    read = np.ones(len(rows), bool)
    for j, i in enumerate(rows):
        name = _cutout_file(index, i)
        try:
            if index.shard[i]:
                if name not in shards:
                    shards[name] = open_shard(root / name)  # a .npy shard or a .parquet
                out[j] = shards[name][index.row[i]]
            else:
                out[j] = np.load(root / name, allow_pickle=False)
        except (OSError, ValueError, IndexError) as exc:
            read[j] = False
            report.problems.append(
                Problem(
                    "recut",
                    f"cannot read the cutout now: {_why(exc)}",
                    file=name,
                    **index.where(int(i)),
                )
            )
    return out, read


def _compare_cutouts(
    index: ParsedIndex,
    rows: np.ndarray,
    fresh: np.ndarray,
    stored: np.ndarray,
    spec: JobSpec,
    report: VerifyReport,
) -> None:
    """A ``recut`` problem for each stored cutout whose bytes differ from the fresh one."""
    m = len(rows)
    report.recut += m
    differ = fresh.reshape(m, -1).view(np.uint32) != stored.reshape(m, -1).view(np.uint32)
    counts = differ.sum(axis=1)
    for j in np.flatnonzero(counts):
        i = int(rows[j])
        largest = float(np.abs(fresh[j].astype(np.float64) - stored[j]).max())
        head = f"shard row {index.row[i]}: " if index.shard[i] else ""
        report.problems.append(
            Problem(
                "recut",
                f"{head}{counts[j]} of {ROW_FLOATS} values differ from the candidate cut "
                f"again from {spec.path} (largest difference {largest:.3g})",
                file=_cutout_file(index, i),
                **index.where(i),
            )
        )


