"""Cutout step: every 64x64x4 cutout of one job in one vectorised pass, written atomically.

Geometry (``cutout-contract.md``): positions are 0-based, ``x`` the column and ``y`` the
row, pixel centres on integers. The candidate pixel is ``r = floor(y + 0.5)``,
``c = floor(x + 0.5)``; the cutout covers rows ``r-32 .. r+31`` and columns
``c-32 .. c+31`` so that pixel sits at index ``[32, 32]``. Whatever falls outside the
image is 0 on every side. A candidate whose centre pixel is outside the image, or whose
position is missing or not finite, is rejected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task

from croissant_cutouts.tasks.contract import (
    CHANNELS,
    CUTOUT_BYTES,
    CUTOUT_DIR,
    CUTOUT_SHAPE,
    CUTOUT_SIZE,
    HALF,
    MANIFEST_DIR,
    NPY_HEADER,
    OUTPUT_LAYOUTS,
    PARQUET_DIR,
    SHARD_DIR,
    cutout_filename,
    cutout_sha256,
    npy_bytes,
    npy_header,
    parquet_filename,
    parquet_schema,
    parquet_table,
    shard_filename,
)
from croissant_cutouts.tasks.dataset.normalize import ChannelLimits, apply_limits
from croissant_cutouts.tasks.errors import JobError, JobRejection
from croissant_cutouts.tasks.infra.atomic import (
    atomic_fd,
    atomic_output,
    atomic_write_text,
    write_all,
)
from croissant_cutouts.tasks.infra.caching import IO_TASK_OPTIONS, ContentPolicy
from croissant_cutouts.tasks.infra.versions import step_modules
from croissant_cutouts.tasks.inputs.load import JobData, open_image, reject_job

__all__ = [
    "JobCutouts",
    "candidate_pixels",
    "cut_job",
    "cutout_task",
    "extract_stamps",
    "position_rejects",
    "rows_path",
    "score_peak",
]

log = logging.getLogger(__name__)

#: Bytes of one files-layout cutout file: header and data.
_FILE_BYTES = len(NPY_HEADER) + CUTOUT_BYTES

def candidate_pixels(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest pixel (row, column) of 0-based positions: ``floor(y + 0.5)``, ``floor(x + 0.5)``.

    Parameters
    ----------
    x, y : ndarray of float
        Column and row positions, finite.

    Returns
    -------
    r, c : ndarray of int64
    """
    return (
        np.floor(np.asarray(y, np.float64) + 0.5).astype(np.int64),
        np.floor(np.asarray(x, np.float64) + 0.5).astype(np.int64),
    )


