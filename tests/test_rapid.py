"""Reading RAPID job folders: layouts, the join on id, labels, metadata, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from croissant_cutouts.simulate import BOGUS_KINDS, simulate_job, simulate_jobs
from croissant_cutouts.simulate.layouts import KINDS_FILE
from croissant_cutouts.tasks.dataset.cutout import cut_job
from croissant_cutouts.tasks.dataset.index import write_index
from croissant_cutouts.tasks.dataset.normalize import job_limits
from croissant_cutouts.tasks.errors import CatalogError, JobError
from croissant_cutouts.tasks.inputs.catalogs import (
    SIMULATED_KINDS_FILE,
    UNMATCHED_REAL,
    LabelOptions,
)
from croissant_cutouts.tasks.inputs.layouts import detect_layout
from croissant_cutouts.tasks.inputs.load import JobSpec, discover_jobs, load_job, reject_job
from croissant_cutouts.tasks.inputs.rapid import RapidLayout

SHAPE = (384, 320)
KW = dict(
    n_jobs=2,
    size=SHAPE,
    seed=7,
    fields=2,
    injections_per_mpx=200,
    transients_per_mpx=60,
    gallery=False,
)


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    root = tmp_path_factory.mktemp("sims")
    simulate_jobs(root / "rapid", **KW)
    simulate_jobs(root / "seed", layout="seed", **KW)
    return root


def copy_job(sims, tmp_path, name="jid0001"):
    dst = tmp_path / "jobs" / name
    shutil.copytree(sims / "rapid" / "jid0001", dst)
    return dst


def spec(job, **kw):
    return JobSpec(job.name, job, **kw)


def test_detects_layout_per_job(sims):
    assert detect_layout(sims / "rapid" / "jid0001") == "rapid"
    assert detect_layout(sims / "seed" / "jid0001") == "seed"


def test_rapid_labels_equal_the_simulators(sims):
    rapid = load_job(spec(sims / "rapid" / "jid0001"))
    seed = pd.read_csv(sims / "seed" / "jid0001" / "psfcat.csv")
    t = rapid.table
    assert t["label"].tolist() == (seed["match"] >= 0).astype(int).tolist()
    assert t["labelled"].all() and t["label"].sum() > 3
    np.testing.assert_allclose(t["x"], seed["x"], rtol=1e-8)
    real = t[t.label == 1]
    assert real["match_id"].str.match(r"^\d+_(inj|ou)$").all()
    assert (real["match_distance"] <= 4).all() and (real["truth_mag"] < 26).all()
    assert set(real["injected"]) <= {True, False}
    assert t[t.label == 0]["match_id"].isna().all()


def test_job_metadata_and_features(sims):
    job = load_job(spec(sims / "rapid" / "jid0002"))
    t = job.table
    hdr = fits.getheader(sims / "rapid" / "jid0002" / "bkg_subbed_science_image.fits")
    assert (t["filter"] == hdr["FILTER"]).all() and (t["mjd"] == hdr["MJD-OBS"]).all()
    assert (t["field"] == str(fits.getheader(job.images["difference"].path)["FIELD"])).all()
    assert (t["reference_file"] == "awaicgen_output_mosaic_image_resampled_gainmatched.fits").all()
    for col in (
        "sharpness",
        "roundness1",
        "npix",
        "peak",
        "flux_fit",
        "flux_err",
        "qfit",
        "xcentroid",
        "ycentroid",
        "finder_flux",
        "npixfit",
        "ra",
        "dec",
    ):
        assert t[col].notna().all(), col
    assert (np.hypot(t.x - t.xcentroid, t.y - t.ycentroid) < 3).all()
    assert t["flux"].equals(t["flux_fit"])  # the seed's flux column: the PSF-fit flux


def test_integer_features_keep_whole_numbers_only(tmp_path):
    job = write_hand_job(tmp_path, [], [], [(10.0, 10.0), (20.0, 20.0), (30.0, 30.0)])
    path = job / "diffimage_masked_psfcat.txt"
    psf = pd.read_csv(path, sep=" ")
    psf["npixfit"] = ["25", "7.5", "n/a"]
    psf["flags"] = ["0", "4", "1e30"]  # beyond int64: no whole number it could hold
    psf.to_csv(path, sep=" ", index=False)
    t = load_job(JobSpec(job.name, job)).table
    assert t["npixfit"].dtype == "Int64" and t["flags"].dtype == "Int64"
    assert t["npixfit"].tolist() == [25, pd.NA, pd.NA]
    assert t["flags"].tolist() == [0, 4, pd.NA]


def test_join_on_id_not_row_position(sims, tmp_path):
    """Regression: labels and features were copied between catalogs by row position."""
    job = copy_job(sims, tmp_path)
    before = load_job(spec(job)).table.set_index("catalog_row")
    finder = job / "diffimage_masked_psfcat_finder.txt"
    lines = finder.read_text().splitlines()
    body = lines[1:]
    np.random.default_rng(0).shuffle(body)
    finder.write_text("\n".join([lines[0], *body]) + "\n")
    after = load_job(spec(job)).table.set_index("catalog_row")
    pd.testing.assert_frame_equal(before, after)


#: Real RAPID outputs the simulator imitates, each job the same scene as ``jid0001``
#: (photutils 2 columns, 2025 names, text catalogs, cards in the science image).
VARIANTS = {
    "jid0002": {"photutils": "3"},
    "jid0003": {"photutils": "3", "names": "2026"},
    "jid0004": {"photutils": "3", "names": "2026", "catalogs": "parquet_only"},
    "jid0005": {"photutils": "2", "catalogs": "no_finder"},
    "jid0006": {"photutils": "3", "science_cards": False},
}
SCENE = dict(size=(384, 320), seed=5, fields=2, injections_per_mpx=150, transients_per_mpx=40)


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    simulate_job(root / "jid0001", k=0, photutils="2", **SCENE)
    for job_id, variant in VARIANTS.items():
        simulate_job(root / job_id, k=0, **SCENE, **variant)
    return root


FINDER_COLUMNS = ["xcentroid", "ycentroid", "sharpness", "npix", "peak", "finder_flux", "mag"]


@pytest.mark.parametrize("job_id", sorted(VARIANTS))
def test_every_rapid_variant_reads_as_the_same_candidates(variants, job_id):
    ref = load_job(spec(variants / "jid0001"))
    got = load_job(spec(variants / job_id))
    same = ["catalog_row", "x", "y", "flux_fit", "npixfit", "label", "match_id", "truth_mag"]
    same += ["filter", "mjd", "field", "ra", "dec", "bogus_kind"]
    pd.testing.assert_frame_equal(got.table[same], ref.table[same], check_exact=False, atol=1e-3)
    assert ref.table["label"].sum() > 3 and ref.table["reduced_chi2"].isna().all()
    photutils3 = VARIANTS[job_id]["photutils"] == "3"
    assert got.table["reduced_chi2"].notna().all() == photutils3
    if VARIANTS[job_id].get("catalogs") == "no_finder":
        assert got.table[FINDER_COLUMNS].isna().all().all()
        assert got.notes == [
            "no finder catalog beside diffimage_masked_psfcat.txt (RAPID before July 2025): "
            "candidates from the PSF-fit catalog alone, finder columns empty"
        ]
    else:
        assert not [n for n in got.notes if "finder" in n], got.notes  # joined, or parquet
        pd.testing.assert_frame_equal(
            got.table[FINDER_COLUMNS], ref.table[FINDER_COLUMNS], check_exact=False, atol=1e-3
        )
    if not VARIANTS[job_id].get("science_cards", True):
        assert len(got.notes) == 1 and "_reformatted.fits: not in" in got.notes[0]
    # the finder catalog, where there is one, is an input file (cache keys see it)
    folder = variants / job_id
    finders = sorted(p.name for p in folder.iterdir() if "_finder." in p.name)
    assert bool(finders) == (VARIANTS[job_id].get("catalogs") is None)
    names = [p.name for p in RapidLayout().catalog_files(folder)]
    assert [n for n in names if "_finder." in n] == finders
    assert finders == [n for n in (p.name for p in spec(folder).input_files()) if "_finder." in n]


@pytest.mark.flow
def test_every_rapid_variant_through_the_flow(tmp_path, capsys):
    """One folder of every variant (distinct fields, so the splits have sides), run whole."""
    from croissant_cutouts.flows.cli import main

    jobs = tmp_path / "jobs"
    scene = {**SCENE, "fields": 6}
    simulate_job(jobs / "jid0001", k=0, photutils="2", **scene)
    for k, (job_id, variant) in enumerate(VARIANTS.items(), start=1):
        simulate_job(jobs / job_id, k=k, **scene, **variant)
    out = tmp_path / "ds"
    assert main(["run", "-i", str(jobs), "-o", str(out), "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    status = pd.read_csv(out / "jobs.csv").set_index("job_id")["status"]
    assert (status == "ok").all() and len(status) == 1 + len(VARIANTS)
    index = pd.read_csv(out / "master_index.csv")
    per_job = index.groupby("job_id")
    assert (per_job["reduced_chi2"].count() > 0).tolist() == [False, True, True, True, False, True]
    assert (per_job["xcentroid"].count() > 0).tolist() == [True, True, True, True, False, True]
    for job_id, rows in per_job:  # our labels agree with the simulator's own, every variant
        kinds = pd.read_csv(jobs / job_id / KINDS_FILE, sep=r"\s+")
        assert rows["label"].sum() == (kinds["kind"] == "real").sum() > 0, job_id
        assert not (rows["bogus_kind"] == "unmatched_real").any(), job_id
    assert "jid0005: no finder catalog" in printed
    assert "jid0006: FILTER, ZPTMAG, MJD-OBS from Roman_TDS_simple_model_" in printed


def test_a_catalog_with_both_photutils_names_is_refused(sims, tmp_path):
    job = copy_job(sims, tmp_path)
    finder = job / "diffimage_masked_psfcat_finder.txt"
    table = pd.read_csv(finder, sep=r"\s+")
    table["x_centroid"] = table["xcentroid"] + 1.0
    table.to_csv(finder, sep=" ", index=False)
    with pytest.raises(CatalogError, match=r"finder\.txt.*both photutils names of x_centroid"):
        load_job(spec(job))
    with pytest.raises(CatalogError) as caught:
        load_job(spec(job))
    assert str(caught.value).startswith("job jid0001 (diffimage_masked_psfcat_finder.txt): ")
    assert str(caught.value).endswith("has both photutils names of x_centroid/xcentroid")


def test_a_rapid_job_without_a_psf_fit_catalog_names_every_name_looked_for(sims, tmp_path):
    job = copy_job(sims, tmp_path)
    (job / "diffimage_masked_psfcat.txt").unlink()
    with pytest.raises(JobError) as caught:
        RapidLayout().catalog_files(job)
    assert str(caught.value) == (
        "job jid0001: PSF-fit catalog missing (looked for diffimage_masked_psfcat.txt, "
        "diffimage_masked_psfcat.parquet, zogy_diffimage_masked_psfcat.txt, "
        "zogy_diffimage_masked_psfcat.parquet)"
    )


def test_plain_reference_when_no_gainmatched(sims, tmp_path):
    job = copy_job(sims, tmp_path)
    (job / "awaicgen_output_mosaic_image_resampled_gainmatched.fits").rename(
        job / "awaicgen_output_mosaic_image_resampled.fits"
    )
    t = load_job(spec(job)).table
    assert (t["reference_file"] == "awaicgen_output_mosaic_image_resampled.fits").all()


def test_unlabelled_job_still_gives_cutouts(sims, tmp_path):
    job = copy_job(sims, tmp_path)
    for p in [*job.glob("Roman_TDS_index_*.txt"), *job.glob("*_lite_inject.txt")]:
        p.unlink()
    data = load_job(spec(job))
    assert data.table["label"].isna().all() and not data.table["labelled"].any()
    out = tmp_path / "ds"
    write_index([cut_job(data, job_limits(data), out)], out)
    index = pd.read_csv(out / "master_index.csv")
    assert len(index) > 0 and index["label"].isna().all() and (~index["labelled"]).all()


def test_truth_origin_and_limits_are_parameters(sims):
    job = sims / "rapid" / "jid0001"
    base = load_job(spec(job)).table["label"].sum()
    zero_based = load_job(
        spec(job, labels=LabelOptions(truth_origin=0.0, match_radius_px=0.5))
    ).table
    assert zero_based["label"].sum() < base  # positions now off by one pixel
    strict = load_job(spec(job, labels=LabelOptions(mag_limit=22.0))).table
    assert strict["label"].sum() < base and (strict.loc[strict.label == 1, "truth_mag"] < 22).all()


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        ("drop_column", CatalogError, r"diffimage_masked_psfcat\.txt.*lacks column.*x_fit"),
        ("no_join", CatalogError, "do not join"),
        ("bad_truth", CatalogError, r"_lite_inject\.txt.*does not parse|lacks"),
        ("no_zptmag", JobError, "ZPTMAG"),
        ("dup_id", CatalogError, "more than once"),
        ("no_psfcat", JobError, r"^job jid0001: candidate catalog missing \(looked for psfcat"),
    ],
)
def test_bad_rapid_input_names_job_and_file(sims, tmp_path, damage, error, message):
    job = copy_job(sims, tmp_path)
    psf = job / "diffimage_masked_psfcat.txt"
    if damage == "drop_column":
        pd.read_csv(psf, sep=r"\s+").drop(columns="x_fit").to_csv(psf, sep=" ", index=False)
    elif damage == "no_join":
        t = pd.read_csv(psf, sep=r"\s+")
        t["id"] += 100000
        t.to_csv(psf, sep=" ", index=False)
    elif damage == "dup_id":
        t = pd.read_csv(psf, sep=r"\s+")
        t.loc[1, "id"] = t.loc[0, "id"]
        t.to_csv(psf, sep=" ", index=False)
    elif damage == "no_psfcat":
        psf.unlink()
    elif damage == "bad_truth":
        next(job.glob("*_lite_inject.txt")).write_text("xpix ypix\n1 2 3 4 5\n\x00\x01\n")
    else:
        path = job / "bkg_subbed_science_image.fits"
        with fits.open(path, mode="update") as hdul:
            del hdul[0].header["ZPTMAG"]
        for path in job.glob("*_reformatted.fits"):  # no header to fall back on either
            path.unlink()
    with pytest.raises(error, match=message):
        load_job(spec(job))


def test_missing_science_cards_come_from_the_reformatted_image_with_a_note(sims, tmp_path):
    job = copy_job(sims, tmp_path)
    full = load_job(spec(job))
    science = job / "bkg_subbed_science_image.fits"
    with fits.open(science, mode="update") as hdul:
        cards = {k: hdul[0].header.pop(k) for k in ("ZPTMAG", "FILTER", "MJD-OBS")}
        hdul[0].header["FIELD"] = 7  # FIELD is no science card: the science image keeps it
    (reformatted,) = job.glob("*_reformatted.fits")
    assert fits.getheader(reformatted)["ZPTMAG"] == cards["ZPTMAG"]
    data = load_job(spec(job))
    pd.testing.assert_series_equal(data.table["truth_mag"], full.table["truth_mag"])
    assert (data.table["filter"] == cards["FILTER"]).all()
    assert (data.table["mjd"] == cards["MJD-OBS"]).all()
    assert data.notes == [
        f"FILTER, ZPTMAG, MJD-OBS from {reformatted.name}: not in bkg_subbed_science_image.fits"
    ]
    # the reference's own zero point never stands in for the science's
    reference = job / "awaicgen_output_mosaic_image_resampled_gainmatched.fits"
    with fits.open(reference, mode="update") as hdul:
        hdul[0].header["ZPTMAG"] = 17.0
    reformatted.unlink()
    with pytest.raises(JobError, match="ZPTMAG"):
        load_job(spec(job))


def test_a_changed_fallback_header_changes_the_load_cache_key(sims, tmp_path):
    job = copy_job(sims, tmp_path)
    (reformatted,) = job.glob("*_reformatted.fits")
    before = spec(job).describe()
    with fits.open(reformatted, mode="update") as hdul:
        hdul[0].header["ZPTMAG"] = 18.5
    assert spec(job).describe() != before


def test_partial_join_rejects_rows(sims, tmp_path):
    job = copy_job(sims, tmp_path)
    finder = job / "diffimage_masked_psfcat_finder.txt"
    lines = finder.read_text().splitlines()
    finder.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # drop id 1
    data = load_job(spec(job))
    assert (
        data.row_rejects[0][0] == 0
        and "not in diffimage_masked_psfcat_finder.txt" in (data.row_rejects[0][1])
    )


def test_mixed_folder_of_both_layouts(sims, tmp_path):
    root = tmp_path / "jobs"
    shutil.copytree(sims / "rapid" / "jid0001", root / "jid0001")
    shutil.copytree(sims / "seed" / "jid0002", root / "jid0002")
    specs = discover_jobs(root)
    assert [s.resolved_layout() for s in specs] == ["rapid", "seed"]
    out = tmp_path / "ds"
    results = []
    for s in specs:
        d = load_job(s)
        results.append(cut_job(d, job_limits(d), out))
    summary = write_index(results, out)
    index = pd.read_csv(out / "master_index.csv")
    assert summary.cutouts == len(index) and index.labelled.all()
    assert index[index.job_id == "jid0001"].sharpness.notna().all()
    assert index[index.job_id == "jid0002"].sharpness.isna().all()


def write_hand_job(root, inject_rows, index_rows, det_xy, zpt=20.0, shape=(40, 40)):
    """A tiny RAPID folder written by hand: flat images, the given detections and truth."""
    job = root / "jid0100"
    job.mkdir(parents=True)
    for name in (
        "bkg_subbed_science_image.fits",
        "awaicgen_output_mosaic_image_resampled_gainmatched.fits",
        "diffimage_masked.fits",
        "scorrimage_masked.fits",
    ):
        hdu = fits.PrimaryHDU(np.random.default_rng(0).normal(0, 1, shape).astype(np.float32))
        if name.startswith("bkg"):
            hdu.header["ZPTMAG"] = zpt
            hdu.header["FILTER"] = "H158"
            hdu.header["MJD-OBS"] = 62000.5
        if name.startswith("diff"):
            hdu.header["FIELD"] = 42
        hdu.writeto(job / name)
    n = len(det_xy)
    ids = np.arange(1, n + 1)
    psf = pd.DataFrame(
        {
            "id": ids[::-1],
            "x_fit": [p[0] for p in det_xy][::-1],
            "y_fit": [p[1] for p in det_xy][::-1],
            "flux_fit": 1.0,
        }
    )
    finder = pd.DataFrame(
        {"id": ids, "xcentroid": [p[0] for p in det_xy], "ycentroid": [p[1] for p in det_xy]}
    )
    psf.to_csv(job / "diffimage_masked_psfcat.txt", sep=" ", index=False)
    finder.to_csv(job / "diffimage_masked_psfcat_finder.txt", sep=" ", index=False)
    pd.DataFrame(inject_rows, columns=["xpix", "ypix", "flux"]).to_csv(
        job / "Roman_TDS_simple_model_H158_1_1_lite_inject.txt", sep=" ", index=False
    )
    lines = ["# object_id ra dec x y realized_flux flux mag obj_type"]
    lines += [f"{oid} 0 0 {x} {y} 1 1 {mag} {kind}" for oid, x, y, mag, kind in index_rows]
    (job / "Roman_TDS_index_H158_1_1.txt").write_text("\n".join(lines) + "\n")
    return job


#: galsim 2.8's Roman H158 bandpass AB zero point, written out here (not taken from the
#: tool's table) so that these tests check the tool's injection formula independently.
H158_BAND_ZP = 15.074164829833911


def injected_counts(mag_ab, zptmag):
    """Raw-image counts RAPID writes for a fake of ``mag_ab`` (rapid_source_injections.py)."""
    return 10 ** (-0.4 * (mag_ab - (zptmag + H158_BAND_ZP)))


def test_hand_made_rapid_folder_every_label_worked_out(tmp_path):
    zpt = 20.0
    flux_22 = injected_counts(22.0, zpt)  # an injected fake of AB 22
    # 0-based detections (psfcat rows are written in reverse order of id)
    det = [
        (10.0, 10.0),
        (11.5, 10.0),  # two detections near injected fake A at (10.4, 10.0)
        (30.0, 30.0),  # one detection between two transients B (31.0) and C (30.0, 33.0)
        (5.0, 25.0),  # exactly 4 px from injected fake D at (9.0, 25.0)
        (20.0, 5.0),
    ]  # near a star only: bogus
    inject = [
        (11.4, 11.0, flux_22),  # A, 1-based
        (10.0, 26.0, flux_22),
    ]  # D, 1-based
    index = [
        (501, 32.0, 31.0, 2.0, "transient"),  # B: AB 22, 1 px away (1-based 32,31)
        (502, 31.0, 34.0, 1.0, "transient"),  # C: AB 21, 3 px away
        (503, 21.0, 6.0, -3.0, "star"),
    ]  # stars never label real
    job = write_hand_job(tmp_path, inject, index, det, zpt)
    t = load_job(JobSpec(job.name, job)).table
    # catalog rows are psfcat order: ids reversed, so row k holds det[n-1-k]
    by_det = t.iloc[::-1].reset_index(drop=True)
    assert by_det["label"].tolist() == [1, 0, 1, 1, 0]
    assert by_det["match_id"].fillna("").tolist() == ["0_inj", "", "501_ou", "1_inj", ""]
    assert by_det.loc[0, "match_distance"] == pytest.approx(0.4)
    assert by_det.loc[2, "match_id"] == "501_ou" and not by_det.loc[2, "injected"]
    assert by_det.loc[3, "match_distance"] == pytest.approx(4.0)
    assert by_det.loc[0, "truth_mag"] == pytest.approx(22.0)
    assert by_det.loc[2, "truth_mag"] == pytest.approx(22.0)  # mag + ZPTMAG
    assert (t["field"] == "42").all() and (t["filter"] == "H158").all()


def test_truth_origin_alone_moves_every_truth_position(tmp_path):
    # truth sources 1-based at (11, 11) and (21, 31): detections at 0-based (10, 10), (20, 30)
    inject = [(11.0, 11.0, injected_counts(22.0, 20.0))]
    index = [(7, 21.0, 31.0, 2.0, "transient")]
    job = write_hand_job(tmp_path, inject, index, [(10.0, 10.0), (20.0, 30.0)])
    one = load_job(JobSpec(job.name, job)).table
    assert one["label"].tolist() == [1, 1]
    assert one["match_distance"].tolist() == [0.0, 0.0]
    zero = load_job(JobSpec(job.name, job, labels=LabelOptions(truth_origin=0.0))).table
    assert zero["label"].tolist() == [1, 1]  # same radius: still within 4 px
    assert zero["match_distance"].tolist() == pytest.approx([2**0.5, 2**0.5], abs=1e-12)


def test_a_source_exactly_at_the_magnitude_limit_does_not_label_real(tmp_path):
    # ZPTMAG 20 + instrumental 6.0 = AB 26.0 exactly; 5.75 -> 25.75
    index = [(1, 11.0, 11.0, 6.0, "transient"), (2, 21.0, 31.0, 5.75, "transient")]
    job = write_hand_job(tmp_path, [], index, [(10.0, 10.0), (20.0, 30.0)])
    (job / "Roman_TDS_simple_model_H158_1_1_lite_inject.txt").unlink()
    at_26 = load_job(JobSpec(job.name, job, labels=LabelOptions(mag_limit=26.0))).table
    assert at_26["label"].tolist()[::-1] == [0, 1]  # rows are in reverse order of detection
    above = load_job(JobSpec(job.name, job, labels=LabelOptions(mag_limit=26.0 + 1e-9))).table
    assert above["label"].tolist() == [1, 1]


def test_injection_magnitudes_use_the_band_zero_point_and_exptime_free_counts(tmp_path):
    inject = [(11.0, 11.0, injected_counts(25.5, 20.0)), (21.0, 31.0, injected_counts(26.5, 20.0))]
    job = write_hand_job(tmp_path, inject, [], [(10.0, 10.0), (20.0, 30.0)])
    t = load_job(JobSpec(job.name, job)).table.iloc[::-1]  # rows: reverse detection order
    assert t["label"].tolist() == [1, 0]  # the AB 26.5 fake is past the limit
    assert t["truth_mag"].iloc[0] == pytest.approx(25.5, abs=1e-5)
    bright = load_job(JobSpec(job.name, job, labels=LabelOptions(mag_limit=27.0))).table
    assert bright["truth_mag"].tolist()[::-1] == pytest.approx([25.5, 26.5], abs=1e-5)


@pytest.mark.parametrize(
    ("cards", "message"),
    [
        ({"FILTER": "F999"}, r"filter 'F999' has no band zero point.*H158"),
        ({"FILTER": None}, "no FILTER"),
    ],
)
def test_a_labelled_job_with_an_unknown_filter_is_rejected(tmp_path, cards, message):
    job = write_hand_job(tmp_path, [(11.0, 11.0, 1000.0)], [], [(10.0, 10.0)])
    with fits.open(job / "bkg_subbed_science_image.fits", mode="update") as hdul:
        for key, value in cards.items():
            if value is None:
                del hdul[0].header[key]
            else:
                hdul[0].header[key] = value
    with pytest.raises(JobError, match=message):
        load_job(JobSpec(job.name, job))
    custom = LabelOptions(band_zeropoints={"F999": 15.0})
    if cards["FILTER"]:
        assert load_job(JobSpec(job.name, job, labels=custom)).table["labelled"].all()


@pytest.mark.flow
def test_run_on_rapid_jobs_with_an_unlabelled_one(tmp_path, capsys):
    import json

    import mlcroissant as mlc

    from croissant_cutouts.flows.cli import main

    jobs = tmp_path / "jobs"
    simulate_jobs(
        jobs, n_jobs=4, size=(512, 512), seed=9, fields=2, injections_per_mpx=150, gallery=False
    )
    for p in [
        *(jobs / "jid0004").glob("Roman_TDS_index_*"),
        *(jobs / "jid0004").glob("*_lite_inject.txt"),
    ]:
        p.unlink()
    out = tmp_path / "ds"
    assert main(["run", "-i", str(jobs), "-o", str(out), "--epochs", "1"]) == 0
    index = pd.read_csv(out / "master_index.csv")
    unlabelled = int((index.job_id == "jid0004").sum())
    assert unlabelled > 0 and index[index.job_id == "jid0004"].label.isna().all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unlabelled"] == unlabelled
    counts = metrics["counts"]
    assert sum(c["real"] + c["bogus"] for c in counts.values()) == len(index) - unlabelled
    records = list(mlc.Dataset(jsonld=str(out / "croissant.json")).records("transient_candidates"))
    assert len(records) == len(index)
    assert {r["transient_candidates/labelled"] for r in records} == {True, False}
    first = records[0]
    assert first["transient_candidates/filter"] in (b"H158", b"R062")
    assert first["transient_candidates/sharpness"] is not None


# --- the simulator's bogus kinds (simulated_candidate_kinds.txt) ---------------------------


@pytest.fixture(scope="module")
def kinds_job(tmp_path_factory):
    """One small simulated RAPID job (with the kinds sidecar) and its JobSummary."""
    job = tmp_path_factory.mktemp("kinds") / "jid0001"
    summary = simulate_job(job, size=256, seed=1, injections_per_mpx=300, transients_per_mpx=100)
    return job, summary


def copy_kinds_job(kinds_job, tmp_path, name="jid0001"):
    return Path(shutil.copytree(kinds_job[0], tmp_path / "jobs" / name))


def test_bogus_kind_where_the_simulator_says(kinds_job):
    job, summary = kinds_job
    data = load_job(spec(job))
    t = data.table
    bogus, real = t[t.label == 0], t[t.label == 1]
    assert len(bogus) > 0 and len(real) > 0 and t["bogus_kind"].dtype == "string"
    assert bogus["bogus_kind"].notna().all() and real["bogus_kind"].isna().all()
    assert set(bogus["bogus_kind"]) <= set(BOGUS_KINDS)
    counts = bogus["bogus_kind"].value_counts()
    assert {k: int(counts.get(k, 0)) for k in BOGUS_KINDS} == summary.bogus
    # the sidecar is an input (caches see it), last, and never counted as catalog rows
    assert data.files[-1].name == SIMULATED_KINDS_FILE == KINDS_FILE
    assert RapidLayout().catalog_files(job)[0].name == "diffimage_masked_psfcat.txt"
    assert RapidLayout().count_rows(job.name, job) == len(t) == summary.n_detections


def test_bogus_kind_empty_without_the_sidecar(kinds_job, tmp_path):
    job = copy_kinds_job(kinds_job, tmp_path)
    (job / KINDS_FILE).unlink()
    data = load_job(spec(job))
    assert data.table["bogus_kind"].isna().all() and (data.table.label == 0).any()
    assert KINDS_FILE not in {p.name for p in data.files}


def test_bogus_kind_empty_in_an_unlabelled_job(kinds_job, tmp_path):
    job = copy_kinds_job(kinds_job, tmp_path)
    for p in [*job.glob("Roman_TDS_index_*.txt"), *job.glob("*_lite_inject.txt")]:
        p.unlink()
    assert load_job(spec(job)).table["bogus_kind"].isna().all()
    (job / KINDS_FILE).write_text("id kind\n1 real\n")  # still checked: a clear error
    with pytest.raises(CatalogError, match="has no row for id '2'"):
        load_job(spec(job))


def test_simulated_real_labelled_bogus_is_unmatched_real(kinds_job):
    """Our labels with a brighter mag_limit than the simulation's: the kind says so."""
    job, _ = kinds_job
    base = load_job(spec(job)).table
    strict = load_job(spec(job, labels=LabelOptions(mag_limit=23.0))).table
    flipped = (base.label == 1) & (strict.label == 0)
    assert flipped.any()
    assert (strict.loc[flipped, "bogus_kind"] == UNMATCHED_REAL).all()
    assert strict.loc[base.label == 0, "bogus_kind"].equals(base.loc[base.label == 0, "bogus_kind"])
    assert (strict.bogus_kind == UNMATCHED_REAL).sum() == flipped.sum()


