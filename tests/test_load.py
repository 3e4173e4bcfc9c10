"""Bad input: every problem becomes a clear error naming the job, file and row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from croissant_cutouts.tasks.errors import CatalogError, JobError
from croissant_cutouts.tasks.inputs.load import (
    JobSpec,
    discover_jobs,
    load_job,
    open_image,
    reject_job,
)

GOOD = "x,y,match,flux\n1.0,2.0,-1,3.0\n4.0,5.0,0,6.0\n"


def spec(job):
    return JobSpec(job.name, job)


def test_discover_sorted_and_only_jid(tmp_path, make_job):
    for name in ("jid0003", "jid0001", "jid0002"):
        make_job(name)
    (tmp_path / "jobs" / "notes").mkdir()
    (tmp_path / "jobs" / "jid_file.txt").write_text("x")
    assert [s.job_id for s in discover_jobs(tmp_path / "jobs")] == ["jid0001", "jid0002", "jid0003"]
    with pytest.raises(FileNotFoundError):
        discover_jobs(tmp_path / "nope")


def test_images_are_memory_mapped(make_job):
    job = load_job(spec(make_job(shape=(30, 20))))
    img = open_image(job.images["science"])
    assert isinstance(img, np.memmap) and img.shape == (30, 20)
    assert job.shape == (30, 20)


def test_gainmatched_reference_preferred(make_job):
    job_dir = make_job()
    gm = job_dir / "awaicgen_output_mosaic_image_resampled_gainmatched.fits"
    gm.write_bytes((job_dir / "awaicgen_output_mosaic_image_resampled.fits").read_bytes())
    assert load_job(spec(job_dir)).images["reference"].path.name == gm.name


@pytest.mark.parametrize("channel_file", ["diffimage_masked.fits", "psfcat.csv"])
def test_missing_file(make_job, channel_file):
    job_dir = make_job()
    (job_dir / channel_file).unlink()
    with pytest.raises(JobError, match=r"jid0001.*missing"):
        load_job(spec(job_dir))


def test_truncated_fits(make_job):
    job_dir = make_job()
    path = job_dir / "scorrimage_masked.fits"
    path.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(JobError, match=r"scorrimage_masked.fits.*truncated"):
        load_job(spec(job_dir))


@pytest.mark.parametrize("content", [b"", b"this is not a FITS file at all" * 200, b"\x00" * 5760])
def test_corrupt_fits(make_job, content):
    job_dir = make_job()
    (job_dir / "bkg_subbed_science_image.fits").write_bytes(content)
    with pytest.raises(JobError, match=r"bkg_subbed_science_image\.fits"):
        load_job(spec(job_dir))


def test_cube_is_rejected(make_job):
    job_dir = make_job(images={"score": np.zeros((2, 40, 50), np.float32)})
    with pytest.raises(JobError, match=r"NAXIS=3"):
        load_job(spec(job_dir))


def test_shape_mismatch(make_job):
    job_dir = make_job(images={"reference": np.zeros((41, 50), np.float32)})
    with pytest.raises(JobError, match=r"differ in shape.*reference 41x50"):
        load_job(spec(job_dir))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("x,y,match\n", "no rows"),
        ("a,b,c\n1,2,3\n", "lacks column"),
        ("x,y,match\n1,2,-1\n3,4,5,6\n", "row 1: has 4 fields"),
        ("x,y,match\n1,2,-1\n\xff\xfe\n", None),
        ("x,y,match\n1,2,-1\n3,\x00,-1\n", "contains NUL bytes: not a text table"),
    ],
)
def test_bad_catalogs(make_job, text, match):
    """Each refusal names the job and the file (the message users see in rejects.csv)."""
    job_dir = make_job(catalog="x")
    if match is None:
        (job_dir / "psfcat.csv").write_bytes(b"x,y,match\n1,2,-1\n\xff\xfe\n")
        match = r"not UTF-8 text \(byte 17\)"
    else:
        (job_dir / "psfcat.csv").write_text(text)
    with pytest.raises(CatalogError, match=f"^job {job_dir.name} \\(psfcat.csv\\): .*{match}"):
        load_job(spec(job_dir))


def test_bad_rows_are_reported_with_row_numbers(make_job):
    text = (
        "x,y,match,flux\n1,2,-1,3\nnan,2,-1,3\n1,,0,3\nabc,2,-1,3\n1,2,zz,3\n1,2,-1,bad\n1,2,,1\n"
    )
    job = load_job(spec(make_job(catalog=text)))
    reasons = dict(job.row_rejects)
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6]
    assert "x 'abc'" in reasons[3] and "match 'zz'" in reasons[4] and "flux 'bad'" in reasons[5]
    assert len(job.table) == 7  # every row accounted for


def test_labels_from_match(make_job):
    job = load_job(spec(make_job(catalog="x,y,match\n1,2,-1\n1,2,0\n1,2,17\n1,2,-1.0\n")))
    assert job.table["label"].tolist() == [0, 1, 1, 0]


def test_bom_and_whitespace_tolerated(make_job):
    job = load_job(spec(make_job(catalog="\ufeffx, y, match\n 1.5 , 2 ,-1\n")))
    assert job.table.loc[0, "x"] == 1.5 and not job.row_rejects


def test_reject_job_counts_readable_catalog(make_job):
    job_dir = make_job(catalog=GOOD, images={"score": np.zeros((3, 3), np.float32)})
    with pytest.raises(JobError) as info:
        load_job(spec(job_dir))
    rej = reject_job(spec(job_dir), info.value)
    assert rej.n_catalog_rows == 2 and "differ in shape" in rej.reason


def test_flags_and_optional_columns(make_job):
    cat = pd.DataFrame({"x": [1.0], "y": [2.0], "match": [-1], "flags": [4]})
    job = load_job(spec(make_job(catalog=cat)))
    assert job.table.loc[0, "flags"] == 4 and np.isnan(job.table.loc[0, "flux"])


def test_seed_features_are_carried_and_flags_are_whole_numbers(make_job):
    text = (
        "x,y,match,flux,fwhm,elongation,flags\n"
        "1,2,-1,10,2.5,1.2,0\n"
        "3,4,5,NaN,,1.1,2.5\n"
        "5,6,,-NAN,2,+nan,4\n"
    )
    job = load_job(spec(make_job(catalog=text)))
    t = job.table
    assert t["fwhm"].tolist()[::2] == [2.5, 2.0] and np.isnan(t.loc[1, "fwhm"])
    assert t["elongation"].tolist()[:2] == [1.2, 1.1] and np.isnan(t.loc[2, "elongation"])
    flux = t["flux"]  # nan, -NAN, +nan: numbers (no value), not rejected rows
    assert flux[0] == 10 and flux.isna().tolist() == [False, True, True]
    assert t["flags"].dtype == "Int64" and t["flags"].tolist() == [0, pd.NA, 4]
    assert t["label"].dtype == "Int64" and t["label"].tolist()[:2] == [0, 1]
    assert job.row_rejects == [(2, "match is empty")]
