"""Truth catalogs and labels: which detections are real.

Conventions: every position inside the tool is 0-based (``x`` column, ``y`` row, pixel
centres on integers). Truth files written by galsim are 1-based; :func:`to_zero_based` is the
one place where that origin is converted. A detection is real when a truth source brighter
than ``mag_limit`` (AB) lies within ``radius_px`` of it; matching is one-to-one, closest pairs
first, so a detection is never claimed twice, no truth is overwritten, and the result does
not depend on file order.

Magnitudes (AB):

- injected fakes (``xpix ypix flux``): RAPID writes ``flux`` in counts of the raw image,
  before the division by EXPTIME, as ``flux = 10 ** (-0.4 * (mag - (ZPTMAG + zp_band)))``
  with ``zp_band`` galsim's Roman bandpass AB zero point of the image's filter
  (``modules/fake_src/rapid_source_injections.py`` in Caltech-IPAC/rapid), so
  ``mag = ZPTMAG + zp_band - 2.5 log10(flux)`` (NaN for flux <= 0, which never labels
  real); ``config.ROMAN_BAND_ZEROPOINTS`` holds ``zp_band``;
- simulation truth (``mag`` column, instrumental): ``mag + zero point``, the zero point being
  ``ZPTMAG`` unless ``labels.truth_index_zeropoint`` says otherwise (an assumption: RAPID
  does not read this file).

A truth source labels real only when it is strictly brighter than the magnitude limit
(``mag < mag_limit``); one exactly at the limit does not. A position, flux or magnitude that
is text and not a number rejects the job (the file and row are named): a truth source lost
that way would turn its real detection into a bogus label. ``nan`` is a number here (a fake
with no known flux never labels real).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.errors import CatalogError, short_repr

__all__ = [
    "injection_magnitudes",
    "label_detections",
    "match_one_to_one",
    "read_injections",
    "read_simulation_truth",
    "to_zero_based",
]


def injection_magnitudes(flux: np.ndarray, zeropoint: float) -> np.ndarray:
    """AB magnitudes of injected fakes from their raw-image counts.

    Parameters
    ----------
    flux : ndarray
        ``flux`` column of the injection list: counts of the raw image (before the
        division by EXPTIME).
    zeropoint : float
        ``ZPTMAG + zp_band``: the science header's ``ZPTMAG`` plus the filter's galsim
        bandpass zero point (``config.ROMAN_BAND_ZEROPOINTS``), magnitudes.

    Returns
    -------
    ndarray of float64
        ``zeropoint - 2.5 log10(flux)``; NaN where flux is not positive or not a number.
    """
    flux = np.asarray(flux, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zeropoint - 2.5 * np.log10(flux), np.nan)


def to_zero_based(values: np.ndarray, origin: float) -> np.ndarray:
    """Convert pixel positions of a file whose first pixel centre is ``origin`` to 0-based."""
    return np.asarray(values, np.float64) - float(origin)


def match_one_to_one(det_xy: np.ndarray, truth_xy: np.ndarray, radius: float) -> np.ndarray:
    """One-to-one matching within ``radius``, closest pairs first.

    A pair at exactly ``radius`` matches. Ties in distance are broken by detection index,
    then truth index.

    Parameters
    ----------
    det_xy, truth_xy : ndarray, shape (n, 2) and (m, 2)
        0-based (x, y) positions, pixels.
    radius : float
        Matching radius, pixels.

    Returns
    -------
    ndarray of int64, shape (n,)
        Row of the matched truth source for each detection, or -1.
    """
    det_xy = np.asarray(det_xy, np.float64).reshape(-1, 2)
    truth_xy = np.asarray(truth_xy, np.float64).reshape(-1, 2)
    match = np.full(len(det_xy), -1, np.int64)
    ok_det = np.isfinite(det_xy).all(axis=1)
    ok_truth = np.isfinite(truth_xy).all(axis=1)
    if not ok_det.any() or not ok_truth.any():
        return match
    from scipy.spatial import cKDTree  # here: the CLI imports this module at start-up

    di, ti = np.flatnonzero(ok_det), np.flatnonzero(ok_truth)
    pairs = cKDTree(det_xy[di]).sparse_distance_matrix(
        cKDTree(truth_xy[ti]), radius * (1 + 1e-12), output_type="ndarray"
    )
    i, j, d = di[pairs["i"]], ti[pairs["j"]], pairs["v"]
    used: set[int] = set()
    for k in np.lexsort((j, i, d)):
        if match[i[k]] == -1 and int(j[k]) not in used:
            match[i[k]] = j[k]
            used.add(int(j[k]))
    return match


def label_detections(
    det_x: np.ndarray,
    det_y: np.ndarray,
    truth: pd.DataFrame,
    mag_limit: float = 26.0,
    radius_px: float = 4.0,
) -> pd.DataFrame:
    """Label detections against truth sources.

    Parameters
    ----------
    det_x, det_y : ndarray
        0-based detection positions, pixels.
    truth : DataFrame
        Columns ``x``, ``y`` (0-based), ``mag`` (AB), ``match_id`` (``<row>_inj`` or
        ``<object_id>_ou``), ``truth_id`` (the row or object id), ``injected`` (bool).
        Rows not strictly brighter than ``mag_limit`` (including one exactly at it) or
        with a NaN magnitude are ignored.
    mag_limit : float
        AB magnitude; only strictly brighter truth labels real.
    radius_px : float
        Matching radius, pixels.

    Returns
    -------
    DataFrame, one row per detection: ``label`` (1/0), ``match_id`` and ``truth_id`` (empty
    when unmatched), ``injected`` (bool or NA),
    ``match_distance`` (px or NaN), ``truth_mag`` (AB or NaN).
    """
    mag = pd.to_numeric(truth["mag"], errors="coerce").to_numpy(np.float64)
    keep = np.isfinite(mag) & (mag < mag_limit)
    bx = pd.to_numeric(truth["x"], errors="coerce").to_numpy(np.float64)[keep]
    by = pd.to_numeric(truth["y"], errors="coerce").to_numpy(np.float64)[keep]
    bmag = mag[keep]
    bmatch = truth["match_id"].to_numpy(dtype=object)[keep]
    bid = truth["truth_id"].to_numpy(dtype=object)[keep]
    binj = truth["injected"].to_numpy(dtype=object)[keep]
    det = np.column_stack([np.asarray(det_x, np.float64), np.asarray(det_y, np.float64)])
    m = match_one_to_one(det, np.column_stack([bx, by]), radius_px)
    hit = m >= 0
    j = m[hit]
    dist = np.full(len(m), np.nan)
    dist[hit] = np.hypot(det[hit, 0] - bx[j], det[hit, 1] - by[j])
    match_ids = np.full(len(m), None, dtype=object)
    match_ids[hit] = bmatch[j]
    ids = np.full(len(m), None, dtype=object)
    ids[hit] = bid[j]
    injected = np.full(len(m), None, dtype=object)
    injected[hit] = binj[j]
    tmag = np.full(len(m), np.nan)
    tmag[hit] = bmag[j]
    return pd.DataFrame(
        {
            "label": pd.array(hit.astype(np.int64), dtype="Int64"),
            "match_id": pd.array(match_ids, dtype="string"),
            "truth_id": pd.array(ids, dtype="string"),
            "injected": pd.array(injected, dtype="boolean"),
            "match_distance": dist,
            "truth_mag": tmag,
        }
    )


def _read_whitespace(job_id: str, path: Path, names: list[str] | None = None) -> pd.DataFrame:
    """A whitespace table (header line, or ``names`` for a commented header)."""
    try:
        if names is None:
            frame = pd.read_csv(path, sep=r"\s+", engine="python")
        else:
            frame = pd.read_csv(
                path, sep=r"\s+", engine="python", comment=None, skiprows=1, names=names
            )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CatalogError(job_id, f"truth file does not parse ({exc})", path) from exc
    return frame


def _numbers(job_id: str, path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    """A truth column as float64 (``nan`` stays NaN); text that is no number is an error.

    Raises
    ------
    CatalogError
        Naming ``path`` and the 0-based data row of the first such field.
    """
    values = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    bad = np.flatnonzero(values.isna().to_numpy() & frame[column].notna().to_numpy())
    if bad.size:
        shown = short_repr(str(frame[column].iloc[bad[0]]))
        row = int(frame.index[bad[0]])
        raise CatalogError(job_id, f"{column} {shown} is not a number", path, row)
    return values


def read_injections(job_id: str, path: Path, zeropoint: float, origin: float = 1.0) -> pd.DataFrame:
    """Injected fakes (``xpix ypix flux``) as truth rows.

    Positions are converted from ``origin`` (galsim: 1) to 0-based; ``mag`` is
    :func:`injection_magnitudes` of ``flux`` (raw-image counts) with ``zeropoint`` =
    ``ZPTMAG + zp_band``; ``match_id`` is ``<row>_inj``.

    Raises
    ------
    CatalogError
        When the file does not parse, lacks a column, or has a field that is not a number.
    """
    frame = _read_whitespace(job_id, path)
    missing = [c for c in ("xpix", "ypix", "flux") if c not in frame.columns]
    if missing:
        raise CatalogError(job_id, f"injection list lacks column(s) {missing}", path)
    num = {c: _numbers(job_id, path, frame, c) for c in ("xpix", "ypix", "flux")}
    mag = injection_magnitudes(num["flux"].to_numpy(), zeropoint)
    rows = np.arange(len(frame))
    return pd.DataFrame(
        {
            "x": to_zero_based(num["xpix"], origin),
            "y": to_zero_based(num["ypix"], origin),
            "mag": mag,
            "match_id": [f"{k}_inj" for k in rows],
            "truth_id": rows.astype(str),
            "injected": True,
        }
    )


def read_simulation_truth(
    job_id: str, path: Path, zeropoint: float, origin: float = 1.0
) -> pd.DataFrame:
    """Transients of the simulation truth index as truth rows (stars and galaxies dropped).

    The file has a commented header ``# object_id ra dec x y realized_flux flux mag obj_type``;
    ``mag`` is instrumental, AB = ``mag + zeropoint`` (``ZPTMAG`` by default);
    ``match_id`` is ``<object_id>_ou``.

    Raises
    ------
    CatalogError
        When the file does not parse, its header lacks a column, or a transient's ``x``,
        ``y`` or ``mag`` is not a number.
    """
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().lstrip("#").split()
    required = ["object_id", "x", "y", "mag", "obj_type"]
    if any(c not in header for c in required):
        raise CatalogError(job_id, f"truth index header {header} lacks one of {required}", path)
    frame = _read_whitespace(job_id, path, header)
    frame = frame[frame["obj_type"].astype(str) == "transient"]
    ids = frame["object_id"].astype(str).to_numpy()
    num = {c: _numbers(job_id, path, frame, c) for c in ("x", "y", "mag")}
    return pd.DataFrame(
        {
            "x": to_zero_based(num["x"], origin),
            "y": to_zero_based(num["y"], origin),
            "mag": num["mag"].to_numpy() + zeropoint,
            "match_id": [f"{i}_ou" for i in ids],
            "truth_id": ids,
            "injected": False,
        }
    )
