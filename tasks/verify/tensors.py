"""Checks of the cutout files, shards and Parquet files: format, shape, dtype, values, digests."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.contract import (
    CUTOUT_BYTES,
    CUTOUT_DIR,
    CUTOUT_DTYPE,
    CUTOUT_SHAPE,
    INDEX_FILE,
    NPY_HEADER,
    PARQUET_DIR,
    PARQUET_IMAGE,
    SHARD_DIR,
    inside_dataset,
)
from croissant_cutouts.tasks.infra.atomic import TMP_MARK
from croissant_cutouts.tasks.verify.report import Problem, VerifyReport
from croissant_cutouts.tasks.verify.tables import ParsedIndex

__all__ = [
    "ROW_FLOATS",
    "FileFindings",
    "check_tensors",
    "check_unlisted",
]

log = logging.getLogger(__name__)

ROW_FLOATS = int(np.prod(CUTOUT_SHAPE))
#: Files per task of the thread pool (files layout), and shard rows per read (~16 MiB).
_CHUNK_FILES = 256
_SHARD_BLOCK = 256

# --------------------------------------------------------------------------------------
# tensors


@dataclass
class _Scan:
    """Result of reading one .npy: problems without location, and its digests when asked.

    ``rows_sha256`` holds the :func:`tasks.contract.cutout_sha256` of each cutout's data bytes
    (one for a cutout file, one per row of a shard), when asked and the file is readable.
    """

    problems: list[tuple[str, str, int | None]]  # kind, message, shard row (None: whole file)
    cutouts: int = 0
    sha256: str | None = None
    missing: bool = False
    rows_sha256: list[str] | None = None


#: What the file checks found in one file, as kept per file: ``(kind, message, shard row or
#: None)`` each; the empty tuple (one object for all) when nothing.
FileFindings = list[tuple[str, str, int | None]] | tuple[()]


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


def _parquet_layout(path: Path, rows: int, scan: _Scan):
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
_PARQUET_KEYS = ("cutout_id", "job_id", "catalog_row", "sha256")


def _key_problems(handle, expect: dict[str, list[str]]) -> list[tuple[str, str, int | None]]:
    """Rows whose :data:`_PARQUET_KEYS` columns differ from the index (first column only)."""
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


def _scan_parquet(
    path: Path,
    rows: int,
    want_sha: bool,
    want_rows: bool = False,
    expect: dict[str, list[str]] | None = None,
) -> _Scan:
    """Check one parquet-layout file: schema, rows, values per row; digests when asked.

    Row groups are read one at a time (memory: one row group); a row group that does not
    decode is reported with its number and first row. ``want_sha`` hashes the whole file
    (a separate read), ``want_rows`` each row's ``image`` bytes (:func:`cutout_sha256`).
    ``expect``: per column of :data:`_PARQUET_KEYS`, the index's values in row order (text,
    as in the CSV); rows of the file that differ are ``bad-parquet`` problems.
    """
    import pyarrow as pa

    scan = _Scan([])
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


def _scan_files(
    root: Path, folder: str, rel: list[str], want_rows: bool = False
) -> list[tuple[str, _Scan]]:
    """Check a chunk of cutout files ``<root>/<rel>``, all in ``folder``, values in one pass.

    A file whose bytes are exactly a canonical header plus 65,536 bytes is checked from one
    read; any other file gets the full :func:`_scan_npy` treatment for a precise message.
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
    out: list[tuple[str, _Scan]] = []
    if good:
        rows = slice(None) if len(good) == len(names) else good  # all good: a view, no copy
        values = buf[rows, len(_HEADER) : _FILE_BYTES].view(CUTOUT_DTYPE)
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


def check_tensors(
    root: Path,
    index: ParsedIndex,
    pool: ThreadPoolExecutor,
    wanted: set[Path],
    digests: dict[Path, str],
    file_problems: dict[str, FileFindings],
    missing: set[str],
    report: VerifyReport,
    workers: int = 2,
) -> None:
    """Every file and shard the index lists: format, shape, dtype, values, cutout sha256.

    Fills ``digests`` (sha256 of the shards in ``wanted``, from the same read),
    ``file_problems`` (per relative path scanned, what was found, ``digest`` mismatches
    included; a shard with nothing found has an empty tuple, a cutout file none, so that
    a million clean cutout files take no memory) and ``missing``. Tasks go to ``pool`` (of
    ``workers`` threads) at most ``_ahead`` ahead of the one whose result is read, so
    the scans waiting to be read stay few whatever the number of files.
    """
    problems = report.problems
    want_rows = index.sha256 is not None
    sharded = index.shard != ""
    _keep_parquet_keys(index, sharded)
    files = _file_rows(index, sharded, problems)
    shard_rows = _shard_rows(index, sharded, problems)
    located: list[Problem] = []
    ahead = _ahead(workers)
    for chunk in _in_order(pool, _file_calls(root, *files, want_rows), ahead):
        for name, scan, rows in chunk:
            located += _file_findings(index, name, rows, scan, missing, report)
            if scan.problems:  # a clean cutout file is not kept (millions of them)
                file_problems[name] = scan.problems
    calls = _shard_calls(root, index, shard_rows, wanted, want_rows, problems)
    for name, scan in _in_order(pool, calls, ahead):
        located += _shard_findings(index, name, shard_rows[name], scan, missing, report)
        if scan.sha256 is not None:
            digests[(root / name).resolve()] = scan.sha256
        file_problems[name] = scan.problems or ()
    located.sort(key=lambda p: (p.index_row if p.index_row is not None else -1, p.file or ""))
    problems.extend(located)