def test_a_row_without_a_valid_id_is_rejected_and_the_others_keep_their_kind(kinds_job, tmp_path):
    job = copy_kinds_job(kinds_job, tmp_path)
    base = load_job(spec(job)).table
    psfcat = job / "diffimage_masked_psfcat.txt"
    lines = psfcat.read_text().splitlines(keepends=True)
    lines[3] = "nan" + lines[3][lines[3].index(" ") :]  # catalog row 2 (id 3) loses its id
    psfcat.write_text("".join(lines))
    sidecar = job / KINDS_FILE
    sidecar.write_text(
        "".join(x for x in sidecar.read_text().splitlines(True) if x.split()[0] != "3")
    )
    data = load_job(spec(job))
    assert [k for k, _ in data.row_rejects] == [2] and "id" in dict(data.row_rejects)[2]
    kinds, before = data.table["bogus_kind"], base["bogus_kind"]
    assert kinds.isna()[2] and kinds.drop(index=2).equals(before.drop(index=2))


def test_count_rows_without_a_psf_fit_catalog_names_the_job(tmp_path):
    (tmp_path / "jid0007").mkdir()
    with pytest.raises(JobError, match=r"^job jid0007: PSF-fit catalog missing$"):
        RapidLayout().count_rows("jid0007", tmp_path / "jid0007")


