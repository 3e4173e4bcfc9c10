"""Reading the dataset's tables: CSVs as text, and ``master_index.csv`` in parsed chunks.

:func:`read_table` reads a small table (``jobs.csv``, ``rejects.csv``) whole, as text.
:func:`index_chunks` reads the index in chunks of rows, each row hashed over every column
(:func:`row_hashes`: exact repeats are found by hash), and :func:`parse_chunk` parses a
chunk at once into compact arrays (:class:`ParsedIndex`): per row integers, digests as
their 32 bytes, cutout file names as bytes, and pointers to ``str`` objects that equal
values share (a job's rows, a split). The text of a cell is kept only where a message may
quote it and it differs from the parsed value (``cutout_id`` ``"007"``, say). How verify
reads the whole index with these, twice: :mod:`tasks.verify.streaming`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.contract import INDEX_FILE
from croissant_cutouts.tasks.dataset.splits import by_value, truth_links
from croissant_cutouts.tasks.verify.report import Problem
from croissant_cutouts.tasks.verify.scans import PARQUET_KEYS

__all__ = [
    "INDEX_COLUMNS",
    "INDEX_REQUIRED",
    "UNREADABLE",
    "Found",
    "ParsedIndex",
    "index_chunks",
    "integers",
    "locate",
    "name_text",
    "parse_chunk",
    "read_table",
    "row_hashes",
    "unreadable",
    "with_columns",
]

# --------------------------------------------------------------------------------------
# tables as text


def read_table(root: Path, name: str, required: Iterable[str], problems: list[Problem]):
    """A CSV of the dataset as strings (no NA conversion), or None with a ``table`` problem."""
    try:
        frame = pd.read_csv(root / name, dtype=str, keep_default_na=False, na_filter=False)
    except UNREADABLE as exc:
        return unreadable(name, exc, problems)
    return with_columns(frame, name, required, problems)


#: What reading a CSV of the dataset may raise: the table is reported unreadable.
UNREADABLE = (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError)


def unreadable(name: str, exc: BaseException, problems: list[Problem]) -> None:
    """The ``table`` problem of a CSV that does not read (missing, empty, malformed)."""
    if isinstance(exc, FileNotFoundError):
        problems.append(Problem("table", "file missing", file=name))
        return None
    reason = "empty file" if isinstance(exc, pd.errors.EmptyDataError) else str(exc)
    problems.append(Problem("table", f"unreadable: {reason}", file=name))
    return None


def with_columns(frame: pd.DataFrame, name: str, required: Iterable[str], problems):
    """``frame``, or None with a ``table`` problem when it lacks a ``required`` column."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        problems.append(Problem("table", f"lacks column(s) {', '.join(missing)}", file=name))
        return None
    return frame


