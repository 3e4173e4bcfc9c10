"""Load step: find job folders, check their images, read their catalogs.

Images are never read here: the header of each is parsed, its data location checked
against the file size, and :func:`open_image` later maps the pixels from disk
(``numpy.memmap``), so a task passes only paths and a small candidate table.

A job in an object store (a spec with :attr:`JobSpec.remote`) is first staged into its
local folder (:func:`tasks.inputs.remote.stage_job`) and then read like any local job.
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from astropy.io import fits
from prefect import task

from croissant_cutouts.tasks.contract import CANDIDATE_COLUMNS, CHANNELS
from croissant_cutouts.tasks.errors import JobError, JobRejection
from croissant_cutouts.tasks.infra.caching import IO_TASK_OPTIONS, ContentPolicy
from croissant_cutouts.tasks.infra.versions import step_modules
from croissant_cutouts.tasks.inputs.catalogs import LabelOptions
from croissant_cutouts.tasks.inputs.layouts import detect_layout, get_layout
from croissant_cutouts.tasks.inputs.remote import RemoteJob, is_staged, stage_job

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

#: Header cards kept from each image (job metadata and the photometric zero point).
_CARDS = ("FILTER", "ZPTMAG", "MJD-OBS", "FIELD", "EXPTIME", "SCA_NUM")
#: Cards of the science exposure: taken from the science image, else from the layout's
#: header files (RAPID's ``*_reformatted.fits``), never from the other images (a RAPID
#: reference is rescaled to its own zero point).
SCIENCE_CARDS = ("FILTER", "ZPTMAG", "MJD-OBS")

_BITPIX = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


@dataclass(frozen=True)
class JobSpec:
    """Where one job lives: small, hashable, cheap to pass between tasks.

    ``remote`` is set for a job in an object store: ``path`` is then the local folder it
    is staged into (by :func:`load_job`), which may not exist yet.
    """

    job_id: str
    path: Path
    layout: str = "auto"
    labels: LabelOptions = field(default_factory=LabelOptions)
    meta: tuple[tuple[str, object], ...] = ()  # filter, field, mjd from the field lists
    remote: RemoteJob | None = None

    def resolved_layout(self) -> str:
        """The layout name; ``auto`` is resolved from the files in the job folder.

        For a remote job, from its listed file names (no download needed).
        """
        if self.layout != "auto":
            return self.layout
        if self.remote is not None and self.remote.layout != "auto":
            return self.remote.layout
        return detect_layout(self.path)

    def remote_identity(self) -> dict[str, object] | None:
        """For a remote job, what identifies its input (for cache keys), else ``None``.

        The remote URL, every file's ``(name, size, etag)``, and the staging folder (a
        loaded job's result points to files there).
        """
        if self.remote is None:
            return None
        return {"url": self.remote.url, "files": self.remote.identity(), "staged": str(self.path)}

    def stage(self) -> None:
        """Copy a remote job into :attr:`path` unless a current copy is there (no-op if local).

        Raises
        ------
        JobError
            A listed object is gone from the store.
        OSError
            A transient failure (worth a retry).
        """
        if self.remote is not None:
            stage_job(self.remote, self.path, self.job_id)

    def input_files(self) -> list[Path]:
        """The files the layout reads for this job (raises JobError when one is missing)."""
        return get_layout(self.resolved_layout()).input_files(self.path)

    def describe(self) -> dict[str, object]:
        """What besides file contents decides the job's results (for cache keys).

        Includes the header cards of the layout's header files (RAPID's reformatted science
        image), whose cards stand in for missing science cards: a header, not the file's
        64 MB of pixels, enters the key.
        """
        layout = self.resolved_layout()
        fallback = [] if self.remote else get_layout(layout).header_files(self.path)
        return {
            "layout": layout,
            "labels": repr(self.labels),
            "meta": self.meta,
            "header_files": [(p.name, _header_cards(self.job_id, p)) for p in fallback],
        }


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
    cards: tuple[tuple[str, object], ...] = ()  # FILTER, ZPTMAG, MJD-OBS, FIELD when present


@dataclass
class JobData:
    """A job whose images and catalog passed the checks of the load step."""

    spec: JobSpec
    images: dict[str, ImageInfo]
    catalog_path: Path
    table: pd.DataFrame
    row_rejects: list[tuple[int, str]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
        return list(self.files) or [*(self.images[c].path for c in CHANNELS), self.catalog_path]

    def describe(self) -> dict[str, object]:
        return self.spec.describe()

    def ensure_local(self) -> None:
        """Stage a remote job again when its staged copy is gone (a load served from cache).

        Called by :class:`tasks.infra.caching.ContentPolicy` before it hashes the files; a no-op
        for a local job or a current staged copy.
        """
        remote = self.spec.remote
        if remote is not None and not is_staged(remote, self.spec.path):
            log.info("%s: staged copy missing, staging again", self.job_id)
            self.spec.stage()


def discover_jobs(input_dir: str | Path, layout: str = "auto") -> list[JobSpec]:
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
    return isinstance(
        exc, (ValueError, KeyError, IndexError, TypeError, EOFError, fits.VerifyError)
    )


#: Bytes in a FITS block: headers and data areas are padded to whole blocks.
_BLOCK = 2880


def _read_header(fh: BinaryIO) -> fits.Header:
    """The FITS header at the position of ``fh``; ``fh`` is left where its data starts.

    Only this one header is read, never the HDUs after it: astropy's ``HDUList`` walks
    every HDU for ``fileinfo`` and, for a header declaring a negative data size, reads the
    same HDU again and again until memory runs out.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fits.Header.fromfile(fh, endcard=True, padding=True)


