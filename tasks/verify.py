"""Verify step: check a written dataset against the cutout contract, row by row.

:func:`verify_dataset` reads a dataset folder and reports every way it breaks the contract
(``cutout-contract.md``) as a :class:`Problem`; it never changes a file. Checks:

- every ``master_index.csv`` row: its file exists and is a valid ``.npy`` (what
  ``np.load(path, mmap_mode="r", allow_pickle=False)`` accepts, in C order, with no bytes
  after the array) of shape (64, 64, 4) (files layout) or (N, 64, 64, 4) (shards layout),
  dtype ``<f4`` (little-endian float32), all values finite and within [0, 1], and every
  cutout's 65,536 data bytes hashing to its ``sha256`` in the index (a flipped bit that
  leaves the values valid is caught here);
- the index itself: ``cutout_id`` 0 .. N-1 in order, rows in job then catalog order, one row
  per (``job_id``, ``catalog_row``), file names as the contract names them, and per shard
  ``row`` exactly 0 .. N-1 with N the shard's length;
- no ``.npy`` under ``cutouts/`` or ``shards/`` that the index does not list;
- ``croissant.json``: every FileObject's ``contentUrl`` exists and its ``sha256`` matches
  the file, hashed afresh (the digest memo in ``.cutouts/sha256.json`` is not used);
- accounting, per job of ``jobs.csv``: every catalog row ``0 .. catalog_rows-1`` is either
  in the index or in ``rejects.csv``, never both, never twice; optionally each catalog
  recounted from the input job folders (which also give the totals of a dataset written
  before ``jobs.csv`` existed);
- with ``deep``, every indexed candidate cut again from its input job folder (the plain
  load, normalize and cutout functions, one job at a time, images memory-mapped) and
  compared byte for byte with the dataset's cutout, which catches a cutout replaced by
  another valid one together with its ``sha256``.

Choices:

- Hidden temporary files (``.<name>.tmp-<pid>...``, :data:`tasks.atomic.TMP_MARK`) are what
  a killed run leaves; the next ``create`` removes them. They are not corruption: the report
  counts them in a note, not as problems. Non-``.npy`` files a user put in ``cutouts/`` or
  ``shards/`` are not ours and are ignored (the Croissant FileSet matches ``*.npy`` only).
- One cause, one line: a checksum mismatch is reported for a file only when no other
  problem was found in that file (a shard holding a NaN is reported as ``non-finite``, not
  also as ``checksum``; a shard with a row whose ``sha256`` differs, as ``digest`` at that
  row, not also as ``checksum``); a cutout with a bad value is not also a ``digest`` line,
  and a cutout reported by a file check is not cut again by ``deep``; an exact duplicate
  index row is reported once and left out of the sequence and accounting checks.
- An index without a ``sha256`` column (written before the column existed) is checked
  for everything else, with a note saying the bytes were not checked against digests.

Values are checked per file (or per block of shard rows) with one vectorised min/max pass;
small files are read in chunks on a pool of threads (reads, numpy and hashlib release the
GIL), each file with one ``open``/``read`` relative to an open folder descriptor. A shard is
read once, sequentially, for its values, its file sha256 and its rows' sha256.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.atomic import TMP_MARK
from tasks.croissant import sha256_file
from tasks.cutout import (
    CUTOUT_DIR,
    CUTOUT_SIZE,
    SHARD_DIR,
    _npy_header,
    candidate_pixels,
    cutout_filename,
    make_tensors,
    position_rejects,
    shard_filename,
)
from tasks.errors import JobError
from tasks.index import INDEX_FILE, JOBS_FILE, REJECTS_FILE
from tasks.layouts import CHANNELS, LabelOptions
from tasks.load import JobData, JobSpec, discover_jobs, load_job, open_image
from tasks.normalize import job_limits
from tasks.remote import is_remote, location
from tasks.splits import SPLITS, truth_links

__all__ = [
    "CROISSANT_FILE",
    "KINDS",
    "DatasetInvalid",
    "Problem",
    "VerifyReport",
    "verify_dataset",
    "verify_task",
]

log = logging.getLogger(__name__)

CROISSANT_FILE = "croissant.json"

#: Problem kinds and what each means.
KINDS: dict[str, str] = {
    "table": "a dataset table (master_index.csv, rejects.csv, jobs.csv) is missing or unreadable",
    "index": "master_index.csv breaks the contract (ids, order, names, shard rows, values)",
    "duplicate-row": "master_index.csv lists a row, or a (job_id, catalog_row), twice",
    "missing-file": "a file the index lists is not on disk",
    "bad-npy": "not a valid .npy as numpy.save writes it (truncated, trailing bytes, ...)",
    "shape": "a tensor or shard of the wrong shape",
    "dtype": "a tensor that is not little-endian float32",
    "non-finite": "NaN or inf values in a cutout",
    "out-of-range": "values outside [0, 1] in a cutout",
    "unlisted-file": "a .npy under cutouts/ or shards/ that the index does not list",
    "croissant": "croissant.json missing, unreadable, incomplete, or naming a missing file",
    "checksum": "a file's sha256 differs from the one in croissant.json",
    "accounting": "index + rejects do not account for a job's catalog rows exactly once",
    "input-count": "the input job folder's catalog has another number of rows than jobs.csv",
    "digest": "a cutout's data bytes do not hash to its sha256 in master_index.csv",
    "recut": "with --deep: a cutout differs from its candidate cut again from the input job "
    "folder, or the candidate cannot be cut again",
    "split": "a split value other than train/validation/test, or a job or truth source in two "
    "splits",
}

_TENSOR_SHAPE = (CUTOUT_SIZE, CUTOUT_SIZE, len(CHANNELS))
_DTYPE = np.dtype("<f4")
_ROW_FLOATS = int(np.prod(_TENSOR_SHAPE))
_ROW_BYTES = _ROW_FLOATS * _DTYPE.itemsize
#: Files per task of the thread pool (files layout), and shard rows per read (~16 MiB).
_CHUNK_FILES = 256
_SHARD_BLOCK = 256


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    message : str
        What is wrong, for a person.
    job_id : str, optional
        The job concerned.
    file : str, optional
        The file concerned, relative to the dataset root (``cutouts/...``,
        ``master_index.csv``, ...).
    index_row : int, optional
        0-based data row of ``master_index.csv`` (the header is not a row).
    cutout_id : int, optional
        ``cutout_id`` of that index row.
    catalog_row : int, optional
        0-based data row of the candidate in its job's catalog.
    """

    kind: str
    message: str
    job_id: str | None = None
    file: str | None = None
    index_row: int | None = None
    cutout_id: int | None = None
    catalog_row: int | None = None

    def __post_init__(self) -> None:  # plain str and int, whatever numpy scalars came in
        for name in ("job_id", "file"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        for name in ("index_row", "cutout_id", "catalog_row"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, int(value))

    def line(self) -> str:
        """One line: ``kind: file, where: message``."""
        where = []
        if self.index_row is not None:
            where.append(f"index row {self.index_row}")
        if self.cutout_id is not None:
            where.append(f"cutout_id {self.cutout_id}")
        if self.job_id is not None:
            where.append(f"job {self.job_id}")
        if self.catalog_row is not None:
            where.append(f"catalog row {self.catalog_row}")
        head = self.file or ""
        if where:
            head = f"{head} ({', '.join(where)})" if head else ", ".join(where)
        return f"{self.kind}: {head}: {self.message}" if head else f"{self.kind}: {self.message}"

    def __str__(self) -> str:
        return self.line()


@dataclass
class VerifyReport:
    """What :func:`verify_dataset` checked and found.

    Attributes
    ----------
    dataset_dir : Path
    problems : list of Problem
        In check order: tables, index, files (by index row), unlisted files, Croissant,
        accounting, input recount.
    notes : list of str
        Things worth knowing that are not problems (leftover temporary files, a recount
        skipped, input jobs the dataset does not hold).
    index_rows, cutouts, files, jobs, catalog_rows, reject_rows, sha256, recounted : int
        Counts of what was checked: index rows; cutout tensors whose values were read;
        ``.npy`` files opened; jobs and catalog rows accounted; ``rejects.csv`` rows;
        file digests of ``croissant.json`` compared; input catalogs recounted.
    digests : int
        Cutouts whose data bytes were compared with their ``sha256`` in the index.
    recut : int
        Cutouts cut again from their input job folder and compared byte for byte (``deep``).
    seconds : float
        Wall time of the verification.
    """

    dataset_dir: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    index_rows: int = 0
    cutouts: int = 0
    files: int = 0
    jobs: int = 0
    catalog_rows: int = 0
    reject_rows: int = 0
    sha256: int = 0
    recounted: int = 0
    digests: int = 0
    recut: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def kinds(self) -> dict[str, int]:
        """Number of problems of each kind, in :data:`KINDS` order."""
        counts = {k: 0 for k in KINDS}
        for p in self.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        return {k: n for k, n in counts.items() if n}

    def summary(self) -> str:
        """The last line ``cutouts verify`` prints."""
        checked = (
            f"{self.cutouts} cutouts in {self.files} files checked ({self.digests} against "
            f"their sha256), {self.jobs} jobs ({self.catalog_rows} catalog rows) accounted, "
            f"{self.sha256} file sha256 compared"
        )
        if self.recounted:
            checked += f", {self.recounted} input catalogs recounted"
        if self.recut:
            checked += f", {self.recut} cutouts cut again and compared"
        checked += f", seconds: {self.seconds:.1f}"
        if self.ok:
            return f"verify: OK, {checked}"
        kinds = ", ".join(f"{n} {k}" for k, n in self.kinds().items())
        n = len(self.problems)
        return f"verify: {n} problem{'s' if n != 1 else ''} ({kinds}); {checked}"

    def lines(self, limit: int | None = None) -> list[str]:
        """One line per problem: all, or the first ``limit`` and a line saying how many more."""
        shown = self.problems if limit is None else self.problems[:limit]
        out = [p.line() for p in shown]
        if len(shown) < len(self.problems):
            out.append(f"... and {len(self.problems) - len(shown)} more problems")
        return out

    def __str__(self) -> str:
        """Problem lines, notes (``note: ...``), then the summary line."""
        return "\n".join([*self.lines(), *(f"note: {n}" for n in self.notes), self.summary()])


class DatasetInvalid(ValueError):
    """The dataset fails verification; the message lists its problems (the first 50)."""

    def __init__(self, report: VerifyReport, limit: int = 50) -> None:
        self.report = report
        lines = [*report.lines(limit), report.summary()]
        super().__init__(f"dataset {report.dataset_dir} fails verification:\n" + "\n".join(lines))
        self.limit = limit

    def __reduce__(self) -> tuple[type, tuple[VerifyReport, int]]:
        return type(self), (self.report, self.limit)  # picklable (Dask, Prefect states)


# --------------------------------------------------------------------------------------
# tables


def _read_table(root: Path, name: str, required: Iterable[str], problems: list[Problem]):
    """A CSV of the dataset as strings (no NA conversion), or None with a ``table`` problem."""
    path = root / name
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except FileNotFoundError:
        problems.append(Problem("table", "file missing", file=name))
        return None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        reason = "empty file" if isinstance(exc, pd.errors.EmptyDataError) else str(exc)
        problems.append(Problem("table", f"unreadable: {reason}", file=name))
        return None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        problems.append(Problem("table", f"lacks column(s) {', '.join(missing)}", file=name))
        return None
    return frame


def _integers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parse a column of strings as integers: ``(values as int64, mask of valid)``.

    Empty or non-integer strings are invalid (their value is -1).
    """
    num = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    valid = np.isfinite(num) & (num == np.round(num))
    return np.where(valid, num, -1).astype(np.int64), valid


@dataclass
class _Index:
    """The parsed index, exact duplicate rows left out (``pos`` keeps their CSV row)."""

    frame: pd.DataFrame
    pos: np.ndarray  # 0-based CSV data row of each kept row
    cutout_id: np.ndarray
    catalog_row: np.ndarray
    catalog_ok: np.ndarray
    job: np.ndarray
    file: np.ndarray
    shard: np.ndarray
    row: np.ndarray
    row_ok: np.ndarray
    #: lowercase hex ``sha256`` per row ("" where invalid); None when the column is absent
    sha256: np.ndarray | None = None

    def where(self, i: int) -> dict[str, object]:
        """Problem keywords locating kept row ``i``."""
        return {
            "job_id": self.job[i],
            "index_row": int(self.pos[i]),
            "cutout_id": int(self.cutout_id[i]) if self.cutout_id[i] >= 0 else None,
            "catalog_row": int(self.catalog_row[i]) if self.catalog_ok[i] else None,
        }


_INDEX_REQUIRED = ("cutout_id", "job_id", "cutout_filename", "catalog_row")


def _texts(values: pd.Series) -> np.ndarray:
    """A column as an object array of Python ``str`` (so messages quote ``'a'``, not
    ``np.str_('a')``)."""
    return values.to_numpy(str).astype(object)


def _parse_index(frame: pd.DataFrame, problems: list[Problem]) -> _Index:
    """Drop exact duplicate rows (reported), parse the columns the checks need."""
    dup = frame.duplicated(keep="first").to_numpy()
    if dup.any():
        first = {}
        for i, key in enumerate(map(tuple, frame.itertuples(index=False, name=None))):
            if dup[i]:
                problems.append(
                    Problem(
                        "duplicate-row",
                        f"repeats index row {first[key]} exactly",
                        job_id=frame["job_id"].iat[i],
                        file=INDEX_FILE,
                        index_row=i,
                    )
                )
            else:
                first.setdefault(key, i)
    keep = ~dup
    kept = frame.loc[keep].reset_index(drop=True)
    for column in ("shard", "row"):  # the files layout's index may lack them (seed era)
        if column not in kept:
            kept[column] = ""
    cutout_id, id_ok = _integers(kept["cutout_id"])
    catalog_row, catalog_ok = _integers(kept["catalog_row"])
    row, row_ok = _integers(kept["row"])
    shard = _texts(kept["shard"])
    index = _Index(
        frame=kept,
        pos=np.flatnonzero(keep),
        cutout_id=np.where(id_ok, cutout_id, -1),
        catalog_row=catalog_row,
        catalog_ok=catalog_ok,
        job=_texts(kept["job_id"]),
        file=_texts(kept["cutout_filename"]),
        shard=shard,
        row=row,
        row_ok=row_ok,
    )
    if "sha256" in kept:
        index.sha256 = _parse_digests(index, kept["sha256"], problems)
    _bad_cells(index, kept["cutout_id"], ~id_ok, "is not an integer", problems)
    _bad_cells(index, kept["catalog_row"], ~catalog_ok, "is not an integer", problems)
    return index


def _bad_cells(
    index: _Index, values: pd.Series, bad: np.ndarray, why: str, problems: list[Problem]
) -> None:
    """An ``index`` problem ``"<column> <value> <why>"`` for each row where ``bad`` is true."""
    for i in np.flatnonzero(bad):
        problems.append(
            Problem(
                "index",
                f"{values.name} {values.iat[i]!r} {why}",
                file=INDEX_FILE,
                **index.where(int(i)),
            )
        )


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _parse_digests(index: _Index, values: pd.Series, problems: list[Problem]) -> np.ndarray:
    """The ``sha256`` column, lowercased; an ``index`` problem (and "") where not 64 hex digits."""
    digests = values.str.strip().str.lower()
    valid = digests.map(lambda v: _HEX64.fullmatch(v) is not None).to_numpy(bool)
    _bad_cells(index, values, ~valid, "is not a SHA-256 digest (64 hex digits)", problems)
    return np.where(valid, digests.to_numpy(str), "")


def _check_index(index: _Index, problems: list[Problem]) -> None:
    """cutout_id sequence, job/catalog order, one row per candidate, contract file names."""
    n = len(index.pos)
    off = np.flatnonzero(index.cutout_id != np.arange(n))
    if len(off):
        i = off[0]
        problems.append(
            Problem(
                "index",
                f"cutout_id is {index.frame['cutout_id'].iat[i]}, expected {i}: ids must be "
                f"0 .. {n - 1} in row order ({len(off)} rows differ from here on)",
                file=INDEX_FILE,
                **index.where(i),
            )
        )
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
            problems.append(
                Problem(
                    "duplicate-row",
                    f"candidate already indexed at index row "
                    f"{first[(index.job[i], index.catalog_row[i])]}",
                    file=INDEX_FILE,
                    **index.where(i),
                )
            )
    once = np.flatnonzero(~again)  # a repeated candidate is reported above, once
    if len(once) > 1:
        job, k = index.job[once], index.catalog_row[once]
        back = (job[1:] < job[:-1]) | ((job[1:] == job[:-1]) & (k[1:] < k[:-1]))
        if back.any():
            i = int(once[np.flatnonzero(back)[0] + 1])
            problems.append(
                Problem(
                    "index",
                    "rows are not in job order, then catalog order, from here on",
                    file=INDEX_FILE,
                    **index.where(i),
                )
            )
    sharded = index.shard != ""
    if sharded.any() and not sharded.all():
        i = int(np.flatnonzero(~sharded)[0] if sharded[0] else np.flatnonzero(sharded)[0])
        problems.append(
            Problem(
                "index",
                f"mixes layouts: {int(sharded.sum())} rows name a shard, "
                f"{int((~sharded).sum())} do not",
                file=INDEX_FILE,
                **index.where(i),
            )
        )
    for i in range(n):
        job_id, name = index.job[i], index.file[i]
        if sharded[i]:
            want = shard_filename(job_id)
            if index.shard[i] != want or name != want:
                problems.append(
                    Problem(
                        "index",
                        f"shard {index.shard[i]!r}, cutout_filename {name!r}: both must be "
                        f"{want!r}",
                        file=INDEX_FILE,
                        **index.where(i),
                    )
                )
            elif not index.row_ok[i] or index.row[i] < 0:
                problems.append(
                    Problem(
                        "index",
                        f"row {index.frame['row'].iat[i]!r} is not a shard row",
                        file=name,
                        **index.where(i),
                    )
                )
        elif index.catalog_ok[i]:
            want = cutout_filename(job_id, int(index.catalog_row[i]))
            if name != want:
                problems.append(
                    Problem(
                        "index",
                        f"cutout_filename {name!r}, the contract's name is {want!r}",
                        file=INDEX_FILE,
                        **index.where(i),
                    )
                )


def _check_splits(index: _Index, problems: list[Problem]) -> None:
    """Split values are known, and no job or non-injected truth source spans two splits."""
    frame = index.frame
    if "split" not in frame:  # an index of before splits
        return
    split = frame["split"].astype("string").fillna("").to_numpy(dtype=object)
    for i in np.flatnonzero(~np.isin(split, SPLITS)):
        problems.append(
            Problem(
                "split",
                f"split {split[i]!r} is not one of {', '.join(SPLITS)}",
                file=INDEX_FILE,
                **index.where(int(i)),
            )
        )
    keys = [("job_id", np.ones(len(frame), bool)), ("truth_id", truth_links(frame))]
    for column, rows in keys:
        part = pd.DataFrame({"key": frame[column][rows].astype(str), "split": split[rows]})
        spread = part.groupby("key")["split"].nunique()
        for key in spread[spread > 1].index[:20]:
            i = int(np.flatnonzero(rows & (frame[column].astype(str) == key).to_numpy())[0])
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


# --------------------------------------------------------------------------------------
# tensors


@dataclass
class _Scan:
    """Result of reading one .npy: problems without location, and its digests when asked.

    ``rows_sha256`` holds the :func:`tasks.cutout.cutout_sha256` of each cutout's data bytes
    (one for a cutout file, one per row of a shard), when asked and the file is readable.
    """

    problems: list[tuple[str, str, int | None]]  # kind, message, shard row (None: whole file)
    cutouts: int = 0
    sha256: str | None = None
    missing: bool = False
    rows_sha256: list[str] | None = None


def _row_digests(view: memoryview, m: int) -> list[str]:
    """sha256 of each of the ``m`` consecutive 65,536-byte cutouts in ``view`` (bytes)."""
    return [
        hashlib.sha256(view[j * _ROW_BYTES : (j + 1) * _ROW_BYTES]).hexdigest() for j in range(m)
    ]


def _value_problems(block: np.ndarray) -> list[tuple[int, str, str]]:
    """Rows of ``block`` (shape (m, 64*64*4), float32) with non-finite or out-of-range values.

    Returns ``(row, kind, message)``; one vectorised min/max pass, details for bad rows only.
    """
    lo, hi = block.min(axis=1), block.max(axis=1)
    bad = np.flatnonzero(~((lo >= 0) & (hi <= 1)))  # NaN fails both comparisons
    out = []
    for r in bad:
        values = block[r]
        finite = np.isfinite(values)
        if not finite.all():
            nan = int(np.isnan(values).sum())
            out.append(
                (
                    int(r),
                    "non-finite",
                    f"{nan} NaN and {values.size - finite.sum() - nan} inf values",
                )
            )
        good = values[finite]
        outside = int(((good < 0) | (good > 1)).sum())
        if outside:
            out.append(
                (
                    int(r),
                    "out-of-range",
                    f"{outside} values outside [0, 1] (min {good.min():.6g}, max {good.max():.6g})",
                )
            )
    return out


def _npy_error(path: Path, size: int, exc: BaseException) -> str:
    """Why ``np.load`` refused a file, in words (truncation stated with byte counts)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }[version]
            shape, _, dtype = read(fh)
            offset = fh.tell()
        need = offset + int(np.prod(shape)) * dtype.itemsize
        if size < need:
            return f"truncated: {size} bytes, the header needs {need}"
    except (ValueError, EOFError, OSError, KeyError):  # np.load's own message then
        pass
    if size == 0:
        return "empty file (0 bytes)"
    return f"not a readable .npy file ({type(exc).__name__}: {exc})"


