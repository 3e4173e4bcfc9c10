"""Checks of the files the index lists: every cutout file, shard and Parquet file read once.

What to read, on a pool of threads, and where each finding goes (index rows, ``digest``
lines, files nobody listed). Reading one file is :mod:`tasks.verify.scans`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from croissant_cutouts.tasks.contract import (
    CUTOUT_DIR,
    INDEX_FILE,
    PARQUET_DIR,
    SHARD_DIR,
    inside_dataset,
)
from croissant_cutouts.tasks.infra.atomic import TMP_MARK
from croissant_cutouts.tasks.verify.reading import ParsedIndex, name_text
from croissant_cutouts.tasks.verify.report import Problem, VerifyReport
from croissant_cutouts.tasks.verify.scans import (
    CHUNK_FILES,
    PARQUET_KEYS,
    Scan,
    scan_files,
    scan_npy,
    scan_parquet,
)

__all__ = [
    "FileChecks",
    "FileFindings",
    "ListedNames",
    "check_unlisted",
]

log = logging.getLogger(__name__)

#: What the file checks found in one file, as kept per file: ``(kind, message, shard row or
#: None)`` each; the empty tuple (one object for all) when nothing.
FileFindings = list[tuple[str, str, int | None]] | tuple[()]



# --------------------------------------------------------------------------------------
# the dataset


class FileChecks:
    """Every file and shard the index lists: format, shape, dtype, values, cutout sha256.

    :meth:`run` takes the index in groups of whole jobs (pass 2 of
    :mod:`tasks.verify.streaming`) and scans their files on ``pool`` (of ``workers``
    threads), at most ``_ahead`` scans ahead of the one whose result is read, across
    groups, so the readers keep busy while the next group is parsed and the scans waiting
    to be read stay few whatever the number of files. It fills:

    - ``digests``: sha256 of the shards in ``wanted`` (resolved paths), from the same read;
    - ``file_problems``: per relative path scanned, what was found, ``digest`` mismatches
      included; a shard with nothing found has an empty tuple, a cutout file none, so that
      a million clean cutout files take no memory;
    - ``missing``: the listed files that do not exist;
    - ``listed``: the cutout file names listed (:class:`ListedNames`);
    - the counts of ``report``; its problems, in this order: names outside the dataset,
      shard rows listed twice, shards whose rows are not 0 .. N-1 (by name), then every
      finding at its index row.
    """

    def __init__(
        self, root: Path, pool: ThreadPoolExecutor, wanted: set[Path], want_rows: bool,
        report: VerifyReport, workers: int = 2,
    ) -> None:
        self.root, self.pool, self.wanted, self.want_rows = root, pool, wanted, want_rows
        self.report, self.workers = report, workers
        self.digests: dict[Path, str] = {}
        self.file_problems: dict[str, FileFindings] = {}
        self.missing: set[str] = set()
        self.listed = ListedNames()
        self._unsafe: list[Problem] = []
        self._twice: list[Problem] = []
        self._gaps: list[Problem] = []
        self._located: list[Problem] = []

    def run(self, groups: Iterable[ParsedIndex]) -> None:
        """Scan the files of every group; append the problems found to the report."""
        calls = (call for group in groups for call in self._calls(group))
        for done, result in _in_order(self.pool, calls, _ahead(self.workers)):
            done(result)
        self._gaps.sort(key=lambda p: p.file or "")
        self._located.sort(key=lambda p: (-1 if p.index_row is None else p.index_row, p.file or ""))
        for found in (self._unsafe, self._twice, self._gaps, self._located):
            self.report.problems.extend(found)

    def _calls(self, group: ParsedIndex) -> Iterator[tuple[Callable, tuple, Callable]]:
        """The scans of a group's files, then of its shards: ``(function, args, done)``."""
        sharded = group.shard != ""
        self.listed.add(group.file)
        files = _file_rows(group, sharded, self._unsafe)
        for fn, args in _file_calls(self.root, *files, self.want_rows):
            yield fn, args, functools.partial(self._files_done, group)
        shard_rows = _shard_rows(group, sharded, self._twice)
        calls = _shard_calls(
            self.root, group, shard_rows, self.wanted, self.want_rows, self._gaps
        )
        for fn, args in calls:
            yield fn, args, functools.partial(self._shard_done, group, shard_rows)

    def _files_done(self, group: ParsedIndex, scanned: list[tuple[str, Scan, np.ndarray]]):
        for name, scan, rows in scanned:
            self._located += _file_findings(group, name, rows, scan, self.missing, self.report)
            if scan.problems:  # a clean cutout file is not kept (millions of them)
                self.file_problems[name] = scan.problems

    def _shard_done(self, group: ParsedIndex, shard_rows: dict, result: tuple[str, Scan]):
        name, scan = result
        self._located += _shard_findings(
            group, name, shard_rows[name], scan, self.missing, self.report
        )
        if scan.sha256 is not None:
            self.digests[(self.root / name).resolve()] = scan.sha256
        self.file_problems[name] = scan.problems or ()


