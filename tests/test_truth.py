"""Labels from truth: one-to-one, closest first, radius inclusive, order-independent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from croissant_cutouts.tasks.inputs.truth import label_detections, match_one_to_one, to_zero_based


def truth(rows):
    frame = pd.DataFrame(rows, columns=["x", "y", "mag", "match_id", "injected"])
    frame["truth_id"] = frame["match_id"].str.split("_").str[0]
    return frame


def test_two_detections_near_one_truth_source():
    """Regression: greedy truth-by-truth matching let one truth label two detections."""
    t = truth([(10.0, 10.0, 22.0, "0_inj", True)])
    out = label_detections(np.array([11.5, 10.5]), np.array([10.0, 10.0]), t)
    assert out["label"].tolist() == [0, 1]  # only the closer detection is real
    assert out["match_id"].tolist()[1] == "0_inj" and pd.isna(out["match_id"][0])
    assert out["match_distance"][1] == pytest.approx(0.5)


def test_two_truth_sources_near_one_detection():
    """Regression: a later truth overwrote an earlier one on the same detection."""
    t = truth([(13.0, 10.0, 22.0, "0_inj", True), (10.0, 11.0, 23.0, "77_ou", False)])
    out = label_detections(np.array([10.0]), np.array([10.0]), t)
    assert out["match_id"].tolist() == ["77_ou"] and not out["injected"][0]
    assert out["truth_mag"][0] == 23.0


def test_truth_exactly_at_radius_matches():
    t = truth([(14.0, 10.0, 22.0, "0_inj", True)])
    assert label_detections(np.array([10.0]), np.array([10.0]), t, radius_px=4.0)["label"][0] == 1
    assert label_detections(np.array([9.999]), np.array([10.0]), t, radius_px=4.0)["label"][0] == 0


def test_faint_truth_is_ignored_for_both_kinds():
    t = truth(
        [
            (10.0, 10.0, 26.5, "0_inj", True),
            (20.0, 20.0, 27.0, "5_ou", False),
            (30.0, 30.0, np.nan, "1_inj", True),
        ]
    )
    out = label_detections(np.array([10.0, 20.0, 30.0]), np.array([10.0, 20.0, 30.0]), t)
    assert out["label"].tolist() == [0, 0, 0]


def test_one_based_positions_are_converted_once():
    xpix = np.array([11.0])  # 1-based file value of a source at 0-based x = 10
    t = truth([(to_zero_based(xpix, 1)[0], 10.0, 22.0, "0_inj", True)])
    out = label_detections(np.array([10.0]), np.array([10.0]), t, radius_px=0.5)
    assert out["label"][0] == 1
    unconverted = truth([(xpix[0], 10.0, 22.0, "0_inj", True)])
    assert (
        label_detections(np.array([10.0]), np.array([10.0]), unconverted, radius_px=0.5)["label"][0]
        == 0
    )


def test_order_of_files_does_not_matter():
    rng = np.random.default_rng(0)
    det = rng.uniform(0, 50, (80, 2))
    tr = rng.uniform(0, 50, (60, 2))
    m = match_one_to_one(det, tr, 4.0)
    # reverse both orders: the same pairs are found
    m_rev = match_one_to_one(det[::-1], tr[::-1], 4.0)[::-1]
    pairs = {(i, j) for i, j in enumerate(m) if j >= 0}
    pairs_rev = {(i, len(tr) - 1 - j) for i, j in enumerate(m_rev) if j >= 0}
    assert pairs == pairs_rev
    assert len({j for _, j in pairs}) == len(pairs)  # one-to-one


def test_nan_positions_never_match():
    assert match_one_to_one(np.array([[np.nan, 1.0]]), np.array([[1.0, 1.0]]), 4).tolist() == [-1]


def test_no_truth_gives_all_bogus():
    out = label_detections(np.array([1.0, 2.0]), np.array([1.0, 2.0]), truth([]))
    assert out["label"].tolist() == [0, 0] and out["match_id"].isna().all()


def test_readers_on_a_simulated_rapid_job_reproduce_its_labels(tmp_path):
    """Labels from the RAPID truth files equal the simulator's own (seed layout) labels."""
    from astropy.io import fits
    from astropy.table import Table

    from croissant_cutouts.simulate import simulate_jobs
    from croissant_cutouts.tasks.config import ROMAN_BAND_ZEROPOINTS
    from croissant_cutouts.tasks.inputs.truth import read_injections, read_simulation_truth

    kw = dict(
        n_jobs=1,
        size=(384, 320),
        seed=11,
        injections_per_mpx=200,
        transients_per_mpx=100,
        gallery=False,
    )
    simulate_jobs(tmp_path / "rapid", **kw)
    simulate_jobs(tmp_path / "seed", layout="seed", **kw)
    job = tmp_path / "rapid" / "jid0001"
    header = fits.getheader(job / "bkg_subbed_science_image.fits")
    zpt = header["ZPTMAG"]
    inj_zpt = zpt + ROMAN_BAND_ZEROPOINTS[header["FILTER"]]
    inj = read_injections("jid0001", next(job.glob("*_lite_inject.txt")), inj_zpt)
    sim = read_simulation_truth("jid0001", next(job.glob("Roman_TDS_index_*.txt")), zpt)
    assert len(sim) > 0 and inj["mag"].between(21, 28).all()
    psf = Table.read(job / "diffimage_masked_psfcat.txt", format="ascii").to_pandas()
    labels = label_detections(psf["x_fit"], psf["y_fit"], pd.concat([inj, sim]))
    seed = pd.read_csv(tmp_path / "seed" / "jid0001" / "psfcat.csv")
    assert labels["label"].tolist() == (seed["match"] >= 0).astype(int).tolist()
    assert labels["label"].sum() > 0


