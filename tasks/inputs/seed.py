"""The seed's input layout: four images and ``psfcat.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.contract import CANDIDATE_COLUMNS
from croissant_cutouts.tasks.errors import CatalogError, JobError
from croissant_cutouts.tasks.inputs.catalogs import (
    BOGUS_KINDS,
    SIMULATED_KIND_COLUMN,
    SIMULATED_REAL,
    LabelOptions,
    Layout,
    ParsedCatalog,
    _numeric,
    _read_text_table,
    _whole,
    bogus_kind_column,
)

__all__ = [
    "SeedLayout",
]

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

    def catalog_files(self, job_dir: Path) -> list[Path]:
        path = job_dir / self.catalog
        if not path.is_file():
            raise JobError(job_dir.name, f"candidate catalog missing ({self.catalog})")
        return [path]

    def count_rows(self, job_id: str, job_dir: Path) -> int:
        return len(_read_text_table(job_id, job_dir / self.catalog, sep=","))

    def parse_catalog(
        self,
        job_id: str,
        job_dir: Path,
        options: LabelOptions | None = None,
        headers: dict[str, object] | None = None,
    ) -> ParsedCatalog:
        """Parse ``psfcat.csv``.

        Returns
        -------
        table : pandas.DataFrame
            One row per catalog row, columns :data:`tasks.contract.CANDIDATE_COLUMNS`;
            ``label`` is 0 when ``match == -1`` else 1.
        rejects : list of (int, str)
            Catalog rows that cannot be used, with a reason (missing or non-finite position,
            non-numeric ``match`` or feature value).
        notes : list of str
            Always empty.
        """
        path = job_dir / self.catalog
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
                out[column] = _whole(values)
            else:
                out[column] = values
        rejects = sorted(reasons.items())
        out["labelled"] = True
        if SIMULATED_KIND_COLUMN in raw.columns:
            kinds = _simulated_kinds(job_id, path, raw[SIMULATED_KIND_COLUMN])
            out["bogus_kind"] = bogus_kind_column(kinds, out["label"])
        table = out.reindex(columns=list(CANDIDATE_COLUMNS)).astype(CANDIDATE_COLUMNS)
        return ParsedCatalog(table, rejects, [])


def _simulated_kinds(job_id: str, path: Path, column: pd.Series) -> np.ndarray:
    """The :data:`SIMULATED_KIND_COLUMN` of a simulated ``psfcat.csv``, checked.

    Raises
    ------
    CatalogError
        Naming the first row whose kind is neither ``real`` nor one of ``BOGUS_KINDS``.
    """
    kinds = column.astype(str).str.strip().to_numpy(object)
    unknown = np.flatnonzero(~np.isin(kinds, (SIMULATED_REAL, *BOGUS_KINDS)))
    if unknown.size:
        row = int(unknown[0])
        raise CatalogError(
            job_id,
            f"{SIMULATED_KIND_COLUMN} {column.iloc[row]!r} is not one of "
            f"{', '.join((SIMULATED_REAL, *BOGUS_KINDS))}",
            path,
            row,
        )
    return kinds

