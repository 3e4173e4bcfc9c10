"""The simulator: layout, physics sanity, truth matching, determinism."""

from __future__ import annotations

import filecmp

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from simulate import simulate_jobs
from simulate.scene import match_one_to_one, render_psf

FILES = [
    "bkg_subbed_science_image.fits",
    "awaicgen_output_mosaic_image_resampled.fits",
    "diffimage_masked.fits",
    "scorrimage_masked.fits",
    "psfcat.csv",
]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    summaries = simulate_jobs(out, n_jobs=2, size=(512, 384), seed=3)
    return out, summaries


def test_layout_and_images(jobs):
    out, summaries = jobs
    assert [s.job_id for s in summaries] == ["jid0001", "jid0002"]
    job = out / "jid0001"
    assert sorted(p.name for p in job.iterdir()) == sorted(FILES)
    sci = fits.open(job / FILES[0])[0]
    assert sci.data.shape == (512, 384) and sci.data.dtype == np.dtype(">f4")
    for key in ("FILTER", "ZPTMAG", "MJD-OBS", "EXPTIME", "SCA_NUM"):
        assert key in sci.header
    assert "FIELD" in fits.getheader(job / FILES[2])
    ref, diff, score = (fits.getdata(job / f) for f in FILES[1:4])
    assert np.isfinite(sci.data).all() and np.isfinite(ref).all()
    assert (ref == 0).any()  # no coverage is 0 in the reference, not NaN
    assert np.isnan(diff[0]).all() and np.isnan(diff[:, -1]).all()  # NaN-masked borders
    assert (np.isnan(diff) <= np.isnan(score)).all()


def test_catalog_truth_and_realism(jobs):
    out, summaries = jobs
    cat = pd.read_csv(out / "jid0001" / "psfcat.csv")
    assert list(cat.columns) == ["x", "y", "match", "flux", "fwhm", "elongation"]
    assert cat.x.between(0, 383).all() and cat.y.between(0, 511).all()
    real = cat[cat.match >= 0]
    assert real.match.is_unique
    total_real = sum(s.n_recovered for s in summaries)
    total = sum(s.n_detections for s in summaries)
    assert 0 < total_real < 0.3 * total  # a minority are real
    assert sum(s.bogus["cosmic_ray"] + s.bogus["hot_pixel"] for s in summaries) > 0
    assert all(s.n_recovered <= s.n_injected for s in summaries)


def test_match_one_to_one_closest_first():
    det = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 10.0]])
    truth = np.array([[0.9, 0.0], [12.0, 10.0]])
    assert match_one_to_one(det, truth, 2.0).tolist() == [-1, 0, 1]  # 2.0 exactly matches
    assert match_one_to_one(det, truth[:0], 2.0).tolist() == [-1, -1, -1]


def test_render_psf_conserves_flux_and_centres():
    img = render_psf((31, 31), np.array([15.0]), np.array([15.0]), np.array([100.0]), 2.0, 2.5)
    assert img.sum() == pytest.approx(100.0, rel=1e-5)
    assert np.unravel_index(img.argmax(), img.shape) == (15, 15)


def test_deterministic_and_independent_of_job_count(tmp_path, jobs):
    out, _ = jobs
    again = tmp_path / "again"
    simulate_jobs(again, n_jobs=3, size=(512, 384), seed=3, workers=2)
    for f in FILES:
        assert filecmp.cmp(out / "jid0001" / f, again / "jid0001" / f, shallow=False)
        assert filecmp.cmp(out / "jid0002" / f, again / "jid0002" / f, shallow=False)
    other = tmp_path / "other"
    simulate_jobs(other, n_jobs=1, size=(512, 384), seed=4)
    assert not filecmp.cmp(out / "jid0001" / FILES[0], other / "jid0001" / FILES[0], shallow=False)
