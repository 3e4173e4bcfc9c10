"""ZOGY proper-image subtraction (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27).

For a new image N and a reference R with PSFs P_n, P_r, white noise sigma_n, sigma_r and
equal flux zero points (the reference is gain-matched)::

    D_hat = (P_r_hat N_hat - P_n_hat R_hat) / sqrt(sigma_n^2 |P_r_hat|^2 + sigma_r^2 |P_n_hat|^2)
    P_D_hat = P_r_hat P_n_hat / (F_D sqrt(...)),   F_D = 1 / sqrt(sigma_n^2 + sigma_r^2)
    S_hat = F_D D_hat conj(P_D_hat)

D is returned rescaled by 1 / F_D so that a transient of flux f has flux f in D (DN/s);
S is divided by its robust standard deviation, so pixels are point-source significance in
sigma (RAPID's SCORR).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from astropy.stats import mad_std
from scipy import ndimage

__all__ = ["fft_shape", "kernel_spectrum", "zogy"]

WORKERS = -1  # FFTs use every core


def fft_shape(shape: tuple[int, int], pad: int = 16) -> tuple[int, int]:
    """A fast FFT size holding ``shape`` plus ``pad`` pixels (no wrap-around of sources)."""
    return (sfft.next_fast_len(shape[0] + pad, True), sfft.next_fast_len(shape[1] + pad, True))


def kernel_spectrum(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """rfft2 of a small centred kernel placed at the origin of ``shape``.

    Float64 throughout: bright stars are 10^6 times the noise, beyond float32 FFT precision.
    """
    k = np.zeros(shape, np.float64)
    h0, h1 = psf.shape[0] // 2, psf.shape[1] // 2
    k[: psf.shape[0], : psf.shape[1]] = psf
    return sfft.rfft2(np.roll(k, (-h0, -h1), axis=(0, 1)), workers=WORKERS)


def _psf_d(psf_new: np.ndarray, psf_ref: np.ndarray, sn: float, sr: float) -> np.ndarray:
    """The PSF of D on the stamp grid, from small transforms."""
    shape = (64, 64)
    pn, pr = kernel_spectrum(psf_new, shape), kernel_spectrum(psf_ref, shape)
    spec = pr * pn / np.sqrt(sn**2 * np.abs(pr) ** 2 + sr**2 * np.abs(pn) ** 2)
    img = np.roll(
        sfft.irfft2(spec, s=shape), (psf_new.shape[0] // 2, psf_new.shape[1] // 2), (0, 1)
    )
    img = img[: psf_new.shape[0], : psf_new.shape[1]]
    return img / img.sum()


def zogy(
    new: np.ndarray,
    ref: np.ndarray,
    psf_new: np.ndarray,
    psf_ref: np.ndarray,
    sigma_new: float,
    sigma_ref: float,
    masked: np.ndarray,
    spectra: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Difference D, score S and the PSF of D.

    Parameters
    ----------
    new, ref : ndarray, shape (ny, nx)
        Aligned, gain-matched images (DN/s).
    psf_new, psf_ref : ndarray
        Small centred PSF stamps summing to 1.
    sigma_new, sigma_ref : float
        Per-pixel noise (DN/s).
    masked : ndarray of bool
        Pixels to set to NaN in D and S (filled with 0 before the transforms).
    spectra : (P_n_hat, P_r_hat), optional
        Kernel spectra on :func:`fft_shape` of the image, when already computed.

    Returns
    -------
    D : ndarray, float32, DN/s, NaN where masked
    S : ndarray, float32, sigma, NaN where masked and 2 pixels around
    psf_d : ndarray, PSF of D on the stamp grid of ``psf_new``
    """
    ny, nx = new.shape
    shape = fft_shape(new.shape)
    pn, pr = spectra or (kernel_spectrum(psf_new, shape), kernel_spectrum(psf_ref, shape))
    n = np.where(masked, 0.0, new).astype(np.float64)
    r = np.where(masked, 0.0, ref).astype(np.float64)
    sn, sr = float(sigma_new), float(sigma_ref)
    denom = np.sqrt(sn**2 * (pr.real**2 + pr.imag**2) + sr**2 * (pn.real**2 + pn.imag**2))
    denom += 1e-300
    f_d = 1.0 / np.hypot(sigma_new, sigma_ref)
    d_hat = pr * sfft.rfft2(n, s=shape, workers=WORKERS)
    d_hat -= pn * sfft.rfft2(r, s=shape, workers=WORKERS)
    d_hat /= denom
    d = sfft.irfft2(d_hat, s=shape, workers=WORKERS)[:ny, :nx] / f_d
    d_hat *= np.conj(pr * pn) / denom  # F_D * D_hat * conj(P_D_hat)
    s = sfft.irfft2(d_hat, s=shape, workers=WORKERS)[:ny, :nx]
    grown = ndimage.binary_dilation(masked, iterations=2)
    s = s / mad_std(s[~grown][:: max(1, s.size // 200_000)])
    d[masked] = np.nan
    s[grown] = np.nan
    return (
        d.astype(np.float32),
        s.astype(np.float32),
        _psf_d(psf_new, psf_ref, sigma_new, sigma_ref),
    )
