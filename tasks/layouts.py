"""Input layouts: where a job folder keeps its four images and its candidate catalog.

A layout is a small class registered by name. It resolves file names and parses the
catalog into the tool's internal candidate table; everything after that is shared.
Positions in the returned table are 0-based (``x`` column, ``y`` row, pixel centres on
integers), whatever the file's own convention.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from tasks.errors import CatalogError, JobError
from tasks.schema import CANDIDATE_COLUMNS

__all__ = ["CHANNELS", "LAYOUTS", "Layout", "SeedLayout", "get_layout"]

#: Channel order of every cutout tensor (last axis).
CHANNELS: tuple[str, ...] = ("science", "reference", "difference", "score")

class Layout:
    """Base class of an input layout.

    Subclasses set :attr:`name`, :attr:`images` (channel -> candidate file names, first
    existing wins) and :attr:`catalog`, and implement :meth:`parse_catalog`.
    """

    name: ClassVar[str]
    images: ClassVar[dict[str, tuple[str, ...]]]
    catalog: ClassVar[str]

    def resolve(self, job_dir: Path) -> tuple[dict[str, Path], Path]:
        """Return the image path of each channel and the catalog path.

        Raises
        ------
        JobError
            When a file is missing (the message lists the names tried).
        """
        job_id = job_dir.name
        paths: dict[str, Path] = {}
        for channel in CHANNELS:
            names = self.images[channel]
            found = next((job_dir / n for n in names if (job_dir / n).is_file()), None)
            if found is None:
                raise JobError(job_id, f"{channel} image missing (looked for {', '.join(names)})")
            paths[channel] = found
        catalog = job_dir / self.catalog
        if not catalog.is_file():
            raise JobError(job_id, f"candidate catalog missing ({self.catalog})")
        return paths, catalog

    def parse_catalog(self, job_id: str, path: Path) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
        """Parse a catalog into the candidate table and per-row rejections."""
        raise NotImplementedError


def _read_text_table(job_id: str, path: Path, sep: str = ",") -> pd.DataFrame:
    """Read a delimited text table as strings, with errors naming the job, file and row."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise CatalogError(job_id, "catalog missing", path) from exc
    if not raw.strip():
        raise CatalogError(job_id, "catalog is empty (no header, no rows)", path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CatalogError(job_id, f"not UTF-8 text (byte {exc.start})", path) from exc
    if "\x00" in text:
        raise CatalogError(job_id, "contains NUL bytes: not a text table", path)
    lines = text.splitlines()
    header = next(csv.reader([lines[0]], delimiter=sep))
    width = len(header)
    for i, row in enumerate(csv.reader(lines[1:], delimiter=sep)):
        if row and len(row) != width:
            raise CatalogError(
                job_id, f"has {len(row)} fields, the header has {width}", path, row=i
            )
    names = [h.strip() for h in header]
    if len(set(names)) != len(names):
        raise CatalogError(job_id, f"duplicate column names in header {names}", path)
    rows = [r for r in csv.reader(lines[1:], delimiter=sep) if r]
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
        int(i): f"{column} {text.iloc[i]!r} is not a finite number" for i in np.flatnonzero(bad)
    }
    return values, reasons


class SeedLayout(Layout):
    """The simplified layout the seed scripts read: four images and ``psfcat.csv``.

    ``psfcat.csv`` is comma-separated with a header: ``x``, ``y`` (0-based), ``match``
    (-1 = bogus, anything else = real), optional ``flux``, ``fwhm``, ``elongation``, ``flags``.
    The reference is the gain-matched resampled mosaic when present, else the plain one.
    """

    name = "seed"
    images: ClassVar[dict[str, tuple[str, ...]]] = {
        "science": ("bkg_subbed_science_image.fits",),
        "reference": (
            "awaicgen_output_mosaic_image_resampled_gainmatched.fits",
            "awaicgen_output_mosaic_image_resampled.fits",
        ),
        "difference": ("diffimage_masked.fits", "zogy_diffimage_masked.fits"),
        "score": ("scorrimage_masked.fits", "zogy_scorrimage_masked.fits"),
    }
    catalog = "psfcat.csv"

    def parse_catalog(self, job_id: str, path: Path) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
        """Parse ``psfcat.csv``.

        Returns
        -------
        table : pandas.DataFrame
            One row per catalog row, columns :data:`tasks.schema.CANDIDATE_COLUMNS`;
            ``label`` is 0 when
            ``match == -1`` else 1.
        rejects : list of (int, str)
            Catalog rows that cannot be used, with a reason (missing or non-finite position,
            non-numeric ``match`` or feature value).
        """
        raw = _read_text_table(job_id, path, sep=",")
        missing = [c for c in ("x", "y", "match") if c not in raw.columns]
        if missing:
            raise CatalogError(
                job_id, f"lacks column(s) {', '.join(missing)}; has {list(raw.columns)}", path
            )
        n = len(raw)
        if n == 0:
            raise CatalogError(job_id, "catalog has a header but no rows", path)
        reasons: dict[int, str] = {}
        out = pd.DataFrame({"catalog_row": np.arange(n, dtype=np.int64)})
        for column in ("x", "y"):
            out[column], bad = _numeric(job_id, path, raw, column)
            for i, r in bad.items():
                reasons.setdefault(i, r)
        match, bad_match = _numeric(job_id, path, raw, "match")
        bad_match.update(
            {
                int(i): "match is empty"
                for i in np.flatnonzero(np.isnan(match))
                if i not in bad_match
            }
        )
        for i, r in bad_match.items():
            reasons.setdefault(i, r)
        out["label"] = pd.array(np.where(match == -1, 0, 1), dtype="Int64")
        for column in ("flux", "fwhm", "elongation", "flags"):
            if column in raw.columns:
                values, bad = _numeric(job_id, path, raw, column)
                for i, r in bad.items():
                    reasons.setdefault(i, r)
            else:
                values = np.full(n, np.nan)
            if column == "flags":
                whole = np.isfinite(values) & (values == np.round(values))
                flags = pd.array(np.where(whole, values, 0).astype(np.int64), dtype="Int64")
                flags[~whole] = pd.NA
                out[column] = flags
            else:
                out[column] = values
        rejects = sorted(reasons.items())
        out["labelled"] = True
        return out.reindex(columns=list(CANDIDATE_COLUMNS)).astype(CANDIDATE_COLUMNS), rejects


LAYOUTS: dict[str, type[Layout]] = {SeedLayout.name: SeedLayout}


def get_layout(name: str) -> Layout:
    """Return an instance of the layout registered as ``name``."""
    try:
        return LAYOUTS[name]()
    except KeyError:
        raise ValueError(f"unknown layout {name!r}; known: {sorted(LAYOUTS)}") from None