def position_rejects(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> dict[int, str]:
    """Rows (0-based indices into ``x``/``y``) whose position cannot give a cutout, with reasons.

    The nearest pixel is compared with the image bounds in float64, before any conversion
    to integers, so a huge position (``1e300``) is rejected as outside, never wrapped
    around by an integer overflow.

    Parameters
    ----------
    x, y : array-like of float
        Column and row positions (0-based); any values, NaN and inf included.
    shape : (int, int)
        ``(ny, nx)`` of the image.

    Returns
    -------
    dict of int to str
        Non-finite positions, and positions whose centre pixel is outside the image.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ny, nx = shape
    reasons: dict[int, str] = {}
    finite = np.isfinite(x) & np.isfinite(y)
    for i in np.flatnonzero(~finite):
        reasons[int(i)] = f"position x={x[i]}, y={y[i]} is not finite"
    r = np.floor(np.where(finite, y, 0.0) + 0.5)
    c = np.floor(np.where(finite, x, 0.0) + 0.5)
    outside = finite & ((r < 0) | (r >= ny) | (c < 0) | (c >= nx))
    for i in np.flatnonzero(outside):
        reasons[int(i)] = (
            f"centre pixel (row {r[i]:.0f}, column {c[i]:.0f}) of x={x[i]}, y={y[i]} is "
            f"outside the {ny}x{nx} image"
        )
    return reasons


def score_peak(score: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Maximum of the raw score image over the 3 x 3 pixels centred on each pixel ``(r, c)``.

    Non-finite pixels (NaN, +-inf) and pixels off the image are ignored; the result is NaN
    where none of the nine is usable. Off-image offsets are clipped onto the edge, and a
    duplicate of a pixel that is already in the window does not change a maximum. One
    fancy-indexing gather of ``9 n`` pixels: the (memory-mapped) image is never read whole.

    Parameters
    ----------
    score : ndarray, shape (ny, nx)
        The score image as stored (S/N units), not the normalised cutout channel.
    r, c : ndarray of int, shape (n,)
        Centre pixels (row, column), inside the image.

    Returns
    -------
    ndarray of float64, shape (n,)
    """
    ny, nx = score.shape
    r = np.asarray(r, np.int64)
    c = np.asarray(c, np.int64)
    offsets = np.arange(-1, 2)
    rows = np.clip(r[:, None] + offsets, 0, ny - 1)  # (n, 3)
    cols = np.clip(c[:, None] + offsets, 0, nx - 1)
    values = np.asarray(score[rows[:, :, None], cols[:, None, :]], np.float64).reshape(len(r), 9)
    finite = np.isfinite(values)
    peak = np.where(finite, values, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(finite.any(axis=1), peak, np.nan)


def extract_stamps(image: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Gather the 64x64 neighbourhoods of pixels ``(r, c)``; off-image pixels are NaN.

    Windows wholly inside the image are taken in one fancy-indexing pass over a
    ``sliding_window_view`` of the (memory-mapped) image, which copies each window's rows
    as contiguous runs; the few windows that cross an edge are gathered with clipped
    indices and their off-image pixels set to NaN (normalisation turns NaN into 0).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
    r, c : ndarray of int, shape (n,)
        Centre pixels (row, column); they may lie anywhere, even off the image.

    Returns
    -------
    stamps : ndarray, shape (n, 64, 64)
        The image's dtype when every window is inside the image; else
        ``numpy.result_type(image.dtype, float32)`` (float32 for float32 and 16-bit
        integer images), which can hold the NaN.
    """
    ny, nx = image.shape
    r = np.asarray(r, np.int64)
    c = np.asarray(c, np.int64)
    inside = (
        (r >= HALF) & (r + CUTOUT_SIZE - HALF <= ny) & (c >= HALF) & (c + CUTOUT_SIZE - HALF <= nx)
    )
    if inside.all() and ny >= CUTOUT_SIZE and nx >= CUTOUT_SIZE:
        windows = np.lib.stride_tricks.sliding_window_view(image, (CUTOUT_SIZE, CUTOUT_SIZE))
        return windows[r - HALF, c - HALF]
    dtype = np.result_type(image.dtype, np.float32)
    stamps = np.empty((len(r), CUTOUT_SIZE, CUTOUT_SIZE), dtype)
    if inside.any() and ny >= CUTOUT_SIZE and nx >= CUTOUT_SIZE:
        windows = np.lib.stride_tricks.sliding_window_view(image, (CUTOUT_SIZE, CUTOUT_SIZE))
        stamps[inside] = windows[r[inside] - HALF, c[inside] - HALF]
    edge = ~inside
    offsets = np.arange(-HALF, CUTOUT_SIZE - HALF)
    rows = r[edge, None] + offsets  # (m, 64)
    cols = c[edge, None] + offsets
    on = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
    part = image[np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :]]
    stamps[edge] = np.where(on, part, np.nan)
    return stamps


def make_tensors(
    images: dict[str, np.ndarray], limits: dict[str, ChannelLimits], r: np.ndarray, c: np.ndarray
) -> np.ndarray:
    """Normalised cutout tensors, shape (n, 64, 64, 4), float32, zero off the image."""
    out = np.empty((len(r), *CUTOUT_SHAPE), np.float32)
    for k, channel in enumerate(CHANNELS):
        apply_limits(extract_stamps(images[channel], r, c), limits[channel], out=out[..., k])
    return out


@dataclass
class JobCutouts:
    """What the cutout step wrote for one job: counts and paths, small in every process.

    The job's index rows stay on disk (:func:`rows_path`, read with :meth:`read_rows`), so
    a run of thousands of jobs holds only these few fields per job, in the flow and in
    Prefect's results.
    """

    job_id: str
    rows_file: str  # absolute path of the job's index rows (a pandas pickle)
    n_rows: int
    real: int
    bogus: int
    row_rejects: list[tuple[int, str]]
    limits: dict[str, ChannelLimits]
    image_files: dict[str, str]
    n_catalog_rows: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    worker: str = ""  # host:pid of the process that cut the job (a Dask worker, or this one)

    def read_rows(self) -> pd.DataFrame:
        """The job's index rows, in catalog order (no ``job_id``, ``cutout_id``, ``split``)."""
        return read_rows(self.rows_file)


def manifest_path(out_dir: Path, job_id: str, layout: str = "files") -> Path:
    """Per-job manifest listing the files the cutout step wrote for a job in ``layout``."""
    return Path(out_dir) / MANIFEST_DIR / layout / f"{job_id}.json"


def rows_path(out_dir: Path, job_id: str, layout: str = "files") -> Path:
    """Per-job index rows the cutout step wrote for a job in ``layout``, beside its manifest.

    A pickled :class:`pandas.DataFrame` (exact dtypes, any extra columns): the tool's own
    bookkeeping under ``.cutouts/``, written and read by the same code version (a change
    of the cutout code changes the task's cache key, so the job is cut and written again).
    """
    return Path(out_dir) / MANIFEST_DIR / layout / f"{job_id}.rows.pkl"


def write_rows(path: Path, rows: pd.DataFrame) -> None:
    """Write a job's index rows to ``path`` atomically (:func:`rows_path`)."""
    with atomic_output(path, "wb") as fh:
        pickle.dump(rows, fh, protocol=pickle.HIGHEST_PROTOCOL)


def read_rows(path: str | Path) -> pd.DataFrame:
    """A job's index rows written by :func:`write_rows`."""
    with open(path, "rb") as fh:
        rows = pickle.load(fh)
    if not isinstance(rows, pd.DataFrame):
        raise ValueError(f"{path}: not a table of index rows; delete it and run again")
    return rows


def _tensor_batches(
    images: dict[str, np.ndarray],
    limits: dict[str, ChannelLimits],
    r: np.ndarray,
    c: np.ndarray,
    batch: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, tensors)`` for successive batches of at most ``batch`` candidates."""
    for start in range(0, len(r), batch):
        stop = start + batch
        yield start, make_tensors(images, limits, r[start:stop], c[start:stop])


def _write_files(
    folder: Path, names: list[str], batches: Iterator[tuple[int, np.ndarray]], written: list[Path]
) -> list[str]:
    """Files layout: one ``np.save``-identical .npy per cutout, written atomically.

    Names are relative to one open descriptor of ``folder``; header and tensor go out in
    one ``writev``. Returns the :func:`cutout_sha256` of each cutout, in ``names`` order,
    hashed from the same buffer that is written.
    """
    digests: list[str] = []
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for start, tensors in batches:
            for tensor, name in zip(tensors, names[start : start + len(tensors)], strict=True):
                with atomic_fd(name, dfd) as fd:
                    if os.writev(fd, [NPY_HEADER, tensor.data]) != _FILE_BYTES:
                        write_all(fd, npy_bytes(tensor)[os.lseek(fd, 0, os.SEEK_CUR) :])
                written.append(folder / name)
                digests.append(cutout_sha256(tensor))
    finally:
        os.close(dfd)
    return digests


def _write_shard(
    path: Path, n: int, batches: Iterator[tuple[int, np.ndarray]], written: list[Path]
) -> list[str]:
    """Shards layout: one ``(n, 64, 64, 4)`` float32 .npy (``np.save`` bytes), streamed.

    Memory stays at one batch of tensors whatever ``n`` is; the shard appears under its
    name only once complete. Returns the :func:`cutout_sha256` of each row, in row order.
    """
    digests: list[str] = []
    with atomic_fd(path) as fd:
        write_all(fd, npy_header((n, *CUTOUT_SHAPE)))
        for _, tensors in batches:
            write_all(fd, tensors.data)
            digests.extend(cutout_sha256(tensor) for tensor in tensors)
    written.append(path)
    return digests


def _write_parquet(
    path: Path,
    rows: pd.DataFrame,
    batches: Iterator[tuple[int, np.ndarray]],
    written: list[Path],
) -> list[str]:
    """Parquet layout: one file of ``rows`` (index columns) plus ``image``, streamed.

    One row group per batch, uncompressed (float pixels barely compress, and plain pages
    read fastest); ``sha256`` of each row is hashed from the tensor written in the same row.
    The file appears under its name only once complete (footer written). ``cutout_id`` and
    ``split`` are null here: :func:`tasks.dataset.index.write_index` fills them.
    """
    import pyarrow.parquet as pq

    digests: list[str] = []
    with atomic_output(path, "wb") as fh:
        writer = pq.ParquetWriter(fh, parquet_schema(), compression="none", use_dictionary=False)
        try:
            for start, tensors in batches:
                part = rows.iloc[start : start + len(tensors)].copy()
                part["sha256"] = [cutout_sha256(t) for t in tensors]
                digests.extend(part["sha256"])
                writer.write_table(parquet_table(part, tensors))
        finally:
            writer.close()
    written.append(path)
    return digests


def _name_rows(rows: pd.DataFrame, job_id: str, layout: str) -> list[str]:
    """Set the file columns of a job's index ``rows`` for ``layout``; returns the files."""
    if layout == "files":
        rows["cutout_filename"] = [cutout_filename(job_id, int(k)) for k in rows["catalog_row"]]
        return list(rows["cutout_filename"])
    name = shard_filename(job_id) if layout == "shards" else parquet_filename(job_id)
    rows["cutout_filename"] = name
    rows["shard"] = name
    rows["row"] = np.arange(len(rows), dtype=np.int64)
    return [name] if len(rows) else []


def cut_job(
    job: JobData,
    limits: dict[str, ChannelLimits],
    out_dir: str | Path,
    batch: int = 64,
    layout: str = "files",
) -> JobCutouts:
    """Cut, normalise and write every usable candidate of a job.

    Parameters
    ----------
    job : JobData
        Output of :func:`tasks.inputs.load.load_job`.
    limits : dict of ChannelLimits
        Output of :func:`tasks.dataset.normalize.job_limits`.
    out_dir : path-like
        Dataset root; files go to ``<out_dir>/cutouts/``.
    batch : int
        Candidates per vectorised batch (memory: 64 KiB per candidate).
    layout : {"files", "shards", "parquet"}
        ``files``: ``cutouts/<job_id>_cutout<k>.npy`` per cutout (the contract's layout).
        ``shards``: one ``shards/<job_id>.npy`` of shape (N, 64, 64, 4) per job, row i
        holding the job's i-th kept candidate (catalog order); the same tensor bytes.
        ``parquet``: one ``parquet/<job_id>.parquet`` per job, row i the index columns of
        the i-th kept candidate plus ``image`` (its tensor flattened: the same bytes).

    Returns
    -------
    JobCutouts
        Counts, per-row rejections, and the path of the job's index rows, written to
        :func:`rows_path` (with ``cutout_filename``, ``score_peak`` (:func:`score_peak` of
        the raw score image), ``sha256`` (:func:`cutout_sha256`, hashed as each cutout is
        written), and ``shard``/``row`` for shards and parquet). If writing fails
        part-way, the files already written for this job are removed and the error
        propagates.
    """
    if layout not in OUTPUT_LAYOUTS:
        raise ValueError(f"unknown output layout {layout!r}; choose from {OUTPUT_LAYOUTS}")
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    table = job.table
    rejects = dict(job.row_rejects)
    rejects.update(
        {
            k: v
            for k, v in position_rejects(table["x"], table["y"], job.shape).items()
            if k not in rejects
        }
    )
    keep = ~table["catalog_row"].isin(list(rejects)).to_numpy()
    rows = table.loc[keep].copy()
    files = _name_rows(rows, job.job_id, layout)
    images = {ch: open_image(job.images[ch]) for ch in CHANNELS}
    r_all, c_all = candidate_pixels(rows["x"].to_numpy(), rows["y"].to_numpy())
    rows["score_peak"] = score_peak(images["score"], r_all, c_all)
    written: list[Path] = []
    digests: list[str] = []
    try:
        batches = _tensor_batches(images, limits, r_all, c_all, batch)
        if layout == "files":
            folder = out_dir / CUTOUT_DIR
            folder.mkdir(parents=True, exist_ok=True)
            names = [f.rpartition("/")[2] for f in files]
            digests = _write_files(folder, names, batches, written)
        elif files and layout == "shards":
            (out_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
            digests = _write_shard(out_dir / files[0], len(rows), batches, written)
        elif files:
            (out_dir / PARQUET_DIR).mkdir(parents=True, exist_ok=True)
            framed = rows.assign(job_id=job.job_id)
            digests = _write_parquet(out_dir / files[0], framed, batches, written)
        rows["sha256"] = pd.Series(digests, index=rows.index, dtype="string")
        rows = rows.reset_index(drop=True)
        rows_file = rows_path(out_dir, job.job_id, layout)
        write_rows(rows_file, rows)
        atomic_write_text(
            manifest_path(out_dir, job.job_id, layout),
            json.dumps({"job_id": job.job_id, "layout": layout, "files": files}),
        )
    except BaseException:
        for path in written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise
    notes = [
        *job.notes,
        *(
            f"{ch} channel {lim.status.replace('_', ' ')}: all zeros"
            for ch, lim in limits.items()
            if not lim.usable
        ),
    ]
    labels = pd.to_numeric(rows["label"], errors="coerce") if "label" in rows else pd.Series([])
    return JobCutouts(
        job_id=job.job_id,
        rows_file=str(rows_file.resolve()),
        n_rows=len(rows),
        real=int((labels == 1).sum()),
        bogus=int((labels == 0).sum()),
        row_rejects=sorted(rejects.items()),
        limits=limits,
        image_files={ch: job.images[ch].path.name for ch in CHANNELS},
        n_catalog_rows=job.n_catalog_rows,
        seconds=time.perf_counter() - t0,
        notes=notes,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )


def outputs_present(out_dir: str | Path, job_id: str, layout: str = "files") -> bool:
    """True when the ``layout`` manifest of ``job_id`` exists and every file it lists is on disk."""
    path = manifest_path(Path(out_dir), job_id, layout)
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    root = Path(out_dir)
    rows = rows_path(root, job_id, layout)
    return rows.is_file() and all((root / f).is_file() for f in files)




@task(
    name="cutout",
    cache_policy=ContentPolicy(modules=step_modules("cutout"), exclude=("batch",)),
    **IO_TASK_OPTIONS,
)
def cutout_task(
    job: JobData | JobRejection,
    limits: dict[str, ChannelLimits] | JobRejection,
    out_dir: str,
    batch: int = 64,
    layout: str = "files",
) -> JobCutouts | JobRejection:
    """Prefect task: :func:`cut_job` (passes a rejection through)."""
    if isinstance(job, JobRejection):
        return job
    if isinstance(limits, JobRejection):
        return limits
    try:
        return cut_job(job, limits, out_dir, batch, layout)
    except JobError as exc:
        log.warning("rejected %s", exc)
        return reject_job(job.spec, exc)
