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

- Hidden temporary files (``.<name>.tmp-<pid>...``, :data:`tasks.infra.atomic.TMP_MARK`) are what
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
read once, sequentially, for its values, its file sha256 and its rows' sha256. Tasks are
handed to the pool a few ahead of the one whose result is read, so finished scans do not
pile up; a file's findings are kept only as far as later checks need them.

Memory does not grow with the dataset: the index is read twice
(:mod:`tasks.verify.streaming`). The first pass checks the rules of the index chunk by
chunk and keeps 21 bytes per row (job code, catalog row, cutout id) for the rules that
compare rows and for the accounting; the second gives the index in groups of whole jobs
(about 16,000 rows) to the file checks, which keep 8 bytes per listed file name (its hash,
for the files nobody lists), and again to ``deep``. Fixed costs: one group parsed, and in
the files layout 34 MiB of read buffers (two chunks of 256 cutout files). Freed memory is
handed back to the system (``malloc_trim``) before the index is read, after the first
pass and after the file checks. Measured with ``benchmarks/bench_verify_memory.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from croissant_cutouts.tasks.contract import (
    CROISSANT_FILE,
    INDEX_FILE,
    JOBS_FILE,
    REJECTS_FILE,
)
from croissant_cutouts.tasks.infra.memory import release_freed
from croissant_cutouts.tasks.inputs.catalogs import LabelOptions
from croissant_cutouts.tasks.inputs.remote import location
from croissant_cutouts.tasks.verify.accounting import check_accounting, jobs_from_counts, recount
from croissant_cutouts.tasks.verify.metadata import check_croissant, croissant_objects
from croissant_cutouts.tasks.verify.reading import read_table
from croissant_cutouts.tasks.verify.recut import recut_jobs
from croissant_cutouts.tasks.verify.report import DatasetInvalid, Problem, VerifyReport
from croissant_cutouts.tasks.verify.streaming import IndexChanged, index_groups, load_index
from croissant_cutouts.tasks.verify.tables import IndexChecks
from croissant_cutouts.tasks.verify.tensors import FileChecks, check_unlisted

__all__ = [
    "verify_dataset",
    "verify_task",
]

log = logging.getLogger(__name__)

@contextlib.contextmanager
def _arrow_from_malloc() -> Iterator[None]:
    """Arrow's buffers (the index's text columns) from the C library's malloc meanwhile.

    Arrow's default pool (mimalloc) keeps what is freed for reuse, so the index's text,
    freed after parsing, still counted while the files were read. With malloc it is given
    back: on 208,035 index rows the verification's resident peak fell from 430 to 377 MiB
    (``benchmarks/bench_verify_memory.py --rss``, with ``ARROW_DEFAULT_MEMORY_POOL``), its
    time unchanged (14.8 s and 14.1 s, best of 3 interleaved, 2 AMD EPYC vCPUs). With the
    index read in chunks it still counts: 335 and 341 MiB with mimalloc against 308 and 323
    with malloc (two runs each, the same rows). Buffers keep the pool they came from, so
    restoring the default afterwards is safe.
    """
    import pyarrow as pa

    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


@_arrow_from_malloc()
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
        (:meth:`tasks.inputs.catalogs.Layout.count_rows`) and compared with ``catalog_rows``.
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
        compare it byte for byte with the dataset's cutout (:func:`recut_jobs`; needs
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

    release_freed()  # what the steps before left: verify's peak starts lower
    checks = IndexChecks()
    index = load_index(root, problems, checks.add)
    rejects = read_table(root, REJECTS_FILE, ("job_id", "catalog_row", "reason"), problems)
    jobs = read_table(root, JOBS_FILE, ("job_id", "status", "catalog_rows"), problems)
    if index is not None:
        report.index_rows = index.rows_read
        checks.finish(index, problems)
        if not index.has_sha256:
            report.notes.append(
                f"{INDEX_FILE} has no sha256 column (written before it existed): the cutouts' "
                "bytes were checked for format and values only"
            )
    release_freed()  # the index text read and the checks' temporaries

    with ThreadPoolExecutor(max(1, workers)) as pool:
        # croissant first: it says which shards need a digest
        cpath = Path(croissant) if croissant is not None else root / CROISSANT_FILE
        objects = croissant_objects(root, cpath, require_croissant, problems)
        base = cpath.parent
        wanted = {  # resolved paths with a sha256 to compare
            (base / obj["contentUrl"]).resolve()
            for obj in objects or []
            if isinstance(obj.get("contentUrl"), str) and isinstance(obj.get("sha256"), str)
        }
        files = FileChecks(root, pool, wanted, bool(index and index.has_sha256), report, workers)
        # files reported missing: croissant.json naming them is not a second problem
        if not (root / INDEX_FILE).exists():
            files.missing.add(INDEX_FILE)
        if index is not None:
            _read_again(lambda: files.run(index_groups(root, index)), problems)
        shards = index.shards if index is not None else set()
        check_unlisted(root, files.listed if index is not None else None, shards, report)
        if objects is not None:
            check_croissant(
                root, cpath, objects, index, pool, files.digests, files.file_problems,
                files.missing, report,
            )
    release_freed()  # the file checks' read buffers
    counted = None
    if input_dir is not None:
        counted = recount(location(input_dir), jobs, index, rejects, input_layout, report)
    if deep and index is not None:
        _read_again(lambda: recut_jobs(
            root, index_groups(root, index), files.file_problems, location(input_dir),
            input_layout, labels, batch, report,
        ), problems)
    listed = jobs is not None
    if not listed and counted:  # a dataset without jobs.csv: totals from the inputs
        jobs = jobs_from_counts(counted, rejects)
        report.notes.append(f"{JOBS_FILE} missing: catalog row totals from {input_dir}")
    elif not listed:
        report.notes.append(f"{JOBS_FILE} missing: catalog row totals were not checked")
    check_accounting(index, rejects, jobs, report, listed)
    report.seconds = time.perf_counter() - t0
    return report


def _read_again(run: Callable[[], None], problems: list[Problem]) -> None:
    """``run()``, a check reading the index again; a ``table`` problem if it changed."""
    try:
        run()
    except IndexChanged:
        problems.append(Problem(
            "table", "changed while it was being verified: verify again", file=INDEX_FILE
        ))


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
