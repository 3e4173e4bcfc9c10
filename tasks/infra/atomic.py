"""Atomic file writes: write to a temporary name in the same folder, then rename.

An interrupted run therefore never leaves a half-written file under its final name.
Temporary files are hidden (leading ``.``) and end in ``.tmp-<pid>`` so that globs such
as ``cutouts/*.npy`` never see them and a later run can recognise and remove them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "TMP_MARK",
    "atomic_fd",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_temporaries",
    "write_all",
]

#: Marks a hidden temporary file (``.<name>.tmp-<pid>...``) until it is renamed into place.
TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_fd(name: str | os.PathLike[str], dir_fd: int | None = None) -> Iterator[int]:
    """A descriptor on a temporary sibling of ``name``, renamed onto it on success.

    The one atomic write of the package: every other helper here is built on it.

    Parameters
    ----------
    name : path-like
        Final file name: a path, or a bare file name inside the folder open as ``dir_fd``
        (no path walk per call, for the many small files of the files layout). The folder
        must exist.
    dir_fd : int, optional
        A descriptor of the folder ``name`` is relative to.

    Yields
    ------
    int
        Write to it (:func:`write_all`). On any error the temporary file is removed and
        nothing appears under ``name``; the temporary name is hidden and carries
        :data:`TMP_MARK`, the process id and the thread id.
    """
    folder, sep, base = os.fspath(name).rpartition("/")
    tmp = f"{folder}{sep}.{base}{TMP_MARK}{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    try:
        try:
            yield fd
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


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
        The file is made readable by all (0644) whatever the umask.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
    with atomic_fd(final) as fd:
        os.fchmod(fd, 0o644)
        with os.fdopen(os.dup(fd), mode, **text) as fh:
            yield fh


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
