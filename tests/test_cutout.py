"""Geometry and file clauses of the cutout contract, against a slow obvious reference."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os

import numpy as np
import pytest

from croissant_cutouts.tasks.contract import cutout_filename, npy_bytes
from croissant_cutouts.tasks.dataset.cutout import (
    candidate_pixels,
    cut_job,
    extract_stamps,
    position_rejects,
    rows_path,
    score_peak,
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


BIG = (np.arange(130)[:, None] * 1000 + np.arange(150)[None, :] + 1).astype(np.float32)


@pytest.mark.parametrize(
    "centres",
    [
        [(32, 32), (98, 118), (60, 70), (32, 118), (98, 32)],  # all inside: the windowed path
        [(32, 32), (31, 50), (99, 60), (60, 31), (60, 119), (98, 118), (0, 0)],  # mixed
        [(-40, 10), (200, 10)],  # all at or beyond an edge
    ],
)
def test_interior_and_edge_windows_match_reference_on_an_image_larger_than_a_cutout(centres):
    """Centres at rows 32..98 and columns 32..118 have their windows inside a 130x150 image."""
    r = np.array([p[0] for p in centres])
    c = np.array([p[1] for p in centres])
    stamps = extract_stamps(BIG, r, c)
    for k, (row, col) in enumerate(centres):
        want = reference_stamp(BIG, float(col), float(row))
        np.testing.assert_array_equal(np.nan_to_num(stamps[k], nan=0.0), want)


def test_stamp_dtypes():
    inside = extract_stamps(BIG, np.array([60]), np.array([70]))
    assert inside.dtype == np.float32
    edge = extract_stamps(BIG.astype(np.int16), np.array([60, 0]), np.array([70, 0]))
    assert edge.dtype == np.float32 and np.isnan(edge[1, 0, 0])
    assert edge[0, 32, 32] == np.int16(BIG[60, 70])
    wide = extract_stamps(BIG.astype(np.float64), np.array([60, 0]), np.array([70, 0]))
    assert wide.dtype == np.float64  # no precision lost before normalisation
    r, c = candidate_pixels(np.array([1.2]), np.array([3.7]))
    assert r.dtype == c.dtype == np.int64


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


# --- score_peak: max of the raw score over the 3 x 3 pixels around the candidate pixel ------

SCORE = np.array(
    [
        [1.0, 2.0, np.nan, 0.5, 0.0],
        [3.0, -1.0, np.nan, np.inf, -2.0],
        [0.0, 9.0, np.nan, np.nan, -7.0],
        [np.nan, np.nan, np.nan, np.nan, -3.0],
        [np.nan, np.nan, np.nan, np.nan, -np.inf],
    ],
    np.float32,
)


@pytest.mark.parametrize(
    ("r", "c", "peak"),
    [
        (0, 0, 3.0),  # corner: rows 0-1, columns 0-1 only
        (1, 1, 9.0),  # inside
        (1, 3, 0.5),  # +inf and NaN ignored
        (0, 4, 0.5),  # top-right corner
        (2, 3, -2.0),  # +inf ignored; row 0 (0.5, 0.0) is outside the window
        (3, 3, -3.0),  # NaNs ignored; -inf ignored at (4, 4)
        (4, 4, -3.0),  # bottom-right corner, the rest NaN or -inf
        (2, 0, 9.0),  # left edge: columns 0-1 only
        (4, 1, np.nan),  # bottom edge, every pixel in the image NaN
        (4, 0, np.nan),  # bottom-left corner, all NaN
    ],
)
def test_score_peak_hand_worked(r, c, peak):
    got = score_peak(SCORE, np.array([r]), np.array([c]))
    assert got.dtype == np.float64 and got.shape == (1,)
    np.testing.assert_array_equal(got, [peak])


def test_score_peak_matches_an_obvious_loop_on_a_big_endian_memmap(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(0, 3, (30, 20)).astype(">f4")
    image[rng.random(image.shape) < 0.4] = np.nan
    image[10:14, :] = np.nan
    path = tmp_path / "score.raw"
    image.tofile(path)
    mapped = np.memmap(path, dtype=">f4", mode="r", shape=image.shape)
    r = rng.integers(0, 30, 500)
    c = rng.integers(0, 20, 500)
    want = []
    for rr, cc in zip(r, c, strict=True):
        win = image[max(rr - 1, 0) : rr + 2, max(cc - 1, 0) : cc + 2].astype(np.float64)
        win = win[np.isfinite(win)]
        want.append(win.max() if win.size else np.nan)
    np.testing.assert_array_equal(score_peak(mapped, r, c), want)
    assert np.isnan(want).any() and np.isfinite(want).any()
    assert score_peak(mapped, r[:0], c[:0]).shape == (0,)


def test_cut_job_adds_score_peak_and_keeps_the_cutout_bytes(make_job, tmp_path):
    """score_peak comes from the raw score image (not the cutout), in the kept rows' order."""
    import pandas as pd
    from conftest import ramp_image

    from croissant_cutouts.tasks.contract import CHANNELS
    from croissant_cutouts.tasks.dataset.cutout import make_tensors
    from croissant_cutouts.tasks.dataset.normalize import job_limits
    from croissant_cutouts.tasks.inputs.load import JobSpec, load_job, open_image

    shape = (40, 50)
    score = ramp_image(shape, 3) / 1000.0
    score[0:3, 45:50] = np.nan  # an all-NaN neighbourhood at the top-right corner
    score[20, 20] = 77.0
    catalog = pd.DataFrame(
        {
            "x": [19.6, 0.0, 49.0, 500.0, 10.2],
            "y": [21.4, 39.0, 0.0, 5.0, 4.5],
            "match": [1, -1, -1, -1, 2],
        }
    )
    job = make_job(shape=shape, catalog=catalog, images={"score": score})
    data = load_job(JobSpec(job.name, job))
    result = cut_job(data, job_limits(data), tmp_path / "ds")
    rows = result.read_rows()
    assert rows["catalog_row"].tolist() == [0, 1, 2, 4]  # row 3 is off the image
    assert result.n_catalog_rows == 5 and [k for k, _ in result.row_rejects] == [3]
    assert result.n_rows == 4 and (result.real, result.bogus) == (2, 2)
    assert result.rows_file == str(rows_path(tmp_path / "ds", data.job_id).resolve())
    assert result.seconds >= 0 and result.worker.rpartition(":")[2] == str(os.getpid())
    assert rows["score_peak"].dtype == np.float64
    # y = 4.5 rounds half up to row 5: rows 4-6, columns 9-11
    want = [77.0, score[38:40, 0:2].max(), np.nan, score[4:7, 9:12].max()]
    np.testing.assert_array_equal(rows["score_peak"].to_numpy(), np.asarray(want, np.float64))
    # the cutout bytes are those of the images alone
    images = {ch: open_image(data.images[ch]) for ch in CHANNELS}
    r, c = candidate_pixels(rows["x"].to_numpy(), rows["y"].to_numpy())
    tensors = make_tensors(images, result.limits, r, c)
    for tensor, name in zip(tensors, rows["cutout_filename"], strict=True):
        assert (tmp_path / "ds" / name).read_bytes() == npy_bytes(tensor)
    # each kept row's sha256 is that of its own cutout's data bytes, whatever rows were dropped
    assert rows["sha256"].dtype == "string"
    for name, digest in zip(rows["cutout_filename"], rows["sha256"], strict=True):
        data = (tmp_path / "ds" / name).read_bytes()[-64 * 64 * 4 * 4 :]
        assert hashlib.sha256(data).hexdigest() == digest
    assert tensors[0, 32, 32, 3] == 1.0  # the 77 peak saturates the normalised score channel


