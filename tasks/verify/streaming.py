"""The index read twice, so that verify's memory does not grow with the dataset.

Pass 1 (:func:`load_index`) reads ``master_index.csv`` chunk by chunk, finds exact repeats
as it goes (by row hash, ``_SeenRows``), parses each chunk
(:func:`tasks.verify.reading.parse_chunk`), hands the parsed chunk to the index rules
(:class:`tasks.verify.tables.IndexChecks`) and keeps only :class:`IndexRows`: per row its
job (a code), catalog row and cutout id, the columns the rules over all rows need (one row
per candidate, job order, accounting).

Pass 2 (:func:`index_groups`) reads the index again and gives it parsed, in groups of
consecutive rows that hold whole jobs (a job whose rows are scattered keeps the rows
between them in its group), for the checks that need every column: the files, the
digests, ``deep``'s cutting again. One group is held at a time.

Memory per index row: 21 bytes of :class:`IndexRows` for the whole run, plus 16 while pass
1 runs (the row hashes seen); a group (``_GROUP_ROWS`` rows) is a fixed cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.contract import INDEX_FILE
from croissant_cutouts.tasks.verify.reading import (
    INDEX_REQUIRED,
    UNREADABLE,
    Found,
    ParsedIndex,
    index_chunks,
    locate,
    parse_chunk,
    unreadable,
    with_columns,
)
from croissant_cutouts.tasks.verify.report import Problem

__all__ = [
    "IndexChanged",
    "IndexRows",
    "index_groups",
    "load_index",
]

#: Kept index rows per group of pass 2 (whole jobs, so a group may hold more): about 2 MiB
#: parsed, and enough files per group that the pool of readers rarely waits.
_GROUP_ROWS = 16_384


@dataclass
class IndexRows:
    """The columns of every kept index row that the rules over all rows need.

    Exact repeats are left out; ``repeats`` keeps their CSV rows, from which
    :meth:`position` finds any kept row's CSV row. 21 bytes a row.
    """

    codes: np.ndarray  #: int32 code of each row's ``job_id`` (its place in ``jobs``)
    jobs: np.ndarray  #: the ``job_id`` texts (object array), in order of first appearance
    catalog_row: np.ndarray  #: int64, valid where ``catalog_ok``
    catalog_ok: np.ndarray
    cutout_id: np.ndarray  #: int64, -1 where not an integer
    #: sorted CSV data rows of the exact repeats
    repeats: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    rows_read: int = 0  #: CSV data rows read, exact repeats included
    shards: set[str] = field(default_factory=set)  #: the ``shard`` names, "" left out
    has_sha256: bool = False  #: whether the index has a ``sha256`` column
    #: kept rows where a group of whole jobs may start (0 first, the row count last)
    bounds: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def job(self) -> np.ndarray:
        """``job_id`` text of every row (object array; equal values share one ``str``)."""
        return self.jobs[self.codes]

    @property
    def pos(self) -> np.ndarray:
        """The CSV data row of every kept row."""
        return self.position(np.arange(len(self)))

    def position(self, i):
        """CSV data row of kept row(s) ``i``: ``i`` plus the repeats before it."""
        shifted = self.repeats - np.arange(len(self.repeats))  # kept rows before each repeat
        return i + np.searchsorted(shifted, i, side="right")

    def where(self, i: int) -> dict[str, object]:
        """Problem keywords locating kept row ``i`` (as :meth:`ParsedIndex.where`)."""
        return locate(self, i, self.jobs[self.codes[i]], self.position(i))


def load_index(
    root: Path, problems: list[Problem], on_part: Callable[[ParsedIndex], None] | None = None
) -> IndexRows | None:
    """Pass 1: ``master_index.csv`` read chunk by chunk; exact repeats left out.

    Each chunk is parsed and handed to ``on_part`` (its rows' ``pos`` are CSV rows), then
    dropped. Appends, in this order: a ``duplicate-row`` problem per exact repeat, then an
    ``index`` problem per bad ``sha256``, ``cutout_id`` and ``catalog_row`` cell.

    Returns
    -------
    IndexRows or None
        None, with a ``table`` problem, when the file is missing, unreadable or empty, or
        lacks a column of :data:`tasks.verify.reading.INDEX_REQUIRED` (as
        :func:`tasks.verify.reading.read_table` says).
    """
    seen, found, kept, rows = _SeenRows(), Found(), _Kept(), 0
    try:
        for chunk, hashes in index_chunks(root):
            if not rows and with_columns(chunk, INDEX_FILE, INDEX_REQUIRED, problems) is None:
                return None
            repeats = seen.add(hashes, rows, found.repeats, chunk)
            keep = np.flatnonzero(~repeats)
            part = parse_chunk(chunk.take(keep), rows + keep, found)
            kept.add(part, rows + np.flatnonzero(repeats))
            if on_part is not None:
                on_part(part)
            rows += len(chunk)
    except UNREADABLE as exc:
        return unreadable(INDEX_FILE, exc, problems)
    problems.extend(found.in_order())
    return kept.finish(rows)


class _Kept:
    """:class:`IndexRows` gathered chunk by chunk."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.repeats: list[np.ndarray] = []
        self.shards: set[str] = set()
        self.has_sha256 = False

    def add(self, part: ParsedIndex, repeats: np.ndarray) -> None:
        local, names = pd.factorize(part.job)
        table = np.array([self.codes.setdefault(n, len(self.codes)) for n in names], np.int32)
        codes = table[local] if len(local) else np.empty(0, np.int32)
        self.parts.append((codes, part.catalog_row, part.catalog_ok, part.cutout_id))
        self.repeats.append(np.asarray(repeats, np.int64))
        self.shards.update(part.shard.tolist())
        self.has_sha256 = part.sha256 is not None

    def finish(self, rows_read: int) -> IndexRows:
        columns = [np.concatenate(c) for c in zip(*self.parts, strict=True)]
        self.parts.clear()
        jobs = np.empty(len(self.codes), object)
        jobs[:] = list(self.codes)
        index = IndexRows(
            *columns[:1], jobs, *columns[1:], repeats=np.concatenate(self.repeats),
            rows_read=rows_read, shards=self.shards - {""}, has_sha256=self.has_sha256,
        )
        index.bounds = _bounds(index.codes, len(jobs))
        return index


def _bounds(codes: np.ndarray, n_jobs: int) -> np.ndarray:
    """Kept rows where a group of whole jobs may start: no job has rows on both sides.

    Codes number jobs in order of first appearance, so the jobs' first rows increase with
    the code; a group may start at a job's first row when every earlier job ended before.
    """
    n = len(codes)
    if n == 0:
        return np.zeros(1, np.int64)
    _, first = np.unique(codes, return_index=True)
    _, from_end = np.unique(codes[::-1], return_index=True)
    last = n - 1 - from_end
    reach = np.maximum.accumulate(last)  # the last row of any job begun so far
    starts = first[1:][reach[:-1] < first[1:]] if n_jobs > 1 else np.empty(0, np.int64)
    return np.concatenate([[0], starts, [n]]).astype(np.int64)


class _SeenRows:
    """The row hashes seen so far, with the CSV row where each first appeared.

    Kept as a few sorted runs, each less than half as long as the one before (a new run is
    merged with the runs no longer than twice it), so adding a chunk costs about log(n)
    copies per row, not a copy of everything seen, and a lookup a binary search per run.
    """

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, first rows)

    def add(self, hashes: np.ndarray, start: int, report, chunk: pd.DataFrame) -> np.ndarray:
        """Mask of this chunk's rows (CSV rows ``start`` on) that repeat an earlier row.

        ``report(chunk, i, first, start)`` is called for each repeat: chunk row ``i``
        repeats CSV row ``first``. Two different rows share a hash with probability about
        n**2 / 2**65 for n rows (1e-9 at 200,000 rows), which is negligible.
        """
        uniq, at, which = np.unique(hashes, return_index=True, return_inverse=True)
        first = start + at
        new = np.ones(len(uniq), bool)
        for run, rows in self.runs:
            where = np.minimum(np.searchsorted(run, uniq), len(run) - 1)
            hit = new & (run[where] == uniq)
            first[hit] = rows[where[hit]]
            new &= ~hit
        first = first[which.reshape(-1)]
        repeats = first != start + np.arange(len(hashes))
        for i in np.flatnonzero(repeats):
            report(chunk, int(i), int(first[i]), start)
        self._insert(uniq[new], start + at[new])
        return repeats

    def _insert(self, run: np.ndarray, rows: np.ndarray) -> None:
        """Add a sorted run of new hashes, merging it with the runs no longer than twice it."""
        while self.runs and len(self.runs[-1][0]) <= 2 * len(run):
            last, last_rows = self.runs.pop()
            run, rows = np.concatenate([last, run]), np.concatenate([last_rows, rows])
            order = np.argsort(run, kind="stable")  # two sorted runs: a linear merge
            run, rows = run[order], rows[order]
        if len(run):
            self.runs.append((run, rows))


