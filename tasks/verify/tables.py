"""Checks of the dataset's tables: the index contract, the splits, the tables readable."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.contract import (
    INDEX_FILE,
    cutout_filename,
    parquet_filename,
    shard_filename,
)
from croissant_cutouts.tasks.dataset.splits import SPLITS, truth_links
from croissant_cutouts.tasks.verify.report import Problem

__all__ = [
    "INDEX_COLUMNS",
    "INDEX_REQUIRED",
    "ParsedIndex",
    "check_index",
    "check_splits",
    "integers",
    "parse_index",
    "read_index",
    "read_table",
    "row_hashes",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# tables


def read_table(root: Path, name: str, required: Iterable[str], problems: list[Problem]):
    """A CSV of the dataset as strings (no NA conversion), or None with a ``table`` problem."""
    try:
        frame = pd.read_csv(root / name, dtype=str, keep_default_na=False, na_filter=False)
    except _UNREADABLE as exc:
        return _unreadable(name, exc, problems)
    return _with_columns(frame, name, required, problems)


_UNREADABLE = (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError)


def _unreadable(name: str, exc: BaseException, problems: list[Problem]) -> None:
    """The ``table`` problem of a CSV that does not read (missing, empty, malformed)."""
    if isinstance(exc, FileNotFoundError):
        problems.append(Problem("table", "file missing", file=name))
        return None
    reason = "empty file" if isinstance(exc, pd.errors.EmptyDataError) else str(exc)
    problems.append(Problem("table", f"unreadable: {reason}", file=name))
    return None


def _with_columns(frame: pd.DataFrame, name: str, required: Iterable[str], problems):
    """``frame``, or None with a ``table`` problem when it lacks a ``required`` column."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        problems.append(Problem("table", f"lacks column(s) {', '.join(missing)}", file=name))
        return None
    return frame


#: The index columns verify reads (those present are kept); every column counts in the
#: exact-duplicate check, through :func:`row_hashes`. It holds ``scans.PARQUET_KEYS``.
INDEX_COLUMNS = (
    "cutout_id", "job_id", "cutout_filename", "catalog_row",
    "shard", "row", "sha256", "split", "truth_id", "injected",
)
#: Index rows read at a time by :func:`read_index` (about 6 MiB of ``str`` at 48 columns).
_INDEX_CHUNK_ROWS = 2048


def read_index(root: Path, problems: list[Problem]) -> tuple[pd.DataFrame, np.ndarray] | None:
    """``master_index.csv`` read in chunks: the :data:`INDEX_COLUMNS` it has, and row hashes.

    Memory grows with the kept columns only. Each chunk of ``_INDEX_CHUNK_ROWS`` rows is
    read whole, as Python ``str`` with no NA conversion (the values :func:`read_table`
    reads), hashed row by row over every column (:func:`row_hashes`), then cut down to the
    kept columns, stored as pandas ``str`` (Arrow) columns as :func:`read_table` stores them.

    Returns
    -------
    (frame, row_hash) or None
        The kept columns as text, in CSV row order (index 0 .. n-1), and the uint64 hash of
        each full row. None, with a ``table`` problem, when the file is missing, unreadable
        or empty, or lacks a column of ``INDEX_REQUIRED`` (as :func:`read_table` says).
    """
    frames, hashes = [], []
    try:
        with pd.read_csv(
            root / INDEX_FILE, dtype=object, keep_default_na=False, na_filter=False,
            chunksize=_INDEX_CHUNK_ROWS,
        ) as reader:
            for chunk in reader:
                hashes.append(row_hashes(chunk))
                frames.append(chunk[[c for c in INDEX_COLUMNS if c in chunk.columns]].astype(str))
    except _UNREADABLE as exc:
        return _unreadable(INDEX_FILE, exc, problems)
    # pandas yields one empty chunk for a header-only file: the columns come from it
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if _with_columns(frame, INDEX_FILE, INDEX_REQUIRED, problems) is None:
        return None
    return frame.reset_index(drop=True), np.concatenate(hashes)


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """A uint64 hash of each row's values, all columns in order (the index left out).

    Equal rows hash equal; ``str`` and object columns of the same text hash the same.
    """
    return pd.util.hash_pandas_object(frame, index=False, categorize=False).to_numpy(np.uint64)