def integers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parse a column of strings as integers: ``(values as int64, mask of valid)``.

    Empty or non-integer strings are invalid (their value is -1).
    """
    num = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    valid = np.isfinite(num) & (num == np.round(num))
    return np.where(valid, num, -1).astype(np.int64), valid


# --------------------------------------------------------------------------------------
# the index, in chunks

#: The index columns verify reads (those present are kept); every column counts in the
#: exact-duplicate check, through :func:`row_hashes`. It holds ``scans.PARQUET_KEYS``.
INDEX_COLUMNS = (
    "cutout_id", "job_id", "cutout_filename", "catalog_row",
    "shard", "row", "sha256", "split", "truth_id", "injected",
)
#: The index columns without which verify reads no further.
INDEX_REQUIRED = ("cutout_id", "job_id", "cutout_filename", "catalog_row")
#: Index rows read at a time (about 6 MiB of ``str`` at 48 columns).
_INDEX_CHUNK_ROWS = 2048


def index_chunks(
    root: Path, hashed: bool = True
) -> Iterator[tuple[pd.DataFrame, np.ndarray | None]]:
    """``master_index.csv`` in chunks of rows: the :data:`INDEX_COLUMNS` it has, row hashes.

    Each chunk of ``_INDEX_CHUNK_ROWS`` rows is read whole, as Python ``str`` with no NA
    conversion (the values :func:`read_table` reads), hashed row by row over every column
    (:func:`row_hashes`; None when not ``hashed``, and then only the kept columns are
    parsed: the others are neither hashed nor checked), then cut down to the kept columns,
    stored as pandas ``str`` columns as :func:`read_table` stores them, indexed 0 .. len-1.
    A header-only file gives one empty chunk. Raises what ``pandas.read_csv`` raises on a
    bad file.
    """
    usecols = None if hashed else (lambda column: column in INDEX_COLUMNS)  # the rest unparsed
    with pd.read_csv(
        root / INDEX_FILE, dtype=object, keep_default_na=False, na_filter=False,
        chunksize=_INDEX_CHUNK_ROWS, usecols=usecols,
    ) as reader:
        for chunk in reader:
            kept = chunk[[c for c in INDEX_COLUMNS if c in chunk.columns]].astype(str)
            yield kept.reset_index(drop=True), row_hashes(chunk) if hashed else None


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """A uint64 hash of each row's values, all columns in order (the index left out).

    Equal rows hash equal; ``str`` and object columns of the same text hash the same.
    """
    return pd.util.hash_pandas_object(frame, index=False, categorize=False).to_numpy(np.uint64)


@dataclass
class ParsedIndex:
    """Consecutive rows of the index parsed (a chunk, or a group of whole jobs), exact
    repeats left out (``pos`` keeps each row's CSV row).

    Arrays of one entry per kept row; text as Python ``str`` in object arrays (messages
    quote ``'a'``, not ``np.str_('a')``).
    """

    pos: np.ndarray  #: 0-based CSV data row of each kept row
    cutout_id: np.ndarray  #: int64, -1 where not an integer
    catalog_row: np.ndarray  #: int64, valid where ``catalog_ok``
    catalog_ok: np.ndarray
    job: np.ndarray  #: ``job_id`` text
    #: ``cutout_filename`` as UTF-8 bytes in one fixed-width array (dtype ``S``): a name
    #: differs on every row of the files layout, and a ``str`` each would take about 80
    #: bytes, the array the name's length (31 for ``cutouts/jid0001_cutout00000.npy``);
    #: :meth:`file_name` gives it as text
    file: np.ndarray
    shard: np.ndarray  #: ``shard`` text ("" in the files layout)
    row: np.ndarray  #: shard row, int64, valid where ``row_ok``
    row_ok: np.ndarray
    #: ``sha256`` per row as its 32 bytes (dtype ``V32``; all zeros where the cell is not
    #: a digest: no data hashes to that); None when the column is absent. :meth:`digest`
    #: gives it as hex
    sha256: np.ndarray | None = None
    #: ``split`` text; None when the column is absent (an index of before splits)
    split: np.ndarray | None = None
    #: ``truth_id`` text of the rows whose truth source links jobs
    #: (:func:`tasks.dataset.splits.truth_links`), "" elsewhere; None without ``truth_id``
    truth: np.ndarray | None = None
    #: text of the :data:`PARQUET_KEYS` columns, indexed by kept row, for the chunks that
    #: name a ``.parquet`` file (their values are compared with the file's)
    keys: pd.DataFrame | None = None
    #: ``{column: {CSV row: text}}`` of ``cutout_id`` and ``row`` cells whose text is not
    #: the parsed integer written plainly ("" when invalid): what :meth:`text` returns
    odd: dict[str, dict[int, str]] = field(default_factory=dict)
    #: CSV data rows read, exact duplicates included
    rows_read: int = 0

    def where(self, i: int) -> dict[str, object]:
        """Problem keywords locating kept row ``i``."""
        return locate(self, i, self.job[i], self.pos[i])

    def digest(self, i: int) -> str:
        """Row ``i``'s ``sha256`` as 64 lowercase hex digits; "" where it is not a digest."""
        raw = self.sha256[i].tobytes()
        return "" if raw == _NO_DIGEST else raw.hex()

    def file_name(self, i: int) -> str:
        """Row ``i``'s ``cutout_filename``, as text."""
        return name_text(self.file[i])

    def text(self, column: str, i: int) -> str:
        """The index's text of integer column ``column`` (``cutout_id``, ``row``) at row ``i``."""
        odd = self.odd.get(column, {}).get(int(self.pos[i]))
        if odd is not None:
            return odd
        ok = self.cutout_id[i] >= 0 if column == "cutout_id" else self.row_ok[i]
        return str(int(getattr(self, column)[i])) if ok else ""


def locate(rows, i: int, job_id: str, index_row: int) -> dict[str, object]:
    """The :class:`Problem` keywords of kept row ``i`` of ``rows`` (anything with
    ``cutout_id``, ``catalog_row`` and ``catalog_ok`` arrays), its job and CSV row."""
    return {
        "job_id": job_id,
        "index_row": int(index_row),
        "cutout_id": int(rows.cutout_id[i]) if rows.cutout_id[i] >= 0 else None,
        "catalog_row": int(rows.catalog_row[i]) if rows.catalog_ok[i] else None,
    }


class Found:
    """Problems of single index rows, kept apart by kind so they are reported in a fixed
    order: exact repeats, then bad ``sha256``, ``cutout_id`` and ``catalog_row`` cells."""

    ORDER = ("repeat", "sha256", "cutout_id", "catalog_row")

    def __init__(self) -> None:
        self.lists: dict[str, list[Problem]] = {kind: [] for kind in self.ORDER}

    def repeats(self, chunk: pd.DataFrame, i: int, first: int, start: int) -> None:
        self.lists["repeat"].append(Problem(
            "duplicate-row", f"repeats index row {first} exactly",
            job_id=chunk["job_id"].iat[i], file=INDEX_FILE, index_row=start + i,
        ))

    def bad_cells(self, part: ParsedIndex, values: pd.Series, bad: np.ndarray, why: str) -> None:
        """An ``index`` problem ``"<column> <value> <why>"`` for each row where ``bad``."""
        self.lists[values.name] += [
            Problem("index", f"{values.name} {values.iat[i]!r} {why}", file=INDEX_FILE,
                    **part.where(int(i)))
            for i in np.flatnonzero(bad)
        ]

    def in_order(self) -> list[Problem]:
        return [p for kind in self.ORDER for p in self.lists[kind]]


def parse_chunk(chunk: pd.DataFrame, pos: np.ndarray, found: Found | None) -> ParsedIndex:
    """Parse a chunk of index rows (text, as :func:`index_chunks` gives, repeats left out).

    ``pos`` is each row's CSV data row; bad cells go to ``found`` (not reported if None).
    """
    found = Found() if found is None else found
    for column in ("shard", "row"):  # the files layout's index may lack them (seed era)
        if column not in chunk:
            chunk = chunk.assign(**{column: ""})
    cutout_id, id_ok = integers(chunk["cutout_id"])
    catalog_row, catalog_ok = integers(chunk["catalog_row"])
    row, row_ok = integers(chunk["row"])
    part = ParsedIndex(
        pos=np.asarray(pos, np.int64), cutout_id=cutout_id, catalog_row=catalog_row,
        catalog_ok=catalog_ok, job=by_value(chunk["job_id"], str),
        file=_names(chunk["cutout_filename"]), shard=by_value(chunk["shard"], str),
        row=row, row_ok=row_ok,
        split=by_value(chunk["split"], str) if "split" in chunk else None,
        truth=_truth(chunk),
        odd={"cutout_id": _odd(chunk["cutout_id"], cutout_id, cutout_id >= 0, pos),
             "row": _odd(chunk["row"], row, row_ok, pos)},
    )
    if _names_parquet(part.shard):
        part.keys = chunk[[c for c in PARQUET_KEYS if c in chunk]].reset_index(drop=True)
    if "sha256" in chunk:
        part.sha256 = _digests(chunk["sha256"])
        found.bad_cells(part, chunk["sha256"], part.sha256 == np.void(_NO_DIGEST),
                        "is not a SHA-256 digest (64 hex digits)")
    found.bad_cells(part, chunk["cutout_id"], ~id_ok, "is not an integer")
    found.bad_cells(part, chunk["catalog_row"], ~catalog_ok, "is not an integer")
    return part


def _names(values: pd.Series) -> np.ndarray:
    """A column of names as UTF-8 bytes, dtype ``S`` (as wide as the longest)."""
    return np.array([v.encode("utf-8", "surrogateescape") for v in values.to_numpy(object)],
                    dtype=bytes)


def name_text(name: bytes) -> str:
    """A name of :attr:`ParsedIndex.file` as text (trailing NUL bytes, never in a file
    name, are not kept by the ``S`` dtype)."""
    return bytes(name).decode("utf-8", "surrogateescape")


def _truth(chunk: pd.DataFrame) -> np.ndarray | None:
    """``truth_id`` text where it links jobs (:func:`truth_links`), "" elsewhere."""
    if "truth_id" not in chunk:
        return None
    linked = truth_links(chunk)
    out = np.full(len(chunk), "", object)
    out[linked] = by_value(chunk["truth_id"][linked], str)
    return out


def _odd(values: pd.Series, parsed: np.ndarray, ok: np.ndarray, pos) -> dict[int, str]:
    """``{CSV row: text}`` where the text is not ``parsed`` written plainly ("" if not ok)."""
    text = values.to_numpy(object)
    plain = np.where(ok, parsed.astype(str), "").astype(object)
    odd = np.flatnonzero(text != plain)
    return {int(pos[i]): str(text[i]) for i in odd}


def _names_parquet(shard: np.ndarray) -> bool:
    """Whether any row of ``shard`` names a ``.parquet`` file."""
    return any(name.endswith(".parquet") for name in set(shard.tolist()))


_HEX64 = re.compile(r"[0-9a-f]{64}")
_NO_DIGEST = bytes(32)


def _digests(values: pd.Series) -> np.ndarray:
    """The ``sha256`` column as 32 bytes a row (``V32``; all zeros where invalid).

    A value is valid when it is 64 hex digits, surrounding blanks and case aside, and not
    all zeros (no data hashes to that; it marks the invalid cells). The bytes take 32
    bytes a row; the hex as a Python ``str``, 113 plus its pointer.
    """
    texts = [_digest(v) for v in values.to_numpy(object)]
    raw = b"".join(bytes.fromhex(t) if t else _NO_DIGEST for t in texts)
    return np.frombuffer(raw, dtype="V32")


def _digest(text: str) -> str:
    """``text`` as a lowercase 64-hex-digit digest (blanks stripped), or "" when not one."""
    if _HEX64.fullmatch(text):  # the usual case: the very same string
        return text
    text = text.strip().lower()
    return text if _HEX64.fullmatch(text) else ""
