"""Catalog features: what the pipeline's finder and PSF fit measured for each candidate.

The index carries, beside each cutout, the columns of RAPID's source-finder and PSF-fit
catalogs (:data:`CATALOG_FEATURES`, normalised to one set of names by the input readers).
The gradient-boosting baseline is fitted on them; with ``train.catalog`` the CNN's head reads
them too (:class:`CatalogScale`).

Conventions
-----------
- A feature matrix is float64 of shape (n, k), one column per name in the order given;
  a value that is missing, not a number or not finite (and every value of a column the index
  lacks) is NaN.
- Units are those of the index (fluxes in the difference image's counts, sizes in pixels,
  magnitudes AB); :class:`CatalogScale` makes them comparable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from astropy.stats import mad_std
from torch import nn

__all__ = [
    "CATALOG_FEATURES",
    "CatalogScale",
    "catalog_features",
    "feature_matrix",
]

#: Index columns a catalog-feature model may use: measured by the pipeline's finder and
#: PSF fit. Positions (x, y, ra, dec, centroids), provenance and truth columns are excluded.
CATALOG_FEATURES = (
    "flux",
    "fwhm",
    "elongation",
    "flags",
    "sharpness",
    "roundness1",
    "roundness2",
    "npix",
    "peak",
    "finder_flux",
    "mag",
    "daofind_mag",
    "flux_fit",
    "flux_err",
    "x_err",
    "y_err",
    "qfit",
    "cfit",
    "local_bkg",
    "npixfit",
)


def feature_matrix(frame: pd.DataFrame, names: Any) -> np.ndarray:
    """The columns ``names`` of ``frame`` as float64 (n, k); missing or non-finite -> NaN.

    A name that is not a column of ``frame`` gives a column of NaN (a job without a finder
    catalog, or an index written before the column existed).
    """
    names = list(names)
    out = np.full((len(frame), len(names)), np.nan, np.float64)
    for j, name in enumerate(names):
        if name in frame:
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64)
            out[:, j] = np.where(np.isfinite(values), values, np.nan)
    return out


def catalog_features(frame: pd.DataFrame, rows: np.ndarray | None = None) -> list[str]:
    """Catalog feature columns of ``frame`` with at least one finite value in ``rows``."""
    sel = frame if rows is None else frame[rows]
    names = [name for name in CATALOG_FEATURES if name in sel]
    finite = np.isfinite(feature_matrix(sel, names)).any(axis=0)
    return [name for name, ok in zip(names, finite, strict=True) if ok]


class CatalogScale(nn.Module):
    """Catalog features in one robust unit, and which of them are missing.

    ``forward`` maps raw features (B, k) to (B, 2k): ``asinh((value - centre) / scale)``
    with NaN replaced by 0, then a 0/1 indicator per feature that is 1 where the value was
    missing. ``centre`` is the training rows' median and ``scale`` their
    median-absolute-deviation standard deviation (``astropy.stats.mad_std``; the standard
    deviation where that is 0, e.g. a flag that is mostly 0; 1 where both are), both
    buffers, so ``model.pt`` carries them. The ``asinh`` is linear within a few scales of the
    centre and logarithmic beyond: fluxes and errors spread over decades, and a network's
    input must not.

    Parameters
    ----------
    k : int
        Number of features.
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        self.register_buffer("centre", torch.zeros(k))
        self.register_buffer("scale", torch.ones(k))

    def fit(self, raw: np.ndarray) -> CatalogScale:
        """Set ``centre`` and ``scale`` from the training rows' raw features (n, k)."""
        raw = np.asarray(raw, np.float64)
        seen = np.isfinite(raw).any(axis=0)  # a column never measured keeps 0 and 1
        centre, scale = np.zeros(raw.shape[1]), np.ones(raw.shape[1])
        if seen.any():
            known = raw[:, seen]
            spread = mad_std(known, axis=0, ignore_nan=True)
            spread = np.where(spread > 0, spread, np.nanstd(known, axis=0))
            centre[seen] = np.nanmedian(known, axis=0)
            scale[seen] = np.where(spread > 0, spread, 1.0)
        self.centre.copy_(torch.as_tensor(centre, dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        return self

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, k) raw features, NaN where missing -> (B, 2k) scaled values and indicators."""
        missing = torch.isnan(raw)
        value = torch.asinh((raw - self.centre) / self.scale)
        return torch.cat([torch.where(missing, torch.zeros_like(value), value),
                          missing.to(value.dtype)], dim=1)
