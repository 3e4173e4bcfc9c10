"""Which code decides which bytes: the one list behind cache keys and DVC code deps.

Each step names the parts of ``croissant_cutouts.tasks`` whose source decides its output: a
subpackage (every module in its folder, found on disk, so a module added there is covered
without editing this file) or a single module. From that one table come

- the modules whose source enters a Prefect task's cache key (:func:`step_modules`, used by
  :class:`~croissant_cutouts.tasks.infra.caching.ContentPolicy`), so editing the science
  re-runs what it produced;
- the code deps of each ``dvc.yaml`` stage (:func:`step_paths`), so ``dvc repro`` re-runs a
  stage whose code changed. ``tests/test_package.py`` fails when ``dvc.yaml`` disagrees,
  or when a step's module imports one of the package that its entry here does not cover.

``tasks.infra`` (atomic writes, locks, caching) is plumbing: it decides where and when bytes
are written, never what they are, and is in no step's list.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DVC_STAGES", "STEP_CODE", "step_modules", "step_paths"]

#: The ``tasks`` folder (``croissant_cutouts.tasks``).
TASKS_DIR = Path(__file__).resolve().parent.parent
PACKAGE = "croissant_cutouts.tasks"

_BASE = ("contract", "errors", "config")
_INPUTS = (*_BASE, "inputs")

#: Step -> the parts of ``tasks/`` (a subpackage folder, or ``package/module``) it runs.
STEP_CODE: dict[str, tuple[str, ...]] = {
    "load": _INPUTS,
    "normalize": (*_INPUTS, "dataset/normalize"),
    "cutout": (*_INPUTS, "dataset/normalize", "dataset/cutout"),
    "dataset": (*_INPUTS, "dataset"),
    "croissant": (*_BASE, "dataset/croissant", "dataset/record_sets", "dataset/splits"),
    "train": (*_BASE, "evaluate", "dataset/splits"),
    "score": (*_BASE, "evaluate", "dataset/splits"),
}

#: ``dvc.yaml`` stage -> the step whose code it runs (besides ``flows/``' entry point).
DVC_STAGES = {"cutouts": "dataset", "croissant": "croissant", "train": "train"}


def _modules_of(part: str) -> list[str]:
    """Dotted module names (relative to ``tasks``) of one part: a folder or a module."""
    folder = TASKS_DIR / part
    if folder.is_dir():
        return sorted(
            f"{part}.{p.stem}".replace("/", ".") if p.stem != "__init__" else part
            for p in folder.glob("*.py")
        )
    return [part.replace("/", ".")]


def step_modules(step: str) -> tuple[str, ...]:
    """Fully qualified names of the modules whose source decides ``step``'s output.

    Parameters
    ----------
    step : str
        A key of :data:`STEP_CODE`.

    Returns
    -------
    tuple of str
        Sorted, for example ``("croissant_cutouts.tasks.config", ...)``.
    """
    names = {m for part in STEP_CODE[step] for m in _modules_of(part)}
    return tuple(sorted(f"{PACKAGE}.{m}".replace("/", ".") for m in names))


def step_paths(step: str) -> list[str]:
    """Repository-relative paths (POSIX) of ``step``'s code: folders and ``.py`` files.

    These are the code deps of the ``dvc.yaml`` stage that runs ``step``.
    """
    out = []
    for part in STEP_CODE[step]:
        folder = TASKS_DIR / part
        out.append(f"tasks/{part}" if folder.is_dir() else f"tasks/{part}.py")
    return sorted(out)
