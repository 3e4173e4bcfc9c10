"""Normalisation clauses of the cutout contract."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.visualization import ZScaleInterval

from croissant_cutouts.tasks.dataset.normalize import ChannelLimits, apply_limits, zscale_limits


def test_limits_are_astropy_zscale_defaults():
    img = np.random.default_rng(1).normal(10, 2, (60, 70)).astype(np.float32)
    lim = zscale_limits(img)
    vmin, vmax = ZScaleInterval().get_limits(img)
    assert (lim.vmin, lim.vmax, lim.status) == (float(vmin), float(vmax), "ok")


def test_nan_is_ignored_not_zeroed():
    """Regression: earlier scripts turned NaN into 0 before ZScale, dragging the limits."""
    img = np.random.default_rng(2).normal(100, 1, (50, 50)).astype(np.float32)
    img[:, :20] = np.nan
    lim = zscale_limits(img)
    expected = ZScaleInterval().get_limits(img[:, 20:])
    assert lim.vmin == pytest.approx(float(expected[0]))
    assert lim.vmin > 90  # zeros would pull vmin to ~0


def test_apply_formula_float32_in_unit_interval():
    lim = ChannelLimits(10.0, 20.0, "ok")
    pix = np.array([5.0, 10.0, 12.5, 20.0, 25.0, np.nan, np.inf, -np.inf], dtype=">f4")
    out = apply_limits(pix, lim)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([0, 0, 0.25, 1, 1, 0, 1, 0], np.float32))


def test_apply_matches_contract_expression_bytes():
    rng = np.random.default_rng(3)
    pix = rng.normal(0, 5, (64, 64)).astype(np.float32)
    lim = ChannelLimits(-3.3, 4.7, "ok")
    expected = np.clip((pix.astype(np.float64) - lim.vmin) / (lim.vmax - lim.vmin), 0, 1)
    assert apply_limits(pix, lim).tobytes() == expected.astype(np.float32).tobytes()


def test_constant_data():
    lim = zscale_limits(np.full((30, 30), 7.0, np.float32))
    assert lim.status == "constant"
    out = apply_limits(np.full((4, 4), 7.0), lim)
    assert out.dtype == np.float32 and not out.any()


def test_all_nan_data():
    lim = zscale_limits(np.full((30, 30), np.nan, np.float32))
    assert lim.status == "no_finite_pixels" and not lim.usable
    assert not apply_limits(np.full((3, 3), np.nan), lim).any()


def test_big_endian_memmap_like_input():
    img = np.random.default_rng(4).normal(0, 1, (40, 40)).astype(">f4")
    assert zscale_limits(img) == zscale_limits(img.astype("<f4"))


@pytest.mark.parametrize("seed", range(8))
def test_fast_sample_gives_astropy_limits_exactly(seed):
    """The row-wise sample equals astropy's own, whatever the NaN pattern and shape."""
    from croissant_cutouts.tasks.dataset.normalize import zscale_sample

    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
    img = rng.normal(0, 1, shape).astype(">f4" if seed % 2 else "<f4")
    mask = rng.random(shape) < rng.choice([0.0, 0.01, 0.5, 0.99])
    img[mask] = np.nan
    if seed == 3:
        img[:, : shape[1] // 2] = np.inf
    if seed in (4, 5):  # every other row has one NaN: full rows and partial rows mixed
        img = rng.normal(0, 1, (400, 90)).astype(img.dtype)
        img[::2, 7] = np.nan
    finite = img[np.isfinite(img)]
    stride = int(max(1.0, finite.size / 1000))
    np.testing.assert_array_equal(zscale_sample(img), finite[::stride][:1000])
    if finite.size:
        assert zscale_limits(img) == zscale_limits(finite)  # 1-D: astropy's own path
        vmin, vmax = ZScaleInterval().get_limits(img)
        assert (zscale_limits(img).vmin, zscale_limits(img).vmax) == (float(vmin), float(vmax))


def test_finite_per_row_matches_a_plain_count():
    from croissant_cutouts.tasks.dataset.normalize import finite_per_row

    rng = np.random.default_rng(3)
    img = rng.normal(0, 1, (300, 70)).astype(">f4")  # big-endian, as FITS stores it
    img[5, 7] = np.nan
    img[100, :] = np.inf
    img[200, 3] = -np.inf
    img[150, 10] = np.inf
    img[150, 11] = -np.inf  # inf + -inf: a NaN sum
    img[250, :20] = 3e38  # finite pixels whose float32 sum overflows
    want = np.count_nonzero(np.isfinite(img), axis=1)
    for block in (1, 7, 64, 1000):
        assert (finite_per_row(img, rows_per_block=block) == want).all()
    assert finite_per_row(img)[250] == 70


def test_negative_zero_comes_out_as_positive_zero():
    """Cutout bytes (and their sha256) never depend on the sign of a zero."""
    lim = ChannelLimits(0.0, 1.0, "ok")
    out = apply_limits(np.array([-0.0, 0.0, -1e-300, -5.0], np.float64), lim)
    assert out.tobytes() == np.zeros(4, np.float32).tobytes()
    assert not np.signbit(out).any()


def test_a_range_that_overflows_float64_normalises_to_zeros():
    img = np.zeros((40, 40))
    img[::2] = -1.5e308
    img[1::2] = 1.5e308
    lim = zscale_limits(img)
    assert lim.status == "limits_not_finite" and not lim.usable
    assert (apply_limits(img[:4, :4], lim) == 0).all()


def test_a_zero_is_always_positive_zero():
    """A -0.0 pixel gives +0.0 wherever it sits (numpy's fmax keeps -0.0 in some SIMD lanes)."""
    limits = ChannelLimits(0.0, 1.0, "ok")
    for n in range(1, 20):
        for pos in range(n):
            pixels = np.full(n, 0.5)
            pixels[pos] = -0.0
            out = apply_limits(pixels, limits)
            assert not np.signbit(out).any(), (n, pos)
    pixels = np.array([-1e-320, -5.0, -np.inf, np.nan] * 5, ">f8")  # underflow, below, NaN
    assert not np.signbit(apply_limits(pixels, ChannelLimits(-0.0, 2.0, "ok"))).any()


def test_a_huge_pixel_over_a_narrow_range_is_clipped_without_a_warning():
    limits = ChannelLimits(0.0, 1e-300, "ok")
    out = apply_limits(np.array([1e308, -1e308, 0.5e-300], np.float64), limits)  # errors: raise
    assert out.tolist() == [1.0, 0.0, 0.5]