def _damage_kinds(path, damage):
    lines = path.read_text().splitlines()
    if damage == "missing_column":
        lines[0] = "id cause"
    elif damage == "dup_id":
        lines[2] = "1 " + lines[2].split()[1]
    elif damage == "unknown_id":
        lines[3] = "99999 " + lines[3].split()[1]
    elif damage == "missing_row":
        del lines[4]
    elif damage == "bad_kind":
        lines[1] = lines[1].split()[0] + " ghost"
    elif damage == "bad_id":
        lines[1] = "nan " + lines[1].split()[1]
    elif damage == "ragged":
        lines[3] += " extra"
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("damage", "row", "message"),
    [
        ("missing_column", None, r"lacks column\(s\) kind; has \['id', 'cause'\]"),
        ("dup_id", 1, r"row 1: id '1' appears more than once \(first in row 0\)"),
        ("unknown_id", 2, r"row 2: id '99999' is not in diffimage_masked_psfcat\.txt"),
        ("missing_row", None, r"has no row for id '4' \(row 3 of diffimage_masked_psfcat\.txt\)"),
        ("bad_kind", 0, r"row 0: kind 'ghost' of id '1' is not one of real, saturated_star"),
        ("bad_id", 0, r"row 0: id 'nan' is missing or not a valid id"),
        ("ragged", 2, r"row 2: has 3 fields, the header has 2"),
    ],
)
def test_bad_kinds_sidecar_rejects_the_job(kinds_job, tmp_path, damage, row, message):
    job = copy_kinds_job(kinds_job, tmp_path)
    _damage_kinds(job / KINDS_FILE, damage)
    with pytest.raises(CatalogError, match=message) as info:
        load_job(spec(job))
    exc = info.value
    assert exc.job_id == "jid0001" and exc.path.name == KINDS_FILE and exc.row == row
    assert str(exc).startswith(f"job jid0001 ({KINDS_FILE}): ")
    # the rejection still counts the PSF-fit catalog's rows only
    assert reject_job(spec(job), exc).n_catalog_rows == kinds_job[1].n_detections


