"""Errors raised for bad input. They become rows of ``rejects.csv`` at the job boundary.

``JobError`` (and ``CatalogError``) subclass :class:`ValueError`: bad input is permanent and
is never retried, unlike a transient :class:`OSError`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CatalogError", "JobError", "JobRejection", "short_repr"]


def short_repr(text: str, limit: int = 40) -> str:
    """``repr`` of a field for a message, cut to about ``limit`` characters."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


class JobError(ValueError):
    """A whole job cannot be used.

    Parameters
    ----------
    job_id : str
        Job folder name (``jid...``).
    reason : str
        What is wrong, for a person.
    path : path-like, optional
        The offending file.
    """

    def __init__(self, job_id: str, reason: str, path: str | Path | None = None) -> None:
        self.job_id = job_id
        self.reason = reason
        self.path = None if path is None else Path(path)
        where = f" ({self.path.name})" if self.path is not None else ""
        super().__init__(f"job {job_id}{where}: {reason}")

    @property
    def message(self) -> str:
        """Reason with the file name, as written to ``rejects.csv``."""
        return f"{self.path.name}: {self.reason}" if self.path is not None else self.reason


class CatalogError(JobError):
    """The candidate catalog of a job is unreadable as a whole (row given when known)."""

    def __init__(
        self, job_id: str, reason: str, path: str | Path | None = None, row: int | None = None
    ) -> None:
        self.row = row
        if row is not None:
            reason = f"row {row}: {reason}"
        super().__init__(job_id, reason, path)


class JobRejection:
    """A job rejected as a whole: its reason, and its catalog's row count when readable.

    Tasks return this value instead of raising, so one bad job never stops a run and every
    rejection reaches ``rejects.csv``.
    """

    __slots__ = ("job_id", "n_catalog_rows", "reason")

    def __init__(self, job_id: str, reason: str, n_catalog_rows: int = 0) -> None:
        self.job_id = job_id
        self.reason = reason
        self.n_catalog_rows = n_catalog_rows

    def __repr__(self) -> str:
        return f"JobRejection({self.job_id!r}, {self.reason!r}, {self.n_catalog_rows})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobRejection) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))
