"""Job selection: which ``jid*`` folders a run reads.

Like the later seed scripts: ``field_files`` (RAPID field lists, whitespace tables with
header ``PROCDATE JOB FILTER OBSID SCANUM FIELD MJD``) name the jobs and give each its filter,
field and MJD; ``fields`` keeps jobs of those sky fields; ``mjd_max`` keeps jobs observed
at or before that MJD. Without field lists, ``fields`` and ``mjd_max`` are read from the job
headers (difference FIELD, science MJD-OBS). A job named in a list but missing on disk, or
one whose header cannot answer the selection, is reported as a rejected job, never skipped
silently.

``input_dir`` may be an object-store URL (``s3://bucket/prefix``): its ``jid*`` job
folders are listed remotely (:mod:`tasks.inputs.remote`), field lists named relative to it are
read from it, headers for the selection are read remotely (first blocks only), and each
job's spec points to its folder under ``stage_dir``, where the load step stages it.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from astropy.io import fits

from croissant_cutouts.tasks.errors import JobError, JobRejection
from croissant_cutouts.tasks.inputs.catalogs import LabelOptions
from croissant_cutouts.tasks.inputs.layouts import get_layout
from croissant_cutouts.tasks.inputs.load import JobSpec, discover_jobs
from croissant_cutouts.tasks.inputs.remote import (
    is_remote,
    join_url,
    list_jobs,
    location,
    read_bytes,
    read_header,
    remote_exists,
)

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


def read_field_lists(paths: Sequence[Path | str]) -> pd.DataFrame:
    """Concatenate field lists; ``FIELD`` as text, ``MJD`` as float, plus a ``source`` column.

    A path may be an object-store URL (``s3://bucket/prefix/H158_fields.txt``).

    Raises
    ------
    ValueError
        A list is missing, lacks a column, or holds a value that is not a number (the
        message names the file and row).
    """
    frames = []
    for path in paths:
        if is_remote(path):
            url = str(path)
            if not remote_exists(url):
                raise ValueError(f"field list {url} does not exist")
            source: Path | io.BytesIO = io.BytesIO(read_bytes(url))
            name = url.rstrip("/").rsplit("/", 1)[-1]
        else:
            path = Path(path)
            if not path.is_file():
                raise ValueError(f"field list {path} does not exist")
            source, name = path, path.name
        table = pd.read_csv(source, sep=r"\s+", dtype=str)
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
        table["source"] = name
        frames.append(table)
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[*FIELD_LIST_COLUMNS, "source"])
    )


def _header_value(spec: JobSpec, channel: str, card: str) -> object | None:
    try:
        if spec.remote is not None:  # read the header remotely: selection stages nothing
            names = {f.name for f in spec.remote.files}
            images = get_layout(spec.resolved_layout()).images[channel]
            name = next((n for n in images if n in names), None)
            if name is None:
                return None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return read_header(spec.remote.file_url(name)).get(card)
        path = get_layout(spec.resolved_layout()).resolve_images(spec.path)[channel]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.getheader(path).get(card)
    except (JobError, OSError):
        return None


def _field_list_location(name: str, input_dir: str | Path) -> Path | str:
    """Where a field list named in the selection is: a URL, an absolute path, a name
    relative to ``input_dir`` (local or remote) when there, else relative to the cwd."""
    if is_remote(name):
        return name
    path = Path(name)
    if path.is_absolute():
        return path
    if is_remote(input_dir):
        url = join_url(str(input_dir), name)
        return url if remote_exists(url) else path
    root = Path(input_dir)
    return root / path if (root / path).exists() else path


def _available_jobs(
    input_dir: str | Path, layout: str, stage_dir: str | Path | None
) -> dict[str, JobSpec]:
    """Job specs by name: local ``jid*`` folders, or remote ones to stage under ``stage_dir``."""
    if not is_remote(input_dir):
        return {s.job_id: s for s in discover_jobs(input_dir, layout)}
    if stage_dir is None:
        raise ValueError(
            f"input {input_dir} is in an object store: a local stage_dir to copy its jobs "
            "into is required"
        )
    stage_root = Path(stage_dir).resolve()
    return {
        job.job_id: JobSpec(job.job_id, stage_root / job.job_id, layout, remote=job)
        for job in list_jobs(str(input_dir), layout)
    }


def plan_jobs(
    input_dir: str | Path,
    layout: str = "auto",
    labels: LabelOptions | None = None,
    selection: Selection | None = None,
    stage_dir: str | Path | None = None,
) -> tuple[list[JobSpec], list[JobRejection]]:
    """The jobs to read and the selected jobs that cannot be (missing folder, no header card).

    Parameters
    ----------
    input_dir : str or path-like
        Folder holding ``jid*`` job folders, or an object-store URL of a prefix holding
        them (``s3://bucket/prefix``).
    layout : str
        Layout name, or ``auto`` (detected per job).
    labels : LabelOptions, optional
        Labelling options carried by every spec.
    selection : Selection, optional
        Which jobs; default all.
    stage_dir : str or path-like, optional
        Local folder that remote jobs are staged into (``<stage_dir>/<job_id>``, created
        when needed); required for remote input, unused for local input.

    Returns
    -------
    specs : list of JobSpec, sorted by job name
    missing : list of JobRejection

    Raises
    ------
    FileNotFoundError
        ``input_dir`` does not exist (locally) or holds no objects (remotely).
    ValueError
        Remote input without ``stage_dir``; a field list missing or malformed.
    """
    labels = labels or LabelOptions()
    selection = selection or Selection()
    root = location(input_dir)
    on_disk = _available_jobs(input_dir, layout, stage_dir)
    make = lambda s, meta=(): replace(s, layout=layout, labels=labels, meta=meta)  # noqa: E731
    if not selection.active:
        return [make(s) for s in on_disk.values()], []
    rejected: list[JobRejection] = []
    if selection.field_files:
        lists = read_field_lists(
            [_field_list_location(str(p), input_dir) for p in selection.field_files]
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