@pytest.mark.flow
def test_dataset_with_kinds_and_score_peak_verifies(kinds_job, tmp_path):
    from croissant_cutouts.flows.build import build_dataset
    from croissant_cutouts.tasks.config import Params
    from croissant_cutouts.tasks.verify import verify_dataset

    good = copy_kinds_job(kinds_job, tmp_path, "jid0001")
    bad = copy_kinds_job(kinds_job, tmp_path, "jid0002")
    _damage_kinds(bad / KINDS_FILE, "missing_row")
    out = tmp_path / "ds"
    params = Params().override("cutouts", retry_delay_s=0.0)
    summary = build_dataset(str(good.parent), str(out), params, ["create", "croissant"])
    n = kinds_job[1].n_detections
    assert summary.jobs_rejected == 1
    index = pd.read_csv(out / "master_index.csv", dtype={"bogus_kind": str})
    rejects = pd.read_csv(out / "rejects.csv", dtype=str)
    assert (index.job_id == "jid0001").sum() + (rejects.job_id == "jid0001").sum() == n
    why = rejects.loc[rejects.job_id == "jid0002", "reason"].iloc[0]
    assert why.startswith(f"{KINDS_FILE}: has no row for id '4'")
    assert index.loc[index.label == 0, "bogus_kind"].isin(BOGUS_KINDS).all()
    assert index.loc[index.label == 1, "bogus_kind"].isna().all()
    assert np.isfinite(index["score_peak"]).any()
    report = verify_dataset(out, good.parent)
    assert report.ok, report.problems


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (7, "7"),
        (np.int64(7), "7"),
        (7.0, "7"),
        ("7", "7"),
        (" 7.0 ", "7"),
        ("1e3", "1000"),
        (b"12", "12"),
        (7.5, "7.5"),
        ("abc", "abc"),
        ("", None),
        (None, None),
        (pd.NA, None),
        (float("nan"), None),
        ("inf", None),
        ("123456789012345678901", "123456789012345678901"),
    ],
)
def test_id_join_keys(value, key):
    from croissant_cutouts.tasks.inputs.rapid import _id_key

    assert _id_key(value) == key


