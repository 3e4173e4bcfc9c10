"""Synthetic difference-imaging scenes: what one RAPID job sees.

Conventions: images are ``(ny, nx)`` float32 arrays in DN/s; positions are 0-based pixel
coordinates with ``x`` the column and ``y`` the row, pixel centres on integers. Fluxes are at
the scale of RAPID's reformatted images: RAPID injects a fake of AB magnitude ``m`` as
``10 ** (-0.4 * (m - (ZPTMAG + zp_band)))`` counts of the raw image, which it then divides by
EXPTIME, so ``flux [DN/s] = 10 ** (-0.4 * (m - zpt))`` with
``zpt = ZPTMAG + zp_band - 2.5 log10(EXPTIME)`` (:func:`dn_zeropoint`, about 26.5 for H158).
Noise is set by a point-source depth in AB magnitudes, so the signal-to-noise of a source of
given magnitude does not depend on that scale. Every random draw comes from a
``numpy.random.Generator`` passed in, so seeds fix a scene.

A *field* is a patch of static sky (stars and galaxies) observed at several *epochs*; each
epoch is one job. The reference is the field's deep coadd resampled onto the epoch's grid
(with a sub-pixel misregistration, its own PSF and a small gain error); D and the score come
from a ZOGY proper-image subtraction (:mod:`simulate.zogy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from croissant_cutouts.simulate.zogy import WORKERS, fft_shape, kernel_spectrum, zogy
from croissant_cutouts.tasks.config import ROMAN_BAND_ZEROPOINTS

__all__ = [
    "EXPTIME",
    "FILTERS",
    "Scene",
    "SceneParams",
    "StaticSky",
    "dn_zeropoint",
    "flux_from_mag",
    "make_epoch",
    "make_static_sky",
    "moffat_stamp",
    "render_points",
]

#: Filters and the ``ZPTMAG`` card of their science headers (magnitudes), as in the Roman
#: TDS simulations RAPID processes.
FILTERS: dict[str, float] = {"H158": 17.638, "R062": 16.954}
#: ``EXPTIME`` of the science exposures per filter, seconds, as in the Roman TDS simulations.
EXPTIME: dict[str, float] = {"H158": 302.275, "R062": 161.025}
_STAMP = 7  # half-size of a rendered point-source stamp (15x15 pixels)


def dn_zeropoint(filt: str) -> float:
    """AB magnitude of a source of 1 DN/s in a reformatted image of filter ``filt``.

    ``ZPTMAG + zp_band - 2.5 log10(EXPTIME)``, with ``zp_band`` galsim's Roman bandpass
    zero point (:data:`tasks.config.ROMAN_BAND_ZEROPOINTS`).
    """
    return FILTERS[filt] + ROMAN_BAND_ZEROPOINTS[filt] - 2.5 * np.log10(EXPTIME[filt])


def flux_from_mag(mag: np.ndarray | float, zpt: float) -> np.ndarray:
    """DN/s of an AB magnitude for a zero point ``zpt``."""
    return 10.0 ** (-0.4 * (np.asarray(mag, np.float64) - zpt))


@dataclass(frozen=True)
class SceneParams:
    """Knobs of the simulation. Densities are per million pixels (they scale with area).

    Defaults give about 1,000-1,500 detections per 4089x4089 job, a few percent of them
    real; ``injections_per_mpx`` sets the real fraction, ``bogus_density`` scales every
    bogus population (cosmic rays, hot pixels, bright stars).
    """

    fwhm_science_px: float = 2.0
    fwhm_reference_px: float = 2.3
    moffat_beta: float = 2.5
    depth_mag: float = 25.8  # 5-sigma point-source depth of the science image, AB
    reference_depth_gain_mag: float = 1.5  # the coadd is this much deeper
    misregistration_px: float = 0.05  # rms sub-pixel offset of the resampled reference
    gain_mismatch: float = 0.01  # rms fractional flux-scale error of the gain matching
    saturation_mag: float = 17.5  # stars brighter than this saturate (flat cores)
    stars_per_mpx: float = 1500.0
    star_mag_range: tuple[float, float] = (15.0, 27.5)
    star_slope: float = 0.3  # dN/dmag ~ 10 ** (slope * mag)
    galaxies_per_mpx: float = 300.0
    galaxy_mag_range: tuple[float, float] = (19.0, 25.5)
    transients_per_mpx: float = 0.5  # astrophysical transients (in the truth index)
    transient_mag_range: tuple[float, float] = (20.0, 26.5)
    transient_on_galaxy: float = 0.6  # fraction of transients placed on a galaxy
    injections_per_mpx: float = 6.0  # injected fakes (about 100 per 4089x4089 job)
    injection_mag_range: tuple[float, float] = (21.0, 28.0)
    cosmic_rays_per_mpx: float = 100.0
    hot_pixels_per_mpx: float = 25.0
    bogus_density: float = 1.0
    edge_band_px: tuple[int, int] = (8, 40)
    gap: bool = True  # a strip without reference coverage across the image


@dataclass
class StaticSky:
    """Sources of one field, in field pixel coordinates (0-based)."""

    stars: np.ndarray  # (n, 3): x, y, mag
    galaxies: np.ndarray  # (n, 7): x, y, mag, r_eff_px, sersic_n, axis_ratio, angle_rad


@dataclass
class Scene:
    """The images of one job and the truth behind them.

    ``truth`` holds every object with a position in the science image: its kind
    (``star``, ``galaxy``, ``transient``, ``injected``), 0-based position, flux (DN/s) and
    AB magnitude. ``bogus_sources`` maps a bogus kind to the (n, 2) positions that may cause it.
    """

    science: np.ndarray
    reference: np.ndarray
    difference: np.ndarray
    score: np.ndarray
    coverage: np.ndarray
    psf_science: np.ndarray
    psf_difference: np.ndarray
    truth: dict[str, np.ndarray]
    bogus_sources: dict[str, np.ndarray] = field(default_factory=dict)
    sky_sigma: float = 1.0
    zpt: float = 26.5  # AB magnitude of 1 DN/s (:func:`dn_zeropoint`)


def moffat_stamp(fwhm: float, beta: float, half: int = _STAMP) -> np.ndarray:
    """A centred Moffat profile on a (2 half + 1)^2 stamp, summing to 1."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    off = np.arange(-half, half + 1)
    r2 = off[:, None] ** 2 + off[None, :] ** 2
    prof = (1.0 + r2 / alpha**2) ** (-beta)
    return prof / prof.sum()


