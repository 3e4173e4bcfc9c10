"""Reading one cutout file, shard or Parquet file: format, shape, dtype, values, digests.

The dataset-level checks (:mod:`tasks.verify.tensors`) decide what to read and where each
finding belongs in the index; the functions here read bytes and say what is wrong with
them, without locations.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from croissant_cutouts.tasks.contract import (
    CUTOUT_BYTES,
    CUTOUT_DTYPE,
    CUTOUT_SHAPE,
    INDEX_FILE,
    NPY_HEADER,
    PARQUET_IMAGE,
)

__all__ = [
    "CHUNK_FILES",
    "PARQUET_KEYS",
    "ROW_FLOATS",
    "Scan",
    "scan_files",
    "scan_npy",
    "scan_parquet",
]

ROW_FLOATS = int(np.prod(CUTOUT_SHAPE))
#: Files per task of the thread pool (files layout), and shard rows per read (~16 MiB).
CHUNK_FILES = 256
_SHARD_BLOCK = 256

# --------------------------------------------------------------------------------------
# tensors


@dataclass
class Scan:
    """Result of reading one .npy: problems without location, and its digests when asked.

    ``rows_sha256`` holds the :func:`tasks.contract.cutout_sha256` of each cutout's data bytes
    (one for a cutout file, one per row of a shard), when asked and the file is readable.
    """

    problems: list[tuple[str, str, int | None]]  # kind, message, shard row (None: whole file)
    cutouts: int = 0
    sha256: str | None = None
    missing: bool = False
    rows_sha256: list[str] | None = None


def _row_digests(view: memoryview, m: int) -> list[str]:
    """sha256 of each of the ``m`` consecutive 65,536-byte cutouts in ``view`` (bytes)."""
    size = CUTOUT_BYTES
    return [hashlib.sha256(view[j * size : (j + 1) * size]).hexdigest() for j in range(m)]


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


def scan_npy(path: Path, rows: int | None, want_sha: bool, want_rows: bool = False) -> Scan:
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
        Also return each cutout's data sha256 (:attr:`Scan.rows_sha256`), from the same read.
    """
    scan = Scan([])
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
        want = CUTOUT_SHAPE
    else:
        want = (rows, *CUTOUT_SHAPE)
    if shape != want:
        if rows is not None and shape[1:] == CUTOUT_SHAPE:
            msg = f"shard holds {shape[0]} cutouts, the index lists {rows}"
        else:
            msg = f"shape {shape}, expected {want}"
        scan.problems.append(("shape", msg, None))
    if dtype != CUTOUT_DTYPE:
        scan.problems.append(
            ("dtype", f"dtype {dtype.str} ({dtype}), expected <f4 (little-endian float32)", None)
        )
    if scan.problems:  # no checksum line for a file already found broken
        return scan
    digest = hashlib.sha256() if want_sha else None
    rows_sha: list[str] | None = [] if want_rows else None
    n = 1 if rows is None else rows
    block = np.empty((min(n, _SHARD_BLOCK), ROW_FLOATS), CUTOUT_DTYPE)
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
                    ("bad-npy", f"short read at row {start + got // CUTOUT_BYTES}", None)
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


def _words(exc: BaseException) -> str:
    """An Arrow error message on one line."""
    return " ".join(str(exc).split())


