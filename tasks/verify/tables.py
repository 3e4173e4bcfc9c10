"""Checks of the index contract and of the splits, on the parsed index.

The index is read and parsed by :mod:`tasks.verify.reading`.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.contract import (
    INDEX_FILE,
    cutout_filename,
    parquet_filename,
    shard_filename,
)
from croissant_cutouts.tasks.dataset.splits import SPLITS
from croissant_cutouts.tasks.verify.reading import ParsedIndex
from croissant_cutouts.tasks.verify.report import Problem

__all__ = [
    "check_index",
    "check_splits",
]

log = logging.getLogger(__name__)


def check_index(index: ParsedIndex, problems: list[Problem]) -> None:
    """cutout_id sequence, job/catalog order, one row per candidate, contract file names."""
    _ids_in_sequence(index, problems)
    again = _duplicates(index, problems)
    _in_order(index, np.flatnonzero(~again), problems)  # a repeated candidate: reported once
    sharded = index.shard != ""
    _one_layout(index, sharded, problems)
    for i in range(len(index.pos)):
        _contract_names(index, i, bool(sharded[i]), problems)


def _index_problem(index: ParsedIndex, i: int, kind: str, text: str) -> Problem:
    return Problem(kind, text, file=INDEX_FILE, **index.where(i))


def _ids_in_sequence(index: ParsedIndex, problems: list[Problem]) -> None:
    """Rule: ``cutout_id`` is 0 .. N-1 in row order."""
    n = len(index.pos)
    off = np.flatnonzero(index.cutout_id != np.arange(n))
    if len(off):
        i = off[0]
        problems.append(_index_problem(
            index, i, "index",
            f"cutout_id is {index.text('cutout_id', i)}, expected {i}: ids must be "
            f"0 .. {n - 1} in row order ({len(off)} rows differ from here on)",
        ))


def _duplicates(index: ParsedIndex, problems: list[Problem]) -> np.ndarray:
    """Rule: one row per (job_id, catalog_row). Returns the mask of the repeats."""
    key = pd.DataFrame({"job": index.job, "k": index.catalog_row})
    again = key.duplicated(keep="first").to_numpy() & index.catalog_ok
    if again.any():
        first = {
            (j, k): int(p)
            for j, k, p in zip(
                index.job[::-1], index.catalog_row[::-1], index.pos[::-1], strict=True
            )
        }
        for i in np.flatnonzero(again):
            where = first[(index.job[i], index.catalog_row[i])]
            problems.append(_index_problem(
                index, i, "duplicate-row", f"candidate already indexed at index row {where}"
            ))
    return again


def _in_order(index: ParsedIndex, once: np.ndarray, problems: list[Problem]) -> None:
    """Rule: rows in job order, then catalog order (``once``: the rows to look at)."""
    if len(once) > 1:
        job, k = index.job[once], index.catalog_row[once]
        back = (job[1:] < job[:-1]) | ((job[1:] == job[:-1]) & (k[1:] < k[:-1]))
        if back.any():
            i = int(once[np.flatnonzero(back)[0] + 1])
            problems.append(_index_problem(
                index, i, "index", "rows are not in job order, then catalog order, from here on"
            ))


def _one_layout(index: ParsedIndex, sharded: np.ndarray, problems: list[Problem]) -> None:
    """Rule: every row names a shard (all .npy or all .parquet), or none does."""
    if sharded.any() and not sharded.all():
        i = int(np.flatnonzero(~sharded)[0] if sharded[0] else np.flatnonzero(sharded)[0])
        problems.append(_index_problem(
            index, i, "index",
            f"mixes layouts: {int(sharded.sum())} rows name a shard, "
            f"{int((~sharded).sum())} do not",
        ))
    parquet = sharded & np.char.endswith(index.shard.astype(str), ".parquet")
    if parquet.any() and not parquet[sharded].all():
        i = int(np.flatnonzero(sharded & ~parquet)[0])
        problems.append(_index_problem(
            index, i, "index",
            f"mixes layouts: {int(parquet.sum())} rows name a .parquet file, "
            f"{int((sharded & ~parquet).sum())} a .npy shard",
        ))


def _contract_names(index: ParsedIndex, i: int, sharded: bool, problems: list[Problem]) -> None:
    """Rule: row ``i`` names its file as the contract does, and a shard row is a row."""
    job_id, name = index.job[i], index.file_name(i)
    if sharded:
        parquet = index.shard[i].endswith(".parquet")
        want = parquet_filename(job_id) if parquet else shard_filename(job_id)
        if index.shard[i] != want or name != want:
            problems.append(_index_problem(
                index, i, "index",
                f"shard {index.shard[i]!r}, cutout_filename {name!r}: both must be {want!r}",
            ))
        elif not index.row_ok[i] or index.row[i] < 0:
            problems.append(Problem(
                "index", f"row {index.text('row', i)!r} is not a shard row", file=name,
                **index.where(i),
            ))
    elif index.catalog_ok[i]:
        want = cutout_filename(job_id, int(index.catalog_row[i]))
        if name != want:
            problems.append(_index_problem(
                index, i, "index", f"cutout_filename {name!r}, the contract's name is {want!r}"
            ))


def check_splits(index: ParsedIndex, problems: list[Problem]) -> None:
    """Split values are known, and no job or non-injected truth source spans two splits."""
    split = index.split
    if split is None:  # an index of before splits
        return
    for i in np.flatnonzero(~np.isin(split, SPLITS)):
        problems.append(
            Problem(
                "split",
                f"split {split[i]!r} is not one of {', '.join(SPLITS)}",
                file=INDEX_FILE,
                **index.where(int(i)),
            )
        )
    keys = [("job_id", index.job, np.ones(len(split), bool))]
    if index.truth is not None:
        keys.append(("truth_id", index.truth, index.truth != ""))
    for column, values, rows in keys:
        part = pd.DataFrame({"key": values[rows], "split": split[rows]})
        spread = part.groupby("key")["split"].nunique()
        for key in spread[spread > 1].index[:20]:
            i = int(np.flatnonzero(rows & (values == key))[0])
            sides = sorted(set(part["split"][part["key"] == key]))
            problems.append(
                Problem(
                    "split",
                    f"{column} {key} is in {len(sides)} splits ({', '.join(sides)}): the test "
                    "split would see what training saw",
                    file=INDEX_FILE,
                    **index.where(i),
                )
            )
