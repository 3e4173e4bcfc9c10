"""Geometry and file clauses of the cutout contract, against a slow obvious reference."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from tasks.cutout import (
    candidate_pixels,
    cutout_filename,
    extract_stamps,
    npy_bytes,
    position_rejects,
)


def reference_stamp(image: np.ndarray, x: float, y: float) -> np.ndarray:
    """Obvious per-pixel implementation of the contract's geometry (zeros off the image)."""
    r, c = math.floor(y + 0.5), math.floor(x + 0.5)
    out = np.zeros((64, 64), np.float64)
    for i in range(64):
        for j in range(64):
            rr, cc = r - 32 + i, c - 32 + j
            if 0 <= rr < image.shape[0] and 0 <= cc < image.shape[1]:
                out[i, j] = image[rr, cc]
    return out


def vector_stamp(image: np.ndarray, x: float, y: float) -> np.ndarray:
    r, c = candidate_pixels(np.array([x]), np.array([y]))
    return np.nan_to_num(extract_stamps(image, r, c)[0], nan=0.0)


SHAPE = (70, 45)  # non-square: 70 rows, 45 columns
IMAGE = (np.arange(SHAPE[0])[:, None] * 1000 + np.arange(SHAPE[1])[None, :] + 1).astype(np.float64)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (0.0, 0.0),  # top-left corner
        (44.0, 0.0),  # top-right corner
        (0.0, 69.0),  # bottom-left corner
        (44.0, 69.0),  # bottom-right corner
        (22.0, 0.0),
        (22.0, 69.0),
        (0.0, 35.0),
        (44.0, 35.0),  # the four edges
        (22.3, 35.7),
        (10.5, 20.5),
        (10.49, 20.49),
        (-0.49, -0.5),
        (44.49, 69.49),
    ],
)
def test_geometry_matches_reference(x, y):
    np.testing.assert_array_equal(vector_stamp(IMAGE, x, y), reference_stamp(IMAGE, x, y))


def test_candidate_pixel_at_index_32_32():
    stamp = vector_stamp(IMAGE, 20.0, 30.0)
    assert stamp[32, 32] == IMAGE[30, 20]
    assert stamp[31 + 1, 31] == IMAGE[30, 19]


@pytest.mark.parametrize(
    ("v", "pixel"), [(10.49, 10), (10.5, 11), (10.51, 11), (-0.5, 0), (-0.51, -1), (9.5, 10)]
)
def test_nearest_pixel_either_side_of_half(v, pixel):
    """Regression: int() truncation put candidates one pixel off."""
    r, c = candidate_pixels(np.array([v]), np.array([v]))
    assert r[0] == pixel and c[0] == pixel


def test_source_near_top_left_edge_stays_centred():
    """Regression: padding only at the high-index end moved edge sources off-centre."""
    img = np.zeros(SHAPE)
    img[2, 3] = 1.0
    stamp = vector_stamp(img, 3.0, 2.0)
    assert stamp[32, 32] == 1.0 and stamp.sum() == 1.0
    assert not stamp[:30].any() and not stamp[:, :29].any()


def test_position_rejects_outside_and_non_finite():
    x = np.array([0.0, -0.5, -0.51, 44.49, 44.5, np.nan, 3.0, np.inf])
    y = np.array([0.0, 0.0, 0.0, 69.49, 0.0, 1.0, 69.5, 2.0])
    reasons = position_rejects(x, y, SHAPE)
    assert sorted(reasons) == [2, 4, 5, 6, 7]
    assert "outside" in reasons[2] and "not finite" in reasons[5]


def test_npy_bytes_equal_numpy_save():
    t = np.random.default_rng(0).random((64, 64, 4), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, t)
    assert npy_bytes(t) == buf.getvalue()
    with pytest.raises(ValueError):
        npy_bytes(t.astype(np.float64))


def test_filename_padding():
    assert cutout_filename("jid7", 3) == "cutouts/jid7_cutout00003.npy"
    assert cutout_filename("jid7", 123456) == "cutouts/jid7_cutout123456.npy"