def test_unparsable_truth_file_names_job_and_file(tmp_path):
    from croissant_cutouts.tasks.errors import CatalogError
    from croissant_cutouts.tasks.inputs.truth import read_injections, read_simulation_truth

    bad = tmp_path / "x_lite_inject.txt"
    bad.write_text("xpix ypix\n1 2\n")
    with pytest.raises(CatalogError, match=r"jid9.*x_lite_inject.txt.*lacks"):
        read_injections("jid9", bad, 17.6)
    idx = tmp_path / "Roman_TDS_index_H158_1_1.txt"
    idx.write_text("# a b c\n1 2 3\n")
    with pytest.raises(CatalogError, match=r"^job jid9 \(Roman_TDS_index_H158_1_1.txt\): truth"
                       r" index header \['a', 'b', 'c'\] lacks one of"):
        read_simulation_truth("jid9", idx, 17.6)


def test_band_zero_points_are_galsims():
    """The table RAPID's injection zero points come from: galsim's Roman bandpasses."""
    from galsim import roman

    from croissant_cutouts.tasks.config import ROMAN_BAND_ZEROPOINTS, LabelParams

    bandpasses = roman.getBandpasses()  # as rapid_source_injections.py calls it
    assert set(ROMAN_BAND_ZEROPOINTS) == set(bandpasses)
    for name, bandpass in bandpasses.items():
        assert ROMAN_BAND_ZEROPOINTS[name] == pytest.approx(bandpass.zeropoint, abs=1e-5), name
    assert LabelParams().band_zeropoints == ROMAN_BAND_ZEROPOINTS


def test_injection_magnitudes_invert_rapids_flux_formula():
    from croissant_cutouts.tasks.inputs.truth import injection_magnitudes

    zeropoint = 17.638 + 15.074165  # ZPTMAG + zp_band of an H158 image
    mags = np.array([21.0, 24.5, 28.0])
    counts = 10 ** (-0.4 * (mags - zeropoint))  # rapid_source_injections.py
    assert injection_magnitudes(counts, zeropoint) == pytest.approx(mags, abs=1e-12)
    assert np.isnan(injection_magnitudes(np.array([0.0, -3.0, np.nan]), zeropoint)).all()


def test_every_output_column_of_a_match_and_a_miss():
    """Each column of a matched row carries its truth source's values; a miss is empty."""
    t = truth([(10.0, 10.0, 22.5, "7_inj", True), (40.0, 40.0, 21.0, "1234_ou", False)])
    out = label_detections(np.array([10.0, 40.0, 25.0]), np.array([13.0, 40.0, 25.0]), t)
    assert list(out.columns) == [
        "label",
        "match_id",
        "truth_id",
        "injected",
        "match_distance",
        "truth_mag",
    ]
    assert out.dtypes.astype(str).tolist() == [
        "Int64",
        "string",
        "string",
        "boolean",
        "float64",
        "float64",
    ]
    assert out["label"].tolist() == [1, 1, 0]
    assert out["match_id"].tolist()[:2] == ["7_inj", "1234_ou"]
    assert out["truth_id"].tolist()[:2] == ["7", "1234"]
    assert out["injected"].tolist()[:2] == [True, False]
    assert out["match_distance"].tolist()[:2] == [3.0, 0.0]
    assert out["truth_mag"].tolist()[:2] == [22.5, 21.0]
    assert out.iloc[2, 1:].isna().all()