def _cut(make_job, out, layout, name="jid0001", **kw):
    from croissant_cutouts.tasks.dataset.normalize import job_limits
    from croissant_cutouts.tasks.inputs.load import JobSpec, load_job

    data = load_job(JobSpec(name, make_job(name, shape=(50, 60), seed=4)))
    return cut_job(data, job_limits(data), out, layout=layout, **kw)


def test_a_shard_is_np_save_of_the_files_layouts_cutouts(make_job, tmp_path):
    """Shard bytes are ``np.save`` of the stacked cutouts; each row's sha256 is its file's."""
    import hashlib

    files = _cut(make_job, tmp_path / "files", "files").read_rows()
    shards = _cut(make_job, tmp_path / "shards", "shards", batch=5).read_rows()
    stack = np.stack([np.load(tmp_path / "files" / f) for f in files["cutout_filename"]])
    buf = io.BytesIO()
    np.save(buf, stack)
    assert (tmp_path / "shards" / "shards" / "jid0001.npy").read_bytes() == buf.getvalue()
    assert shards["sha256"].tolist() == files["sha256"].tolist()
    assert shards["row"].tolist() == list(range(len(files)))
    assert (shards["shard"] == shards["cutout_filename"]).all()
    assert (shards["shard"] == "shards/jid0001.npy").all()
    second = _cut(make_job, tmp_path / "shards", "shards", name="jid0002").read_rows()
    assert (second["shard"] == "shards/jid0002.npy").all()
    assert (tmp_path / "shards" / "shards" / "jid0002.npy").is_file()
    for name, digest in zip(files["cutout_filename"], files["sha256"], strict=True):
        data = (tmp_path / "files" / name).read_bytes()[-64 * 64 * 4 * 4 :]
        assert hashlib.sha256(data).hexdigest() == digest


