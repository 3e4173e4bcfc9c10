"""The simulator: RAPID layout and formats, physics sanity, truth, realism, determinism."""

from __future__ import annotations

import filecmp

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table

from croissant_cutouts.simulate import BOGUS_KINDS, simulate_jobs
from croissant_cutouts.simulate.catalogs import match_one_to_one
from croissant_cutouts.simulate.layouts import KINDS_FILE
from croissant_cutouts.simulate.scene import FILTERS, flux_from_mag, moffat_stamp, render_points
from croissant_cutouts.simulate.zogy import zogy

SHAPE = (512, 448)  # non-square on purpose
#: galsim 2.8's Roman bandpass AB zero points and the Roman TDS exposure times, written out
#: here so the simulator's photometry is checked against numbers it does not compute.
BAND_ZP = {"H158": 15.074164829833911, "R062": 15.296832274841094}
EXPTIME = {"H158": 302.275, "R062": 161.025}
#: Catalog columns as photutils writes them (photutils 2.2 and 3.0 runs of RAPID's calls;
#: RAPID's pipeline/loadPSFCatIntoDBSourcesTable.py lists the same).
FINDER_2 = "id xcentroid ycentroid sharpness roundness1 roundness2 npix peak flux mag daofind_mag"
FINDER_3 = (
    "id x_centroid y_centroid sharpness roundness1 roundness2 n_pixels peak flux mag daofind_mag"
)
PSF_2 = (
    "id group_id group_size local_bkg x_init y_init flux_init x_fit y_fit flux_fit x_err y_err "
    "flux_err npixfit qfit cfit flags ra dec"
)
PSF_3 = (
    "id group_id group_size local_bkg x_init y_init flux_init x_fit y_fit flux_fit x_err y_err "
    "flux_err n_pixels_fit qfit cfit reduced_chi2 flags ra dec"
)


def injected_ab(job, inj):
    """AB magnitudes of injected fakes from RAPID's counts (rapid_source_injections.py)."""
    header = fits.getheader(job / IMAGES[0])
    return -2.5 * np.log10(inj.flux) + header["ZPTMAG"] + BAND_ZP[header["FILTER"]]
IMAGES = [
    "bkg_subbed_science_image.fits",
    "awaicgen_output_mosaic_image_resampled_gainmatched.fits",
    "diffimage_masked.fits",
    "scorrimage_masked.fits",
]


@pytest.fixture(scope="module")
def rapid(tmp_path_factory):
    out = tmp_path_factory.mktemp("rapid")
    summaries = simulate_jobs(
        out, n_jobs=4, size=SHAPE, seed=3, fields=2, gallery=True, injections_per_mpx=60
    )
    return out, summaries


def job_files(job):
    stems = {p.name for p in job.iterdir()}
    inject = next(n for n in stems if n.endswith("_lite_inject.txt"))
    index = next(n for n in stems if n.startswith("Roman_TDS_index_"))
    return inject, index


def test_rapid_layout_and_headers(rapid):
    out, summaries = rapid
    assert [s.job_id for s in summaries] == ["jid0001", "jid0002", "jid0003", "jid0004"]
    job = out / "jid0001"
    names = {p.name for p in job.iterdir()}
    for name in [
        *IMAGES,
        "diffimage_masked_psfcat_finder.txt",
        "diffimage_masked_psfcat.txt",
        "diffpsf.fits",
    ]:
        assert name in names
    inject, index = job_files(job)
    f, obsid, sca = index.removesuffix(".txt").split("_")[3:]
    assert inject == f"Roman_TDS_simple_model_{f}_{obsid}_{sca}_lite_inject.txt"
    assert f"Roman_TDS_simple_model_{f}_{obsid}_{sca}_lite_inject_reformatted.fits" in names
    for name in IMAGES:
        hdu = fits.open(job / name)[0]
        assert hdu.data.shape == SHAPE and hdu.data.dtype == np.dtype(">f4")
        assert hdu.header["BUNIT"] == "DN/s"
    sci = fits.getheader(job / IMAGES[0])
    for key in ("FILTER", "ZPTMAG", "MJD-OBS", "EXPTIME", "SCA_NUM", "CTYPE1"):
        assert key in sci
    assert sci["ZPTMAG"] == FILTERS[sci["FILTER"]]
    assert fits.getheader(job / "diffimage_masked.fits")["FIELD"] == summaries[0].field


