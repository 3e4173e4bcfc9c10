"""What an input layout is, and how its text tables are read.

The :class:`Layout` base class, the labelling options, the parsed catalog a layout returns,
the simulator's bogus kinds, and the readers of delimited text tables whose errors name
the job, the file and the 0-based data row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.config import ROMAN_BAND_ZEROPOINTS
from croissant_cutouts.tasks.contract import CHANNELS
from croissant_cutouts.tasks.errors import CatalogError, JobError
from croissant_cutouts.tasks.errors import short_repr as _short

__all__ = [
    "BOGUS_KINDS",
    "SIMULATED_KINDS_FILE",
    "SIMULATED_KIND_COLUMN",
    "SIMULATED_REAL",
    "UNMATCHED_REAL",
    "LabelOptions",
    "Layout",
    "bogus_kind_column",
]

#: Simulator-only sidecar of a RAPID-layout job folder (``simulate`` writes it; real RAPID
#: folders never have it): a whitespace table with the header ``id kind`` and one row per
#: row of the PSF-fit catalog, ``id`` that catalog's ``id`` and ``kind`` either
#: :data:`SIMULATED_REAL` (the simulator matched the detection to a real source) or one of
#: :data:`BOGUS_KINDS` (the cause of a bogus detection). :class:`RapidLayout` reads it,
#: when present, into the ``bogus_kind`` column. The name starts with neither RAPID's
#: ``diffimage_``/``zogy_`` nor ``Roman_TDS_``, so no catalog or truth-file rule picks it up.
SIMULATED_KINDS_FILE = "simulated_candidate_kinds.txt"
#: ``kind`` of a detection the simulator matched to a real source.
SIMULATED_REAL = "real"
#: Causes of bogus detections the simulator records (:func:`simulate.catalogs.bogus_kinds`).
BOGUS_KINDS: tuple[str, ...] = (
    "saturated_star",
    "star_residual",
    "galaxy_residual",
    "cosmic_ray",
    "hot_pixel",
    "mask_edge",
    "noise",
)
#: ``bogus_kind`` of a row our labels call bogus (0) although the simulator matched it to a
#: real source: the two labellings disagree, e.g. because ``labels:`` in ``params.yaml``
#: uses a brighter ``mag_limit``, a smaller ``match_radius_px`` or another ``truth_origin``
#: than the simulation did, or a match sat exactly on the radius or magnitude limit.
UNMATCHED_REAL = "unmatched_real"
#: Column of a simulated seed-layout ``psfcat.csv`` holding the simulator's ``kind`` of each
#: row (as in :data:`SIMULATED_KINDS_FILE`); the seed's own catalogs never have it.
SIMULATED_KIND_COLUMN = "simulated_kind"


def bogus_kind_column(kinds: np.ndarray, label: pd.Series) -> pd.arrays.StringArray:
    """``bogus_kind`` of each row from the simulator's ``kinds`` and our ``label``.

    A row labelled bogus (0) gets its kind, :data:`UNMATCHED_REAL` where the simulator
    called it real; every other row (real, or unlabelled) gets NA.
    """
    bogus = (label == 0).fillna(False).to_numpy(bool)
    kind = np.where(kinds == SIMULATED_REAL, UNMATCHED_REAL, kinds)
    return pd.array(np.where(bogus, kind, None), dtype="string")


@dataclass(frozen=True)
class LabelOptions:
    """How truth labels candidates (``labels:`` section of ``params.yaml``).

    ``truth_origin`` is the pixel coordinate of the first pixel centre in truth files
    (galsim: 1); ``mag_limit`` the AB magnitude below which truth labels real (a source
    exactly at it does not); ``match_radius_px`` the one-to-one matching radius in pixels
    (inclusive); ``band_zeropoints`` the galsim Roman bandpass AB zero point of each filter
    (``(FILTER, mag)`` pairs; a mapping is accepted and sorted), added to ``ZPTMAG`` for
    injected fakes; ``truth_index_zeropoint`` the zero point added to the simulation truth
    index's ``mag`` (``None``: the science header's ``ZPTMAG``).
    """

    truth_origin: float = 1.0
    mag_limit: float = 26.0
    match_radius_px: float = 4.0
    band_zeropoints: tuple[tuple[str, float], ...] = tuple(sorted(ROMAN_BAND_ZEROPOINTS.items()))
    truth_index_zeropoint: float | None = None

    def __post_init__(self) -> None:
        pairs = self.band_zeropoints
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        object.__setattr__(
            self, "band_zeropoints", tuple(sorted((str(k), float(v)) for k, v in items))
        )


class ParsedCatalog(NamedTuple):
    """What a layout makes of a job's catalogs.

    ``table`` has the columns :data:`tasks.contract.CANDIDATE_COLUMNS`, one row per catalog
    row; ``rejects`` lists ``(catalog_row, reason)`` of rows that cannot be used; ``notes``
    says what was unusual but handled (e.g. a finder-less RAPID job).
    """

    table: pd.DataFrame
    rejects: list[tuple[int, str]]
    notes: list[str]


class Layout:
    """Base class of an input layout.

    Subclasses set :attr:`name` and :attr:`images` (channel -> candidate file names, first
    existing wins) and implement :meth:`catalog_files`, :meth:`parse_catalog` and
    :meth:`count_rows`.
    """

    name: ClassVar[str]
    images: ClassVar[dict[str, tuple[str, ...]]]

    def resolve_images(self, job_dir: Path) -> dict[str, Path]:
        """Return the image path of each channel.

        Raises
        ------
        JobError
            When an image is missing (the message lists the names tried).
        """
        job_id = job_dir.name
        paths: dict[str, Path] = {}
        for channel in CHANNELS:
            names = self.images[channel]
            found = next((job_dir / n for n in names if (job_dir / n).is_file()), None)
            if found is None:
                raise JobError(job_id, f"{channel} image missing (looked for {', '.join(names)})")
            paths[channel] = found
        return paths

    def catalog_files(self, job_dir: Path) -> list[Path]:
        """Every non-image file the layout reads for a job (raises JobError if one is missing)."""
        raise NotImplementedError

    @staticmethod
    def header_files(job_dir: Path) -> list[Path]:
        """Files whose primary header supplies job cards the science image lacks."""
        return []

    def input_files(self, job_dir: Path) -> list[Path]:
        """Images in channel order, then :meth:`catalog_files`."""
        images = self.resolve_images(job_dir)
        return [*(images[c] for c in CHANNELS), *self.catalog_files(job_dir)]

    def parse_catalog(
        self, job_id: str, job_dir: Path, options: LabelOptions, headers: dict[str, object]
    ) -> ParsedCatalog:
        """Candidate table (columns :data:`CANDIDATE_COLUMNS`), per-row rejections, notes.

        ``headers`` holds FITS cards of the job's images (``ZPTMAG``, ``FILTER``, ...).
        """
        raise NotImplementedError

    def count_rows(self, job_id: str, job_dir: Path) -> int:
        """Rows of the job's candidate catalog (for accounting of a rejected job)."""
        raise NotImplementedError