def _accumulate(
    shape: tuple[int, int], cy: np.ndarray, cx: np.ndarray, off: np.ndarray, prof: np.ndarray
) -> np.ndarray:
    """Sum stamps ``prof`` (n, k, k) centred on pixels (cy, cx) into an image; off-image
    parts are dropped. Returns (ny, nx) float64."""
    ny, nx = shape
    rows = cy[:, None, None] + off[None, :, None]
    cols = cx[:, None, None] + off[None, None, :]
    ok = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    flat = np.bincount((rows * nx + cols)[ok], weights=prof[ok], minlength=ny * nx)
    return flat.reshape(shape)


def render_points(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm: float,
    beta: float,
) -> np.ndarray:
    """Render point sources with a Moffat PSF at sub-pixel positions, all at once.

    Parameters
    ----------
    shape : (ny, nx)
    x, y, flux : ndarray, shape (n,)
        0-based positions (pixels) and total fluxes (DN/s); sources off the image still
        add their wings.
    fwhm, beta : float
        Moffat FWHM (pixels) and power index.

    Returns
    -------
    ndarray, shape (ny, nx), float64
    """
    if len(x) == 0:
        return np.zeros(shape)
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    cx = np.floor(x + 0.5).astype(np.int64)
    cy = np.floor(y + 0.5).astype(np.int64)
    off = np.arange(-_STAMP, _STAMP + 1)
    dx = (cx[:, None] + off[None, :]) - x[:, None]
    dy = (cy[:, None] + off[None, :]) - y[:, None]
    prof = (1.0 + (dy[:, :, None] ** 2 + dx[:, None, :] ** 2) / alpha**2) ** (-beta)
    prof *= (flux / prof.sum(axis=(1, 2)))[:, None, None]
    return _accumulate(shape, cy, cx, off, prof)