def test_a_short_writev_is_completed(make_job, tmp_path, monkeypatch):
    """When ``os.writev`` writes only part of a cutout, the rest still reaches the file."""
    import croissant_cutouts.tasks.dataset.cutout as cutout_mod

    whole = _cut(make_job, tmp_path / "whole", "files").read_rows()
    real = os.writev

    def short(fd, buffers):
        return real(fd, [bytes(buffers[0])[:100]])

    monkeypatch.setattr(cutout_mod.os, "writev", short)
    part = _cut(make_job, tmp_path / "part", "files").read_rows()
    for name in whole["cutout_filename"]:
        assert (tmp_path / "part" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert part["sha256"].tolist() == whole["sha256"].tolist()


@pytest.mark.parametrize("layout", ["files", "shards"])
def test_outputs_present_needs_the_manifest_and_every_file(make_job, tmp_path, layout):
    from croissant_cutouts.tasks.contract import STATE_DIR
    from croissant_cutouts.tasks.dataset.cutout import manifest_path, outputs_present

    out = tmp_path / "ds"
    assert not outputs_present(out, "jid0001", layout)
    rows = _cut(make_job, out, layout).read_rows()
    path = manifest_path(out, "jid0001", layout)
    assert path == out / STATE_DIR / "jobs" / layout / "jid0001.json"
    assert manifest_path(out, "jid0001") == out / STATE_DIR / "jobs" / "files" / "jid0001.json"
    assert outputs_present(out, "jid0001") is (layout == "files")
    assert outputs_present(out, "jid0001", layout)
    assert outputs_present(str(out), "jid0001", layout)
    files = sorted(set(rows["cutout_filename"]))
    assert json.loads(path.read_text()) == {"job_id": "jid0001", "layout": layout, "files": files}
    other = "shards" if layout == "files" else "files"
    assert not outputs_present(out, "jid0001", other)
    assert not outputs_present(out, "jid0002", layout)
    (out / rows["cutout_filename"].iloc[-1]).unlink()
    assert not outputs_present(out, "jid0001", layout)
    for text in ("{}", "not json", '{"files": []}'):
        path.write_text(text)
        assert outputs_present(out, "jid0001", layout) is (text == '{"files": []}')
    rows_path(out, "jid0001", layout).unlink()  # the index step needs the job's rows too
    assert not outputs_present(out, "jid0001", layout)


@pytest.mark.parametrize(
    ("shape", "dtype"), [((64, 64, 4), ">f4"), ((64, 64, 3), "<f4"), ((64, 64, 4), "<f8")]
)
def test_digest_and_bytes_refuse_other_shapes_and_byte_orders(shape, dtype):
    from croissant_cutouts.tasks.contract import cutout_sha256

    tensor = np.zeros(shape, dtype)
    with pytest.raises(ValueError, match=r"expected \(64, 64, 4\) <f4"):
        cutout_sha256(tensor)
    if np.dtype(dtype) != np.float32 or shape != (64, 64, 4):
        with pytest.raises(ValueError, match=r"expected \(64, 64, 4\) float32"):
            npy_bytes(tensor)


def test_a_failed_files_layout_job_leaves_no_cutouts(make_job, tmp_path, monkeypatch):
    """A write that fails part-way removes the cutouts the job had already written."""
    from conftest import fail_second_batch

    fail_second_batch(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        _cut(make_job, tmp_path / "ds", "files", batch=5)
    assert list((tmp_path / "ds" / "cutouts").iterdir()) == []


@pytest.mark.parametrize("layout", ["files", "shards"])
def test_a_failed_manifest_write_removes_the_jobs_files(make_job, tmp_path, monkeypatch, layout):
    import croissant_cutouts.tasks.dataset.cutout as cutout_mod

    def broken(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(cutout_mod, "atomic_write_text", broken)
    with pytest.raises(OSError, match="disk full"):
        _cut(make_job, tmp_path / "ds", layout)
    folder = tmp_path / "ds" / ("cutouts" if layout == "files" else "shards")
    assert list(folder.iterdir()) == []


def test_a_shards_job_without_cutouts_writes_no_shard(make_job, tmp_path):
    import pandas as pd

    from croissant_cutouts.tasks.dataset.cutout import manifest_path
    from croissant_cutouts.tasks.dataset.normalize import job_limits
    from croissant_cutouts.tasks.inputs.load import JobSpec, load_job

    catalog = pd.DataFrame({"x": [500.0, -9.0], "y": [5.0, 5.0], "match": [-1, -1]})
    data = load_job(JobSpec("jid0001", make_job("jid0001", catalog=catalog)))
    result = cut_job(data, job_limits(data), tmp_path / "ds", layout="shards")
    assert result.read_rows().empty and len(result.row_rejects) == 2
    assert not (tmp_path / "ds" / "shards" / "jid0001.npy").exists()
    manifest = json.loads(manifest_path(tmp_path / "ds", "jid0001", "shards").read_text())
    assert manifest["files"] == []