def _scan_npy(path: Path, rows: int | None, want_sha: bool, want_rows: bool = False) -> _Scan:
    """Check one .npy in full: format, shape, dtype, values; sha256 of its bytes when asked.

    Parameters
    ----------
    path : Path
    rows : int or None
        None for a single cutout (shape (64, 64, 4)); else the number of rows the index
        gives the shard (shape (rows, 64, 64, 4)).
    want_sha : bool
        Also return the file's sha256, from the same read.
    want_rows : bool
        Also return each cutout's data sha256 (:attr:`_Scan.rows_sha256`), from the same read.
    """
    scan = _Scan([])
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        scan.missing = True
        scan.problems.append(("missing-file", "file missing", None))
        return scan
    except OSError as exc:
        scan.problems.append(("bad-npy", f"cannot read: {exc}", None))
        return scan
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        scan.problems.append(("bad-npy", _npy_error(path, size, exc), None))
        return scan
    shape, dtype, offset, c_order = arr.shape, arr.dtype, int(arr.offset), arr.flags.c_contiguous
    del arr  # unmapped now; the values are read below with plain reads (one pass, + sha256)
    if size != offset + int(np.prod(shape)) * dtype.itemsize:
        extra = size - offset - int(np.prod(shape)) * dtype.itemsize
        scan.problems.append(("bad-npy", f"{extra} bytes after the array", None))
    elif not c_order:
        scan.problems.append(
            ("bad-npy", "Fortran order; numpy.save of a cutout writes C order", None)
        )
    if rows is None:
        want = _TENSOR_SHAPE
    else:
        want = (rows, *_TENSOR_SHAPE)
    if shape != want:
        if rows is not None and shape[1:] == _TENSOR_SHAPE:
            msg = f"shard holds {shape[0]} cutouts, the index lists {rows}"
        else:
            msg = f"shape {shape}, expected {want}"
        scan.problems.append(("shape", msg, None))
    if dtype != _DTYPE:
        scan.problems.append(
            ("dtype", f"dtype {dtype.str} ({dtype}), expected <f4 (little-endian float32)", None)
        )
    if scan.problems:  # no checksum line for a file already found broken
        return scan
    digest = hashlib.sha256() if want_sha else None
    rows_sha: list[str] | None = [] if want_rows else None
    n = 1 if rows is None else rows
    block = np.empty((min(n, _SHARD_BLOCK), _ROW_FLOATS), _DTYPE)
    with open(path, "rb", buffering=0) as fh:
        head = fh.read(offset)
        if digest is not None:
            digest.update(head)
        for start in range(0, n, _SHARD_BLOCK):
            m = min(_SHARD_BLOCK, n - start)
            view = memoryview(block[:m]).cast("B")
            got = _read_full(fh.readinto, view)
            if got != len(view):  # changed under us
                scan.problems.append(
                    ("bad-npy", f"short read at row {start + got // _ROW_BYTES}", None)
                )
                return scan
            if digest is not None:
                digest.update(view)
            if rows_sha is not None:
                rows_sha.extend(_row_digests(view, m))
            for r, kind, msg in _value_problems(block[:m]):
                scan.problems.append((kind, msg, None if rows is None else start + r))
        if digest is not None:
            digest.update(fh.read())
    scan.cutouts = n
    scan.sha256 = digest.hexdigest() if digest is not None else None
    scan.rows_sha256 = rows_sha
    return scan