def _decode(job_id: str, path: Path, raw: bytes) -> str:
    """UTF-8 text of a catalog file (a UTF-8 BOM is dropped); no NUL bytes."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CatalogError(job_id, f"not UTF-8 text (byte {exc.start})", path) from exc
    if "\x00" in text:
        raise CatalogError(job_id, "contains NUL bytes: not a text table", path)
    return text


def _read_text_table(job_id: str, path: Path, sep: str = ",") -> pd.DataFrame:
    """Read a delimited text table as strings, with errors naming the job, file and row.

    Rows are split by the :mod:`csv` module over the whole text (``\\n``, ``\\r\\n`` or
    ``\\r`` end a row; a quoted field may span lines); empty lines are skipped, also before
    the header. Row numbers in messages are 0-based data rows, as ``catalog_row``.

    Raises
    ------
    CatalogError
        Missing, empty, not UTF-8, NUL bytes, not CSV (e.g. a field longer than
        :func:`csv.field_size_limit`), a row whose field count differs from the header's,
        duplicate column names.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise CatalogError(job_id, "catalog missing", path) from exc
    if not raw.strip():
        raise CatalogError(job_id, "catalog is empty (no header, no rows)", path)
    text = _decode(job_id, path, raw)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        header = next((r for r in reader if r), [])
        rows = [r for r in reader if r]
    except csv.Error as exc:
        raise CatalogError(job_id, f"line {reader.line_num}: not CSV ({exc})", path) from exc
    width = len(header)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise CatalogError(
                job_id, f"has {len(row)} fields, the header has {width}", path, row=i
            )
    names = [h.strip() for h in header]
    if len(set(names)) != len(names):
        raise CatalogError(job_id, f"duplicate column names in header {names}", path)
    return pd.DataFrame(rows, columns=names, dtype=object).map(str.strip)


def _numeric(job_id: str, path: Path, raw: pd.DataFrame, column: str) -> tuple[np.ndarray, dict]:
    """Convert a string column to float64; empty -> NaN; returns bad rows -> reason."""
    text = raw[column].astype(str)
    values = pd.to_numeric(text.where(text != "", None), errors="coerce").to_numpy(np.float64)
    bad = (~np.isfinite(values) if column in ("x", "y") else np.zeros(len(text), bool)) | (
        np.isnan(values)
        & (text != "").to_numpy()
        & ~text.str.lower().isin(["nan", "-nan", "+nan"]).to_numpy()
    )
    reasons = {
        int(i): f"{column} {_short(text.iloc[i])} is not a finite number"
        for i in np.flatnonzero(bad)
    }
    return values, reasons


def _whole(values: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """An ``Int64`` array of float values: NA where a value is not a whole number in int64 range.

    Parameters
    ----------
    values : ndarray of float64

    Returns
    -------
    pandas.arrays.IntegerArray
    """
    values = np.asarray(values, np.float64)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0**63)
    out = pd.array(np.where(whole, values, 0).astype(np.int64), dtype="Int64")
    out[~whole] = pd.NA
    return out

