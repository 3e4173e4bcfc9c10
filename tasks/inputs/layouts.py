"""Input layouts: where a job folder keeps its four images and its candidate catalog.

A layout is a small class registered by name. It resolves file names and parses the
catalog into the tool's internal candidate table; everything after that is shared.
Positions in the returned table are 0-based (``x`` column, ``y`` row, pixel centres on
integers), whatever the file's own convention.
"""

from __future__ import annotations

from pathlib import Path

from croissant_cutouts.tasks.errors import JobError
from croissant_cutouts.tasks.inputs.catalogs import Layout
from croissant_cutouts.tasks.inputs.rapid import _PSFCAT, RapidLayout, _first
from croissant_cutouts.tasks.inputs.seed import SeedLayout

__all__ = [
    "LAYOUTS",
    "detect_layout",
    "get_layout",
]

def detect_layout(job_dir: Path) -> str:
    """``seed`` when the job has ``psfcat.csv``, ``rapid`` when it has a RAPID PSF-fit catalog.

    Raises
    ------
    JobError
        When it has neither.
    """
    if (job_dir / SeedLayout.catalog).is_file():
        return SeedLayout.name
    if _first(job_dir, _PSFCAT) is not None:
        return RapidLayout.name
    raise JobError(
        job_dir.name,
        f"candidate catalog missing (looked for {SeedLayout.catalog}, {', '.join(_PSFCAT)})",
    )


LAYOUTS: dict[str, type[Layout]] = {SeedLayout.name: SeedLayout, RapidLayout.name: RapidLayout}


def get_layout(name: str) -> Layout:
    """Return an instance of the layout registered as ``name``."""
    try:
        return LAYOUTS[name]()
    except KeyError:
        raise ValueError(f"unknown layout {name!r}; known: {sorted(LAYOUTS)}") from None
