"""Job selection: which ``jid*`` folders a run reads.

Like the later seed scripts: ``field_files`` (RAPID field lists, whitespace tables with
header ``PROCDATE JOB FILTER OBSID SCANUM FIELD MJD``) name the jobs and give each its filter,
field and MJD; ``fields`` keeps jobs of those sky fields; ``mjd_max`` keeps jobs observed
at or before that MJD. Without field lists, ``fields`` and ``mjd_max`` are read from the job
headers (difference FIELD, science MJD-OBS). A job named in a list but missing on disk, or
one whose header cannot answer the selection, is reported as a rejected job, never skipped
silently.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from astropy.io import fits

from tasks.errors import JobError, JobRejection
from tasks.layouts import LabelOptions, get_layout
from tasks.load import JobSpec, discover_jobs

__all__ = ["FIELD_LIST_COLUMNS", "Selection", "plan_jobs", "read_field_lists"]

log = logging.getLogger(__name__)

FIELD_LIST_COLUMNS = ("PROCDATE", "JOB", "FILTER", "OBSID", "SCANUM", "FIELD", "MJD")


@dataclass(frozen=True)
class Selection:
    """What to select (``select:`` section of ``params.yaml``); empty selects every job."""

    field_files: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    mjd_max: float | None = None

    @property
    def active(self) -> bool:
        return bool(self.field_files or self.fields or self.mjd_max is not None)


def read_field_lists(paths: list[Path]) -> pd.DataFrame:
    """Concatenate field lists; ``FIELD`` as text, ``MJD`` as float, plus a ``source`` column.

    Raises
    ------
    ValueError
        A list is missing, lacks a column, or holds a value that is not a number (the
        message names the file and row).
    """
    frames = []
    for path in paths:
        if not path.is_file():
            raise ValueError(f"field list {path} does not exist")
        table = pd.read_csv(path, sep=r"\s+", dtype=str)
        missing = [c for c in FIELD_LIST_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"field list {path} lacks column(s) {missing}")
        mjd = pd.to_numeric(table["MJD"], errors="coerce")
        if mjd.isna().any():
            row = int(mjd.isna().to_numpy().nonzero()[0][0])
            raise ValueError(
                f"field list {path}: row {row}: MJD {table['MJD'].iloc[row]!r} is not a number"
            )
        table["MJD"] = mjd
        table["source"] = path.name
        frames.append(table)
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[*FIELD_LIST_COLUMNS, "source"])
    )


def _header_value(spec: JobSpec, channel: str, card: str) -> object | None:
    try:
        path = get_layout(spec.resolved_layout()).resolve_images(spec.path)[channel]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.getheader(path).get(card)
    except (JobError, OSError):
        return None


def plan_jobs(
    input_dir: str | Path,
    layout: str = "auto",
    labels: LabelOptions | None = None,
    selection: Selection | None = None,
) -> tuple[list[JobSpec], list[JobRejection]]:
    """The jobs to read and the selected jobs that cannot be (missing folder, no header card).

    Returns
    -------
    specs : list of JobSpec, sorted by job name
    missing : list of JobRejection
    """
    labels = labels or LabelOptions()
    selection = selection or Selection()
    root = Path(input_dir)
    on_disk = {s.job_id: s for s in discover_jobs(root, layout)}
    make = lambda s, meta=(): JobSpec(s.job_id, s.path, layout, labels, meta)  # noqa: E731
    if not selection.active:
        return [make(s) for s in on_disk.values()], []
    rejected: list[JobRejection] = []
    if selection.field_files:
        lists = read_field_lists(
            [
                p if p.is_absolute() else (root / p if (root / p).exists() else p)
                for p in map(Path, selection.field_files)
            ]
        )
        if selection.fields:
            lists = lists[lists["FIELD"].isin(selection.fields)]
        if selection.mjd_max is not None:
            lists = lists[lists["MJD"] <= selection.mjd_max]
        specs = []
        for job, rows in lists.groupby("JOB", sort=True):
            first = rows.iloc[0]
            if job not in on_disk:
                rejected.append(
                    JobRejection(
                        job,
                        f"listed in {first['source']} (FIELD {first['FIELD']}, MJD "
                        f"{first['MJD']}) but no folder {job} in {root}",
                    )
                )
                continue
            meta = (
                ("filter", first["FILTER"]),
                ("field", first["FIELD"]),
                ("mjd", float(first["MJD"])),
            )
            specs.append(make(on_disk[job], meta))
        log.info(
            "field lists select %d jobs (%d missing on disk) of %d on disk",
            len(specs),
            len(rejected),
            len(on_disk),
        )
        return specs, rejected
    specs = []
    for s in on_disk.values():
        keep = True
        if selection.fields:
            field = _header_value(s, "difference", "FIELD")
            if field is None:
                rejected.append(
                    JobRejection(
                        s.job_id,
                        "no FIELD card in the difference image header: cannot select by field",
                    )
                )
                continue
            keep = str(field) in selection.fields
        if keep and selection.mjd_max is not None:
            mjd = _header_value(s, "science", "MJD-OBS")
            if mjd is None:
                rejected.append(
                    JobRejection(
                        s.job_id,
                        "no MJD-OBS card in the science image header: cannot select by date",
                    )
                )
                continue
            keep = float(mjd) <= selection.mjd_max
        if keep:
            specs.append(make(s))
    return specs, rejected