def test_images_physics(rapid):
    out, _ = rapid
    sci, ref, diff, score = (fits.getdata(out / "jid0001" / n) for n in IMAGES)
    assert np.isfinite(sci).all() and np.isfinite(ref).all()
    assert (ref == 0).any()  # no coverage is 0 in the reference, not NaN
    assert np.isnan(diff[0]).all() and np.isnan(diff[:, -1]).all()  # NaN-masked edges
    assert (np.isnan(diff) <= np.isnan(score)).all()
    assert np.isnan(diff).mean() < 0.5
    # the reference is deeper: its noise is lower than the science image's
    assert np.nanstd(ref[ref != 0][:5000] - np.median(ref)) < np.std(sci) * 10
    finite = score[np.isfinite(score)]
    assert 0.8 < np.std(np.clip(finite, -5, 5)) < 1.3  # score in sigma


@pytest.mark.parametrize(
    ("job_id", "finder_names", "psf_names"),
    [("jid0001", FINDER_2, PSF_2), ("jid0002", FINDER_3, PSF_3)],
)
def test_catalog_formats_alternate_photutils_and_join_on_id(rapid, job_id, finder_names, psf_names):
    out, _ = rapid
    job = out / job_id
    finder = Table.read(job / "diffimage_masked_psfcat_finder.txt", format="ascii")
    psf = Table.read(job / "diffimage_masked_psfcat.txt", format="ascii")
    assert finder.colnames == finder_names.split()
    assert psf.colnames == psf_names.split()
    assert sorted(finder["id"]) == sorted(psf["id"]) and finder["id"][0] == 1
    renames = {"x_centroid": "xcentroid", "y_centroid": "ycentroid"}
    finder = finder.to_pandas().rename(columns=renames)
    joined = finder.merge(psf.to_pandas(), on="id")
    assert len(joined) == len(finder)
    assert (np.hypot(joined.x_fit - joined.xcentroid, joined.y_fit - joined.ycentroid) < 3).all()
    assert (
        joined.x_fit.between(0, SHAPE[1] - 1).all() and joined.y_fit.between(0, SHAPE[0] - 1).all()
    )


def test_kinds_sidecar_one_row_per_psfcat_row(rapid):
    """The simulator-only ``id kind`` table: psfcat ids in order, counts as the summary's."""
    out, summaries = rapid
    assert KINDS_FILE == "simulated_candidate_kinds.txt"
    for s in summaries:
        job = out / s.job_id
        assert (job / KINDS_FILE).read_text().splitlines()[0] == "id kind"
        kinds = pd.read_csv(job / KINDS_FILE, sep=r"\s+", dtype={"kind": str})
        psf = Table.read(job / "diffimage_masked_psfcat.txt", format="ascii")
        assert kinds["id"].tolist() == list(psf["id"]) and len(kinds) == s.n_detections
        assert set(kinds["kind"]) <= {"real", *BOGUS_KINDS}
        assert (kinds["kind"] == "real").sum() == s.n_real
        counts = kinds["kind"].value_counts()
        assert {k: int(counts.get(k, 0)) for k in BOGUS_KINDS} == s.bogus


def test_truth_files_are_one_based(rapid):
    out, summaries = rapid
    job = out / "jid0001"
    inject_name, index_name = job_files(job)
    inj = pd.read_csv(job / inject_name, sep=r"\s+")
    assert list(inj.columns) == ["xpix", "ypix", "flux"]
    mags = injected_ab(job, inj)
    assert mags.between(21, 28).all() and len(inj) == summaries[0].n_injected
    first = (job / index_name).read_text().splitlines()[0]
    assert first == "# object_id ra dec x y realized_flux flux mag obj_type"
    idx = pd.read_csv(
        job / index_name, sep=r"\s+", comment=None, skiprows=1, names=first[2:].split()
    )
    assert set(idx.obj_type) >= {"star", "galaxy"}
    # 1-based: an injected fake's peak in the science image is at (ypix - 1, xpix - 1)
    sci = fits.getdata(job / IMAGES[0])
    bright = inj.loc[inj.flux.idxmax()]
    r, c = round(bright.ypix - 1), round(bright.xpix - 1)
    win = sci[r - 1 : r + 2, c - 1 : c + 2]
    assert win.max() == sci[max(r - 4, 0) : r + 5, max(c - 4, 0) : c + 5].max()


