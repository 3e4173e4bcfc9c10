"""Atomic file writes: a file appears under its final name only once completely written.

Where the file system allows it (Linux ``O_TMPFILE``: ext4, xfs, btrfs, tmpfs), the bytes
go to an unnamed file in the target folder, which is then linked under its name: a killed
run leaves nothing behind (the unnamed file dies with its descriptor), and a new file costs
one change to the folder instead of two. Elsewhere, and to replace an existing file, the
bytes go to a hidden temporary name in the same folder, which is then renamed onto the
final one. Temporary names are hidden (leading ``.``) and carry ``.tmp-<pid>`` so that globs
such as ``cutouts/*.npy`` never see them and a later run can recognise and remove them.
"""

from __future__ import annotations

import contextlib
import errno
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


def _temporary_name(name: str) -> str:
    """A hidden sibling of ``name`` unique to this process and thread."""
    folder, sep, base = name.rpartition("/")
    return f"{folder}{sep}.{base}{TMP_MARK}{os.getpid()}-{threading.get_ident()}"


#: False once this process found that unnamed files cannot be made or linked here (linking
#: one needs ``/proc/self/fd``).
_unnamed_ok = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


def _open_unnamed(name: str, dir_fd: int | None) -> int | None:
    """A descriptor of a new unnamed file in ``name``'s folder, or None where unsupported."""
    global _unnamed_ok
    if not _unnamed_ok:
        return None
    folder = name.rpartition("/")[0] or "."
    try:
        return os.open(folder, os.O_RDWR | os.O_TMPFILE, 0o644, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):  # no O_TMPFILE here
            _unnamed_ok = False
            return None
        raise


def _link_unnamed(fd: int, name: str, dir_fd: int | None) -> bool:
    """Give the unnamed file ``fd`` the name ``name``, replacing any file of that name.

    False when links through ``/proc/self/fd`` are refused: the caller copies the bytes to
    a file written the classic way.
    """
    global _unnamed_ok
    source = f"/proc/self/fd/{fd}"
    try:
        os.link(source, name, dst_dir_fd=dir_fd, follow_symlinks=True)
        return True
    except FileExistsError:  # replace it: a named temporary, renamed over it
        tmp = _temporary_name(name)
        os.link(source, tmp, dst_dir_fd=dir_fd, follow_symlinks=True)
        try:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        return True
    except (FileNotFoundError, PermissionError):  # /proc hidden from us, or not ours to use
        _unnamed_ok = False
        return False


def _copy(src: int, dst: int) -> None:
    """Copy all bytes of descriptor ``src`` (from its start) to ``dst``."""
    os.lseek(src, 0, os.SEEK_SET)
    while chunk := os.read(src, 1 << 20):
        write_all(dst, chunk)


@contextlib.contextmanager
def _named(name: str, dir_fd: int | None) -> Iterator[int]:
    """The classic way: write a hidden temporary sibling, then rename it onto ``name``."""
    tmp = _temporary_name(name)
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


@contextlib.contextmanager
def atomic_fd(name: str | os.PathLike[str], dir_fd: int | None = None) -> Iterator[int]:
    """A descriptor of a file that appears as ``name`` only once the block succeeds.

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
        Write to it (:func:`write_all`); it is positioned at 0 of an empty file. On any
        error nothing appears under ``name`` and nothing is left behind. An unnamed file
        (``O_TMPFILE``) is linked under ``name``; where the file system has none, a hidden
        temporary name carrying :data:`TMP_MARK`, the process id and the thread id is
        renamed onto it.
    """
    name = os.fspath(name)
    if dir_fd is None and _unnamed_ok:  # linkat follows /proc's link only given a dir_fd
        folder, _, base = name.rpartition("/")
        if not folder:  # "name" (here) or "/name" (the root)
            folder = "/" if name.startswith("/") else "."
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with atomic_fd(base, dfd) as fd:
                yield fd
        finally:
            os.close(dfd)
        return
    fd = _open_unnamed(name, dir_fd)
    if fd is None:
        with _named(name, dir_fd) as fd:
            yield fd
        return
    try:
        yield fd
        if not _link_unnamed(fd, name, dir_fd):
            with _named(name, dir_fd) as out:
                _copy(fd, out)
    finally:
        os.close(fd)  # an unnamed file that was not linked vanishes here


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