def index_groups(
    root: Path, index: IndexRows, rows: int | None = None
) -> Iterator[ParsedIndex]:
    """Pass 2: the index again, parsed, in groups of consecutive kept rows of whole jobs.

    Each group starts at one of ``index.bounds`` and holds at least ``rows`` kept rows
    (default ``_GROUP_ROWS``) unless it is the last; its ``pos`` are CSV rows. Bad cells are
    not reported again (pass 1 did).

    Raises
    ------
    IndexChanged
        The index no longer has the rows pass 1 read (it changed meanwhile).
    """
    cuts = _cuts(index.bounds, rows or _GROUP_ROWS)
    pieces: list[tuple[pd.DataFrame, np.ndarray]] = []
    kept, start, g = 0, 0, 1
    for chunk, _ in index_chunks(root, hashed=False):
        csv = np.arange(start, start + len(chunk))
        keep = ~np.isin(csv, index.repeats, assume_unique=True)
        frame, pos = chunk[keep], csv[keep]
        start += len(chunk)
        while len(frame) and g < len(cuts):
            take = min(cuts[g] - kept, len(frame))
            pieces.append((frame.iloc[:take], pos[:take]))
            frame, pos, kept = frame.iloc[take:], pos[take:], kept + take
            if kept == cuts[g]:
                yield _parse_group(pieces)
                pieces, g = [], g + 1
        if len(frame):
            break
    if kept != len(index) or start != index.rows_read:
        raise IndexChanged(f"{root / INDEX_FILE} changed while it was being verified")


class IndexChanged(RuntimeError):
    """The index read again is not the one read first (written to meanwhile)."""


def _cuts(bounds: np.ndarray, rows: int) -> list[int]:
    """Group starts from ``bounds`` (the last is the end): each group ``rows`` or more."""
    cuts = [0]
    while cuts[-1] < bounds[-1]:
        j = int(np.searchsorted(bounds, cuts[-1] + rows))
        cuts.append(int(bounds[min(j, len(bounds) - 1)]))
    return cuts


def _parse_group(pieces: list[tuple[pd.DataFrame, np.ndarray]]) -> ParsedIndex:
    frame = pd.concat([f for f, _ in pieces], ignore_index=True)
    return parse_chunk(frame, np.concatenate([p for _, p in pieces]), None)