def test_field_lists_cover_fields_and_epochs(rapid):
    out, _ = rapid
    lines = (out / "H158_fields.txt").read_text().splitlines()
    assert lines[0] == "PROCDATE JOB FILTER OBSID SCANUM FIELD MJD"
    table = pd.read_csv(out / "H158_fields.txt", sep=r"\s+")
    assert (out / "R062_fields.txt").exists()
    assert table.groupby("FIELD").JOB.count().min() >= 2  # each field at several epochs
    assert table.FIELD.nunique() == 2


def test_realism(rapid):
    _, summaries = rapid
    det = sum(s.n_detections for s in summaries)
    real = sum(s.n_real for s in summaries)
    assert det > 100 and 0 < real < 0.5 * det
    kinds = {k: sum(s.bogus[k] for s in summaries) for k in summaries[0].bogus}
    assert kinds["cosmic_ray"] > 0 and kinds["star_residual"] + kinds["galaxy_residual"] > 0
    assert all(s.n_recovered <= s.n_injected for s in summaries)


def test_detection_efficiency_falls_with_magnitude(tmp_path):
    summaries = simulate_jobs(
        tmp_path, n_jobs=1, size=1024, seed=5, injections_per_mpx=400, gallery=False
    )
    job = summaries[0].path
    inject_name, _ = job_files(job)
    inj = pd.read_csv(job / inject_name, sep=r"\s+")
    psf = Table.read(job / "diffimage_masked_psfcat.txt", format="ascii")
    mag = injected_ab(job, inj)
    m = match_one_to_one(
        np.column_stack([inj.xpix - 1, inj.ypix - 1]),
        np.column_stack([psf["x_fit"], psf["y_fit"]]),
        2.0,
    )
    bright, faint = (mag < 24).to_numpy(), (mag > 26.5).to_numpy()
    assert (m[bright] >= 0).mean() > 0.7 > 0.3 > (m[faint] >= 0).mean()


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """Job 1 of the ``rapid`` fixture's run in the seed layout, matched within 2 px."""
    out = tmp_path_factory.mktemp("seed")
    summaries = simulate_jobs(
        out,
        n_jobs=1,
        size=SHAPE,
        seed=3,
        fields=2,
        layout="seed",
        injections_per_mpx=60,
        match_radius_px=2.0,
    )
    return out, summaries


def test_seed_layout_from_same_simulation(seed, rapid):
    out, _ = rapid
    job = seed[0] / "jid0001"
    assert {p.name for p in job.iterdir()} == {
        "bkg_subbed_science_image.fits",
        "awaicgen_output_mosaic_image_resampled.fits",  # plain name in the seed layout
        "diffimage_masked.fits",
        "scorrimage_masked.fits",
        "psfcat.csv",
    }
    cat = pd.read_csv(job / "psfcat.csv")
    assert list(cat.columns) == ["x", "y", "match", "flux", "fwhm", "elongation",
                                 "simulated_kind"]
    assert cat.match.dtype == np.int64
    psf = Table.read(out / "jid0001" / "diffimage_masked_psfcat.txt", format="ascii")
    np.testing.assert_array_equal(cat.x, psf["x_fit"])  # full precision
    np.testing.assert_array_equal(cat.flux, psf["flux_fit"])
    kinds = Table.read(out / "jid0001" / "simulated_candidate_kinds.txt", format="ascii")
    assert list(cat.simulated_kind) == [str(k) for k in kinds["kind"]]  # same causes, same rows
    assert cat[cat.match >= 0].match.is_unique
    assert cat.x.between(0, SHAPE[1] - 1).all() and cat.y.between(0, SHAPE[0] - 1).all()
    for name in ("diffimage_masked.fits", "scorrimage_masked.fits"):
        assert filecmp.cmp(job / name, out / "jid0001" / name, shallow=False)
    ref = fits.getdata(job / "awaicgen_output_mosaic_image_resampled.fits")
    assert ref.dtype == np.dtype(">f4") and ref.shape == SHAPE and (ref == 0).any()


