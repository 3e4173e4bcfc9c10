"""benchmarks/bench_scale.py: the pieces that run without simulating or building anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from croissant_cutouts.flows.summary import RunSummary
from croissant_cutouts.simulate.jobs import JobSummary, format_summary

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    from conftest import load_benchmark

    return load_benchmark("bench_scale")


def test_fit_recovers_a_line_and_reports_a_bend(bench):
    line = bench.fit({10: 5.0 + 0.25 * 10, 100: 5.0 + 0.25 * 100, 1000: 5.0 + 0.25 * 1000})
    assert line["slope_s_per_job"] == pytest.approx(0.25)
    assert line["fixed_s"] == pytest.approx(5.0)
    assert line["max_abs_relative_residual"] == pytest.approx(0.0, abs=1e-4)
    bent = bench.fit({10: 7.5, 100: 60.0, 1000: 255.0})  # the middle point 2x the line
    assert bent["max_abs_relative_residual"] > 0.3
    assert set(bent["relative_residuals"]) == {10, 100, 1000}


def test_summary_line_of_the_cli_parses(bench):
    line = RunSummary("d", jobs=1010, from_cache=1000, jobs_rejected=0, cutouts=202_000).line()
    found = bench.SUMMARY.findall(f"12:00:00 | INFO | x\n{line}\n")
    assert [tuple(map(int, f)) for f in found] == [(1010, 1000, 0, 202_000)]


def test_simulate_line_parses(bench):
    s = JobSummary("jid0007", Path("."), "H158", 5333116, 0.0, 201, 2, 1, 1, seconds=3.8)
    assert bench.SIMULATED.match(format_summary(s)).groups() == ("jid0007", "201", "3.8")


def test_link_jobs_renames_and_replaces(bench, tmp_path):
    jobs = [tmp_path / "sim" / f"jid{k:04d}" for k in (1, 2)]
    for j in jobs:
        j.mkdir(parents=True)
    where = bench.link_jobs(jobs, tmp_path / "set", ["jid0001", "jid1001"])
    assert sorted(p.name for p in where.iterdir()) == ["jid0001", "jid1001"]
    assert (where / "jid1001").resolve() == jobs[1].resolve()
    bench.link_jobs(jobs[:1], where)  # a fresh folder: old links are gone
    assert [p.name for p in where.iterdir()] == ["jid0001"]