def _sersic_b(n: np.ndarray) -> np.ndarray:
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n)


def render_galaxies(shape: tuple[int, int], gal: np.ndarray, zpt: float) -> np.ndarray:
    """Intrinsic (unconvolved) Sersic galaxies, in DN/s per pixel."""
    if len(gal) == 0:
        return np.zeros(shape)
    half = 10
    x, y = gal[:, 0], gal[:, 1]
    flux = flux_from_mag(gal[:, 2], zpt)
    reff, n, q, ang = gal[:, 3], gal[:, 4], gal[:, 5], gal[:, 6]
    cx = np.floor(x + 0.5).astype(np.int64)
    cy = np.floor(y + 0.5).astype(np.int64)
    off = np.arange(-half, half + 1)
    ddx = (cx[:, None] + off) - x[:, None]
    ddy = (cy[:, None] + off) - y[:, None]
    c, s = np.cos(ang)[:, None, None], np.sin(ang)[:, None, None]
    u = ddx[:, None, :] * c + ddy[:, :, None] * s
    v = -ddx[:, None, :] * s + ddy[:, :, None] * c
    r = np.sqrt(u**2 + (v / q[:, None, None]) ** 2)
    prof = np.exp(
        -_sersic_b(n)[:, None, None] * ((r / reff[:, None, None]) ** (1.0 / n[:, None, None]) - 1.0)
    )
    prof *= (flux / prof.sum(axis=(1, 2)))[:, None, None]
    return _accumulate(shape, cy, cx, off, prof)


def _mag_power_law(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float):
    """Magnitudes with dN/dmag ~ 10 ** (slope * mag) between lo and hi."""
    a = slope * np.log(10.0)
    u = rng.random(n)
    return np.log(np.exp(a * lo) + u * (np.exp(a * hi) - np.exp(a * lo))) / a


def make_static_sky(
    rng: np.random.Generator, shape: tuple[int, int], params: SceneParams = SceneParams()
) -> StaticSky:
    """Stars (power-law magnitudes) and Sersic galaxies of one field."""
    ny, nx = shape
    mpx = ny * nx / 1e6
    p = params
    n_star = rng.poisson(p.stars_per_mpx * mpx * p.bogus_density)
    stars = np.column_stack(
        [
            rng.uniform(-5, nx + 4, n_star),
            rng.uniform(-5, ny + 4, n_star),
            _mag_power_law(rng, n_star, *p.star_mag_range, p.star_slope),
        ]
    )
    n_gal = rng.poisson(p.galaxies_per_mpx * mpx)
    galaxies = np.column_stack(
        [
            rng.uniform(0, nx - 1, n_gal),
            rng.uniform(0, ny - 1, n_gal),
            rng.uniform(*p.galaxy_mag_range, n_gal),
            rng.uniform(0.8, 4.0, n_gal),
            rng.choice([1.0, 4.0], n_gal, p=[0.7, 0.3]),
            rng.uniform(0.4, 1.0, n_gal),
            rng.uniform(0, np.pi, n_gal),
        ]
    )
    return StaticSky(stars, galaxies)


