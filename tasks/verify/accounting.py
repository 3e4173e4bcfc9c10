"""Accounting: every catalog row of every job is in the index or in rejects, once."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.contract import (
    INDEX_FILE,
    JOBS_FILE,
    REJECTS_FILE,
)
from croissant_cutouts.tasks.errors import JobError
from croissant_cutouts.tasks.inputs.load import (
    discover_jobs,
)
from croissant_cutouts.tasks.inputs.remote import is_remote
from croissant_cutouts.tasks.verify.reading import integers
from croissant_cutouts.tasks.verify.report import Problem, VerifyReport
from croissant_cutouts.tasks.verify.streaming import IndexRows

__all__ = [
    "check_accounting",
    "jobs_from_counts",
    "recount",
]

log = logging.getLogger(__name__)


class _ByJob(Mapping[str, dict[int, int]]):
    """The indexed catalog rows of each job: ``{catalog_row: kept index row}``.

    The first index row of a repeated candidate counts. Built for one job at a time from
    the index's arrays (the last one kept): a dict entry per index row would cost about
    100 bytes a row for the whole run.
    """

    def __init__(self, index: IndexRows) -> None:
        rows = np.flatnonzero(index.catalog_ok)
        codes = index.codes[rows]
        order = np.argsort(codes, kind="stable")
        self._rows = rows[order]
        self._starts = np.searchsorted(codes[order], np.arange(len(index.jobs) + 1))
        present = np.unique(codes)  # jobs with a valid catalog row, in order of appearance
        self._at = {str(index.jobs[j]): int(j) for j in present}
        self._catalog_row = index.catalog_row
        self._last: tuple[str | None, dict[int, int]] = (None, {})

    def __getitem__(self, job: str) -> dict[int, int]:
        if self._last[0] != job:
            j = self._at[job]
            rows = self._rows[self._starts[j] : self._starts[j + 1]]
            found: dict[int, int] = {}
            for k, i in zip(self._catalog_row[rows].tolist(), rows.tolist(), strict=True):
                found.setdefault(k, i)
            self._last = (job, found)
        return self._last[1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._at)

    def __len__(self) -> int:
        return len(self._at)


@dataclass
class _Ledger:
    """Who accounts for each catalog row, by job: ``{catalog_row: table row}``."""

    indexed: _ByJob
    rejected: dict[str, dict[int, int]]
    whole: set[str]  # jobs with a whole-job row in rejects.csv (empty catalog_row)


def check_accounting(
    index: IndexRows | None,
    rejects: pd.DataFrame | None,
    jobs: pd.DataFrame | None,
    report: VerifyReport,
    listed: bool = True,
) -> None:
    """Every catalog row of every job in the index or in rejects.csv, exactly once.

    ``jobs`` is ``jobs.csv``, or with ``listed`` False a stand-in made from recounted input
    catalogs (then a job of the tables without a count is not a problem: it was not found).
    One function per rule, each appending its :class:`Problem` records in turn.
    """
    if index is None or rejects is None:
        return
    problems = report.problems
    report.reject_rows = len(rejects)
    ledger = _ledger(index, rejects, problems)
    totals = _totals(jobs, problems)
    report.jobs = len(totals)
    report.catalog_rows = sum(n for n, _ in totals.values())
    if listed and jobs is not None:
        _every_job_listed(ledger, totals, problems)
    troubled = {p.job_id for p in problems if p.kind == "accounting"}
    troubled |= _never_both(index, ledger, problems)
    for job, (n, row) in totals.items():
        before = len(problems)
        _within_the_catalog(index, ledger, job, n, problems)
        _every_row_once(ledger, job, n, problems)
        _status_agrees(ledger, job, row["status"], problems)
        if len(problems) == before and job not in troubled:
            _recorded_counts_agree(ledger, job, row, problems)


def _ledger(index: IndexRows, rejects: pd.DataFrame, problems: list[Problem]) -> _Ledger:
    """Rule: a reject row's ``catalog_row`` is an integer (or empty), and rejected once."""
    rk, rk_ok = integers(rejects["catalog_row"])
    empty = rejects["catalog_row"].str.strip().to_numpy(str) == ""
    for i in np.flatnonzero(~rk_ok & ~empty):
        value = rejects["catalog_row"].iat[i]
        problems.append(Problem(
            "accounting", f"rejects.csv row {i}: catalog_row {value!r} is not an integer",
            job_id=rejects["job_id"].iat[i], file=REJECTS_FILE,
        ))
    rjob = rejects["job_id"].to_numpy(str)
    rejected: dict[str, dict[int, int]] = {}
    for i in np.flatnonzero(rk_ok):
        seen, k = rejected.setdefault(rjob[i], {}), int(rk[i])
        if k in seen:
            problems.append(Problem(
                "accounting", f"rejects.csv rows {seen[k]} and {i} both reject it",
                job_id=rjob[i], file=REJECTS_FILE, catalog_row=k,
            ))
        else:
            seen[k] = int(i)
    return _Ledger(_ByJob(index), rejected, set(rjob[empty]))