class ListedNames:
    """The cutout file names the index lists, as a sorted array of their hashes.

    Python's 64-bit hash of each name's UTF-8 bytes: 8 bytes a row, not the name. A file
    that nobody lists would pass for listed if its name's hash equalled a listed one's, a
    chance of about n * m / 2**64 for n names and m files (5e-8 at a million of each).
    """

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._sorted: np.ndarray | None = None

    def add(self, names: np.ndarray) -> None:
        """Note ``names`` (:attr:`ParsedIndex.file`, UTF-8 bytes)."""
        self._parts.append(np.fromiter(map(hash, names.tolist()), np.int64, len(names)))
        self._sorted = None

    def __contains__(self, name: str) -> bool:
        if self._sorted is None:
            self._sorted = np.unique(np.concatenate([np.empty(0, np.int64), *self._parts]))
            self._parts = [self._sorted]
        key = hash(name.encode("utf-8", "surrogateescape"))
        at = int(np.searchsorted(self._sorted, key))
        return at < len(self._sorted) and self._sorted[at] == key


def _ahead(workers: int) -> int:
    """Tasks submitted ahead of the one read: enough to keep ``workers`` threads busy."""
    return 2 * max(1, workers) + 1


def _in_order(pool: ThreadPoolExecutor, calls: Iterable[tuple[Callable, tuple, object]],
              ahead: int) -> Iterator[tuple[object, object]]:
    """``(tag, result)`` of ``calls`` (``(function, args, tag)`` each) run on ``pool``, in
    call order.

    At most ``ahead`` calls are submitted beyond the one whose result is awaited: memory
    holds about ``ahead + 1`` results, not all of them.
    """
    pending: deque[tuple[object, Future]] = deque()
    for fn, args, tag in calls:
        pending.append((tag, pool.submit(fn, *args)))
        if len(pending) > ahead:
            tag, future = pending.popleft()
            yield tag, future.result()
    while pending:
        tag, future = pending.popleft()
        yield tag, future.result()


