"""Atomic file writes: write to a temporary name in the same folder, then rename.

An interrupted run therefore never leaves a half-written file under its final name.
Temporary files are hidden (leading ``.``) and end in ``.tmp-<pid>`` so that globs such
as ``cutouts/*.npy`` never see them and a later run can recognise and remove them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "TMP_MARK",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_temporaries",
]

TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it to ``path`` on success.

    Parameters
    ----------
    path : path-like
        Final file name. Its parent folder is created if missing.
    mode : str
        ``"wb"`` (default) or ``"w"`` (text, UTF-8, ``\\n`` newlines).

    Yields
    ------
    file object
        Write to it. On an exception the temporary file is removed and ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=final.parent, prefix=f".{final.name}", suffix=f"{TMP_MARK}{os.getpid()}"
    )
    try:
        if "b" in mode:
            fh = os.fdopen(fd, mode)
        else:
            fh = os.fdopen(fd, mode, encoding="utf-8", newline="\n")
        with fh:
            yield fh
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_output(path, "w") as fh:
        fh.write(text)


def remove_temporaries(folder: str | os.PathLike[str]) -> int:
    """Remove the temporary files that interrupted writes left anywhere under ``folder``.

    Only hidden files whose name carries :data:`TMP_MARK` are removed. Call it only while
    no other writer is at work in ``folder`` (under the dataset's lock): every temporary
    file is then a leftover of a run that was killed.

    Returns
    -------
    int
        How many files were removed.
    """
    removed = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            if name.startswith(".") and TMP_MARK in name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
    return removed