def _totals(jobs: pd.DataFrame | None, problems: list[Problem]) -> dict[str, tuple[int, pd.Series]]:
    """Rule: ``jobs.csv`` gives each job once, with a count. Returns job -> (count, row)."""
    totals: dict[str, tuple[int, pd.Series]] = {}
    if jobs is None:
        return totals
    n_rows, ok = integers(jobs["catalog_rows"])
    for i, job in enumerate(jobs["job_id"].to_numpy(str)):
        if not ok[i] or n_rows[i] < 0:
            value = jobs["catalog_rows"].iat[i]
            problems.append(Problem(
                "table", f"catalog_rows {value!r} is not a count", job_id=job, file=JOBS_FILE
            ))
        elif job in totals:
            problems.append(Problem("table", "job listed twice", job_id=job, file=JOBS_FILE))
        else:
            totals[job] = (int(n_rows[i]), jobs.iloc[i])
    return totals


def _every_job_listed(ledger: _Ledger, totals: dict, problems: list[Problem]) -> None:
    """Rule: a job of the index or of rejects.csv is in ``jobs.csv``."""
    for job in sorted(set(ledger.indexed) | set(ledger.rejected) | ledger.whole):
        if job not in totals:
            problems.append(Problem(
                "accounting", f"in {INDEX_FILE} or {REJECTS_FILE} but not in {JOBS_FILE}",
                job_id=job,
            ))


def _never_both(index: IndexRows, ledger: _Ledger, problems: list[Problem]) -> set[str]:
    """Rule: no catalog row is both indexed and rejected. Returns the jobs that break it."""
    troubled = set()
    for job in sorted(set(ledger.indexed) & set(ledger.rejected)):
        for k in sorted(set(ledger.indexed[job]) & set(ledger.rejected[job])):
            troubled.add(job)
            problems.append(Problem(
                "accounting",
                f"indexed and also rejected (rejects.csv row {ledger.rejected[job][k]})",
                file=INDEX_FILE, **index.where(ledger.indexed[job][k]),
            ))
    return troubled


def _within_the_catalog(
    index: IndexRows, ledger: _Ledger, job: str, n: int, problems: list[Problem]
) -> None:
    """Rule: no indexed or rejected row lies beyond the job's ``n`` catalog rows."""
    have_i, have_r = ledger.indexed.get(job, {}), ledger.rejected.get(job, {})
    for k in sorted(k for k in (set(have_i) | set(have_r)) if k >= n):
        where = index.where(have_i[k]) if k in have_i else {"job_id": job, "catalog_row": k}
        problems.append(Problem(
            "accounting", f"beyond the catalog's {n} rows ({JOBS_FILE})",
            file=INDEX_FILE if k in have_i else REJECTS_FILE, **where,
        ))


def _every_row_once(ledger: _Ledger, job: str, n: int, problems: list[Problem]) -> None:
    """Rule: each of the job's catalog rows ``0 .. n-1`` is indexed or rejected."""
    have = set(ledger.indexed.get(job, {})) | set(ledger.rejected.get(job, {}))
    for k in sorted(set(range(n)) - have):
        problems.append(Problem(
            "accounting", f"neither in {INDEX_FILE} nor in {REJECTS_FILE}",
            job_id=job, catalog_row=k,
        ))