def _file_rows(
    index: ParsedIndex, sharded: np.ndarray, problems: list[Problem]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Files layout: the listed files in name order and the index rows of each.

    A name outside the dataset is a problem, and not scanned. Returns ``(names, folders,
    starts, rows)``: file ``names[k]`` (UTF-8 bytes, :attr:`ParsedIndex.file`), in folder
    ``folders[k]`` (bytes), is listed at kept index rows ``rows[starts[k]:starts[k + 1]]``,
    in row order. Arrays, no object per row: a few dozen bytes per row, for millions.
    """
    rows = np.flatnonzero(~sharded)
    safe = np.fromiter((inside_dataset(name_text(index.file[i])) for i in rows), bool, len(rows))
    for i in rows[~safe]:
        problems.append(Problem(
            "index", f"cutout_filename {index.file_name(i)!r} is not a path inside the dataset",
            file=INDEX_FILE, **index.where(int(i)),
        ))
    rows = rows[safe]
    rows = rows[np.argsort(index.file[rows], kind="stable")]
    names = index.file[rows]  # one copy of the names at a time
    first = np.ones(len(names), bool)
    first[1:] = names[1:] != names[:-1]
    starts = np.append(np.flatnonzero(first), len(names))
    names = names[first]
    return names, _folders(names), starts, rows


def _folders(names: np.ndarray) -> np.ndarray:
    """The folder of each name (bytes before its last ``/``); neighbours share one object."""
    out = np.empty(len(names), object)
    folder, prefix = b"", None
    for j, name in enumerate(names):
        if prefix is None or not name.startswith(prefix) or name.find(b"/", len(prefix)) >= 0:
            folder = bytes(name.rpartition(b"/")[0])
            prefix = folder + b"/" if folder else b""
        out[j] = folder
    return out


def _file_calls(
    root: Path, names: np.ndarray, folders: np.ndarray, starts: np.ndarray, rows: np.ndarray,
    want_rows: bool,
) -> Iterator[tuple[Callable, tuple]]:
    """The scans of the cutout files, in chunks of one folder each (:func:`_scan_listed`).

    ``names``, ``folders``, ``starts``, ``rows``: :func:`_file_rows`. Each chunk carries the
    index rows of its files, and their names as text (made for the chunk only).
    """
    k = 0
    while k < len(names):
        end = min(k + CHUNK_FILES, len(names))
        other = np.flatnonzero(folders[k:end] != folders[k])  # a chunk stays in one folder
        end = k + int(other[0]) if len(other) else end
        listed = {name_text(names[j]): rows[starts[j] : starts[j + 1]] for j in range(k, end)}
        yield _scan_listed, (root, name_text(folders[k]), listed, want_rows)
        k = end


def _scan_listed(
    root: Path, folder: str, listed: dict[str, np.ndarray], want_rows: bool
) -> list[tuple[str, Scan, np.ndarray]]:
    """:func:`scan_files` on the files of ``listed``, each result with its index rows."""
    return [
        (name, scan, listed[name])
        for name, scan in scan_files(root, folder, list(listed), want_rows)
    ]


def _shard_rows(
    index: ParsedIndex, sharded: np.ndarray, problems: list[Problem]
) -> dict[str, dict[int, int]]:
    """Shards layout: per shard, shard row -> index row; a row listed twice is a problem."""
    shard_rows: dict[str, dict[int, int]] = {}
    for i in np.flatnonzero(sharded & index.row_ok):
        name = index.shard[i]
        if not inside_dataset(name):
            continue
        seen = shard_rows.setdefault(name, {})
        r = int(index.row[i])
        if r in seen:
            problems.append(Problem(
                "index", f"shard row {r} is already listed at index row {index.pos[seen[r]]}",
                file=name, **index.where(int(i)),
            ))
        else:
            seen[r] = int(i)
    return shard_rows


def _shard_calls(
    root: Path,
    index: ParsedIndex,
    shard_rows: dict[str, dict[int, int]],
    wanted: set[Path],
    want_rows: bool,
    problems: list[Problem],
) -> Iterator[tuple[Callable, tuple]]:
    """The scan of each shard, in name order; its rows must be exactly 0 .. N-1.

    Each scan returns ``(name, scan)``. A shard's rows are checked (an ``index`` problem
    appended to ``problems``) when its call is made.
    """
    for name, seen in sorted(shard_rows.items()):
        n = len(seen)
        gaps = sorted(set(range(n)) - set(seen))
        if gaps:
            beyond = sorted(r for r in seen if r >= n)
            problems.append(Problem(
                "index",
                f"shard rows must be 0 .. {n - 1}: {_listing(gaps)} missing, "
                f"{_listing(beyond)} listed instead",
                job_id=index.job[next(iter(seen.values()))], file=name,
            ))
        path = root / name
        args = (path, n, path.resolve() in wanted, want_rows)
        if name.endswith(".parquet"):
            expect = {} if gaps else _expected_keys(index, seen, n)
            yield _named, (name, scan_parquet, *args, expect)
        else:
            yield _named, (name, scan_npy, *args)


def _named(name: str, scan: Callable[..., Scan], *args) -> tuple[str, Scan]:
    """``(name, scan(*args))``: a shard's scan with its name, for :func:`_in_order`."""
    return name, scan(*args)


def _expected_keys(index: ParsedIndex, seen: dict[int, int], n: int) -> dict[str, list[str]]:
    """The index's :data:`PARQUET_KEYS` values of a parquet file's rows 0 .. n-1 (text)."""
    at = [seen[r] for r in range(n)]
    keys = index.keys
    return {c: keys[c].loc[at].astype(str).tolist() for c in PARQUET_KEYS if c in keys}