def integers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parse a column of strings as integers: ``(values as int64, mask of valid)``.

    Empty or non-integer strings are invalid (their value is -1).
    """
    num = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    valid = np.isfinite(num) & (num == np.round(num))
    return np.where(valid, num, -1).astype(np.int64), valid


@dataclass
class ParsedIndex:
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
    #: lowercase hex ``sha256`` per row as ASCII bytes (dtype ``S64``; ``b""`` where
    #: invalid); None when the column is absent
    sha256: np.ndarray | None = None

    def where(self, i: int) -> dict[str, object]:
        """Problem keywords locating kept row ``i``."""
        return {
            "job_id": self.job[i],
            "index_row": int(self.pos[i]),
            "cutout_id": int(self.cutout_id[i]) if self.cutout_id[i] >= 0 else None,
            "catalog_row": int(self.catalog_row[i]) if self.catalog_ok[i] else None,
        }


INDEX_REQUIRED = ("cutout_id", "job_id", "cutout_filename", "catalog_row")


def _texts(values: pd.Series) -> np.ndarray:
    """A column as an object array of Python ``str`` (so messages quote ``'a'``, not
    ``np.str_('a')``); equal values share one ``str`` object (a job's rows, say)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    texts = np.empty(len(uniques), object)
    texts[:] = [str(v) for v in uniques]
    return texts[codes]


def parse_index(
    frame: pd.DataFrame, problems: list[Problem], row_hash: np.ndarray | None = None
) -> ParsedIndex:
    """Drop exact duplicate rows (reported), parse the columns the checks need.

    Parameters
    ----------
    frame : DataFrame
        The index as text (:func:`read_index`); it needs ``INDEX_REQUIRED``.
    problems : list of Problem
        Appended to: a ``duplicate-row`` per exact repeat, an ``index`` per bad cell.
    row_hash : ndarray of uint64, optional
        Hash of each full CSV row (:func:`row_hashes`, over every column, also those
        ``frame`` left out); default: hashed from ``frame``. Rows with equal hashes are exact
        duplicates: two different rows collide with probability about n**2 / 2**65 for n
        rows (1e-9 at 200,000 rows), which is negligible.
    """
    if row_hash is None:
        row_hash = row_hashes(frame)
    dup = _exact_repeats(frame, row_hash, problems)
    keep = ~dup
    # no repeats (the usual case): a lazy copy (copy-on-write), not a second frame
    kept = (frame.loc[keep] if dup.any() else frame).reset_index(drop=True)
    for column in ("shard", "row"):  # the files layout's index may lack them (seed era)
        if column not in kept:
            kept[column] = ""
    cutout_id, id_ok = integers(kept["cutout_id"])
    catalog_row, catalog_ok = integers(kept["catalog_row"])
    row, row_ok = integers(kept["row"])
    shard = _texts(kept["shard"])
    index = ParsedIndex(
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


def _exact_repeats(frame: pd.DataFrame, row_hash: np.ndarray, problems: list[Problem]):
    """Mask of the rows whose hash an earlier row has: a ``duplicate-row`` problem each,
    naming the first such row (0-based CSV data rows)."""
    _, first_at, which = np.unique(row_hash, return_index=True, return_inverse=True)
    first = first_at[which.reshape(-1)]  # first occurrence of each row's hash
    dup = first != np.arange(len(row_hash))
    for i in np.flatnonzero(dup):
        problems.append(
            Problem(
                "duplicate-row",
                f"repeats index row {first[i]} exactly",
                job_id=frame["job_id"].iat[i],
                file=INDEX_FILE,
                index_row=int(i),
            )
        )
    return dup


def _bad_cells(
    index: ParsedIndex, values: pd.Series, bad: np.ndarray, why: str, problems: list[Problem]
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


def _parse_digests(index: ParsedIndex, values: pd.Series, problems: list[Problem]) -> np.ndarray:
    """The ``sha256`` column as lowercase hex in ASCII bytes (``S64``; ``b""`` where invalid).

    A value that is not 64 hex digits (surrounding blanks and case aside) is an ``index``
    problem. Fixed-width bytes take 64 bytes a row, a Python ``str`` 113 plus its pointer.
    """
    digests = np.array([_digest(v) for v in values.to_numpy(object)], dtype="S64")
    valid = digests != b""
    _bad_cells(index, values, ~valid, "is not a SHA-256 digest (64 hex digits)", problems)
    return digests


def _digest(text: str) -> str:
    """``text`` as a lowercase 64-hex-digit digest (blanks stripped), or "" when not one."""
    if _HEX64.fullmatch(text):  # the usual case: the very same string
        return text
    text = text.strip().lower()
    return text if _HEX64.fullmatch(text) else ""


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
            f"cutout_id is {index.frame['cutout_id'].iat[i]}, expected {i}: ids must be "
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
    job_id, name = index.job[i], index.file[i]
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
                "index", f"row {index.frame['row'].iat[i]!r} is not a shard row", file=name,
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