def test_integer_columns_keep_every_whole_value_in_int64_range():
    """flags, npix, ...: a whole number is kept exactly, up to int64's range; the rest is NA."""
    from croissant_cutouts.tasks.inputs.catalogs import _whole

    values = [0.0, -7.0, 300.0, 2.0**62, 1024.0 * 1024, 2.5, np.nan, np.inf, -np.inf, 2.0**63,
              1e19, 1e20, -(2.0**63)]
    got = _whole(np.array(values))
    assert str(got.dtype) == "Int64"
    want = [0, -7, 300, 2**62, 1024 * 1024] + [None] * 7 + [None]
    assert [None if v is pd.NA else int(v) for v in got] == want


@pytest.mark.parametrize("zptmag", ["abc", float("nan"), float("inf")])
def test_a_zero_point_that_is_no_finite_number_rejects_the_job(tmp_path, zptmag):
    job = write_hand_job(tmp_path, [], [(1, 11.0, 11.0, 5.0, "transient")], [(10.0, 10.0)])
    (job / "Roman_TDS_simple_model_H158_1_1_lite_inject.txt").unlink()
    with pytest.raises(JobError, match=r"ZPTMAG = .* is not a finite number"):
        RapidLayout().parse_catalog(job.name, job, None, {"ZPTMAG": zptmag, "FILTER": "H158"})