def _read_full(readinto, view: memoryview) -> int:
    """Fill ``view`` from a ``readinto`` callable; returns the bytes read (less at EOF)."""
    got = 0
    while got < len(view):
        k = readinto(view[got:])
        if not k:
            break
        got += k
    return got


_HEADER = np.frombuffer(_npy_header(_TENSOR_SHAPE), np.uint8)
_FILE_BYTES = len(_HEADER) + _ROW_BYTES
_STRIDE = _FILE_BYTES + 64  # room to notice trailing bytes; keeps each row 64-byte aligned


def _scan_files(
    root: Path, folder: str, names: list[str], want_rows: bool = False
) -> list[tuple[str, _Scan]]:
    """Check a chunk of cutout files ``<root>/<folder>/<name>``, values in one pass.

    A file whose bytes are exactly a canonical header plus 65,536 bytes is checked from one
    read; any other file gets the full :func:`_scan_npy` treatment for a precise message.
    With ``want_rows``, each scan also carries the sha256 of the file's data bytes.
    Returns ``(relative path, scan)`` per file.
    """
    rel = [f"{folder}/{n}" if folder else n for n in names]
    buf = np.empty((len(names), _STRIDE), np.uint8)
    sizes = np.zeros(len(names), np.int64)
    odd: list[str] = []
    try:
        dfd = os.open(root / folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        dfd = None
    try:
        for i, name in enumerate(names):
            if dfd is None:
                odd.append(name)
                continue
            try:
                fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
            except OSError:
                odd.append(name)
                continue
            try:
                sizes[i] = _read_full(lambda v, fd=fd: os.readv(fd, [v]), memoryview(buf[i]))
            except OSError:
                odd.append(name)
            finally:
                os.close(fd)
    finally:
        if dfd is not None:
            os.close(dfd)
    canonical = (sizes == _FILE_BYTES) & (buf[:, : len(_HEADER)] == _HEADER).all(axis=1)
    skip = set(odd)
    good = [i for i in np.flatnonzero(canonical) if names[i] not in skip]
    out: list[tuple[str, _Scan]] = []
    if good:
        values = buf[good, len(_HEADER) : _FILE_BYTES].view(_DTYPE)
        bad: dict[int, list[tuple[str, str, int | None]]] = {}
        for r, kind, msg in _value_problems(values):
            bad.setdefault(r, []).append((kind, msg, None))
        for j, i in enumerate(good):
            scan = _Scan(bad.get(j, []), cutouts=1)
            if want_rows:
                scan.rows_sha256 = [hashlib.sha256(buf[i, len(_HEADER) : _FILE_BYTES]).hexdigest()]
            out.append((rel[i], scan))
    done = set(good)
    out += [
        (rel[i], _scan_npy(root / rel[i], None, False, want_rows))
        for i in range(len(rel))
        if i not in done
    ]
    return out


# --------------------------------------------------------------------------------------
# the dataset


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _safe_relpath(name: str) -> bool:
    """True for a plain relative path inside the dataset (no ``..``, not absolute)."""
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts


def _croissant_objects(
    root: Path, path: Path, require: bool, problems: list[Problem]
) -> list[dict] | None:
    """The FileObjects of ``croissant.json`` (dicts), or None when absent/unreadable."""
    rel = os.path.relpath(path, root) if path.is_relative_to(root) else str(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if require:
            problems.append(Problem("croissant", "file missing", file=rel))
        return None
    except (OSError, ValueError) as exc:
        problems.append(Problem("croissant", f"unreadable: {exc}", file=rel))
        return None
    dist = doc.get("distribution") if isinstance(doc, dict) else None
    if not isinstance(dist, list):
        problems.append(Problem("croissant", "has no distribution list", file=rel))
        return None
    return [d for d in dist if isinstance(d, dict) and "FileObject" in str(d.get("@type", ""))]


def verify_dataset(
    dataset_dir: str | os.PathLike[str],
    input_dir: str | os.PathLike[str] | None = None,
    *,
    require_croissant: bool = True,
    croissant: str | os.PathLike[str] | None = None,
    input_layout: str = "auto",
    workers: int = 2,
    deep: bool = False,
    labels: LabelOptions | None = None,
    batch: int = 64,
) -> VerifyReport:
    """Check a dataset folder against the cutout contract; report every problem found.

    Parameters
    ----------
    dataset_dir : path-like
        Dataset root (holding ``master_index.csv``).
    input_dir : path-like, optional
        Local folder of the ``jid*`` job folders the dataset was built from: each job of
        ``jobs.csv`` that has a folder there has its catalog rows recounted
        (:meth:`tasks.layouts.Layout.count_rows`) and compared with ``catalog_rows``.
    require_croissant : bool
        Report a missing ``croissant.json`` (default). False after ``create`` alone.
    croissant : path-like, optional
        The metadata file; default ``<dataset_dir>/croissant.json``. Its ``contentUrl``
        values are relative to its folder.
    input_layout : str
        Input layout of the recount (``auto``, ``seed``, ``rapid``), as for the build.
    workers : int
        Threads reading files (default 2: reads and numpy release the GIL).
    deep : bool
        Also cut every indexed candidate again from its job folder in ``input_dir`` and
        compare it byte for byte with the dataset's cutout (:func:`_recut_jobs`; needs
        ``input_dir``; costs what loading and cutting the jobs cost).
    labels : LabelOptions, optional
        Labelling options for loading the jobs again with ``deep`` (the ``labels:`` of the
        params the dataset was built with; they decide no pixel, only whether a job loads).
    batch : int
        Candidates cut per batch with ``deep`` (memory: about 160 KiB per candidate).

    Returns
    -------
    VerifyReport
        ``report.ok`` is True when nothing is wrong. A bad dataset (or a missing
        ``input_dir``) is reported, never raised.

    Raises
    ------
    ValueError
        ``deep`` without ``input_dir``.
    """
    if deep and input_dir is None:
        raise ValueError("a deep verification cuts the candidates again: it needs input_dir")
    t0 = time.perf_counter()
    root = Path(dataset_dir)
    report = VerifyReport(dataset_dir=root)
    problems = report.problems
    if not root.is_dir():
        problems.append(Problem("table", f"dataset folder {root} does not exist"))
        report.seconds = time.perf_counter() - t0
        return report

    frame = _read_table(root, INDEX_FILE, _INDEX_REQUIRED, problems)
    rejects = _read_table(root, REJECTS_FILE, ("job_id", "catalog_row", "reason"), problems)
    jobs = _read_table(root, JOBS_FILE, ("job_id", "status", "catalog_rows"), problems)
    index = None
    if frame is not None:
        report.index_rows = len(frame)
        index = _parse_index(frame, problems)
        _check_index(index, problems)
        _check_splits(index, problems)
        if index.sha256 is None:
            report.notes.append(
                f"{INDEX_FILE} has no sha256 column (written before it existed): the cutouts' "
                "bytes were checked for format and values only"
            )

    with ThreadPoolExecutor(max(1, workers)) as pool:
        # croissant first: it says which shards need a digest
        cpath = Path(croissant) if croissant is not None else root / CROISSANT_FILE
        objects = _croissant_objects(root, cpath, require_croissant, problems)
        base = cpath.parent
        wanted = {  # resolved paths with a sha256 to compare
            (base / obj["contentUrl"]).resolve()
            for obj in objects or []
            if isinstance(obj.get("contentUrl"), str) and isinstance(obj.get("sha256"), str)
        }
        digests: dict[Path, str] = {}
        file_problems: dict[str, list[tuple[str, str, int | None]]] = {}
        # files reported missing: croissant.json naming them is not a second problem
        missing = set() if (root / INDEX_FILE).exists() else {INDEX_FILE}
        if index is not None:
            _check_tensors(root, index, pool, wanted, digests, file_problems, missing, report)
        _check_unlisted(root, index, report)
        if objects is not None:
            _check_croissant(
                root, cpath, objects, index, pool, digests, file_problems, missing, report
            )
    counted = None
    if input_dir is not None:
        counted = _recount(location(input_dir), jobs, index, rejects, input_layout, report)
    if deep and index is not None:
        rows = _rows_to_recut(index, file_problems)
        _recut_jobs(root, index, location(input_dir), input_layout, labels, rows, batch, report)
    listed = jobs is not None
    if not listed and counted:  # a dataset without jobs.csv: totals from the inputs
        jobs = _jobs_from_counts(counted, rejects)
        report.notes.append(f"{JOBS_FILE} missing: catalog row totals from {input_dir}")
    elif not listed:
        report.notes.append(f"{JOBS_FILE} missing: catalog row totals were not checked")
    _check_accounting(index, rejects, jobs, report, listed)
    report.seconds = time.perf_counter() - t0
    return report


def _check_tensors(
    root: Path,
    index: _Index,
    pool: ThreadPoolExecutor,
    wanted: set[Path],
    digests: dict[Path, str],
    file_problems: dict[str, list],
    missing: set[str],
    report: VerifyReport,
) -> None:
    """Every file and shard the index lists: format, shape, dtype, values, cutout sha256.

    Fills ``digests`` (sha256 of the shards in ``wanted``, from the same read),
    ``file_problems`` (per relative path, what was found, ``digest`` mismatches included)
    and ``missing``.
    """
    problems = report.problems
    want_rows = index.sha256 is not None
    sharded = index.shard != ""
    # files layout: rows by file name
    rows_of: dict[str, list[int]] = {}
    for i in np.flatnonzero(~sharded):
        name = index.file[i]
        if _safe_relpath(name):
            rows_of.setdefault(name, []).append(int(i))
        else:
            problems.append(
                Problem(
                    "index",
                    f"cutout_filename {name!r} is not a path inside the dataset",
                    file=INDEX_FILE,
                    **index.where(int(i)),
                )
            )
    by_folder: dict[str, list[str]] = {}
    for name in rows_of:
        folder, _, base = name.rpartition("/")
        by_folder.setdefault(folder, []).append(base)
    file_jobs = [
        pool.submit(_scan_files, root, folder, chunk, want_rows)
        for folder, names in sorted(by_folder.items())
        for chunk in _chunks(sorted(names), _CHUNK_FILES)
    ]
    # shards layout: rows by shard, shard rows exactly 0 .. N-1
    shard_rows: dict[str, dict[int, int]] = {}
    for i in np.flatnonzero(sharded & index.row_ok):
        name = index.shard[i]
        if not _safe_relpath(name):
            continue
        seen = shard_rows.setdefault(name, {})
        r = int(index.row[i])
        if r in seen:
            problems.append(
                Problem(
                    "index",
                    f"shard row {r} is already listed at index row {index.pos[seen[r]]}",
                    file=name,
                    **index.where(int(i)),
                )
            )
        else:
            seen[r] = int(i)
    shard_jobs = {}
    for name, seen in sorted(shard_rows.items()):
        n = len(seen)
        gaps = sorted(set(range(n)) - set(seen))
        if gaps:
            beyond = sorted(r for r in seen if r >= n)
            problems.append(
                Problem(
                    "index",
                    f"shard rows must be 0 .. {n - 1}: {_listing(gaps)} missing, "
                    f"{_listing(beyond)} listed instead",
                    job_id=index.job[next(iter(seen.values()))],
                    file=name,
                )
            )
        path = root / name
        shard_jobs[name] = pool.submit(_scan_npy, path, n, path.resolve() in wanted, want_rows)
    located: list[Problem] = []
    for fut in file_jobs:
        for name, scan in fut.result():
            report.files += not scan.missing
            report.cutouts += scan.cutouts
            if scan.missing:
                missing.add(name)
            for i in rows_of[name]:
                for kind, msg, _ in scan.problems:
                    located.append(Problem(kind, msg, file=name, **index.where(i)))
                if not scan.problems and scan.rows_sha256:
                    located += _digest_problems(index, name, {0: i}, scan, report, None)
            file_problems[name] = scan.problems
    for name, fut in shard_jobs.items():
        scan = fut.result()
        report.files += not scan.missing
        report.cutouts += scan.cutouts
        seen = shard_rows[name]
        job_id = index.job[next(iter(seen.values()))]
        if scan.missing:
            missing.add(name)
        if scan.sha256 is not None:
            digests[(root / name).resolve()] = scan.sha256
        for kind, msg, r in scan.problems:
            if r is None:
                located.append(Problem(kind, msg, job_id=job_id, file=name))
            else:
                where = index.where(seen[r]) if r in seen else {"job_id": job_id}
                located.append(Problem(kind, f"shard row {r}: {msg}", file=name, **where))
        if scan.rows_sha256:
            bad = {r for _, _, r in scan.problems}
            rows = {r: i for r, i in seen.items() if r not in bad}
            located += _digest_problems(index, name, rows, scan, report, "shard row")
        file_problems[name] = scan.problems
    located.sort(key=lambda p: (p.index_row if p.index_row is not None else -1, p.file or ""))
    problems.extend(located)


def _digest_problems(
    index: _Index,
    name: str,
    rows: dict[int, int],
    scan: _Scan,
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
        want = index.sha256[i]
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


def _check_unlisted(root: Path, index: _Index | None, report: VerifyReport) -> None:
    """``.npy`` files under cutouts/ and shards/ that the index does not list."""
    listed = set() if index is None else set(index.file) | set(index.shard)
    leftovers = 0
    for sub in (CUTOUT_DIR, SHARD_DIR):
        try:
            entries = sorted(os.scandir(root / sub), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                leftovers += TMP_MARK in name
                continue
            if name.endswith(".npy") and f"{sub}/{name}" not in listed and index is not None:
                report.problems.append(
                    Problem("unlisted-file", "not listed in master_index.csv", file=f"{sub}/{name}")
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


def _check_croissant(
    root: Path,
    cpath: Path,
    objects: list[dict],
    index: _Index | None,
    pool: ThreadPoolExecutor,
    digests: dict[Path, str],
    file_problems: dict[str, list],
    missing: set[str],
    report: VerifyReport,
) -> None:
    """contentUrl of every FileObject exists; sha256 matches; index and shards described."""
    problems = report.problems
    base = cpath.parent
    crel = os.path.relpath(cpath, root) if cpath.is_relative_to(root) else str(cpath)
    todo = {}
    described: set[Path] = set()
    for obj in objects:
        oid = obj.get("@id", obj.get("name", "?"))
        url = obj.get("contentUrl")
        if not isinstance(url, str) or not url:
            problems.append(
                Problem("croissant", f"FileObject {oid!r} has no contentUrl", file=crel)
            )
            continue
        path = (base / url).resolve()
        described.add(path)
        rel = os.path.relpath(path, root.resolve())
        if not path.is_file():
            if rel not in missing:
                problems.append(
                    Problem(
                        "croissant", f"FileObject {oid!r}: contentUrl {url!r} is missing", file=rel
                    )
                )
            continue
        sha = obj.get("sha256")
        if isinstance(sha, str) and path not in digests and not file_problems.get(rel):
            todo[path] = pool.submit(sha256_file, path)
    for path, fut in todo.items():
        digests[path] = fut.result()
    broken = {name for name, found in file_problems.items() if found}
    index_kinds = ("table", "index", "duplicate-row")
    if any(p.file == INDEX_FILE for p in problems if p.kind in index_kinds):
        broken.add(INDEX_FILE)
    for obj in objects:
        url, sha = obj.get("contentUrl"), obj.get("sha256")
        if not isinstance(url, str) or not isinstance(sha, str):
            continue
        path = (base / url).resolve()
        if path not in digests:
            continue
        report.sha256 += 1
        rel = os.path.relpath(path, root.resolve())
        if digests[path] != sha.lower() and rel not in broken:
            problems.append(
                Problem(
                    "checksum",
                    f"sha256 {digests[path][:16]}..., croissant.json says {sha[:16]}...",
                    file=rel,
                )
            )
    if (root / INDEX_FILE).resolve() not in described:
        problems.append(Problem("croissant", f"no FileObject for {INDEX_FILE}", file=crel))
    if index is not None:
        for name in sorted(set(index.shard) - {""}):
            if _safe_relpath(name) and (root / name).resolve() not in described:
                problems.append(
                    Problem("croissant", f"no FileObject describes shard {name}", file=crel)
                )


def _check_accounting(
    index: _Index | None,
    rejects: pd.DataFrame | None,
    jobs: pd.DataFrame | None,
    report: VerifyReport,
    listed: bool = True,
) -> None:
    """Every catalog row of every job in the index or in rejects.csv, exactly once.

    ``jobs`` is ``jobs.csv``, or with ``listed`` False a stand-in made from recounted input
    catalogs (then a job of the tables without a count is not a problem: it was not found).
    """
    problems = report.problems
    if index is None or rejects is None:
        return
    report.reject_rows = len(rejects)
    rk, rk_ok = _integers(rejects["catalog_row"])
    empty = rejects["catalog_row"].str.strip().to_numpy(str) == ""
    for i in np.flatnonzero(~rk_ok & ~empty):
        problems.append(
            Problem(
                "accounting",
                f"rejects.csv row {i}: catalog_row "
                f"{rejects['catalog_row'].iat[i]!r} is not an integer",
                job_id=rejects["job_id"].iat[i],
                file=REJECTS_FILE,
            )
        )
    rjob = rejects["job_id"].to_numpy(str)
    whole = set(rjob[empty])
    indexed: dict[str, dict[int, int]] = {}
    for i in np.flatnonzero(index.catalog_ok):
        indexed.setdefault(index.job[i], {}).setdefault(int(index.catalog_row[i]), int(i))
    rejected: dict[str, dict[int, int]] = {}
    for i in np.flatnonzero(rk_ok):
        seen = rejected.setdefault(rjob[i], {})
        k = int(rk[i])
        if k in seen:
            problems.append(
                Problem(
                    "accounting",
                    f"rejects.csv rows {seen[k]} and {i} both reject it",
                    job_id=rjob[i],
                    file=REJECTS_FILE,
                    catalog_row=k,
                )
            )
        else:
            seen[k] = int(i)
    totals: dict[str, tuple[int, pd.Series]] = {}
    if jobs is not None:
        n_rows, ok = _integers(jobs["catalog_rows"])
        for i, job in enumerate(jobs["job_id"].to_numpy(str)):
            if not ok[i] or n_rows[i] < 0:
                problems.append(
                    Problem(
                        "table",
                        f"catalog_rows {jobs['catalog_rows'].iat[i]!r} is not a count",
                        job_id=job,
                        file=JOBS_FILE,
                    )
                )
                continue
            if job in totals:
                problems.append(Problem("table", "job listed twice", job_id=job, file=JOBS_FILE))
                continue
            totals[job] = (int(n_rows[i]), jobs.iloc[i])
    report.jobs = len(totals)
    report.catalog_rows = sum(n for n, _ in totals.values())
    for job in sorted(set(indexed) | set(rejected) | whole):
        if listed and jobs is not None and job not in totals:
            problems.append(
                Problem(
                    "accounting",
                    f"in {INDEX_FILE} or {REJECTS_FILE} but not in {JOBS_FILE}",
                    job_id=job,
                )
            )
    troubled = {p.job_id for p in problems if p.kind == "accounting"}
    for job in sorted(set(indexed) & set(rejected)):
        for k in sorted(set(indexed[job]) & set(rejected[job])):
            troubled.add(job)
            i = indexed[job][k]
            problems.append(
                Problem(
                    "accounting",
                    f"indexed and also rejected (rejects.csv row {rejected[job][k]})",
                    file=INDEX_FILE,
                    **index.where(i),
                )
            )
    for job, (n, row) in totals.items():
        have_i, have_r = indexed.get(job, {}), rejected.get(job, {})
        before = len(problems)
        for k in sorted(k for k in (set(have_i) | set(have_r)) if k >= n):
            where = index.where(have_i[k]) if k in have_i else {"job_id": job, "catalog_row": k}
            problems.append(
                Problem(
                    "accounting",
                    f"beyond the catalog's {n} rows ({JOBS_FILE})",
                    file=INDEX_FILE if k in have_i else REJECTS_FILE,
                    **where,
                )
            )
        for k in sorted(set(range(n)) - set(have_i) - set(have_r)):
            problems.append(
                Problem(
                    "accounting",
                    f"neither in {INDEX_FILE} nor in {REJECTS_FILE}",
                    job_id=job,
                    catalog_row=k,
                )
            )
        status = row["status"]
        if status == "rejected":
            if have_i:
                problems.append(
                    Problem(
                        "accounting",
                        f"{JOBS_FILE} says rejected, yet {len(have_i)} rows are indexed",
                        job_id=job,
                    )
                )
            if job not in whole:
                problems.append(
                    Problem(
                        "accounting",
                        f"{JOBS_FILE} says rejected, {REJECTS_FILE} has no "
                        "whole-job row (empty catalog_row)",
                        job_id=job,
                    )
                )
        elif status == "ok":
            if job in whole:
                problems.append(
                    Problem(
                        "accounting",
                        f"{REJECTS_FILE} rejects the whole job, {JOBS_FILE} says ok",
                        job_id=job,
                    )
                )
        else:
            problems.append(
                Problem(
                    "table",
                    f"status {status!r}, expected 'ok' or 'rejected'",
                    job_id=job,
                    file=JOBS_FILE,
                )
            )
        if len(problems) == before and job not in troubled:  # the recorded counts agree too
            for col, have in (("cutouts", len(have_i)), ("rejected_rows", len(have_r))):
                if col in row.index:
                    val, ok = _integers(pd.Series([row[col]]))
                    if not ok[0] or val[0] != have:
                        problems.append(
                            Problem(
                                "accounting",
                                f"{JOBS_FILE} says {col}={row[col]}, the tables hold {have}",
                                job_id=job,
                                file=JOBS_FILE,
                            )
                        )


def _jobs_from_counts(counted: dict[str, int], rejects: pd.DataFrame | None) -> pd.DataFrame:
    """A stand-in for ``jobs.csv`` from recounted catalogs (status from the whole-job rejects)."""
    whole = set()
    if rejects is not None:
        whole = set(rejects.loc[rejects["catalog_row"].str.strip() == "", "job_id"])
    counts = {**dict.fromkeys(sorted(whole), 0), **counted}  # unreadable now: no rows
    return pd.DataFrame(
        {
            "job_id": list(counts),
            "status": ["rejected" if j in whole else "ok" for j in counts],
            "catalog_rows": [str(n) for n in counts.values()],
        }
    )


def _recount(
    input_dir: Path | str,
    jobs: pd.DataFrame | None,
    index: _Index | None,
    rejects: pd.DataFrame | None,
    input_layout: str,
    report: VerifyReport,
) -> dict[str, int]:
    """Recount each job's catalog rows from its input folder; compare with jobs.csv.

    Returns the counts of the catalogs that could be read, by job.
    """
    from tasks.errors import JobError
    from tasks.layouts import get_layout
    from tasks.load import discover_jobs
    from tasks.remote import is_remote

    counted: dict[str, int] = {}
    if is_remote(str(input_dir)):
        report.notes.append(f"input {input_dir} is remote: catalog rows not recounted")
        return counted
    try:
        specs = {s.job_id: s for s in discover_jobs(input_dir, input_layout)}
    except FileNotFoundError as exc:
        report.problems.append(Problem("input-count", str(exc)))
        return counted
    if jobs is not None:
        claimed = dict(zip(jobs["job_id"], jobs["catalog_rows"], strict=True))
    else:  # older dataset: recount what the tables hold
        names = set() if index is None else set(index.job)
        names |= set() if rejects is None else set(rejects["job_id"])
        claimed = {j: None for j in names}
    absent = []
    for job in sorted(claimed):
        spec = specs.get(job)
        if spec is None:
            absent.append(job)
            continue
        try:
            n = get_layout(spec.resolved_layout()).count_rows(job, spec.path)
        except (JobError, OSError, ValueError) as exc:
            n, why = None, str(exc)
        report.recounted += 1
        if n is not None:
            counted[job] = n
        want = claimed[job]
        if want is None:
            continue
        if n is None:
            if want not in ("0", ""):
                report.problems.append(
                    Problem(
                        "input-count",
                        f"catalog unreadable now ({why}); {JOBS_FILE} says {want} rows",
                        job_id=job,
                    )
                )
        elif str(n) != str(want).strip():
            report.problems.append(
                Problem(
                    "input-count",
                    f"the input catalog has {n} rows, {JOBS_FILE} says {want}",
                    job_id=job,
                )
            )
    if absent:
        report.notes.append(
            f"{len(absent)} jobs of the dataset have no folder in {input_dir}: "
            f"{', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}"
        )
    extra = sorted(set(specs) - set(claimed))
    if extra:
        report.notes.append(
            f"{len(extra)} job folders in {input_dir} are not in the dataset (a selection?): "
            f"{', '.join(extra[:10])}{' ...' if len(extra) > 10 else ''}"
        )
    return counted


# --------------------------------------------------------------------------------------
# deep: every indexed candidate cut again from its input job folder


def _rows_to_recut(index: _Index, file_problems: dict[str, list]) -> np.ndarray:
    """Mask of the kept index rows to cut again: scanned, with no problem in their cutout.

    A row whose file (or shard row) was reported by a file check, or was never scanned
    (unsafe path, bad shard row), is left out: one cause, one line.
    """
    bad: dict[str, set[int | None]] = {
        name: {r for _, _, r in found} for name, found in file_problems.items()
    }
    sharded = index.shard != ""
    names = np.where(sharded, index.shard, index.file)
    keep = index.catalog_ok.copy()
    for i in np.flatnonzero(keep):
        found = bad.get(names[i])
        if found is None or (not sharded[i] and found):
            keep[i] = False
        elif sharded[i] and (not index.row_ok[i] or None in found or index.row[i] in found):
            keep[i] = False
    return keep


def _recut_jobs(
    root: Path,
    index: _Index,
    input_dir: Path | str,
    input_layout: str,
    labels: LabelOptions | None,
    rows: np.ndarray,
    batch: int,
    report: VerifyReport,
) -> None:
    """Cut the candidates of ``rows`` (mask of kept index rows) again, job by job; compare.

    Each job of the index with a folder in ``input_dir`` is loaded with the plain
    :func:`tasks.load.load_job`, its ZScale limits recomputed
    (:func:`tasks.normalize.job_limits`) and its indexed candidates cut in batches of
    ``batch`` (:func:`tasks.cutout.make_tensors`) from the memory-mapped images, at the
    positions of the input catalog's rows named by ``catalog_row``. Memory: one job's
    catalog and one batch of fresh and stored cutouts at a time.
    """
    if is_remote(str(input_dir)):
        report.notes.append(f"input {input_dir} is remote: cutouts not cut again")
        return
    try:
        specs = {s.job_id: s for s in discover_jobs(input_dir, input_layout)}
    except FileNotFoundError:
        return  # an input-count problem already says so
    absent: dict[str, int] = {}
    chosen = np.flatnonzero(rows)
    by_job = pd.Series(chosen).groupby(index.job[chosen], sort=False)  # index order: job order
    for job, members in by_job:
        picked = members.to_numpy()
        spec = specs.get(job)
        if spec is None:
            absent[job] = len(picked)
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
    root: Path, index: _Index, spec: JobSpec, rows: np.ndarray, batch: int, report: VerifyReport
) -> None:
    """One job of :func:`_recut_jobs`: ``rows`` are its kept index rows to cut again."""
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
    index: _Index, data: JobData, rows: np.ndarray, report: VerifyReport
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


def _cutout_file(index: _Index, i: int) -> str:
    return index.shard[i] or index.file[i]


def _stored_cutouts(
    root: Path,
    index: _Index,
    rows: np.ndarray,
    shards: dict[str, np.ndarray],
    report: VerifyReport,
) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's cutouts of ``rows``, shape (m, 64, 64, 4) ``<f4``, and a mask of those read.

    Shards are memory-mapped once per job (``shards`` keeps them); a file that cannot be
    read now (changed since it was scanned) is a ``recut`` problem.
    """
    out = np.zeros((len(rows), *_TENSOR_SHAPE), _DTYPE)
    read = np.ones(len(rows), bool)
    for j, i in enumerate(rows):
        name = _cutout_file(index, i)
        try:
            if index.shard[i]:
                if name not in shards:
                    shards[name] = np.load(root / name, mmap_mode="r", allow_pickle=False)
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
    index: _Index,
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
                f"{head}{counts[j]} of {_ROW_FLOATS} values differ from the candidate cut "
                f"again from {spec.path} (largest difference {largest:.3g})",
                file=_cutout_file(index, i),
                **index.where(i),
            )
        )


@task(name="verify", cache_policy=NO_CACHE, persist_result=False)
def verify_task(
    dataset_dir: str,
    input_dir: str | None = None,
    require_croissant: bool = True,
    input_layout: str = "auto",
) -> VerifyReport:
    """Prefect task: :func:`verify_dataset`; raises :class:`DatasetInvalid` when not ok."""
    report = verify_dataset(
        dataset_dir, input_dir, require_croissant=require_croissant, input_layout=input_layout
    )
    for note in report.notes:
        log.info("verify: %s", note)
    if not report.ok:
        raise DatasetInvalid(report)
    log.info(report.summary())
    return report
