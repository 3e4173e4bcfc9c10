"""The index contract and the splits, checked as the index is read.

:class:`IndexChecks` is fed each parsed chunk of the index as pass 1 of
:mod:`tasks.verify.streaming` reads it (rules of one row, and counts and first rows for the
rules over all rows), then finished on :class:`tasks.verify.streaming.IndexRows` (the rules
that compare rows: one row per candidate, job order).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

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
from croissant_cutouts.tasks.verify.streaming import IndexRows

__all__ = [
    "IndexChecks",
]

log = logging.getLogger(__name__)


class IndexChecks:
    """The rules of the index and of its splits, chunk by chunk.

    :meth:`add` takes the parsed chunks in row order; :meth:`finish` appends the problems,
    in this order: ``cutout_id`` sequence, one row per candidate, job order, one layout,
    contract file names (row by row), split values (row by row), then jobs and truth
    sources found in more than one split. State kept: counts, the first rows that break a
    rule, one entry per job and per linked truth source; no entry per row.
    """

    def __init__(self) -> None:
        self.kept = 0  # kept rows added so far
        self.ids: tuple[dict, str, int] | None = None  # where, text, expected: first id off
        self.ids_off = 0
        self.layout = _Layout()
        self.names: list[Problem] = []
        self.split_values: list[Problem] = []
        self.split = False  # whether the index has a split column
        #: {column: {key: (first kept row, splits seen)}} of ``job_id`` and linked ``truth_id``
        self.spread: dict[str, dict[str, tuple[int, set[str]]]] = {"job_id": {}, "truth_id": {}}

    def add(self, part: ParsedIndex) -> None:
        """Check the rows of ``part``, the next chunk of the index (repeats left out)."""
        n = len(part.pos)
        off = np.flatnonzero(part.cutout_id != np.arange(self.kept, self.kept + n))
        if len(off) and self.ids is None:
            i = int(off[0])
            self.ids = (part.where(i), part.text("cutout_id", i), self.kept + i)
        self.ids_off += len(off)
        sharded = part.shard != ""
        self.layout.add(part, sharded, self.kept)
        for i in range(n):
            _contract_names(part, i, bool(sharded[i]), self.names)
        if part.split is not None:
            self.split = True
            self._splits(part)
        self.kept += n

    def finish(self, index: IndexRows, problems: list[Problem]) -> None:
        """Append the problems found (the index's rows: ``index``), in the order above."""
        if self.ids is not None:
            where, text, i = self.ids
            problems.append(Problem(
                "index", f"cutout_id is {text}, expected {i}: ids must be 0 .. {len(index) - 1} "
                f"in row order ({self.ids_off} rows differ from here on)",
                file=INDEX_FILE, **where,
            ))
        again = _duplicates(index, problems)
        _in_order(index, np.flatnonzero(~again), problems)  # a repeated candidate: once
        self.layout.problems(index, problems)
        problems += self.names
        problems += self.split_values
        for column, seen in self.spread.items():
            _spread(index, column, seen, problems)

    def _splits(self, part: ParsedIndex) -> None:
        """Rule: split values are known; note the splits of each job and linked truth."""
        split = part.split
        for i in np.flatnonzero(~np.isin(split, SPLITS)):
            self.split_values.append(Problem(
                "split", f"split {split[i]!r} is not one of {', '.join(SPLITS)}",
                file=INDEX_FILE, **part.where(int(i)),
            ))
        self._note("job_id", part.job, split, np.ones(len(split), bool))
        if part.truth is not None:
            self._note("truth_id", part.truth, split, part.truth != "")

    def _note(self, column: str, keys: np.ndarray, split: np.ndarray, rows: np.ndarray) -> None:
        at = np.flatnonzero(rows)
        pairs = pd.DataFrame({"key": keys[at], "split": split[at], "i": at})
        seen = self.spread[column]
        for key, side, i in pairs.drop_duplicates(["key", "split"]).itertuples(index=False):
            seen.setdefault(key, (self.kept + int(i), set()))[1].add(side)


def _index_problem(index, i: int, kind: str, text: str) -> Problem:
    return Problem(kind, text, file=INDEX_FILE, **index.where(i))


def _duplicates(index: IndexRows, problems: list[Problem]) -> np.ndarray:
    """Rule: one row per (job_id, catalog_row). Returns the mask of the repeats.

    Rows with a valid ``catalog_row`` sorted by job, then catalog row (a stable sort: the
    first row of each candidate leads its run); about 40 bytes a row while it runs.
    """
    rows = np.flatnonzero(index.catalog_ok)
    order = rows[np.lexsort((index.catalog_row[rows], index.codes[rows]))]
    del rows
    codes, k = index.codes[order], index.catalog_row[order]
    same = np.zeros(len(order), bool)
    same[1:] = (codes[1:] == codes[:-1]) & (k[1:] == k[:-1])
    del codes, k
    again = np.zeros(len(index), bool)
    again[order[same]] = True
    if same.any():
        leader = order[np.maximum.accumulate(np.where(same, 0, np.arange(len(order))))]
        first_of = dict(zip(order[same].tolist(), leader[same].tolist(), strict=True))
        for i in np.flatnonzero(again):
            problems.append(_index_problem(
                index, int(i), "duplicate-row",
                f"candidate already indexed at index row {index.position(first_of[int(i)])}",
            ))
    return again


def _in_order(index: IndexRows, once: np.ndarray, problems: list[Problem]) -> None:
    """Rule: rows in job order, then catalog order (``once``: the rows to look at)."""
    if len(once) > 1:
        rank = np.empty(len(index.jobs), np.int64)
        rank[np.argsort(index.jobs, kind="stable")] = np.arange(len(index.jobs))
        job, k = rank[index.codes[once]], index.catalog_row[once]
        back = (job[1:] < job[:-1]) | ((job[1:] == job[:-1]) & (k[1:] < k[:-1]))
        if back.any():
            i = int(once[np.flatnonzero(back)[0] + 1])
            problems.append(_index_problem(
                index, i, "index", "rows are not in job order, then catalog order, from here on"
            ))


@dataclass
class _Layout:
    """Rule: every row names a shard (all .npy or all .parquet), or none does.

    Counts of the rows of each kind, and the first kept row of each.
    """

    count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KINDS, 0))
    first: dict[str, int] = field(default_factory=dict)
    first_sharded: bool | None = None  # whether the first row names a shard

    def add(self, part: ParsedIndex, sharded: np.ndarray, start: int) -> None:
        parquet = sharded & np.char.endswith(part.shard.astype(str), ".parquet")
        for kind, rows in zip(_KINDS, (sharded, ~sharded, parquet, sharded & ~parquet),
                              strict=True):
            at = np.flatnonzero(rows)
            self.count[kind] += len(at)
            if len(at):
                self.first.setdefault(kind, start + int(at[0]))
        if self.first_sharded is None and len(sharded):
            self.first_sharded = bool(sharded[0])

    def problems(self, index: IndexRows, problems: list[Problem]) -> None:
        c = self.count
        if c["shard"] and c["plain"]:
            i = self.first["plain" if self.first_sharded else "shard"]
            problems.append(_index_problem(
                index, i, "index",
                f"mixes layouts: {c['shard']} rows name a shard, {c['plain']} do not",
            ))
        if c["parquet"] and c["npy"]:
            problems.append(_index_problem(
                index, self.first["npy"], "index",
                f"mixes layouts: {c['parquet']} rows name a .parquet file, {c['npy']} a .npy shard",
            ))


_KINDS = ("shard", "plain", "parquet", "npy")


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


def _spread(index: IndexRows, column: str, seen: dict, problems: list[Problem]) -> None:
    """Rule: no job, and no truth source that links jobs, spans two splits (20 reported)."""
    spread = sorted(key for key, (_, sides) in seen.items() if len(sides) > 1)
    for key in spread[:20]:
        i, sides = seen[key]
        problems.append(_index_problem(
            index, i, "split",
            f"{column} {key} is in {len(sides)} splits ({', '.join(sorted(sides))}): the test "
            "split would see what training saw",
        ))
