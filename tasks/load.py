"""Load step: find job folders, check their images, read their catalogs.

Images are never read here: the header of each is parsed, its data location checked
against the file size, and :func:`open_image` later maps the pixels from disk
(``numpy.memmap``), so a task passes only paths and a small candidate table.
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from prefect import task

from tasks.caching import IO_TASK_OPTIONS, ContentPolicy
from tasks.errors import JobError, JobRejection
from tasks.layouts import CHANNELS, get_layout

__all__ = [
    "ImageInfo",
    "JobData",
    "JobSpec",
    "discover_jobs",
    "load_job",
    "load_task",
    "open_image",
    "read_image_info",
    "reject_job",
]

log = logging.getLogger(__name__)

_BITPIX = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


@dataclass(frozen=True)
class JobSpec:
    """Where one job lives: small, hashable, cheap to pass between tasks."""

    job_id: str
    path: Path
    layout: str = "seed"

    def input_files(self) -> list[Path]:
        """The files the layout reads for this job (raises JobError when one is missing)."""
        paths, catalog = get_layout(self.layout).resolve(self.path)
        return [*(paths[c] for c in CHANNELS), catalog]


@dataclass(frozen=True)
class ImageInfo:
    """Location and geometry of one FITS image's pixels (primary HDU).

    ``shape`` is ``(ny, nx)`` = (rows, columns); ``offset`` is the byte offset of the data;
    ``dtype`` is the on-disk (big-endian) numpy dtype string; ``scaled`` is true when the
    header has a non-trivial BSCALE/BZERO, in which case astropy applies it on reading.
    """

    path: Path
    shape: tuple[int, int]
    dtype: str
    offset: int
    scaled: bool


@dataclass
class JobData:
    """A job whose images and catalog passed the checks of the load step."""

    spec: JobSpec
    images: dict[str, ImageInfo]
    catalog_path: Path
    table: pd.DataFrame
    row_rejects: list[tuple[int, str]] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def shape(self) -> tuple[int, int]:
        return self.images["science"].shape

    @property
    def n_catalog_rows(self) -> int:
        return len(self.table)

    def input_files(self) -> list[Path]:
        return [*(self.images[c].path for c in CHANNELS), self.catalog_path]


def discover_jobs(input_dir: str | Path, layout: str = "seed") -> list[JobSpec]:
    """Return the ``jid*`` folders of ``input_dir``, sorted by name.

    Raises
    ------
    FileNotFoundError
        When ``input_dir`` does not exist or is not a folder.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist or is not a folder")
    return [
        JobSpec(p.name, p.resolve(), layout)
        for p in sorted(root.iterdir(), key=lambda p: p.name)
        if p.name.startswith("jid") and p.is_dir()
    ]


def _content_error(exc: BaseException) -> bool:
    """True when an exception from astropy means bad content rather than a failing disk."""
    if isinstance(exc, OSError):
        return exc.errno is None or exc.errno in (errno.ENOENT, errno.EISDIR)
    return isinstance(exc, (ValueError, KeyError, IndexError, TypeError, fits.VerifyError))


def read_image_info(job_id: str, path: Path) -> ImageInfo:
    """Parse the primary header of ``path`` and check that its 2-D data is all on disk.

    Raises
    ------
    JobError
        Missing, empty, truncated or corrupt file; no 2-D image in the primary HDU.
    OSError
        A transient read error (worth a retry).
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError as exc:
        raise JobError(job_id, "file missing", path) from exc
    if size == 0:
        raise JobError(job_id, "file is empty (0 bytes)", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
                header = hdul[0].header
                info = hdul.fileinfo(0)
                offset = int(info["datLoc"])
    except Exception as exc:
        if _content_error(exc):
            raise JobError(job_id, f"not a readable FITS file ({exc})", path) from exc
        raise
    naxis = int(header.get("NAXIS", 0))
    if naxis != 2:
        raise JobError(job_id, f"primary HDU has NAXIS={naxis}, expected a 2-D image", path)
    nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    bitpix = int(header.get("BITPIX", 0))
    if bitpix not in _BITPIX:
        raise JobError(job_id, f"unsupported BITPIX={bitpix}", path)
    dtype = _BITPIX[bitpix]
    need = offset + nx * ny * np.dtype(dtype).itemsize
    if size < need:
        raise JobError(job_id, f"truncated: {size} bytes, the header needs {need}", path)
    scaled = float(header.get("BSCALE", 1.0)) != 1.0 or float(header.get("BZERO", 0.0)) != 0.0
    return ImageInfo(Path(path), (ny, nx), dtype, offset, scaled)


def open_image(info: ImageInfo) -> np.ndarray:
    """Map the pixels of an image, shape ``(ny, nx)``, without reading them.

    Returns a read-only ``numpy.memmap`` in the file's own (big-endian) dtype; scaled
    images (BSCALE/BZERO) are read into memory as float through astropy instead.
    """
    if info.scaled:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(fits.getdata(info.path, 0), dtype=np.float64)
    return np.memmap(info.path, dtype=info.dtype, mode="r", offset=info.offset, shape=info.shape)


def load_job(spec: JobSpec) -> JobData:
    """Resolve a job's files, check its four images, and parse its catalog.

    Raises
    ------
    JobError
        When the job cannot be used at all; per-row problems are returned in
        :attr:`JobData.row_rejects` instead.
    """
    layout = get_layout(spec.layout)
    paths, catalog = layout.resolve(spec.path)
    images = {c: read_image_info(spec.job_id, p) for c, p in paths.items()}
    shapes = {c: i.shape for c, i in images.items()}
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{c} {s[0]}x{s[1]}" for c, s in shapes.items())
        raise JobError(spec.job_id, f"images differ in shape (rows x columns): {listed}")
    table, rejects = layout.parse_catalog(spec.job_id, catalog)
    log.debug("%s: %d candidates, %d bad rows", spec.job_id, len(table), len(rejects))
    return JobData(spec, images, catalog, table, rejects)


def reject_job(spec: JobSpec, error: Exception) -> JobRejection:
    """Turn a job-level error into a rejection, counting the catalog's rows when readable."""
    reason = error.message if isinstance(error, JobError) else f"{type(error).__name__}: {error}"
    layout = get_layout(spec.layout)
    n_rows = 0
    try:
        table, _ = layout.parse_catalog(spec.job_id, spec.path / layout.catalog)
        n_rows = len(table)
    except (JobError, OSError):
        pass
    return JobRejection(spec.job_id, reason, n_rows)


#: Modules whose source code enters the cache key of the load task.
LOAD_MODULES = ("tasks.load", "tasks.layouts", "tasks.errors")


@task(
    name="load",
    cache_policy=ContentPolicy(modules=LOAD_MODULES),
    **IO_TASK_OPTIONS,
)
def load_task(spec: JobSpec) -> JobData | JobRejection:
    """Prefect task: :func:`load_job`, bad input returned as a :class:`JobRejection`."""
    try:
        return load_job(spec)
    except JobError as exc:
        log.warning("rejected %s", exc)
        return reject_job(spec, exc)