def test_seed_matches_lie_within_radius_of_real_truth(seed, rapid):
    """``match`` is the truth row (index file rows, then injected rows) within 2 px."""
    out, _ = rapid
    cat = pd.read_csv(seed[0] / "jid0001" / "psfcat.csv")
    inject_name, index_name = job_files(out / "jid0001")
    first = (out / "jid0001" / index_name).read_text().splitlines()[0]
    idx = pd.read_csv(out / "jid0001" / index_name, sep=r"\s+", skiprows=1, names=first[2:].split())
    inj = pd.read_csv(out / "jid0001" / inject_name, sep=r"\s+")
    zpt = fits.getheader(out / "jid0001" / IMAGES[0])["ZPTMAG"]
    truth = pd.DataFrame(
        {
            "x": np.r_[idx.x, inj.xpix] - 1.0,
            "y": np.r_[idx.y, inj.ypix] - 1.0,
            "kind": np.r_[idx.obj_type, ["injected"] * len(inj)],
            "mag": np.r_[idx.mag + zpt, injected_ab(out / "jid0001", inj)],
        }
    )
    real = cat[cat.match >= 0]
    assert len(real) == seed[1][0].n_real > 0 and (cat.match == -1).sum() > len(real)
    t = truth.iloc[real.match.to_numpy()]
    assert np.hypot(real.x.to_numpy() - t.x, real.y.to_numpy() - t.y).max() <= 2.0
    assert t.kind.isin(["transient", "injected"]).all() and (t.mag < 26.0).all()


def test_score_is_significant_at_bright_injections(rapid):
    out, _ = rapid
    job = out / "jid0001"
    inject_name, _ = job_files(job)
    inj = pd.read_csv(job / inject_name, sep=r"\s+")
    score = fits.getdata(job / IMAGES[3])
    checked = 0
    for row in inj[injected_ab(job, inj) < 23.5].itertuples():
        r, c = round(row.ypix - 1), round(row.xpix - 1)
        win = score[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
        if np.isfinite(win).all():
            assert win.max() > 5.0
            checked += 1
    assert checked > 0


def test_headers_have_no_time_dependent_cards(rapid):
    out, _ = rapid
    for name in IMAGES:
        header = fits.getheader(out / "jid0001" / name)
        assert not [k for k in header if k.startswith(("DATE", "ORIGIN"))]


def test_gallery_png(rapid):
    out, _ = rapid
    assert (out / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_deterministic_and_independent_of_job_count(tmp_path, rapid):
    out, _ = rapid
    again = tmp_path / "again"
    simulate_jobs(again, n_jobs=2, size=SHAPE, seed=3, fields=2, workers=2, injections_per_mpx=60)
    for job in ("jid0001", "jid0002"):
        for f in (out / job).iterdir():
            assert filecmp.cmp(f, again / job / f.name, shallow=False), f.name
    other = tmp_path / "other"
    simulate_jobs(other, n_jobs=1, size=SHAPE, seed=4, fields=2, injections_per_mpx=60)
    assert not filecmp.cmp(
        out / "jid0001" / IMAGES[0], other / "jid0001" / IMAGES[0], shallow=False
    )


def test_match_one_to_one_closest_first():
    det = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 10.0]])
    truth = np.array([[0.9, 0.0], [12.0, 10.0]])
    assert match_one_to_one(det, truth, 2.0).tolist() == [-1, 0, 1]  # 2.0 exactly matches
    assert match_one_to_one(det, truth[:0], 2.0).tolist() == [-1, -1, -1]


def test_render_points_conserves_flux_and_centres():
    img = render_points((31, 31), np.array([15.0]), np.array([15.0]), np.array([100.0]), 2.0, 2.5)
    assert img.sum() == pytest.approx(100.0, rel=1e-3)
    assert np.unravel_index(img.argmax(), img.shape) == (15, 15)


def test_zogy_point_source_flux_and_significance():
    rng = np.random.default_rng(0)
    shape = (128, 128)
    ps, pr = moffat_stamp(2.0, 2.5), moffat_stamp(2.4, 2.5)
    sn, sr = 1.0, 0.5
    flux = 400.0
    new = render_points(shape, np.array([64.0]), np.array([64.0]), np.array([flux]), 2.0, 2.5)
    new += rng.normal(0, sn, shape)
    ref = rng.normal(0, sr, shape)
    d, s, psf_d = zogy(new, ref, ps, pr, sn, sr, np.zeros(shape, bool))
    assert d[58:71, 58:71].sum() == pytest.approx(flux, rel=0.1)
    assert np.unravel_index(np.nanargmax(s), shape) == (64, 64)
    expected = flux / np.hypot(sn, sr) * np.sqrt(np.sum(psf_d**2))
    assert s[64, 64] == pytest.approx(expected, rel=0.35)
    assert psf_d.sum() == pytest.approx(1.0)


