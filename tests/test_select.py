"""Job selection by field lists, fields and date; missing jobs are reported."""

from __future__ import annotations

import pandas as pd
import pytest

from croissant_cutouts.flows.cli import main
from croissant_cutouts.simulate import simulate_jobs
from croissant_cutouts.tasks.inputs.select import Selection, plan_jobs


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sel")
    simulate_jobs(root, n_jobs=4, size=(160, 128), seed=2, fields=2, gallery=False)
    return root


def ids(specs):
    return [s.job_id for s in specs]


def test_no_selection_reads_all(jobs):
    specs, missing = plan_jobs(jobs)
    assert ids(specs) == ["jid0001", "jid0002", "jid0003", "jid0004"] and not missing


def test_field_lists_select_and_give_metadata(jobs):
    lists = pd.read_csv(jobs / "H158_fields.txt", sep=r"\s+", dtype=str)
    field = lists.FIELD.iloc[0]
    specs, missing = plan_jobs(jobs, selection=Selection(("H158_fields.txt",), (field,)))
    assert ids(specs) == sorted(lists[lists.FIELD == field].JOB) and not missing
    assert dict(specs[0].meta)["field"] == field


def test_mjd_max_from_lists_and_from_headers(jobs):
    lists = pd.read_csv(jobs / "H158_fields.txt", sep=r"\s+")
    cut = float(lists.MJD.sort_values().iloc[1])
    expected = sorted(lists[lists.MJD <= cut].JOB)
    by_list, _ = plan_jobs(jobs, selection=Selection(("H158_fields.txt",), (), cut))
    by_header, _ = plan_jobs(jobs, selection=Selection((), (), cut))
    assert ids(by_list) == expected == ids(by_header)


def test_fields_from_headers(jobs):
    field = str(pd.read_csv(jobs / "H158_fields.txt", sep=r"\s+").FIELD.iloc[1])
    specs, _ = plan_jobs(jobs, selection=Selection((), (field,), None))
    assert ids(specs) == ["jid0002", "jid0004"]


def test_listed_but_missing_jobs_are_reported(jobs, tmp_path):
    listing = tmp_path / "my_fields.txt"
    text = (jobs / "H158_fields.txt").read_text()
    listing.write_text(text + "20260101 jid9999 H158 1 1 5333116 62400.0\n")
    specs, missing = plan_jobs(jobs, selection=Selection((str(listing),)))
    assert len(specs) == 4 and [m.job_id for m in missing] == ["jid9999"]
    assert "my_fields.txt" in missing[0].reason and "no folder" in missing[0].reason


def test_bad_field_list_is_an_error(tmp_path, jobs):
    bad = tmp_path / "bad.txt"
    bad.write_text("PROCDATE JOB FILTER OBSID SCANUM FIELD MJD\n1 jid0001 H158 1 1 5 soon\n")
    with pytest.raises(ValueError, match=r"bad.txt: row 0: MJD 'soon'"):
        plan_jobs(jobs, selection=Selection((str(bad),)))


@pytest.mark.flow
def test_cli_selection_and_missing_job_in_rejects(jobs, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    lines = (jobs / "H158_fields.txt").read_text().splitlines()
    listing.write_text("\n".join([lines[0], lines[1], "20260101 jid0777 H158 1 1 5 62000.0"])
                       + "\n")
    out = tmp_path / "ds"
    assert main(["create", "-i", str(jobs), "-o", str(out), "--field_files", str(listing)]) == 0
    index = pd.read_csv(out / "master_index.csv")
    assert set(index.job_id) == {lines[1].split()[1]}
    rejects = pd.read_csv(out / "rejects.csv")
    assert "jid0777" in set(rejects.job_id)
    assert main(["create", "-i", str(jobs), "-o", str(out), "--field_files", str(listing),
                 "--strict"]) == 1