def _cosmic_rays(rng: np.random.Generator, shape: tuple[int, int], n: int, sigma: float):
    """Short sharp streaks (science only): their midpoints and an image of them."""
    ny, nx = shape
    length = rng.integers(1, 8, n)
    angle = rng.uniform(0, np.pi, n)
    x0, y0 = rng.uniform(0, nx - 1, n), rng.uniform(0, ny - 1, n)
    amp = sigma * 10 ** rng.uniform(1.2, 2.8, n)
    steps = np.arange(8)
    xs = np.rint(x0[:, None] + steps * np.cos(angle)[:, None]).astype(np.int64)
    ys = np.rint(y0[:, None] + steps * np.sin(angle)[:, None]).astype(np.int64)
    ok = (steps[None, :] < length[:, None]) & (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
    weights = np.broadcast_to(amp[:, None], xs.shape)[ok]
    img = np.bincount((ys * nx + xs)[ok], weights=weights, minlength=ny * nx).reshape(shape)
    mid = (length - 1) / 2.0
    return np.column_stack([x0 + mid * np.cos(angle), y0 + mid * np.sin(angle)]), img


def _coverage(rng: np.random.Generator, shape: tuple[int, int], p: SceneParams) -> np.ndarray:
    """Reference coverage in [0, 1]: an uncovered band with a soft edge, and a gap."""
    ny, nx = shape
    yy = np.arange(ny, dtype=np.float64)[:, None]
    xx = np.arange(nx, dtype=np.float64)[None, :]
    lo, hi = p.edge_band_px
    width = float(rng.integers(lo, hi + 1))
    side = int(rng.integers(0, 4))
    dist = [yy, ny - 1 - yy, xx, nx - 1 - xx][side]
    cov = np.clip((dist - width) / 12.0 + 0.5, 0.0, 1.0) * np.ones((ny, nx))
    if p.gap:
        centre = rng.uniform(0.3, 0.7) * (nx if side < 2 else ny)
        along = xx if side < 2 else yy
        cov *= np.clip((np.abs(along - centre) - 3.0) / 6.0 + 0.5, 0.0, 1.0)
    return cov


def make_epoch(
    rng: np.random.Generator,
    sky: StaticSky,
    shape: tuple[int, int],
    filt: str = "H158",
    params: SceneParams = SceneParams(),
) -> Scene:
    """Simulate one job: science, reference, ZOGY difference D and score S.

    Science: the static sky and this epoch's transients and injected fakes, convolved with
    the science PSF, plus Gaussian noise (sky and read, background subtracted), cosmic rays
    and hot pixels, saturated cores. Reference: the same static sky, deeper, with its own
    PSF, a sub-pixel misregistration and a gain error, 0 where coverage is 0 and scaled by
    the coverage on soft edges. D and S are NaN wherever coverage is below 0.5 and in thin
    bands at every edge.
    """
    p = params
    zpt = dn_zeropoint(filt)
    mpx = shape[0] * shape[1] / 1e6
    psf_s = moffat_stamp(p.fwhm_science_px, p.moffat_beta)
    psf_r = moffat_stamp(p.fwhm_reference_px, p.moffat_beta)
    nea = 1.0 / np.sum(psf_s**2)  # noise-equivalent area, pixels
    sigma = float(flux_from_mag(p.depth_mag, zpt) / (5.0 * np.sqrt(nea)))
    sigma_r = sigma * 10 ** (-0.4 * p.reference_depth_gain_mag)
    # the random draws, in this order: sources, registration, science noise, cosmic rays, hot
    # pixels, reference noise, coverage, edge bands (the jobs are byte-identical across runs)
    src = _epoch_sources(rng, sky, shape, p, mpx)
    ddx, ddy = rng.normal(0, p.misregistration_px, 2)
    gain = 1.0 + rng.normal(0, p.gain_mismatch)
    fshape = fft_shape(shape)
    spectra = (kernel_spectrum(psf_s, fshape), kernel_spectrum(psf_r, fshape))
    gal_sci, gal_ref = _galaxy_images(shape, sky, zpt, spectra, (ddx, ddy), gain)
    stars, sflux = sky.stars, flux_from_mag(sky.stars[:, 2], zpt)
    sat_s = float(flux_from_mag(p.saturation_mag, zpt) * psf_s.max())
    sci = render_points(
        shape,
        np.r_[stars[:, 0], src["tx"], src["ix"]],
        np.r_[stars[:, 1], src["ty"], src["iy"]],
        np.r_[sflux, flux_from_mag(src["tmag"], zpt), flux_from_mag(src["imag"], zpt)],
        p.fwhm_science_px,
        p.moffat_beta,
    ) + gal_sci
    np.minimum(sci, sat_s, out=sci)
    artefacts = _science_artefacts(rng, sci, p, mpx, sigma)
    ref = render_points(
        shape, stars[:, 0] + ddx, stars[:, 1] + ddy, sflux * gain,
        p.fwhm_reference_px, p.moffat_beta,
    )
    ref += gal_ref
    np.minimum(ref, sat_s * 4.0, out=ref)  # the coadd saturates later
    ref += rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma_r)
    cov = _coverage(rng, shape, p)
    ref *= cov  # soft coverage edges are imperfectly gain-matched: mask-edge artefacts
    masked = _masked(rng, cov, p)
    d, s, psf_d = zogy(sci, ref, psf_s, psf_r, sigma, sigma_r, masked, spectra)
    return Scene(
        science=sci.astype(np.float32),
        reference=ref.astype(np.float32),
        difference=d,
        score=s,
        coverage=cov,
        psf_science=psf_s.astype(np.float32),
        psf_difference=psf_d.astype(np.float32),
        truth=_truth(sky, src, zpt),
        bogus_sources=_bogus_sources(sky, p, artefacts, masked),
        sky_sigma=sigma,
        zpt=zpt,
    )


