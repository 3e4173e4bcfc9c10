"""Synthetic difference-imaging scenes: what one RAPID job sees.

Conventions: images are ``(ny, nx)`` float32 arrays in DN/s; positions are 0-based pixel
coordinates with ``x`` the column and ``y`` the row, pixel centres on integers. Every
random draw comes from the ``numpy.random.Generator`` passed in, so a seed fixes a scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["Scene", "SceneParams", "detect", "make_scene", "match_one_to_one", "render_psf"]

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_STAMP = 7  # half-size of a rendered source stamp (15x15 pixels)


@dataclass(frozen=True)
class SceneParams:
    """Knobs of a simulated job; densities are per million pixels (scale with image area).

    The defaults give a few hundred detections per 1024x1024 job, about 5-10 % of them
    real. ``bogus_density`` multiplies every bogus population (stars, cosmic rays, hot
    pixels); ``bogus_density=3`` gives about 1,500-2,000 detections per 4089x4089 job.
    """

    fwhm_science_px: float = 2.0
    fwhm_reference_px: float = 2.3
    moffat_beta: float = 2.5
    sky_sigma: float = 1.0  # science noise (sky + read), DN/s per pixel
    reference_sigma: float = 0.3  # deeper coadd
    misregistration_px: tuple[float, float] = (0.12, -0.08)  # (dx, dy) of the reference
    gain_mismatch: float = 0.03  # fractional flux-scale error of the reference
    stars_per_mpx: float = 1500.0
    star_flux_range: tuple[float, float] = (5.0, 3.0e5)  # DN/s, total flux
    star_slope: float = 2.2  # dN/dF ~ F**-slope
    transients_per_mpx: float = 15.0
    transient_flux_range: tuple[float, float] = (6.0, 400.0)  # log-uniform
    cosmic_rays_per_mpx: float = 40.0
    hot_pixels_per_mpx: float = 40.0
    bogus_density: float = 1.0
    edge_band_px: tuple[int, int] = (8, 40)
    threshold_sigma: float = 5.0
    match_radius_px: float = 2.0


@dataclass
class Scene:
    """The four images of a job and the truth behind them."""

    science: np.ndarray
    reference: np.ndarray
    difference: np.ndarray
    score: np.ndarray
    transients: np.ndarray  # (n, 3): x, y, flux of injected real transients
    sources: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> (n, 2) x, y
    catalog: dict[str, np.ndarray] = field(default_factory=dict)  # detections


def _moffat_alpha(fwhm: float, beta: float) -> float:
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def render_psf(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm: float,
    beta: float,
) -> np.ndarray:
    """Render point sources (Moffat profile, unit-normalised on a 15x15 stamp) at once.

    Parameters
    ----------
    shape : (ny, nx)
    x, y, flux : ndarray, shape (n,)
        0-based positions (pixels) and total fluxes (DN/s).
    fwhm, beta : float
        Moffat FWHM (pixels) and power index.

    Returns
    -------
    ndarray, shape (ny, nx), float32
    """
    ny, nx = shape
    out = np.zeros(ny * nx, np.float64)
    if len(x) == 0:
        return out.reshape(shape).astype(np.float32)
    alpha = _moffat_alpha(fwhm, beta)
    cx, cy = np.floor(x + 0.5).astype(np.int64), np.floor(y + 0.5).astype(np.int64)
    off = np.arange(-_STAMP, _STAMP + 1)
    dx = (cx[:, None] + off[None, :]) - x[:, None]  # (n, 15)
    dy = (cy[:, None] + off[None, :]) - y[:, None]
    r2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2  # (n, 15, 15)
    prof = (1.0 + r2 / alpha**2) ** (-beta)
    prof *= (flux / prof.sum(axis=(1, 2)))[:, None, None]
    rows = cy[:, None, None] + off[None, :, None]
    cols = cx[:, None, None] + off[None, None, :]
    ok = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    idx = (rows * nx + cols)[ok]
    out += np.bincount(idx, weights=prof[ok], minlength=ny * nx)
    return out.reshape(shape).astype(np.float32)


def _power_law(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    a = 1.0 - slope
    u = rng.random(n)
    return (lo**a + u * (hi**a - lo**a)) ** (1.0 / a)


def _cosmic_rays(rng: np.random.Generator, shape: tuple[int, int], n: int):
    """Short sharp streaks: (n,) centres and a flat image of their pixels."""
    ny, nx = shape
    length = rng.integers(1, 7, n)
    angle = rng.uniform(0, np.pi, n)
    x0, y0 = rng.uniform(0, nx - 1, n), rng.uniform(0, ny - 1, n)
    amp = 10 ** rng.uniform(1.3, 2.7, n)
    steps = np.arange(7)
    use = steps[None, :] < length[:, None]
    xs = np.rint(x0[:, None] + steps * np.cos(angle)[:, None]).astype(np.int64)
    ys = np.rint(y0[:, None] + steps * np.sin(angle)[:, None]).astype(np.int64)
    ok = use & (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
    img = np.bincount(
        (ys * nx + xs)[ok],
        weights=np.broadcast_to(amp[:, None], xs.shape)[ok],
        minlength=ny * nx,
    ).reshape(shape)
    return np.column_stack([x0, y0]), img.astype(np.float32)


def make_scene(
    rng: np.random.Generator, shape: tuple[int, int], params: SceneParams = SceneParams()
) -> Scene:
    """Simulate science, reference, difference (D) and score images of one job.

    The reference is the same static sky with its own PSF, a sub-pixel misregistration,
    a small gain error, lower noise and 0 where it has no coverage. D = science - reference
    with NaN wherever reference coverage is missing and in edge bands; the score is D
    matched-filtered with the PSF and divided by its noise, so pixels are roughly the
    point-source significance in sigma.
    """
    ny, nx = shape
    p = params
    mpx = ny * nx / 1e6
    n_star = rng.poisson(p.stars_per_mpx * mpx * p.bogus_density)
    n_tr = rng.poisson(p.transients_per_mpx * mpx)
    n_cr = rng.poisson(p.cosmic_rays_per_mpx * mpx * p.bogus_density)
    n_hot = rng.poisson(p.hot_pixels_per_mpx * mpx * p.bogus_density)

    sx, sy = rng.uniform(-3, nx + 2, n_star), rng.uniform(-3, ny + 2, n_star)
    sflux = _power_law(rng, n_star, *p.star_flux_range, p.star_slope)
    # transients: half on galaxies-like positions near stars would need galaxies; uniform here
    tx, ty = rng.uniform(2, nx - 3, n_tr), rng.uniform(2, ny - 3, n_tr)
    tflux = np.exp(rng.uniform(*np.log(p.transient_flux_range), n_tr))

    sci = render_psf(
        shape, np.r_[sx, tx], np.r_[sy, ty], np.r_[sflux, tflux], p.fwhm_science_px, p.moffat_beta
    )
    sci += rng.standard_normal(shape, dtype=np.float32) * np.float32(p.sky_sigma)
    cr_xy, cr_img = _cosmic_rays(rng, shape, n_cr)
    sci += cr_img
    hx, hy = rng.integers(0, nx, n_hot), rng.integers(0, ny, n_hot)
    sci[hy, hx] += (10 ** rng.uniform(1.3, 2.5, n_hot)).astype(np.float32)

    gain = 1.0 + rng.uniform(-p.gain_mismatch, p.gain_mismatch)
    ddx, ddy = p.misregistration_px
    ref = render_psf(shape, sx + ddx, sy + ddy, sflux * gain, p.fwhm_reference_px, p.moffat_beta)
    ref += rng.standard_normal(shape, dtype=np.float32) * np.float32(p.reference_sigma)

    # reference coverage: an uncovered band on one random side
    lo, hi = p.edge_band_px
    coverage = np.ones(shape, bool)
    side, width = rng.integers(0, 4), int(rng.integers(lo, hi + 1))
    band = [np.s_[:width, :], np.s_[-width:, :], np.s_[:, :width], np.s_[:, -width:]][side]
    coverage[band] = False
    ref[~coverage] = 0.0
    # masked: no coverage, plus thin edge bands of random width on every side
    masked = ~coverage
    w = rng.integers(lo // 2, lo + 1, 4)
    masked[: w[0]] = masked[ny - w[1] :] = True
    masked[:, : w[2]] = masked[:, nx - w[3] :] = True

    diff = sci - ref
    diff[masked] = 0.0
    sigma_k = p.fwhm_science_px * _FWHM_TO_SIGMA
    filtered = ndimage.gaussian_filter(diff, sigma_k, truncate=3.0)
    noise_d = np.hypot(p.sky_sigma, p.reference_sigma)
    score = (filtered / (noise_d / (np.sqrt(4 * np.pi) * sigma_k))).astype(np.float32)
    diff[masked] = np.nan
    # the matched filter smears the mask edge: mask the score a little wider
    score[ndimage.binary_dilation(masked, iterations=2)] = np.nan
    bright = sflux > 30 * p.sky_sigma * 10
    return Scene(
        science=sci.astype(np.float32),
        reference=ref.astype(np.float32),
        difference=diff.astype(np.float32),
        score=score,
        transients=np.column_stack([tx, ty, tflux]),
        sources={
            "star_residual": np.column_stack([sx[bright], sy[bright]]),
            "cosmic_ray": cr_xy,
            "hot_pixel": np.column_stack([hx, hy]).astype(np.float64),
        },
    )


def detect(diff: np.ndarray, score: np.ndarray, threshold: float = 5.0) -> dict[str, np.ndarray]:
    """Find candidates: local maxima of the score above ``threshold`` sigma.

    Positions are refined by a flux-weighted 3x3 centroid on D; ``flux`` is the sum of D in
    a 5x5 box (DN/s), ``fwhm`` (pixels) and ``elongation`` come from second moments of the
    positive part of D in that box (NaN when undefined).

    Returns
    -------
    dict of ndarray: ``x, y, flux, fwhm, elongation, peak_sigma``, sorted by row then column.
    """
    s = np.where(np.isfinite(score), score, -np.inf)
    peaks = (s >= threshold) & (
        s == ndimage.maximum_filter(s, size=5, mode="constant", cval=-np.inf)
    )
    r, c = np.nonzero(peaks)
    ny, nx = diff.shape
    d = np.nan_to_num(diff, nan=0.0)
    off = np.arange(-2, 3)
    rows = np.clip(r[:, None] + off, 0, ny - 1)
    cols = np.clip(c[:, None] + off, 0, nx - 1)
    box = d[rows[:, :, None], cols[:, None, :]].astype(np.float64)  # (n, 5, 5)
    pos = np.clip(box, 0, None)
    inner = pos[:, 1:4, 1:4]
    w = inner.sum(axis=(1, 2))
    safe = np.where(w > 0, w, 1.0)
    dy = (inner.sum(axis=2) * off[1:4]).sum(axis=1) / safe
    dx = (inner.sum(axis=1) * off[1:4]).sum(axis=1) / safe
    y = r + np.where(w > 0, dy, 0.0)
    x = c + np.where(w > 0, dx, 0.0)
    tot = pos.sum(axis=(1, 2))
    ok = tot > 0
    tsafe = np.where(ok, tot, 1.0)
    yy, xx = np.meshgrid(off, off, indexing="ij")
    my = (pos * yy).sum(axis=(1, 2)) / tsafe
    mx = (pos * xx).sum(axis=(1, 2)) / tsafe
    myy = (pos * yy**2).sum(axis=(1, 2)) / tsafe - my**2
    mxx = (pos * xx**2).sum(axis=(1, 2)) / tsafe - mx**2
    mxy = (pos * yy * xx).sum(axis=(1, 2)) / tsafe - mx * my
    tr, det = mxx + myy, mxx * myy - mxy**2
    disc = np.sqrt(np.clip((tr / 2) ** 2 - det, 0, None))
    l1, l2 = tr / 2 + disc, tr / 2 - disc
    good = ok & (l2 > 1e-6)
    fwhm = np.where(good, 2.3548 * np.sqrt(np.clip(tr / 2, 0, None)), np.nan)
    elong = np.where(good, np.sqrt(l1 / np.where(good, l2, 1.0)), np.nan)
    return {
        "x": x,
        "y": y,
        "flux": box.sum(axis=(1, 2)),
        "fwhm": fwhm,
        "elongation": elong,
        "peak_sigma": s[r, c].astype(np.float64),
    }


def match_one_to_one(det_xy: np.ndarray, truth_xy: np.ndarray, radius: float) -> np.ndarray:
    """One-to-one matching, closest pairs first (a pair at exactly ``radius`` matches).

    Returns
    -------
    ndarray of int, shape (n_det,)
        Index of the matched truth row, or -1.
    """
    match = np.full(len(det_xy), -1, np.int64)
    if len(det_xy) == 0 or len(truth_xy) == 0:
        return match
    pairs = cKDTree(det_xy).sparse_distance_matrix(cKDTree(truth_xy), radius, output_type="ndarray")
    order = np.lexsort((pairs["j"], pairs["i"], pairs["v"]))
    used = set()
    for k in order:
        i, j = int(pairs["i"][k]), int(pairs["j"][k])
        if match[i] == -1 and j not in used:
            match[i] = j
            used.add(j)
    return match