def _keep_parquet_keys(index: ParsedIndex, sharded: np.ndarray) -> None:
    """Drop the index text these checks and the later ones no longer read.

    Only a parquet file's key columns (:data:`_PARQUET_KEYS`) are compared with the index
    text; the parsed arrays hold everything else. Keeping the text of every column would
    cost about 200 bytes per index row for the rest of the verification.
    """
    parquet = sharded & np.char.endswith(index.shard.astype(str), ".parquet")
    keys = [c for c in _PARQUET_KEYS if c in index.frame] if parquet.any() else []
    index.frame = index.frame[keys]


def _ahead(workers: int) -> int:
    """Tasks submitted ahead of the one read: enough to keep ``workers`` threads busy."""
    return 2 * max(1, workers) + 1


def _in_order(pool: ThreadPoolExecutor, calls: Iterable[tuple[Callable, tuple]], ahead: int):
    """Results of ``calls`` (``(function, args)`` each) run on ``pool``, in call order.

    At most ``ahead`` calls are submitted beyond the one whose result is awaited: memory
    holds about ``ahead + 1`` results, not all of them.
    """
    pending: deque[Future] = deque()
    for fn, args in calls:
        pending.append(pool.submit(fn, *args))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _file_rows(
    index: ParsedIndex, sharded: np.ndarray, problems: list[Problem]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Files layout: the listed files in (folder, name) order and the index rows of each.

    A name outside the dataset is a problem, and not scanned. Returns ``(names, starts,
    rows)``: file ``names[k]`` (the index's own ``str``) is listed at kept index rows
    ``rows[starts[k]:starts[k + 1]]``, in row order. Arrays, not a dict of lists: a few
    bytes per row, for millions of rows.
    """
    rows = np.flatnonzero(~sharded)
    safe = np.fromiter((inside_dataset(n) for n in index.file[rows]), bool, len(rows))
    for i in rows[~safe]:
        problems.append(Problem(
            "index", f"cutout_filename {index.file[i]!r} is not a path inside the dataset",
            file=INDEX_FILE, **index.where(int(i)),
        ))
    rows = rows[safe]
    names = index.file[rows]
    folder, _ = pd.factorize(np.array([n.rpartition("/")[0] for n in names], object),
                             sort=True)
    order = pd.DataFrame({"folder": folder, "name": names}).sort_values(
        ["folder", "name"], kind="stable"
    ).index.to_numpy()
    rows, names = rows[order], names[order]
    first = np.ones(len(names), bool)
    first[1:] = names[1:] != names[:-1]
    starts = np.append(np.flatnonzero(first), len(names))
    return names[first], starts, rows


def _file_calls(
    root: Path, names: np.ndarray, starts: np.ndarray, rows: np.ndarray, want_rows: bool
) -> Iterator[tuple[Callable, tuple]]:
    """The scans of the cutout files, in chunks of one folder each (:func:`_scan_listed`).

    ``names``, ``starts``, ``rows``: :func:`_file_rows`. Each chunk carries the index rows
    of its files; the names are the index's own ``str`` objects.
    """
    k = 0
    while k < len(names):
        folder = names[k].rpartition("/")[0]
        end = k + 1
        while (
            end < len(names) and end - k < _CHUNK_FILES
            and names[end].rpartition("/")[0] == folder
        ):
            end += 1
        listed = {names[j]: rows[starts[j] : starts[j + 1]] for j in range(k, end)}
        yield _scan_listed, (root, folder, listed, want_rows)
        k = end


def _scan_listed(
    root: Path, folder: str, listed: dict[str, np.ndarray], want_rows: bool
) -> list[tuple[str, _Scan, np.ndarray]]:
    """:func:`_scan_files` on the files of ``listed``, each result with its index rows."""
    return [
        (name, scan, listed[name])
        for name, scan in _scan_files(root, folder, list(listed), want_rows)
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
            yield _named, (name, _scan_parquet, *args, expect)
        else:
            yield _named, (name, _scan_npy, *args)


def _named(name: str, scan: Callable[..., _Scan], *args) -> tuple[str, _Scan]:
    """``(name, scan(*args))``: a shard's scan with its name, for :func:`_in_order`."""
    return name, scan(*args)


def _expected_keys(index: ParsedIndex, seen: dict[int, int], n: int) -> dict[str, list[str]]:
    """The index's :data:`_PARQUET_KEYS` values of a parquet file's rows 0 .. n-1 (text)."""
    at = [seen[r] for r in range(n)]
    frame = index.frame
    return {c: frame[c].iloc[at].astype(str).tolist() for c in _PARQUET_KEYS if c in frame}


def _file_findings(
    index: ParsedIndex, name: str, rows: np.ndarray, scan: _Scan, missing: set[str],
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
    index: ParsedIndex, name: str, seen: dict[int, int], scan: _Scan, missing: set[str],
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
        want = index.sha256[i].decode("ascii")
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


def check_unlisted(root: Path, index: ParsedIndex | None, report: VerifyReport) -> None:
    """``.npy`` files under cutouts/ and shards/, ``.parquet`` under parquet/, not listed."""
    listed = set() if index is None else set(index.file)
    listed.update(() if index is None else index.shard)
    leftovers = 0
    for sub, suffix in ((CUTOUT_DIR, ".npy"), (SHARD_DIR, ".npy"), (PARQUET_DIR, ".parquet")):
        unlisted = []  # only these are kept, then sorted: not one entry per cutout
        try:
            with os.scandir(root / sub) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        leftovers += TMP_MARK in name
                    elif index is not None and name.endswith(suffix):
                        if f"{sub}/{name}" not in listed:
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


