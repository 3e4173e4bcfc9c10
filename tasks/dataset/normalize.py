"""Normalise step: per-channel ZScale limits of a whole image, applied when cutting.

Contract (``cutout-contract.md``, Normalisation):

1. ``vmin, vmax = ZScaleInterval().get_limits(image)`` with astropy's defaults; non-finite
   pixels are ignored by astropy, never replaced by 0 first.
2. ``norm = clip((image - vmin) / (vmax - vmin), 0, 1)`` as float32 (evaluated in float64,
   rounded once to float32).
3. Non-finite values of ``norm`` become 0 (NaN pixels; ``clip`` already maps +inf to 1 and
   -inf to 0).
4. No finite pixel, or ``vmax <= vmin``: the channel is all 0 and its status says why (also
   when ``vmax - vmin`` overflows float64, which only pixels near ``1e308`` can cause).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.visualization import ZScaleInterval
from prefect import task

from croissant_cutouts.tasks.contract import CHANNELS
from croissant_cutouts.tasks.errors import JobRejection
from croissant_cutouts.tasks.infra.caching import IO_TASK_OPTIONS, ContentPolicy
from croissant_cutouts.tasks.infra.versions import step_modules
from croissant_cutouts.tasks.inputs.load import JobData, open_image

__all__ = [
    "ChannelLimits",
    "apply_limits",
    "finite_per_row",
    "job_limits",
    "normalize_task",
    "zscale_limits",
    "zscale_sample",
]

#: Status of a channel's limits.
OK, CONSTANT, NO_FINITE = "ok", "constant", "no_finite_pixels"
#: Status of limits that are not finite or whose range overflows float64 (pixels near 1e308).
NOT_FINITE = "limits_not_finite"


@dataclass(frozen=True)
class ChannelLimits:
    """ZScale limits of one channel, in the image's units (DN/s).

    ``status`` is ``"ok"``, ``"constant"`` (``vmax <= vmin``), ``"no_finite_pixels"`` or
    ``"limits_not_finite"`` (``vmax - vmin`` is not a finite float64, which only pixels near
    the float64 limits give); unless ``"ok"`` the channel normalises to all zeros and the
    limits may be NaN.
    """

    vmin: float
    vmax: float
    status: str

    @property
    def usable(self) -> bool:
        return self.status == OK


def finite_per_row(image: np.ndarray, rows_per_block: int = 64) -> np.ndarray:
    """Number of finite pixels in each row of a 2-D image.

    A row whose sum is finite has only finite pixels (NaN and inf propagate through a sum),
    so one fast summing pass settles most rows; only rows whose sum is not finite (a
    non-finite pixel, or an overflow) are counted pixel by pixel. Exact, and reads the
    image in blocks of rows that stay in the CPU cache.
    """
    ny, nx = image.shape
    counts = np.full(ny, nx, np.int64)
    for start in range(0, ny, rows_per_block):
        block = image[start : start + rows_per_block]
        with np.errstate(over="ignore", invalid="ignore"):
            sums = block.sum(axis=1)
        bad = np.flatnonzero(~np.isfinite(sums))
        if bad.size:
            counts[start + bad] = np.count_nonzero(np.isfinite(block[bad]), axis=1)
    return counts


def zscale_sample(image: np.ndarray, n_samples: int = 1000) -> np.ndarray:
    """The pixels astropy's ZScale samples, without copying the image's finite pixels.

    ``ZScaleInterval.get_limits`` flattens the finite pixels (C order), takes every
    ``stride = int(max(1, n_finite / n_samples))``-th and keeps the first ``n_samples``. This
    finds the same pixels from per-row counts of finite values, reading only the rows they
    lie in, so ``get_limits(zscale_sample(image)) == get_limits(image)`` exactly (a sample of
    at most ``n_samples`` values has stride 1).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)

    Returns
    -------
    ndarray, shape (<= n_samples,), the image's dtype
    """
    per_row = finite_per_row(image)
    n_finite = int(per_row.sum())
    if n_finite == 0:
        return np.empty(0, image.dtype)
    stride = int(max(1.0, n_finite / n_samples))
    ranks = np.arange(0, n_finite, stride)[:n_samples]  # ranks among finite pixels
    ends = np.cumsum(per_row)
    rows = np.searchsorted(ends, ranks, side="right")
    out = np.empty(len(ranks), image.dtype)
    starts = ends - per_row
    full = per_row[rows] == image.shape[1]  # rows without a non-finite pixel: direct index
    out[full] = image[rows[full], ranks[full] - starts[rows[full]]]
    for row in np.unique(rows[~full]):  # at most n_samples rows, each read once
        cols = np.flatnonzero(np.isfinite(image[row]))
        pick = rows == row
        out[pick] = image[row, cols[ranks[pick] - starts[row]]]
    return out


def zscale_limits(image: np.ndarray) -> ChannelLimits:
    """ZScale limits of a full 2-D image (astropy defaults), with the contract's guards.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Pixel values; NaN and inf are ignored.
    """
    sample = zscale_sample(image) if image.ndim == 2 else image[np.isfinite(image)]
    if sample.size == 0:
        return ChannelLimits(float("nan"), float("nan"), NO_FINITE)
    with np.errstate(over="ignore", invalid="ignore"):  # pixels near the float64 limits
        vmin, vmax = ZScaleInterval().get_limits(sample)
    vmin, vmax = float(vmin), float(vmax)
    if not np.isfinite(vmax - vmin):
        return ChannelLimits(vmin, vmax, NOT_FINITE)
    return ChannelLimits(vmin, vmax, OK if vmax > vmin else CONSTANT)


def job_limits(job: JobData) -> dict[str, ChannelLimits]:
    """Limits of each channel of a job, read through memory maps."""
    return {c: zscale_limits(open_image(job.images[c])) for c in CHANNELS}


def apply_limits(
    pixels: np.ndarray, limits: ChannelLimits, out: np.ndarray | None = None
) -> np.ndarray:
    """Normalise pixel values to [0, 1] float32 (contract steps 2-4).

    ``(pixels - vmin) / (vmax - vmin)`` is evaluated in float64 and clipped with
    ``fmax``/``fmin``, which send NaN to 0 (step 3) and +inf, -inf to 1, 0 (what ``clip``
    does), then rounded once to float32. A zero is always +0.0 (a pixel of -0.0, or a
    quotient that underflows from below, would otherwise give -0.0 or +0.0 depending on
    where it sits in the array), so the bytes depend on the values only.

    Parameters
    ----------
    pixels : ndarray
        Any shape, any real dtype (big-endian allowed).
    limits : ChannelLimits
    out : ndarray of float32, optional
        Where to write the result (same shape; may be a strided view).

    Returns
    -------
    ndarray, same shape, float32, finite, in [0, 1].
    """
    if out is None:
        out = np.empty(pixels.shape, np.float32)
    if not limits.usable:
        out[...] = 0.0
        return out
    work = pixels.astype(np.float64)
    with np.errstate(over="ignore"):  # a huge pixel over a narrow range: inf, clipped to 1
        np.subtract(work, limits.vmin, out=work)
        np.divide(work, limits.vmax - limits.vmin, out=work)
    np.fmax(work, 0.0, out=work)
    np.fmin(work, 1.0, out=work)
    np.add(work, 0.0, out=work)  # -0.0 -> +0.0: fmax keeps either zero, varying with SIMD lane
    out[...] = work
    return out




@task(
    name="normalize",
    cache_policy=ContentPolicy(modules=step_modules("normalize")),
    **IO_TASK_OPTIONS,
)
def normalize_task(job: JobData | JobRejection) -> dict[str, ChannelLimits] | JobRejection:
    """Prefect task: :func:`job_limits` (passes a rejection through)."""
    if isinstance(job, JobRejection):
        return job
    return job_limits(job)