def test_flux_from_mag():
    assert flux_from_mag(17.638, 17.638) == pytest.approx(1.0)
    assert flux_from_mag(20.138, 17.638) == pytest.approx(0.1)


def test_injected_fakes_are_raw_counts_and_pixels_are_dn_per_s(rapid):
    """The injection list holds raw counts; the science image holds counts / EXPTIME."""
    out, _ = rapid
    job = out / "jid0001"
    header = fits.getheader(job / IMAGES[0])
    assert header["EXPTIME"] == EXPTIME[header["FILTER"]]
    inj = pd.read_csv(job / job_files(job)[0], sep=r"\s+")
    sci = fits.getdata(job / IMAGES[0]).astype(np.float64)
    bright = inj.loc[inj.flux.idxmax()]
    r, c = round(bright.ypix - 1), round(bright.xpix - 1)
    if not (8 <= r < SHAPE[0] - 8 and 8 <= c < SHAPE[1] - 8):
        pytest.skip("brightest fake too near an edge")
    aperture = sci[r - 7 : r + 8, c - 7 : c + 8].sum()  # 15 x 15: the whole rendered stamp
    assert aperture == pytest.approx(bright.flux / header["EXPTIME"], rel=0.15)
    assert 1e2 < bright.flux < 1e6  # AB 21-28 at ZPTMAG + zp_band ~ 32.7: counts, not DN/s


@pytest.mark.parametrize(
    ("variant", "present", "absent"),
    [
        (
            {"names": "2026"},
            ["zogy_diffimage_masked.fits", "scorrimage_masked.fits",
             "zogy_diffimage_masked_psfcat.txt", "zogy_diffimage_masked_psfcat_finder.txt",
             "zogy_diffimage_masked_psfcat.parquet"],
            ["diffimage_masked.fits", "zogy_scorrimage_masked.fits"],
        ),
        (
            {"names": "2026", "catalogs": "parquet_only"},
            ["zogy_diffimage_masked_psfcat.parquet"],
            ["zogy_diffimage_masked_psfcat.txt", "zogy_diffimage_masked_psfcat_finder.txt"],
        ),
        (
            {"catalogs": "no_finder"},
            ["diffimage_masked_psfcat.txt"],
            ["diffimage_masked_psfcat_finder.txt", "diffimage_masked_psfcat.parquet"],
        ),
    ],
)
def test_rapid_file_name_and_catalog_variants(tmp_path, variant, present, absent):
    (s,) = simulate_jobs(tmp_path, n_jobs=1, size=(256, 256), seed=2, **variant)
    names = {p.name for p in s.path.iterdir()}
    assert set(present) <= names and not set(absent) & names


def test_parquet_is_rapids_inner_join_of_psfcat_and_finder(tmp_path):
    (s,) = simulate_jobs(tmp_path, n_jobs=1, size=(256, 256), seed=2, names="2026", photutils="3")
    stem = s.path / "zogy_diffimage_masked_psfcat"
    parquet = pd.read_parquet(stem.with_suffix(".parquet"))
    psf = Table.read(stem.with_suffix(".txt"), format="ascii").to_pandas()
    finder = Table.read(f"{stem}_finder.txt", format="ascii").to_pandas()
    assert list(parquet.columns) == PSF_3.split() + FINDER_3.split()[1:]
    pd.testing.assert_frame_equal(
        parquet[["id", "x_fit", "x_centroid"]].reset_index(drop=True),
        psf[["id", "x_fit"]].merge(finder[["id", "x_centroid"]], on="id"),
        check_dtype=False,
        atol=1e-3,
    )


def test_science_cards_can_be_left_to_the_reformatted_image(tmp_path):
    (s,) = simulate_jobs(tmp_path, n_jobs=1, size=(256, 256), seed=2, science_cards=False)
    science = fits.getheader(s.path / IMAGES[0])
    (reformatted,) = s.path.glob("*_reformatted.fits")
    for card in ("FILTER", "ZPTMAG", "MJD-OBS"):
        assert card not in science and card in fits.getheader(reformatted)
