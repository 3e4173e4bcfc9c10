"""One writer per dataset folder: an advisory lock in ``.cutouts/lock``.

The lock is an ``flock`` on the file ``<dataset>/.cutouts/lock``, which also records who
holds it (host, pid, start time, command). The kernel releases an ``flock`` when its
process dies, however it dies, so a lock left by a killed run is *stale* by construction:
the next run gets the lock at once, reads the dead holder's record, logs that it takes it
over, and goes on. A second live run gets no lock and is refused with a message naming
the holder. Runs into different folders never meet.

On network file systems ``flock`` is as good as the server's lock support (NFSv4 and
Lustre provide it); the holder record is then still shown to the refused run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from croissant_cutouts.tasks.contract import LOCK_FILE, STATE_DIR

__all__ = ["DatasetLocked", "LockHolder", "dataset_lock", "read_holder"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a dataset's lock."""

    host: str
    pid: int
    started: str
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started} ({self.command})"


class DatasetLocked(RuntimeError):
    """Another live run is writing the same dataset folder."""

    def __init__(self, folder: Path, holder: LockHolder | None) -> None:
        self.folder = folder
        self.holder = holder
        who = str(holder) if holder else "a process that has not yet recorded itself"
        super().__init__(
            f"{folder} is being written by another run: {who}. Wait for it to finish, or "
            "write to another folder (-o)."
        )


def read_holder(fd_or_path: int | str | os.PathLike[str]) -> LockHolder | None:
    """The holder recorded in a lock file (an open descriptor or a path), if any."""
    try:
        if isinstance(fd_or_path, int):
            text = os.pread(fd_or_path, 4096, 0).decode("utf-8", "replace")
        else:
            text = Path(fd_or_path).read_text(encoding="utf-8", errors="replace")
        return LockHolder(**json.loads(text))
    except (OSError, ValueError, TypeError):
        return None


def _me(command: str) -> LockHolder:
    return LockHolder(
        host=socket.gethostname(),
        pid=os.getpid(),
        started=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        command=command,
    )


@contextlib.contextmanager
def dataset_lock(
    folder: str | os.PathLike[str], command: str | None = None
) -> Iterator[LockHolder]:
    """Hold the write lock of a dataset folder for the duration of the block.

    Re-entrant within one process (a flow that calls another locked step keeps the lock).

    Parameters
    ----------
    folder : path-like
        Dataset root; ``.cutouts/`` is created in it if missing.
    command : str, optional
        Recorded for a refused run to read (default: this process's command line).

    Yields
    ------
    LockHolder
        This run's record.

    Raises
    ------
    DatasetLocked
        Another live process holds the lock.
    """
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield _held[key][0]
        finally:
            _held[key][1] -= 1
        return
    (folder / STATE_DIR).mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DatasetLocked(folder, read_holder(fd)) from None
        stale = read_holder(fd)
        if stale is not None:
            log.warning("taking over the lock of %s: that run ended without releasing it", stale)
        me = _me(command or " ".join(["cutouts", *sys.argv[1:]]))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
        os.fsync(fd)
        _held[key] = [me, 1]
        try:
            yield me
        finally:
            del _held[key]
            os.ftruncate(fd, 0)  # released cleanly: no holder left on record
    finally:
        os.close(fd)  # closing the descriptor releases the flock


_held: dict[str, list] = {}