def _parquet_layout(path: Path, rows: int, scan: Scan):
    """Open a parquet-layout file and check its ``image`` type and row count.

    Returns the :class:`pyarrow.parquet.ParquetFile`, or None after adding the problem to
    ``scan`` (``missing`` set for a missing file).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        size = os.stat(path).st_size
        handle = pq.ParquetFile(pa.memory_map(str(path)))
    except FileNotFoundError:
        scan.missing = True
        scan.problems.append(("missing-file", "file missing", None))
        return None
    except (pa.ArrowException, OSError) as exc:
        head = "empty file (0 bytes)" if size == 0 else f"not readable Parquet ({size} bytes)"
        scan.problems.append(("bad-parquet", f"{head}: {_words(exc)}", None))
        return None
    want = pa.list_(pa.float32(), ROW_FLOATS)
    schema = handle.schema_arrow
    if PARQUET_IMAGE not in schema.names:
        scan.problems.append(("bad-parquet", f"no {PARQUET_IMAGE!r} column", None))
    elif schema.field(PARQUET_IMAGE).type != want:
        got = schema.field(PARQUET_IMAGE).type
        scan.problems.append(("dtype", f"{PARQUET_IMAGE} is {got}, expected {want}", None))
    if handle.metadata.num_rows != rows:
        msg = f"file holds {handle.metadata.num_rows} cutouts, the index lists {rows}"
        scan.problems.append(("shape", msg, None))
    return None if scan.problems else handle


#: Columns of a parquet-layout file compared with ``master_index.csv``, row by row.
PARQUET_KEYS = ("cutout_id", "job_id", "catalog_row", "sha256")


def _key_problems(handle, expect: dict[str, list[str]]) -> list[tuple[str, str, int | None]]:
    """Rows whose :data:`PARQUET_KEYS` columns differ from the index (first column only)."""
    import pyarrow as pa

    try:
        table = handle.read(columns=list(expect))
    except (pa.ArrowException, OSError, KeyError) as exc:
        return [("bad-parquet", f"index columns do not decode: {_words(exc)}", None)]
    out: dict[int, tuple[str, str, int | None]] = {}
    for column, want in expect.items():
        got = ["" if v is None else str(v) for v in table.column(column).to_pylist()]
        for r in np.flatnonzero(np.asarray(got, object) != np.asarray(want, object)):
            msg = f"column {column} is {got[r]!r}, {INDEX_FILE} says {want[r]!r}"
            out.setdefault(int(r), ("bad-parquet", msg, int(r)))
    return [out[r] for r in sorted(out)]


def scan_parquet(
    path: Path,
    rows: int,
    want_sha: bool,
    want_rows: bool = False,
    expect: dict[str, list[str]] | None = None,
) -> Scan:
    """Check one parquet-layout file: schema, rows, values per row; digests when asked.

    Row groups are read one at a time (memory: one row group); a row group that does not
    decode is reported with its number and first row. ``want_sha`` hashes the whole file
    (a separate read), ``want_rows`` each row's ``image`` bytes (:func:`cutout_sha256`).
    ``expect``: per column of :data:`PARQUET_KEYS`, the index's values in row order (text,
    as in the CSV); rows of the file that differ are ``bad-parquet`` problems.
    """
    import pyarrow as pa

    scan = Scan([])
    handle = _parquet_layout(path, rows, scan)
    if handle is None:
        return scan
    if expect:
        scan.problems += _key_problems(handle, expect)
        if any(r is None for _, _, r in scan.problems):  # one line for one broken file
            return scan
    rows_sha: list[str] | None = [] if want_rows else None
    start = 0
    for g in range(handle.metadata.num_row_groups):
        try:
            column = handle.read_row_group(g, columns=[PARQUET_IMAGE]).column(PARQUET_IMAGE)
            block = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
        except (pa.ArrowException, OSError) as exc:
            msg = f"row group {g} (rows from {start}) does not decode: {_words(exc)}"
            scan.problems.append(("bad-parquet", msg, None))
            return scan
        if column.null_count:
            scan.problems.append(("bad-parquet", f"{column.null_count} null image(s)", None))
            return scan
        block = block.reshape(-1, ROW_FLOATS)
        if rows_sha is not None:
            rows_sha.extend(_row_digests(memoryview(block).cast("B"), len(block)))
        for r, kind, msg in _value_problems(block):
            scan.problems.append((kind, msg, start + r))
        start += len(block)
    scan.cutouts = rows
    scan.rows_sha256 = rows_sha
    if want_sha:
        with open(path, "rb") as fh:
            scan.sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
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


_HEADER = np.frombuffer(NPY_HEADER, np.uint8)
_FILE_BYTES = len(_HEADER) + CUTOUT_BYTES
_STRIDE = _FILE_BYTES + 64  # room to notice trailing bytes; keeps each row 64-byte aligned


def scan_files(
    root: Path, folder: str, rel: list[str], want_rows: bool = False
) -> list[tuple[str, Scan]]:
    """Check a chunk of cutout files ``<root>/<rel>``, all in ``folder``, values in one pass.

    A file whose bytes are exactly a canonical header plus 65,536 bytes is checked from one
    read; any other file gets the full :func:`scan_npy` treatment for a precise message.
    With ``want_rows``, each scan also carries the sha256 of the file's data bytes.
    Returns ``(relative path, scan)`` per file, the very ``str`` objects of ``rel``.
    """
    names = [r.rpartition("/")[2] for r in rel]  # opened relative to the folder
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
    out: list[tuple[str, Scan]] = []
    if good:
        rows = slice(None) if len(good) == len(names) else good  # all good: a view, no copy
        values = buf[rows, len(_HEADER) : _FILE_BYTES].view(CUTOUT_DTYPE)
        bad: dict[int, list[tuple[str, str, int | None]]] = {}
        for r, kind, msg in _value_problems(values):
            bad.setdefault(r, []).append((kind, msg, None))
        for j, i in enumerate(good):
            scan = Scan(bad.get(j, []), cutouts=1)
            if want_rows:
                scan.rows_sha256 = [hashlib.sha256(buf[i, len(_HEADER) : _FILE_BYTES]).hexdigest()]
            out.append((rel[i], scan))
    done = set(good)
    out += [
        (rel[i], scan_npy(root / rel[i], None, False, want_rows))
        for i in range(len(rel))
        if i not in done
    ]
    return out