def _int_card(header: fits.Header, key: str, default: int | None = None) -> int:
    """An integer header card (``ValueError`` naming it when absent or not an integer)."""
    value = header.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"header card {key} = {value!r} is not an integer")
    return value


def _float_card(header: fits.Header, key: str, default: float) -> float:
    """A real header card (``ValueError`` naming it when not a finite number)."""
    value = header.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"header card {key} = {value!r} is not a finite number")
    return float(value)


def _data_bytes(header: fits.Header) -> int:
    """Bytes of an HDU's data area, unpadded (``ValueError`` for impossible cards)."""
    naxis = _int_card(header, "NAXIS")
    dims = [_int_card(header, f"NAXIS{i}") for i in range(1, naxis + 1)]
    extra = (_int_card(header, "PCOUNT", 0), _int_card(header, "GCOUNT", 1))
    if naxis < 0 or min([*dims, *extra], default=0) < 0:
        raise ValueError("negative NAXIS, NAXISn, PCOUNT or GCOUNT")
    cells = int(np.prod(dims, dtype=object)) if dims else 0
    return abs(_int_card(header, "BITPIX")) // 8 * extra[1] * (extra[0] + cells)


def _where_is_the_image(fh: BinaryIO, size: int, offset: int) -> str:
    """Why a file without a primary image cannot be used: where its image is, if anywhere.

    Reads the headers of the first few extensions (never their data) after the empty
    primary HDU, looking for a tile-compressed image or a plain image extension; returns a
    reason for ``rejects.csv``.
    """
    position = offset
    for n in range(1, 9):
        if position >= size:
            break
        try:
            fh.seek(position)
            header = _read_header(fh)
            data = _data_bytes(header)
        except Exception:  # a damaged extension: say only what the primary HDU lacks
            break
        name = header.get("EXTNAME")
        label = f" ({name})" if isinstance(name, str) and name.strip() else ""
        if header.get("ZIMAGE") is True:
            return (
                f"the image is tile-compressed in HDU {n}{label}; this tool reads pixels from "
                "the primary HDU only: decompress the file first (e.g. with funpack)"
            )
        if str(header.get("XTENSION", "")).strip() == "IMAGE" and data > 0:
            return (
                f"the image is in extension HDU {n}{label}; this tool reads pixels from the "
                "primary HDU only"
            )
        position = fh.tell() + -(-data // _BLOCK) * _BLOCK
    return "primary HDU has NAXIS=0 (no data), expected a 2-D image"


def read_image_info(job_id: str, path: Path) -> ImageInfo:
    """Parse the primary header of ``path`` and check that its 2-D data is all on disk.

    Only the primary header is parsed (and, when it has no data, the headers of a few
    extensions, to say where the image is); nothing else of the file is read.

    Raises
    ------
    JobError
        Missing, empty, truncated or corrupt file; no ``SIMPLE = T``; no 2-D image in the
        primary HDU (a tile-compressed image or an image extension is named as such); an
        image with no pixels; a BITPIX, NAXISn, BSCALE or BZERO card that is not a
        supported number.
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
        with open(path, "rb") as fh:
            if not fh.read(80).startswith(b"SIMPLE  ="):
                raise JobError(job_id, "not a FITS file (it does not begin with SIMPLE =)", path)
            fh.seek(0)
            header = _read_header(fh)
            offset = fh.tell()
            if header.get("SIMPLE") is not True:
                why = f"SIMPLE = {header.get('SIMPLE')!r}"
                raise JobError(job_id, f"not a standard FITS file ({why})", path)
            naxis = header.get("NAXIS")
            if naxis == 0:
                raise JobError(job_id, _where_is_the_image(fh, size, offset), path)
            if naxis != 2:
                why = f"primary HDU has NAXIS={naxis}, expected a 2-D image"
                raise JobError(job_id, why, path)
            try:
                nx, ny = _int_card(header, "NAXIS1"), _int_card(header, "NAXIS2")
                bitpix = _int_card(header, "BITPIX", 0)
                bscale = _float_card(header, "BSCALE", 1.0)
                bzero = _float_card(header, "BZERO", 0.0)
                pcount, gcount = _int_card(header, "PCOUNT", 0), _int_card(header, "GCOUNT", 1)
                if "BLANK" in header:
                    _int_card(header, "BLANK")
            except ValueError as exc:
                raise JobError(job_id, str(exc), path) from exc
            if (pcount, gcount) != (0, 1):
                why = f"PCOUNT = {pcount}, GCOUNT = {gcount}: not a plain image (random groups?)"
                raise JobError(job_id, why, path)
            cards = tuple((k, header[k]) for k in _CARDS if k in header)
    except JobError:
        raise
    except Exception as exc:
        if _content_error(exc):
            whole = size % _BLOCK == 0
            hint = "" if whole else f"; {size} bytes is no whole FITS block: truncated?"
            raise JobError(job_id, f"not a readable FITS file ({exc}){hint}", path) from exc
        raise
    if nx < 1 or ny < 1:
        raise JobError(job_id, f"image has no pixels ({ny} rows x {nx} columns)", path)
    if bitpix not in _BITPIX:
        raise JobError(job_id, f"unsupported BITPIX={bitpix}", path)
    dtype = _BITPIX[bitpix]
    need = offset + nx * ny * np.dtype(dtype).itemsize
    if size < need:
        raise JobError(job_id, f"truncated: {size} bytes, the header needs {need}", path)
    scaled = bscale != 1.0 or bzero != 0.0
    if scaled:  # read through astropy (open_image): it must agree on the primary HDU
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
                    seen = hdul[0].shape
        except Exception as exc:
            if not _content_error(exc):
                raise
            seen = f"{type(exc).__name__}: {exc}"
        if seen != (ny, nx):
            raise JobError(job_id, f"astropy cannot read the scaled image ({seen})", path)
    return ImageInfo(Path(path), (ny, nx), dtype, offset, scaled, cards)


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


def _header_number(job_id: str, images: dict[str, ImageInfo], card: str, value: object) -> float:
    """A header card's value as a float (``NaN`` stays ``NaN``).

    Raises
    ------
    JobError
        Naming the image that holds the card, when the value is not a number.
    """
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        path = next((i.path for i in images.values() if card in dict(i.cards)), None)
        raise JobError(job_id, f"header card {card} = {value!r} is not a number", path) from exc


def _header_cards(job_id: str, path: Path) -> dict[str, object]:
    """The :data:`_CARDS` of a FITS file's primary header (only the header is read).

    Raises
    ------
    JobError
        The file is not a readable FITS file.
    """
    try:
        with open(path, "rb") as fh:
            header = _read_header(fh)
    except Exception as exc:
        if isinstance(exc, OSError) and not _content_error(exc):
            raise
        raise JobError(job_id, f"header not readable ({exc})", path) from exc
    return {k: header[k] for k in _CARDS if k in header}


def job_cards(
    job_id: str, images: dict[str, ImageInfo], header_files: list[Path]
) -> tuple[dict[str, object], list[str]]:
    """Header cards of a job, and a note naming any file other than the science image used.

    :data:`SCIENCE_CARDS` come from the science image, else from the first of
    ``header_files`` that has them; the other cards (``FIELD`` ...) from the science image,
    else the difference, reference or score image.

    Returns
    -------
    cards : dict
    notes : list of str
    """
    cards: dict[str, object] = {}
    for channel in ("score", "reference", "difference"):
        cards.update((k, v) for k, v in images[channel].cards if k not in SCIENCE_CARDS)
    science = images["science"]
    cards.update(science.cards)
    notes = []
    for path in header_files:
        missing = [c for c in SCIENCE_CARDS if c not in cards]
        if not missing:
            break
        found = {k: v for k, v in _header_cards(job_id, path).items() if k in missing}
        if found:
            cards.update(found)
            notes.append(f"{', '.join(found)} from {path.name}: not in {science.path.name}")
    return cards, notes


def load_job(spec: JobSpec) -> JobData:
    """Resolve a job's files, check its four images, parse and label its catalog.

    A remote job is staged into ``spec.path`` first (:meth:`JobSpec.stage`).

    Job-level columns are filled here: ``reference_file`` (the reference image used), and
    ``filter``, ``field``, ``mjd`` from the field lists when the run was given them, else from
    the FITS headers (``job_cards``: science FILTER, MJD-OBS, else RAPID's reformatted
    science image; difference FIELD).

    Raises
    ------
    JobError
        When the job cannot be used at all; per-row problems are returned in
        :attr:`JobData.row_rejects` instead.
    OSError
        A transient read error, or for a remote job a failing download (worth a retry).
    """
    spec.stage()
    layout = get_layout(spec.resolved_layout())
    paths = layout.resolve_images(spec.path)
    files = layout.input_files(spec.path)
    images = {c: read_image_info(spec.job_id, p) for c, p in paths.items()}
    shapes = {c: i.shape for c, i in images.items()}
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{c} {s[0]}x{s[1]}" for c, s in shapes.items())
        raise JobError(spec.job_id, f"images differ in shape (rows x columns): {listed}")
    headers, notes = job_cards(spec.job_id, images, layout.header_files(spec.path))
    table, rejects, parse_notes = layout.parse_catalog(
        spec.job_id, spec.path, spec.labels, headers
    )
    meta = dict(spec.meta)
    table["reference_file"] = images["reference"].path.name
    for column, card in (("filter", "FILTER"), ("field", "FIELD"), ("mjd", "MJD-OBS")):
        value = meta.get(column, headers.get(card))
        if value is not None and column == "mjd":
            value = _header_number(spec.job_id, images, card, value)
        if value is not None:
            table[column] = value
    table = table.astype(
        {c: CANDIDATE_COLUMNS[c] for c in ("reference_file", "filter", "field", "mjd")}
    )
    catalog = layout.catalog_files(spec.path)[0]
    log.debug("%s: %d candidates, %d bad rows", spec.job_id, len(table), len(rejects))
    return JobData(spec, images, catalog, table, rejects, files, [*notes, *parse_notes])


def reject_job(spec: JobSpec, error: Exception) -> JobRejection:
    """Turn a job-level error into a rejection, counting the catalog's rows when readable."""
    reason = error.message if isinstance(error, JobError) else f"{type(error).__name__}: {error}"
    n_rows = 0
    try:
        n_rows = get_layout(spec.resolved_layout()).count_rows(spec.job_id, spec.path)
    except (JobError, OSError, ValueError):
        pass
    return JobRejection(spec.job_id, reason, n_rows)


@task(
    name="load",
    cache_policy=ContentPolicy(modules=step_modules("load")),
    **IO_TASK_OPTIONS,
)
def load_task(spec: JobSpec) -> JobData | JobRejection:
    """Prefect task: :func:`load_job`, bad input returned as a :class:`JobRejection`."""
    try:
        return load_job(spec)
    except JobError as exc:
        log.warning("rejected %s", exc)
        return reject_job(spec, exc)