def test_default_radius_and_limit_are_the_documented_ones():
    t = truth([(10.0, 10.0, 25.99, "0_inj", True), (30.0, 30.0, 26.0, "1_inj", True)])
    out = label_detections(np.array([14.0, 30.0, 44.5]), np.array([10.0, 30.0, 10.0]), t)
    assert out["label"].tolist() == [1, 0, 0]  # 4 px matches; AB 26.0 is not brighter than 26
    t = truth([(10.0, 10.0, 22.0, "0_inj", True)])
    assert label_detections(np.array([14.01]), np.array([10.0]), t)["label"][0] == 0


def test_readers_default_to_one_based_truth_and_name_job_and_file(tmp_path):
    from croissant_cutouts.tasks.errors import CatalogError
    from croissant_cutouts.tasks.inputs.truth import read_injections, read_simulation_truth

    inject = tmp_path / "x_lite_inject.txt"
    inject.write_text("xpix ypix flux\n11.0 21.0 0.5\n")
    rows = read_injections("jid9", inject, 30.0)
    assert (rows["x"][0], rows["y"][0]) == (10.0, 20.0)
    assert rows["mag"][0] == pytest.approx(30.0 + 2.5 * np.log10(2.0))  # < 1 count is a source
    index = tmp_path / "Roman_TDS_index_H158_1_1.txt"
    index.write_text(
        "# object_id ra dec x y realized_flux flux mag obj_type\n"
        "5 0 0 11.0 21.0 1 1 8.0 transient\n"
    )
    rows = read_simulation_truth("jid9", index, 18.0)
    assert (rows["x"][0], rows["y"][0], rows["mag"][0]) == (10.0, 20.0, 26.0)
    inject.write_bytes(b"xpix ypix flux\n\xff\xfe 1 2\n")
    with pytest.raises(CatalogError, match=r"jid9.*x_lite_inject\.txt.*truth file does not parse"):
        read_injections("jid9", inject, 30.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("xpix ypix flux\n11 21 5\n12 22 lots\n", r"row 1: flux 'lots' is not a number"),
        ("xpix ypix flux\n11 ? 5\n", r"row 0: ypix '\?' is not a number"),
        ("xpix ypix flux\n11 21 nan\n3e1 4 5\n", None),  # nan is a number: a fake, no flux
    ],
)
def test_injection_field_that_is_no_number_rejects_the_job(tmp_path, text, message):
    from croissant_cutouts.tasks.errors import CatalogError
    from croissant_cutouts.tasks.inputs.truth import read_injections

    path = tmp_path / "x_lite_inject.txt"
    path.write_text(text)
    if message is None:
        rows = read_injections("jid9", path, 30.0)
        assert rows["x"].tolist() == [10.0, 29.0] and np.isnan(rows["mag"][0])
        return
    with pytest.raises(CatalogError, match=rf"^job jid9 \(x_lite_inject\.txt\): {message}$"):
        read_injections("jid9", path, 30.0)


def test_truth_index_field_that_is_no_number_names_the_file_row(tmp_path):
    """Only transients are read: a star's odd field does not matter; a transient's does."""
    from croissant_cutouts.tasks.errors import CatalogError
    from croissant_cutouts.tasks.inputs.truth import read_simulation_truth

    head = "# object_id ra dec x y realized_flux flux mag obj_type\n"
    star = "1 0 0 n/a 4 1 1 8.0 star\n"
    transient = "2 0 0 3 4 1 1 {mag} transient\n"
    path = tmp_path / "Roman_TDS_index_H158_1_1.txt"
    path.write_text(head + star + transient.format(mag="8.5"))
    assert read_simulation_truth("jid9", path, 18.0)["mag"].tolist() == [26.5]
    path.write_text(head + star + transient.format(mag="faint"))
    with pytest.raises(CatalogError, match=r"row 1: mag 'faint' is not a number$") as info:
        read_simulation_truth("jid9", path, 18.0)
    assert info.value.row == 1 and info.value.path == path and info.value.job_id == "jid9"
    path.write_text(head + transient.format(mag="8.5") + "3 0 0 3 4 1 1 9 transient extra\n")
    with pytest.raises(CatalogError, match=r"^job jid9 \(Roman_TDS_index_H158_1_1.txt\): "):
        read_simulation_truth("jid9", path, 18.0)


def test_matching_with_no_detection_or_no_truth():
    assert match_one_to_one(np.zeros((0, 2)), np.array([[1.0, 1.0]]), 4).tolist() == []
    assert match_one_to_one(np.array([[1.0, 1.0]]), np.zeros((0, 2)), 4).tolist() == [-1]