def _epoch_sources(
    rng: np.random.Generator, sky: StaticSky, shape: tuple[int, int], p: SceneParams, mpx: float
) -> dict[str, np.ndarray]:
    """This epoch's real sources: transients (some on galaxies) and injected fakes.

    Returns ``tx``, ``ty``, ``tmag`` (transients) and ``ix``, ``iy``, ``imag`` (injected):
    0-based pixel positions, AB magnitudes.
    """
    ny, nx = shape
    n_tr = rng.poisson(p.transients_per_mpx * mpx)
    on_gal = (rng.random(n_tr) < p.transient_on_galaxy) & (len(sky.galaxies) > 0)
    host = rng.integers(0, max(len(sky.galaxies), 1), n_tr)
    tx = rng.uniform(3, nx - 4, n_tr)
    ty = rng.uniform(3, ny - 4, n_tr)
    if len(sky.galaxies):
        tx = np.where(on_gal, sky.galaxies[host, 0] + rng.normal(0, 1.0, n_tr), tx)
        ty = np.where(on_gal, sky.galaxies[host, 1] + rng.normal(0, 1.0, n_tr), ty)
    tmag = rng.uniform(*p.transient_mag_range, n_tr)
    n_inj = rng.poisson(p.injections_per_mpx * mpx)
    ix, iy = rng.uniform(3, nx - 4, n_inj), rng.uniform(3, ny - 4, n_inj)
    imag = rng.uniform(*p.injection_mag_range, n_inj)
    return {"tx": tx, "ty": ty, "tmag": tmag, "ix": ix, "iy": iy, "imag": imag}