def test_truth_index_zero_point_parameter_and_labelled_with_one_kind_of_truth(tmp_path):
    index = [(1, 11.0, 11.0, 5.0, "transient")]  # instrumental 5.0: AB 25.0 at ZPTMAG 20
    job = write_hand_job(tmp_path, [], index, [(10.0, 10.0)])
    (job / "Roman_TDS_simple_model_H158_1_1_lite_inject.txt").unlink()
    t = load_job(JobSpec(job.name, job)).table
    assert t["labelled"].all() and t["truth_mag"].tolist() == [25.0]
    own = LabelOptions(truth_index_zeropoint=21.5)  # AB 26.5: past the limit
    t = load_job(JobSpec(job.name, job, labels=own)).table
    assert t["labelled"].all() and t["label"].tolist() == [0]
    own = LabelOptions(truth_index_zeropoint=21.5, mag_limit=27.0)
    assert load_job(JobSpec(job.name, job, labels=own)).table["truth_mag"].tolist() == [26.5]


def test_injection_matches_carry_truth_id_and_injected_flag(tmp_path):
    inject = [(51.0, 51.0, 1.0), (11.0, 11.0, injected_counts(22.0, 20.0))]
    job = write_hand_job(tmp_path, inject, [], [(10.0, 10.0)])
    (job / "Roman_TDS_index_H158_1_1.txt").unlink()
    t = load_job(JobSpec(job.name, job)).table
    assert t["labelled"].all()
    assert (t["match_id"].tolist(), t["truth_id"].tolist()) == (["1_inj"], ["1"])
    assert t["injected"].tolist() == [True]


