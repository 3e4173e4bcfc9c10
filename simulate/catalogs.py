"""Candidate catalogs as RAPID makes them, and labels from the simulation's truth.

- The finder catalog: photutils ``DAOStarFinder`` on D, threshold 5 x the sigma-clipped
  standard deviation of D, FWHM 2 px (RAPID's ``diffimage_masked_psfcat_finder.txt``).
- The PSF-fit catalog: photutils ``PSFPhotometry`` seeded by the finder, sharing its ``id``
  (RAPID's ``diffimage_masked_psfcat.txt``).
- Labels: one-to-one matching of the fitted positions to real truth (transients and injected
  fakes brighter than a magnitude limit) within a radius, closest pairs first.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from astropy.wcs import WCS
from photutils.detection import DAOStarFinder
from photutils.psf import CircularGaussianPRF, PSFPhotometry
from scipy.spatial import cKDTree

from croissant_cutouts.tasks.inputs.truth import match_one_to_one

__all__ = [
    "FINDER_COLUMNS",
    "PHOTUTILS3_NAMES",
    "PSFCAT_COLUMNS",
    "bogus_kinds",
    "find_and_fit",
    "match_one_to_one",
    "moments",
]

#: Columns of the finder catalog (photutils 2 names), in RAPID's order.
FINDER_COLUMNS = (
    "id",
    "xcentroid",
    "ycentroid",
    "sharpness",
    "roundness1",
    "roundness2",
    "npix",
    "peak",
    "flux",
    "mag",
    "daofind_mag",
)
#: Columns of the PSF-fit catalog (photutils 2 names), in RAPID's order.
PSFCAT_COLUMNS = (
    "id",
    "group_id",
    "group_size",
    "local_bkg",
    "x_init",
    "y_init",
    "flux_init",
    "x_fit",
    "y_fit",
    "flux_fit",
    "x_err",
    "y_err",
    "flux_err",
    "npixfit",
    "qfit",
    "cfit",
    "reduced_chi2",
    "flags",
    "ra",
    "dec",
)
#: Catalog columns photutils 3 (April 2026) renamed: photutils 2 name -> photutils 3 name,
#: from photutils' 3.0.0 changelog (#2241). Written out here, apart from the reader's own
#: table (``tasks.inputs.rapid.PHOTUTILS_RENAMES``), so tests compare two sources.
PHOTUTILS3_NAMES = {
    "xcentroid": "x_centroid",
    "ycentroid": "y_centroid",
    "npix": "n_pixels",
    "npixfit": "n_pixels_fit",
}
_RENAME = {new: old for old, new in PHOTUTILS3_NAMES.items()}


def find_and_fit(
    diff: np.ndarray, wcs: WCS, fwhm: float = 2.0, nsigma: float = 5.0
) -> tuple[Table, Table]:
    """Run the finder and PSF photometry on a difference image (NaN = masked).

    Returns
    -------
    finder, psfcat : astropy.table.Table
        Columns :data:`FINDER_COLUMNS` and :data:`PSFCAT_COLUMNS`, positions 0-based.
    """
    masked = ~np.isfinite(diff)
    filled = np.where(masked, 0.0, diff).astype(np.float64)
    _, _, std = sigma_clipped_stats(diff[~masked][:: max(1, diff.size // 500_000)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = DAOStarFinder(threshold=nsigma * std, fwhm=fwhm)(filled, mask=masked)
    if found is None:
        found = Table(names=list(FINDER_COLUMNS), dtype=[float] * len(FINDER_COLUMNS))
    finder = _plain(found, FINDER_COLUMNS)
    finder["id"] = np.arange(1, len(finder) + 1)
    init = Table(
        {
            "id": finder["id"],
            "x": finder["xcentroid"],
            "y": finder["ycentroid"],
            "flux": np.clip(np.asarray(finder["flux"], float), 1e-12, None),
        }
    )
    phot = PSFPhotometry(CircularGaussianPRF(fwhm=fwhm), (5, 5), aperture_radius=3)
    error = np.full(filled.shape, std, np.float64)  # RAPID passes D's uncertainty image
    if len(init):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = phot(filled, mask=masked, init_params=init, error=error)
    else:
        res = Table(names=["id", "x_fit", "y_fit"], dtype=[int, float, float])
    res = _plain(res, [c for c in PSFCAT_COLUMNS if c not in ("ra", "dec")])
    if len(res):
        ra, dec = wcs.all_pix2world(np.asarray(res["x_fit"]), np.asarray(res["y_fit"]), 0)
    else:
        ra = dec = np.zeros(0)
    res["ra"], res["dec"] = ra, dec
    psfcat = res[list(PSFCAT_COLUMNS)]
    return finder, psfcat


def _plain(table: Table, columns) -> Table:
    """A plain Table with photutils 2 column names (photutils 3 renamed a few), in order.

    A column this photutils does not make is 0, or NaN for ``reduced_chi2`` (photutils 2.3+).
    """
    names = {_RENAME.get(n, n): n for n in table.colnames if not n.startswith("_")}

    def column(c: str) -> np.ndarray:
        if c in names:
            return np.asarray(table[names[c]])
        return np.full(len(table), np.nan if c == "reduced_chi2" else 0.0)

    return Table({c: column(c) for c in columns})


def moments(diff: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FWHM (pixels) and elongation from second moments of the positive part of D in a 5x5
    box around each position (NaN when undefined)."""
    ny, nx = diff.shape
    r = np.clip(np.floor(np.asarray(y) + 0.5).astype(np.int64), 0, ny - 1)
    c = np.clip(np.floor(np.asarray(x) + 0.5).astype(np.int64), 0, nx - 1)
    off = np.arange(-2, 3)
    rows = np.clip(r[:, None] + off, 0, ny - 1)
    cols = np.clip(c[:, None] + off, 0, nx - 1)
    box = np.nan_to_num(diff[rows[:, :, None], cols[:, None, :]].astype(np.float64))
    pos = np.clip(box, 0, None)
    tot = pos.sum(axis=(1, 2))
    ok = tot > 0
    t = np.where(ok, tot, 1.0)
    yy, xx = np.meshgrid(off, off, indexing="ij")
    my, mx = (pos * yy).sum(axis=(1, 2)) / t, (pos * xx).sum(axis=(1, 2)) / t
    myy = (pos * yy**2).sum(axis=(1, 2)) / t - my**2
    mxx = (pos * xx**2).sum(axis=(1, 2)) / t - mx**2
    mxy = (pos * yy * xx).sum(axis=(1, 2)) / t - mx * my
    tr, det = mxx + myy, mxx * myy - mxy**2
    disc = np.sqrt(np.clip((tr / 2) ** 2 - det, 0, None))
    l1, l2 = tr / 2 + disc, tr / 2 - disc
    good = ok & (l2 > 1e-6)
    fwhm = np.where(good, 2.3548 * np.sqrt(np.clip(tr / 2, 0, None)), np.nan)
    elong = np.where(good, np.sqrt(l1 / np.where(good, l2, 1.0)), np.nan)
    return fwhm, elong


def bogus_kinds(det_xy: np.ndarray, sources: dict[str, np.ndarray], radius: float = 4.0):
    """Attribute each bogus detection to the nearest known cause within ``radius``, else
    ``noise``."""
    kinds = np.full(len(det_xy), "noise", dtype=object)
    best = np.full(len(det_xy), np.inf)
    for kind, xy in sources.items():
        if xy is None or len(xy) == 0 or len(det_xy) == 0:
            continue
        dist, _ = cKDTree(xy).query(det_xy, distance_upper_bound=radius)
        closer = dist < best
        kinds[closer] = kind
        best[closer] = dist[closer]
    return kinds