def _galaxy_images(
    shape: tuple[int, int],
    sky: StaticSky,
    zpt: float,
    spectra: tuple[np.ndarray, np.ndarray],
    offset: tuple[float, float],
    gain: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The galaxies through the science PSF, and through the reference PSF shifted by
    ``offset`` (dx, dy pixels) and scaled by ``gain``; both (ny, nx), DN/s."""
    ny, nx = shape
    fshape = fft_shape(shape)
    ps_hat, pr_hat = spectra
    gal_hat = sfft.rfft2(render_galaxies(shape, sky.galaxies, zpt), s=fshape, workers=WORKERS)
    gal_sci = sfft.irfft2(gal_hat * ps_hat, s=fshape, workers=WORKERS)[:ny, :nx]
    ky = sfft.fftfreq(fshape[0])[:, None]
    kx = sfft.rfftfreq(fshape[1])[None, :]
    shift = np.exp(-2j * np.pi * (kx * offset[0] + ky * offset[1])) * gain
    gal_ref = sfft.irfft2(gal_hat * pr_hat * shift, s=fshape, workers=WORKERS)[:ny, :nx]
    return gal_sci, gal_ref


def _science_artefacts(
    rng: np.random.Generator, sci: np.ndarray, p: SceneParams, mpx: float, sigma: float
) -> dict[str, np.ndarray]:
    """Add noise, cosmic rays and hot pixels to ``sci`` in place; return where the latter are.

    Returns ``cosmic_ray`` and ``hot_pixel``: (n, 2) 0-based (x, y) pixel positions.
    """
    shape = sci.shape
    ny, nx = shape
    sci += rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    cr_xy, cr_img = _cosmic_rays(
        rng, shape, rng.poisson(p.cosmic_rays_per_mpx * mpx * p.bogus_density), sigma
    )
    sci += cr_img
    n_hot = rng.poisson(p.hot_pixels_per_mpx * mpx * p.bogus_density)
    hx, hy = rng.integers(1, nx - 1, n_hot), rng.integers(1, ny - 1, n_hot)
    amp = sigma * 10 ** rng.uniform(1.0, 2.5, n_hot)
    sci[hy, hx] += amp
    bleed = rng.uniform(0.0, 0.5, n_hot) * amp  # inter-pixel capacitance into the 4 neighbours
    for dy_, dx_ in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        sci[hy + dy_, hx + dx_] += bleed
    return {"cosmic_ray": cr_xy, "hot_pixel": np.column_stack([hx, hy]).astype(np.float64)}


def _masked(rng: np.random.Generator, cov: np.ndarray, p: SceneParams) -> np.ndarray:
    """Pixels without a difference: coverage below 0.5 and a random thin band at each edge."""
    ny, nx = cov.shape
    masked = cov < 0.5
    lo = p.edge_band_px[0]
    w = rng.integers(lo // 2, lo + 1, 4)
    masked[: w[0]] = True
    masked[ny - w[1] :] = True
    masked[:, : w[2]] = True
    masked[:, nx - w[3] :] = True
    return masked


def _truth(sky: StaticSky, src: dict[str, np.ndarray], zpt: float) -> dict[str, np.ndarray]:
    """Every source of the epoch: kind, 0-based x and y, AB mag, flux (DN/s)."""
    stars, galaxies = sky.stars, sky.galaxies
    n_tr, n_inj = len(src["tx"]), len(src["ix"])
    truth = {
        "kind": np.array(
            ["star"] * len(stars) + ["galaxy"] * len(galaxies)
            + ["transient"] * n_tr + ["injected"] * n_inj
        ),
        "x": np.r_[stars[:, 0], galaxies[:, 0], src["tx"], src["ix"]],
        "y": np.r_[stars[:, 1], galaxies[:, 1], src["ty"], src["iy"]],
        "mag": np.r_[stars[:, 2], galaxies[:, 2], src["tmag"], src["imag"]],
    }
    truth["flux"] = flux_from_mag(truth["mag"], zpt)
    return truth


def _bogus_sources(
    sky: StaticSky, p: SceneParams, artefacts: dict[str, np.ndarray], masked: np.ndarray
) -> dict[str, np.ndarray]:
    """Where each cause of bogus detections lies: (n, 2) 0-based (x, y) per kind."""
    stars = sky.stars
    residual = stars[:, 2] < p.saturation_mag + 6.0  # residuals of these stars are detectable
    saturated = stars[:, 2] < p.saturation_mag
    edge = ndimage.binary_dilation(masked, iterations=4) & ~masked
    return {
        "saturated_star": stars[saturated, :2],
        "star_residual": stars[residual & ~saturated, :2],
        "galaxy_residual": sky.galaxies[:, :2],
        "cosmic_ray": artefacts["cosmic_ray"],
        "hot_pixel": artefacts["hot_pixel"],
        "mask_edge": np.argwhere(edge)[:, ::-1].astype(np.float64),
    }