def _status_agrees(ledger: _Ledger, job: str, status: str, problems: list[Problem]) -> None:
    """Rule: ``jobs.csv``'s status matches the tables (a rejected job: no rows, a whole row)."""
    n_indexed = len(ledger.indexed.get(job, {}))
    if status == "rejected":
        if n_indexed:
            problems.append(Problem(
                "accounting", f"{JOBS_FILE} says rejected, yet {n_indexed} rows are indexed",
                job_id=job,
            ))
        if job not in ledger.whole:
            problems.append(Problem(
                "accounting",
                f"{JOBS_FILE} says rejected, {REJECTS_FILE} has no whole-job row "
                "(empty catalog_row)",
                job_id=job,
            ))
    elif status == "ok":
        if job in ledger.whole:
            problems.append(Problem(
                "accounting", f"{REJECTS_FILE} rejects the whole job, {JOBS_FILE} says ok",
                job_id=job,
            ))
    else:
        problems.append(Problem(
            "table", f"status {status!r}, expected 'ok' or 'rejected'", job_id=job, file=JOBS_FILE
        ))


def _recorded_counts_agree(
    ledger: _Ledger, job: str, row: pd.Series, problems: list[Problem]
) -> None:
    """Rule: ``jobs.csv``'s ``cutouts`` and ``rejected_rows`` match the tables."""
    counts = {
        "cutouts": len(ledger.indexed.get(job, {})),
        "rejected_rows": len(ledger.rejected.get(job, {})),
    }
    for col, have in counts.items():
        if col in row.index:
            val, ok = integers(pd.Series([row[col]]))
            if not ok[0] or val[0] != have:
                problems.append(Problem(
                    "accounting", f"{JOBS_FILE} says {col}={row[col]}, the tables hold {have}",
                    job_id=job, file=JOBS_FILE,
                ))


def jobs_from_counts(counted: dict[str, int], rejects: pd.DataFrame | None) -> pd.DataFrame:
    """A stand-in for ``jobs.csv`` from recounted catalogs (status from the whole-job rejects)."""
    whole = set()
    if rejects is not None:
        whole = set(rejects.loc[rejects["catalog_row"].str.strip() == "", "job_id"])
    counts = {**dict.fromkeys(sorted(whole), 0), **counted}  # unreadable now: no rows
    return pd.DataFrame(
        {
            "job_id": list(counts),
            "status": ["rejected" if j in whole else "ok" for j in counts],
            "catalog_rows": [str(n) for n in counts.values()],
        }
    )


def recount(
    input_dir: Path | str,
    jobs: pd.DataFrame | None,
    index: IndexRows | None,
    rejects: pd.DataFrame | None,
    input_layout: str,
    report: VerifyReport,
) -> dict[str, int]:
    """Recount each job's catalog rows from its input folder; compare with jobs.csv.

    Returns the counts of the catalogs that could be read, by job.
    """
    from croissant_cutouts.tasks.inputs.layouts import get_layout

    counted: dict[str, int] = {}
    if is_remote(str(input_dir)):
        report.notes.append(f"input {input_dir} is remote: catalog rows not recounted")
        return counted
    try:
        specs = {s.job_id: s for s in discover_jobs(input_dir, input_layout)}
    except FileNotFoundError as exc:
        report.problems.append(Problem("input-count", str(exc)))
        return counted
    if jobs is not None:
        claimed = dict(zip(jobs["job_id"], jobs["catalog_rows"], strict=True))
    else:  # older dataset: recount what the tables hold
        names = set() if index is None else set(index.jobs)
        names |= set() if rejects is None else set(rejects["job_id"])
        claimed = {j: None for j in names}
    absent = []
    for job in sorted(claimed):
        spec = specs.get(job)
        if spec is None:
            absent.append(job)
            continue
        try:
            n = get_layout(spec.resolved_layout()).count_rows(job, spec.path)
        except (JobError, OSError, ValueError) as exc:
            n, why = None, str(exc)
        report.recounted += 1
        if n is not None:
            counted[job] = n
        want = claimed[job]
        if want is None:
            continue
        if n is None:
            if want not in ("0", ""):
                report.problems.append(
                    Problem(
                        "input-count",
                        f"catalog unreadable now ({why}); {JOBS_FILE} says {want} rows",
                        job_id=job,
                    )
                )
        elif str(n) != str(want).strip():
            report.problems.append(
                Problem(
                    "input-count",
                    f"the input catalog has {n} rows, {JOBS_FILE} says {want}",
                    job_id=job,
                )
            )
    if absent:
        report.notes.append(
            f"{len(absent)} jobs of the dataset have no folder in {input_dir}: "
            f"{', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}"
        )
    extra = sorted(set(specs) - set(claimed))
    if extra:
        report.notes.append(
            f"{len(extra)} job folders in {input_dir} are not in the dataset (a selection?): "
            f"{', '.join(extra[:10])}{' ...' if len(extra) > 10 else ''}"
        )
    return counted


