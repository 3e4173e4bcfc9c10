"""Content-addressed caching of per-job tasks.

A cache key is the hash of (a) the bytes of every input file the task reads (for a job in
an object store, the names, sizes and ETags of its remote files), (b) its other
parameters, and (c) the source code of the modules that implement it. So re-running on
unchanged inputs is served from Prefect's cache, changing one job's file recomputes only
that job, and editing the science code invalidates what it produced.

Files are hashed with xxh3-128 (several GB/s) by
:func:`~croissant_cutouts.tasks.infra.digests.file_digest`, remembered while a file's size,
modification time and inode are unchanged, in the process and beside the task's cached
results (``.cutouts/cache/digests``), so an unchanged input is read once, not on every run.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import importlib
import inspect
import os
import uuid
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy

from croissant_cutouts.tasks.infra.digests import file_digest

__all__ = [
    "IO_TASK_OPTIONS",
    "ContentPolicy",
    "is_transient",
    "module_source_digest",
    "retry_on_oserror",
]

@functools.lru_cache(maxsize=64)
def module_source_digest(names: tuple[str, ...]) -> str:
    """sha256 of the source of modules (read once per process: code does not change)."""
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode())
        h.update(inspect.getsource(importlib.import_module(name)).encode())
    return h.hexdigest()


def _describe(value: Any, memo: Path | None = None) -> Any:
    """A stable, JSON-able description of a task input (files by content).

    A job in an object store (``remote_identity()`` not ``None``) is described by the
    remote files' names, sizes and ETags instead, so its load is keyed before anything is
    downloaded. An input with ``ensure_local()`` (a loaded remote job) is given the chance
    to restore its local files before they are hashed. File digests are remembered in
    ``memo`` between runs (:func:`~croissant_cutouts.tasks.infra.digests.file_digest`).
    """
    remote = getattr(value, "remote_identity", None)
    identity = remote() if callable(remote) else None
    if identity is not None:
        describe = getattr(value, "describe", None)
        return {
            "type": type(value).__name__,
            "job_id": getattr(value, "job_id", None),
            "remote": _describe(identity, memo),
            "more": _describe(describe(), memo) if callable(describe) else None,
        }
    files = getattr(value, "input_files", None)
    if callable(files):
        prepare = getattr(value, "ensure_local", None)
        if callable(prepare):
            prepare()
        describe = getattr(value, "describe", None)
        return {
            "type": type(value).__name__,
            "job_id": getattr(value, "job_id", None),
            "files": [(Path(f).name, file_digest(f, memo=memo)) for f in files()],
            "more": _describe(describe(), memo) if callable(describe) else None,
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "type": type(value).__name__,
            **{
                f.name: _describe(getattr(value, f.name), memo)
                for f in dataclasses.fields(value)
            },
        }
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _describe(v, memo) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_describe(v, memo) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


#: Folder, inside a task's result storage, of the input-file digests kept between runs.
DIGEST_MEMO = "digests"


def _digest_memo(task: Any) -> Path | None:
    """Where a task's input digests are remembered: beside its cached results, if local.

    So the memo lives and dies with the dataset's cache (``.cutouts/cache/digests``), and a
    Dask worker finds it through the task's options, as it finds the results.
    """
    storage = getattr(task, "result_storage", None)
    if isinstance(storage, (str, os.PathLike)):
        return Path(storage) / DIGEST_MEMO
    basepath = getattr(storage, "basepath", None)  # a LocalFileSystem block
    return Path(basepath) / DIGEST_MEMO if isinstance(basepath, str) and basepath else None


@dataclasses.dataclass
class ContentPolicy(CachePolicy):
    """Cache key from input file contents, parameters and implementation source.

    Parameters
    ----------
    modules : tuple of str
        Modules whose source enters the key (the science the task runs).
    exclude : tuple of str
        Parameters left out of the key (execution knobs that do not change the result).

    Notes
    -----
    A key cannot see whether files a cached result points to still exist; a flow that
    finds them gone runs the task with ``refresh_cache=True`` instead.
    """

    modules: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def compute_key(
        self,
        task_ctx: Any,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        memo = _digest_memo(getattr(task_ctx, "task", None))
        try:
            described = {
                k: _describe(v, memo) for k, v in sorted(inputs.items()) if k not in self.exclude
            }
        except (OSError, ValueError):
            return uuid.uuid4().hex  # an input cannot be fingerprinted: run, and report there
        h = hashlib.sha256(repr(described).encode())
        h.update(module_source_digest(self.modules).encode())
        task_name = getattr(getattr(task_ctx, "task", None), "name", "")
        h.update(task_name.encode())
        return h.hexdigest()


#: ``errno`` values that will not go away by trying again: missing or forbidden files,
#: wrong kinds of path, a full or read-only disk.
PERMANENT_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EINVAL,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for an error worth retrying: an ``OSError`` whose errno is not permanent.

    An ``OSError`` without an errno (what network file systems and object-store clients
    raise for timeouts and dropped connections) counts as transient; bad content
    (``ValueError``, including :class:`tasks.errors.JobError`) never does.
    """
    return isinstance(exc, OSError) and exc.errno not in PERMANENT_ERRNOS


def retry_on_oserror(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transient errors only (:func:`is_transient`)."""
    try:
        state.result()
    except BaseException as exc:
        return is_transient(exc)
    return False


#: Options shared by the per-job I/O tasks: results persisted (that is the cache), and a
#: transient ``OSError`` retried twice, a second apart (the flow sets both from params);
#: bad content and permanent errors fail at once.
IO_TASK_OPTIONS: dict[str, Any] = {
    "persist_result": True,
    "retries": 2,
    "retry_delay_seconds": 1.0,
    "retry_condition_fn": retry_on_oserror,
}
