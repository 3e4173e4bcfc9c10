"""Ownership of the output folder: the tool writes only into a dataset folder of its own.

A folder is a dataset of ours when it holds the marker ``.cutouts/dataset.json`` (written
when the tool first writes into it), or, without the marker, when every entry in it has a
name the tool writes (what ``dvc pull`` restores of a released version, for instance). A
new or empty folder is claimed (the marker is written). Anything else is refused before a
single file is written: the tool never deletes or overwrites files it did not write.

Inside a folder of ours, the names in :data:`DATASET_NAMES` belong to the tool; other
files a user puts there are never touched (and ``cutouts verify`` reports stray ``.npy``
files under ``cutouts/`` or ``shards/``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from croissant_cutouts.tasks.contract import DATASET_NAMES, MARKER, STATE_DIR
from croissant_cutouts.tasks.infra.atomic import TMP_MARK, atomic_write_text

__all__ = [
    "NotOurFolder",
    "claim_output_dir",
    "guard_foreign_outputs",
    "is_dataset_dir",
]

class NotOurFolder(ValueError):
    """The output folder exists, is not empty and is not a dataset made by this tool."""


def _foreign_entries(folder: Path) -> list[str]:
    return sorted(
        e.name
        for e in folder.iterdir()
        if e.name not in DATASET_NAMES and not (e.name.startswith(".") and TMP_MARK in e.name)
    )


def is_dataset_dir(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` is a dataset of ours (marker present, or only our names)."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return True
    return folder.is_dir() and not _foreign_entries(folder)


def claim_output_dir(folder: str | os.PathLike[str], command: str = "cutouts") -> Path:
    """Make sure the tool may write into ``folder``; create it and its marker if needed.

    Parameters
    ----------
    folder : path-like
        Dataset root (``-o``).
    command : str
        What is about to write there, recorded in a new marker.

    Returns
    -------
    Path
        ``folder``, now existing, with ``.cutouts/dataset.json``.

    Raises
    ------
    NotOurFolder
        ``folder`` is a file, or a non-empty folder that is not a dataset of ours; the
        message names up to five of the entries that are not ours.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotOurFolder(f"output {folder} is a file, not a folder")
    if (folder / MARKER).is_file():
        return folder
    if folder.is_dir():
        foreign = _foreign_entries(folder)
        if foreign:
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            shown = ", ".join(foreign[:5]) + more
            raise NotOurFolder(
                f"refusing to write into {folder}: it is not empty and not a dataset made by "
                f"cutouts (no {MARKER}; not ours: {shown}). Choose a new or empty folder."
            )
    (folder / STATE_DIR).mkdir(parents=True, exist_ok=True)
    marker = {
        "tool": "croissant-cutouts",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "by": command,
    }
    atomic_write_text(folder / MARKER, json.dumps(marker, indent=2) + "\n")
    return folder


def guard_foreign_outputs(folder: str | os.PathLike[str], paths: list[Path]) -> None:
    """Refuse to overwrite existing ``paths`` outside a dataset folder of ours.

    For the steps that add files to an existing dataset (``croissant``, ``train``): in a
    folder of ours they replace their own files; elsewhere they may only create new ones.

    Raises
    ------
    NotOurFolder
        One of ``paths`` exists in a folder that is not a dataset of ours.
    """
    for path in paths:
        parent = path.parent
        if path.exists() and not is_dataset_dir(parent):
            raise NotOurFolder(
                f"refusing to overwrite {path}: {parent} is not a dataset made by cutouts "
                f"(no {MARKER}). Write to a new file or folder."
            )