def _file_findings(
    index: ParsedIndex, name: str, rows: np.ndarray, scan: Scan, missing: set[str],
    report: VerifyReport,
) -> list[Problem]:
    """The problems of one scanned cutout file, at each index row that lists it."""
    report.files += not scan.missing
    report.cutouts += scan.cutouts
    if scan.missing:
        missing.add(name)
    found: list[Problem] = []
    for i in rows.tolist():
        found += [Problem(kind, msg, file=name, **index.where(i)) for kind, msg, _ in scan.problems]
        if not scan.problems and scan.rows_sha256:
            found += _digest_problems(index, name, {0: i}, scan, report, None)
    return found


def _shard_findings(
    index: ParsedIndex, name: str, seen: dict[int, int], scan: Scan, missing: set[str],
    report: VerifyReport,
) -> list[Problem]:
    """The problems of one scanned shard, at the index row of each shard row."""
    report.files += not scan.missing
    report.cutouts += scan.cutouts
    job_id = index.job[next(iter(seen.values()))]
    if scan.missing:
        missing.add(name)
    found: list[Problem] = []
    for kind, msg, r in scan.problems:
        if r is None:
            found.append(Problem(kind, msg, job_id=job_id, file=name))
        else:
            where = index.where(seen[r]) if r in seen else {"job_id": job_id}
            found.append(Problem(kind, f"shard row {r}: {msg}", file=name, **where))
    if scan.rows_sha256:
        bad = {r for _, _, r in scan.problems}
        rows = {r: i for r, i in seen.items() if r not in bad}
        found += _digest_problems(index, name, rows, scan, report, "shard row")
    return found


def _digest_problems(
    index: ParsedIndex,
    name: str,
    rows: dict[int, int],
    scan: Scan,
    report: VerifyReport,
    prefix: str | None,
) -> list[Problem]:
    """Compare each cutout's data sha256 with the index's ``sha256``; ``digest`` problems.

    ``rows`` maps a cutout's position in the file (shard row; 0 for a cutout file) to its
    kept index row. Rows with an invalid ``sha256`` (already an ``index`` problem) and
    positions beyond the file are skipped. Mismatches are appended to ``scan.problems`` too,
    so the same file is not reported again as a ``croissant.json`` checksum mismatch.
    """
    if index.sha256 is None or scan.rows_sha256 is None:
        return []
    out = []
    for r, i in sorted(rows.items()):
        want = index.digest(i)
        if not want or r >= len(scan.rows_sha256):
            continue
        report.digests += 1
        got = scan.rows_sha256[r]
        if got != want:
            head = f"{prefix} {r}: " if prefix else ""
            msg = f"{head}data bytes hash to sha256 {got[:16]}..., {INDEX_FILE} says {want[:16]}..."
            out.append(Problem("digest", msg, file=name, **index.where(i)))
            scan.problems.append(("digest", msg, r if prefix else None))
    return out


def _listing(values: list[int], limit: int = 10) -> str:
    if not values:
        return "none"
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def check_unlisted(
    root: Path, listed: ListedNames | None, shards: set[str], report: VerifyReport
) -> None:
    """``.npy`` files under cutouts/ and shards/, ``.parquet`` under parquet/, not listed.

    ``listed``: the cutout file names of the index (None without an index: no file is
    reported then); ``shards``: its shard names.
    """
    leftovers = 0
    for sub, suffix in ((CUTOUT_DIR, ".npy"), (SHARD_DIR, ".npy"), (PARQUET_DIR, ".parquet")):
        unlisted = []  # only these are kept, then sorted: not one entry per cutout
        try:
            with os.scandir(root / sub) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        leftovers += TMP_MARK in name
                    elif listed is not None and name.endswith(suffix):
                        path = f"{sub}/{name}"
                        if path not in shards and path not in listed:
                            unlisted.append(name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        report.problems.extend(
            Problem("unlisted-file", "not listed in master_index.csv", file=f"{sub}/{name}")
            for name in sorted(unlisted)
        )
    with contextlib.suppress(OSError):
        leftovers += sum(
            1 for e in os.scandir(root) if e.name.startswith(".") and TMP_MARK in e.name
        )
    if leftovers:
        report.notes.append(
            f"{leftovers} leftover temporary files of an interrupted run (hidden, "
            f"'{TMP_MARK}' in the name); the next create removes them"
        )


