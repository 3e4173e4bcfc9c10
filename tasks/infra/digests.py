"""File digests, remembered while a file is unchanged: one helper per hash, one memo scheme.

- :func:`sha256_file`: the sha256 of a file (what ``croissant.json`` and ``verify`` state).
- :func:`file_digest`: xxh3-128 (several GB/s), for cache keys only; optionally remembered
  between processes in a memo folder (the dataset's task cache), so a re-run does not read
  unchanged inputs again.
- :func:`sha256_files`: many sha256 digests in parallel, remembered between runs in a
  dataset's :data:`~croissant_cutouts.tasks.contract.DIGESTS_FILE`.

The memo scheme, the way DVC does it: a digest is reused only while the file's
:func:`stamp` (size, mtime in ns, inode) is unchanged. Every file this tool writes is
replaced by rename, so a rewrite changes the inode even within one mtime tick.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xxhash

from croissant_cutouts.tasks.contract import DIGESTS_FILE
from croissant_cutouts.tasks.infra.atomic import atomic_write_text

__all__ = ["KNOWN_FILES", "file_digest", "sha256_file", "sha256_files", "stamp"]

_CHUNK = 4 << 20


def stamp(path: str | os.PathLike[str]) -> list[int]:
    """The memo signature of a file: ``[size, mtime_ns, inode]``."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _hash_file(path: str | os.PathLike[str], h: Any, chunk: int = _CHUNK) -> str:
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lowercase hex sha256 of a file's bytes (not remembered)."""
    return _hash_file(path, hashlib.sha256())


_known: dict[str, tuple[list[int], str]] = {}  # least recently used first
_known_lock = threading.Lock()
#: Digests remembered in this process (about 450 bytes each): the files of the jobs being
#: run, whose digests each of a job's tasks asks for, not every file a long run has seen.
KNOWN_FILES = 4096

#: A file's memo entry is kept between processes only once its mtime is this old (seconds):
#: a file rewritten within one timestamp tick of being hashed keeps its stamp, so a fresh
#: file is hashed again next time rather than trusted (git's "racily clean" rule).
SETTLE_S = 2.0


def _memo_file(memo: Path, key: str) -> Path:
    return memo / f"{xxhash.xxh3_64_hexdigest(key.encode())}.json"


def _recall(memo: Path, key: str, now: list[int]) -> str | None:
    """The digest a previous process stored for ``key`` with stamp ``now``, if any."""
    try:
        entry = json.loads(_memo_file(memo, key).read_text())
    except (OSError, ValueError):
        return None
    if entry.get("path") == key and entry.get("stamp") == now:
        return entry.get("xxh3")
    return None


def _store(memo: Path, key: str, now: list[int], digest: str) -> None:
    """Keep ``digest`` for other processes, once the file has settled (:data:`SETTLE_S`)."""
    if time.time_ns() - now[1] < SETTLE_S * 1e9:
        return
    try:
        memo.mkdir(parents=True, exist_ok=True)
        entry = {"path": key, "stamp": now, "xxh3": digest}
        atomic_write_text(_memo_file(memo, key), json.dumps(entry))
    except OSError:  # a memo that cannot be written costs a re-hash, nothing else
        pass


def file_digest(
    path: str | os.PathLike[str], chunk: int = _CHUNK, memo: str | os.PathLike[str] | None = None
) -> str:
    """xxh3-128 hex digest of a file's bytes, remembered while its :func:`stamp` holds.

    The digest is remembered in this process (thread-safe; the :data:`KNOWN_FILES` most
    recently used) and, with ``memo``, in that folder for later processes: one small JSON
    file per input file, keyed by its absolute path. So a re-run reads a job's stamps, not
    its gigabytes, and only a changed file is read again.

    Parameters
    ----------
    path : path-like
    chunk : int
        Bytes read at a time.
    memo : path-like, optional
        Folder of the memo between processes (created when first written).
    """
    key, now = os.path.abspath(path), stamp(path)
    with _known_lock:
        hit = _known.pop(key, None)
        if hit is not None:
            _known[key] = hit  # now the most recently used
    if hit is not None and hit[0] == now:
        return hit[1]
    digest = _recall(Path(memo), key, now) if memo is not None else None
    if digest is None:
        digest = _hash_file(path, xxhash.xxh3_128(), chunk)
        if memo is not None:
            _store(Path(memo), key, now, digest)
    with _known_lock:
        _known.pop(key, None)
        _known[key] = (now, digest)
        while len(_known) > KNOWN_FILES:
            del _known[next(iter(_known))]
    return digest


def sha256_files(root: Path, names: list[str], workers: int | None = None) -> dict[str, str]:
    """sha256 of many files under ``root``, in parallel, remembered between runs.

    Digests are kept in ``<root>/.cutouts/sha256.json``, keyed by relative path together
    with the file's :func:`stamp`. Hashing releases the GIL, so threads use every core.

    Returns
    -------
    dict
        Relative name (as given) -> lowercase hex sha256.
    """
    store = root / DIGESTS_FILE
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}

    def digest(name: str) -> tuple[str, list[int], str]:
        before = stamp(root / name)
        entry = known.get(name)
        if entry and entry[0] == before:
            return name, before, entry[1]
        return name, before, sha256_file(root / name)

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        done = list(pool.map(digest, names))
    fresh = {name: [st, sha] for name, st, sha in done}
    if fresh != known:  # new or changed digests, or files gone
        store.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(store, json.dumps(fresh))
    return {name: sha for name, _, sha in done}