def test_absurd_truth_positions_never_match(tmp_path):
    index = [(1, 1e308, 11.0, 2.0, "transient"), (2, 11.0, 11.0, "nan", "transient")]
    job = write_hand_job(tmp_path, [(1e308, 11.0, 100.0), (11.0, 11.0, "nan")], index, [(10, 10)])
    t = load_job(JobSpec(job.name, job)).table
    assert t["labelled"].all() and t["label"].tolist() == [0]


@pytest.mark.parametrize(
    ("inject", "index", "message"),
    [
        ([("x", 11.0, 100.0)], [], r"_lite_inject\.txt\): row 0: xpix 'x' is not a number"),
        ([], [(3, 11.0, 11.0, "faint", "transient")], r"index_.*row 0: mag 'faint' is not a"),
    ],
)
def test_a_truth_field_that_is_no_number_rejects_the_job(tmp_path, inject, index, message):
    """A truth source dropped silently would turn its real detection into a bogus label."""
    job = write_hand_job(tmp_path, inject, index, [(10.0, 10.0)])
    with pytest.raises(CatalogError, match=message):
        load_job(JobSpec(job.name, job))


def test_a_read_error_is_raised_for_retry_and_a_bad_file_is_a_catalog_error(tmp_path, monkeypatch):
    """An OSError with an errno (EIO, a network mount) is transient: Prefect retries it."""
    import errno

    import croissant_cutouts.tasks.inputs.rapid as layouts_mod

    path = tmp_path / "zogy_diffimage_masked_psfcat.parquet"
    path.write_bytes(b"PAR1 but not a parquet file")
    with pytest.raises(
        CatalogError, match=r"^job jid1 \(zogy_diffimage_masked_psfcat\.parquet\): "
    ):
        layouts_mod._read_table("jid1", path)

    def fail(exc):
        def read_parquet(*args, **kwargs):
            raise exc

        return read_parquet

    monkeypatch.setattr(pd, "read_parquet", fail(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError) as info:
        layouts_mod._read_table("jid1", path)
    assert not isinstance(info.value, CatalogError) and info.value.errno == errno.EIO
    monkeypatch.setattr(pd, "read_parquet", fail(OSError("Invalid parquet footer")))  # no errno
    with pytest.raises(CatalogError, match="does not parse \\(Invalid parquet footer\\)"):
        layouts_mod._read_table("jid1", path)
