"""The verify report: problem kinds, one problem per line, the report and its verdict."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "KINDS",
    "DatasetInvalid",
    "Problem",
    "VerifyReport",
]

log = logging.getLogger(__name__)

#: Every kind of problem ``cutouts verify`` reports, with what it means.
KINDS: dict[str, str] = {
    "table": "a dataset table (master_index.csv, rejects.csv, jobs.csv) is missing or unreadable",
    "index": "master_index.csv breaks the contract (ids, order, names, shard rows, values)",
    "duplicate-row": "master_index.csv lists a row, or a (job_id, catalog_row), twice",
    "missing-file": "a file the index lists is not on disk",
    "bad-npy": "not a valid .npy as numpy.save writes it (truncated, trailing bytes, ...)",
    "bad-parquet": "not a readable parquet-layout file (truncated, corrupted, another schema)",
    "shape": "a tensor or shard of the wrong shape",
    "dtype": "a tensor that is not little-endian float32",
    "non-finite": "NaN or inf values in a cutout",
    "out-of-range": "values outside [0, 1] in a cutout",
    "unlisted-file": "a .npy under cutouts/ or shards/, or a .parquet under parquet/, that the "
    "index does not list",
    "croissant": "croissant.json missing, unreadable, incomplete, or naming a missing file",
    "checksum": "a file's sha256 differs from the one in croissant.json",
    "accounting": "index + rejects do not account for a job's catalog rows exactly once",
    "input-count": "the input job folder's catalog has another number of rows than jobs.csv",
    "digest": "a cutout's data bytes do not hash to its sha256 in master_index.csv",
    "recut": "with --deep: a cutout differs from its candidate cut again from the input job "
    "folder, or the candidate cannot be cut again",
    "split": "a split value other than train/validation/test, or a job or truth source in two "
    "splits",
}

@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    message : str
        What is wrong, for a person.
    job_id : str, optional
        The job concerned.
    file : str, optional
        The file concerned, relative to the dataset root (``cutouts/...``,
        ``master_index.csv``, ...).
    index_row : int, optional
        0-based data row of ``master_index.csv`` (the header is not a row).
    cutout_id : int, optional
        ``cutout_id`` of that index row.
    catalog_row : int, optional
        0-based data row of the candidate in its job's catalog.
    """

    kind: str
    message: str
    job_id: str | None = None
    file: str | None = None
    index_row: int | None = None
    cutout_id: int | None = None
    catalog_row: int | None = None

    def __post_init__(self) -> None:  # plain str and int, whatever numpy scalars came in
        for name in ("job_id", "file"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        for name in ("index_row", "cutout_id", "catalog_row"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, int(value))

    def line(self) -> str:
        """One line: ``kind: file, where: message``."""
        where = []
        if self.index_row is not None:
            where.append(f"index row {self.index_row}")
        if self.cutout_id is not None:
            where.append(f"cutout_id {self.cutout_id}")
        if self.job_id is not None:
            where.append(f"job {self.job_id}")
        if self.catalog_row is not None:
            where.append(f"catalog row {self.catalog_row}")
        head = self.file or ""
        if where:
            head = f"{head} ({', '.join(where)})" if head else ", ".join(where)
        return f"{self.kind}: {head}: {self.message}" if head else f"{self.kind}: {self.message}"

    def __str__(self) -> str:
        return self.line()


@dataclass
class VerifyReport:
    """What :func:`verify_dataset` checked and found.

    Attributes
    ----------
    dataset_dir : Path
    problems : list of Problem
        In check order: tables, index, files (by index row), unlisted files, Croissant,
        accounting, input recount.
    notes : list of str
        Things worth knowing that are not problems (leftover temporary files, a recount
        skipped, input jobs the dataset does not hold).
    index_rows, cutouts, files, jobs, catalog_rows, reject_rows, sha256, recounted : int
        Counts of what was checked: index rows; cutout tensors whose values were read;
        ``.npy`` files opened; jobs and catalog rows accounted; ``rejects.csv`` rows;
        file digests of ``croissant.json`` compared; input catalogs recounted.
    digests : int
        Cutouts whose data bytes were compared with their ``sha256`` in the index.
    recut : int
        Cutouts cut again from their input job folder and compared byte for byte (``deep``).
    seconds : float
        Wall time of the verification.
    """

    dataset_dir: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    index_rows: int = 0
    cutouts: int = 0
    files: int = 0
    jobs: int = 0
    catalog_rows: int = 0
    reject_rows: int = 0
    sha256: int = 0
    recounted: int = 0
    digests: int = 0
    recut: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def kinds(self) -> dict[str, int]:
        """Number of problems of each kind, in :data:`KINDS` order."""
        counts = {k: 0 for k in KINDS}
        for p in self.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        return {k: n for k, n in counts.items() if n}

    def summary(self) -> str:
        """The last line ``cutouts verify`` prints."""
        checked = (
            f"{self.cutouts} cutouts in {self.files} files checked ({self.digests} against "
            f"their sha256), {self.jobs} jobs ({self.catalog_rows} catalog rows) accounted, "
            f"{self.sha256} file sha256 compared"
        )
        if self.recounted:
            checked += f", {self.recounted} input catalogs recounted"
        if self.recut:
            checked += f", {self.recut} cutouts cut again and compared"
        checked += f", seconds: {self.seconds:.1f}"
        if self.ok:
            return f"verify: OK, {checked}"
        kinds = ", ".join(f"{n} {k}" for k, n in self.kinds().items())
        n = len(self.problems)
        return f"verify: {n} problem{'s' if n != 1 else ''} ({kinds}); {checked}"

    def lines(self, limit: int | None = None) -> list[str]:
        """One line per problem: all, or the first ``limit`` and a line saying how many more."""
        shown = self.problems if limit is None else self.problems[:limit]
        out = [p.line() for p in shown]
        if len(shown) < len(self.problems):
            out.append(f"... and {len(self.problems) - len(shown)} more problems")
        return out

    def __str__(self) -> str:
        """Problem lines, notes (``note: ...``), then the summary line."""
        return "\n".join([*self.lines(), *(f"note: {n}" for n in self.notes), self.summary()])


class DatasetInvalid(ValueError):
    """The dataset fails verification; the message lists its problems (the first 50)."""

    def __init__(self, report: VerifyReport, limit: int = 50) -> None:
        self.report = report
        lines = [*report.lines(limit), report.summary()]
        super().__init__(f"dataset {report.dataset_dir} fails verification:\n" + "\n".join(lines))
        self.limit = limit

    def __reduce__(self) -> tuple[type, tuple[VerifyReport, int]]:
        return type(self), (self.report, self.limit)  # picklable (Dask, Prefect states)


