"""Job folders in an object store (``s3://bucket/prefix/jid*``): list them, stage them.

A remote job is listed once (:func:`list_jobs`), which records the identity of the files
its layout reads (name, size, ETag) in a small hashable :class:`RemoteJob`. The load step
then copies those files into a local staging folder (:func:`stage_job`) and reads the
copy exactly like a local job (memory-mapped). Staging is atomic: the files are downloaded
into a hidden temporary sibling folder, which is renamed onto the job's folder only when
complete, so an interrupted download never leaves a half-written file under its final
name; a copy whose recorded identity still matches the listing is not downloaded again.

Any fsspec URL works (``s3://``, ``gs://``, ``memory://``, ...). For S3 the endpoint and
credentials come from the usual AWS environment (``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``AWS_PROFILE``), so the same code reads real S3 and a local server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from astropy.io import fits
from fsspec.core import split_protocol

from croissant_cutouts.tasks.contract import CHANNELS
from croissant_cutouts.tasks.errors import JobError
from croissant_cutouts.tasks.infra.atomic import TMP_MARK
from croissant_cutouts.tasks.infra.extras import require_extra
from croissant_cutouts.tasks.inputs.layouts import LAYOUTS, detect_layout, get_layout

__all__ = [
    "MANIFEST",
    "S3_PROTOCOLS",
    "RemoteFile",
    "RemoteJob",
    "filesystem",
    "is_remote",
    "is_staged",
    "join_url",
    "list_jobs",
    "location",
    "read_bytes",
    "read_header",
    "remote_exists",
    "require_store_extra",
    "select_files",
    "stage_job",
    "storage_options",
]

log = logging.getLogger(__name__)

#: File inside a staged job folder that records what was staged (hidden: no layout reads it).
MANIFEST = ".remote-manifest.json"

#: Block size for reading FITS headers remotely (a header is a few 2880-byte blocks).
_HEADER_BLOCK = 1 << 16

#: URL protocols of S3 object stores (the ``s3`` extra: s3fs).
S3_PROTOCOLS = ("s3", "s3a")


@dataclass(frozen=True)
class RemoteFile:
    """Identity of one remote object: file name in the job folder, size in bytes, ETag."""

    name: str
    size: int
    etag: str


@dataclass(frozen=True)
class RemoteJob:
    """A job folder in an object store: small, hashable, cheap to pass between tasks.

    Parameters
    ----------
    url : str
        The job's folder, e.g. ``s3://bucket/prefix/jid0001`` (no trailing slash).
    files : tuple of RemoteFile
        The files its layout reads, sorted by name (others in the folder are not staged).
    layout : str
        Layout resolved from the file names, or ``auto`` when they resolve none (the load
        step then rejects the job with the layout's own reason).
    """

    url: str
    files: tuple[RemoteFile, ...] = ()
    layout: str = "auto"

    @property
    def job_id(self) -> str:
        """The job folder's name (``jid...``)."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def identity(self) -> tuple[tuple[str, int, str], ...]:
        """``(name, size, etag)`` of every file: what a cache key of the job's load uses."""
        return tuple((f.name, f.size, f.etag) for f in self.files)

    def file_url(self, name: str) -> str:
        """URL of one file of the job."""
        return join_url(self.url, name)


def is_remote(url: str | os.PathLike[str]) -> bool:
    """True for an fsspec URL whose scheme is not ``file`` (``s3://b/p``, ``memory://x``).

    Local paths (``Path`` objects, ``data/raw``, ``/abs``, ``file:///abs``) are not remote.
    """
    if isinstance(url, os.PathLike):
        return False
    protocol, _ = split_protocol(str(url))
    return protocol is not None and protocol not in ("file", "local")


def location(place: str | os.PathLike[str]) -> str | Path:
    """An input location as it should be held: a URL as text, a local folder as a Path.

    ``Path("s3://b/jobs")`` would fold the ``//`` into ``s3:/b/jobs``, a missing folder.
    """
    return str(place) if is_remote(place) else Path(place)


def join_url(url: str, *parts: str) -> str:
    """``url`` with ``parts`` appended, ``/``-separated, without doubled slashes."""
    return "/".join([str(url).rstrip("/"), *(p.strip("/") for p in parts)])


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for ``url`` taken from the environment.

    For ``s3://`` the endpoint is ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` when set.
    botocore reads these itself, but passing the endpoint explicitly also keys fsspec's
    cache of filesystem instances on it (a process that changes endpoint gets a new one).
    Credentials are left to botocore's usual chain (environment, profile, instance role).
    """
    protocol, _ = split_protocol(str(url))
    if protocol in S3_PROTOCOLS:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            return {"client_kwargs": {"endpoint_url": endpoint}}
    return {}


def require_store_extra(url: str | os.PathLike[str], feature: str = "reading s3:// URLs") -> None:
    """Raise :class:`~croissant_cutouts.tasks.infra.extras.MissingExtra` when ``url`` is on
    an object store whose extra (``s3``) is not installed; nothing for other URLs."""
    if split_protocol(str(url))[0] in S3_PROTOCOLS:
        require_extra("s3", feature)


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``url`` and the path inside it (protocol stripped)."""
    require_store_extra(url)
    fs, path = fsspec.core.url_to_fs(str(url), **storage_options(url))
    return fs, path.rstrip("/")


def _etag(info: dict[str, Any]) -> str:
    """A version token of an object: its ETag, else a checksum or modification time."""
    for key in ("ETag", "etag", "md5Hash", "checksum", "LastModified", "mtime", "created"):
        value = info.get(key)
        if value not in (None, ""):
            return str(value).strip('"')
    return ""


def select_files(
    job_id: str, names: list[str] | tuple[str, ...], layout: str = "auto"
) -> tuple[str, list[str]]:
    """Which of a job folder's file names the layout reads, and the layout's name.

    The layout rules (first existing name wins, catalog name variants, truth-file globs)
    are applied to empty stand-in files of those names in a temporary folder, so remote
    and local jobs are resolved by the same code. Images are selected even when the
    catalog is missing and vice versa, so that the load step sees the same files, and
    rejects the job for the same reason, as it would locally.

    Parameters
    ----------
    job_id : str
        Job folder name (only used for the stand-in folder's name).
    names : sequence of str
        Names of the files directly in the job folder.
    layout : str
        A layout name, or ``auto`` to detect it from the names.

    Returns
    -------
    layout : str
        The layout name, or ``auto`` when none can be detected (no candidate catalog).
    wanted : list of str
        The names to stage, sorted.
    """
    with tempfile.TemporaryDirectory(prefix=".cutouts-names-") as tmp:
        stub = Path(tmp) / job_id
        stub.mkdir()
        for name in names:
            with contextlib.suppress(OSError):  # a name this file system cannot hold
                (stub / name).touch()
        present = {p.name for p in stub.iterdir()}
        if layout == "auto":
            try:
                layout = detect_layout(stub)
            except JobError:
                layout = "auto"
        layouts = [get_layout(layout)] if layout != "auto" else [c() for c in LAYOUTS.values()]
        wanted: set[str] = set()
        for lay in layouts:
            for channel in CHANNELS:
                first = next((n for n in lay.images[channel] if n in present), None)
                if first is not None:
                    wanted.add(first)
        if layout != "auto":
            with contextlib.suppress(JobError):
                wanted.update(p.name for p in layouts[0].catalog_files(stub))
    return layout, sorted(wanted)


def list_jobs(url: str, layout: str = "auto") -> list[RemoteJob]:
    """The ``jid*`` job folders under a remote prefix, sorted by name.

    One recursive listing of the prefix (a few requests per thousand objects on S3); a
    job is every ``jid*`` first-level name that holds objects, its files those directly
    inside it. Listings are never served from fsspec's listing cache.

    Parameters
    ----------
    url : str
        The prefix, e.g. ``s3://bucket/rapid/20260101``.
    layout : str
        Layout of the jobs, or ``auto`` (detected per job from its file names).

    Raises
    ------
    FileNotFoundError
        When nothing is stored under ``url`` (no bucket, or an empty prefix).
    """
    fs, root = filesystem(url)
    fs.invalidate_cache(root)
    entries = fs.find(root, detail=True)
    if not entries:
        raise FileNotFoundError(f"input {url} does not exist or holds no objects")
    jobs: dict[str, dict[str, dict[str, Any]]] = {}
    for path, info in entries.items():
        if not path.startswith(f"{root}/"):  # a sibling prefix (``rapid2`` beside ``rapid``)
            continue
        parts = path[len(root) + 1 :].split("/")
        if len(parts) < 2 or not parts[0].startswith("jid"):
            continue
        files = jobs.setdefault(parts[0], {})
        if len(parts) == 2 and parts[1] and info.get("type", "file") == "file":
            files[parts[1]] = info
    out = []
    for job_id in sorted(jobs):
        files = jobs[job_id]
        resolved, wanted = select_files(job_id, list(files), layout)
        remote = tuple(
            RemoteFile(n, int(files[n].get("size") or 0), _etag(files[n])) for n in wanted
        )
        out.append(RemoteJob(join_url(url, job_id), remote, resolved))
    log.info("%d job folders under %s", len(out), url)
    return out


def remote_exists(url: str) -> bool:
    """True when ``url`` names an existing object (never from the listing cache)."""
    fs, path = filesystem(url)
    fs.invalidate_cache(path)
    return bool(fs.isfile(path))


def read_bytes(url: str) -> bytes:
    """The bytes of one remote object (a field list, say)."""
    fs, path = filesystem(url)
    return fs.cat_file(path)


def read_header(url: str, hdu: int = 0) -> fits.Header:
    """The header of one HDU of a remote FITS file, reading only its first blocks."""
    fs, path = filesystem(url)
    with fs.open(path, "rb", block_size=_HEADER_BLOCK) as fh:
        return fits.getheader(fh, hdu)


def _manifest(job: RemoteJob) -> dict[str, Any]:
    return {"url": job.url, "files": [list(f) for f in job.identity()]}


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def is_staged(job: RemoteJob, dest: str | Path) -> bool:
    """True when ``dest`` holds a complete copy of ``job`` (same names, sizes and ETags).

    Only the manifest and file sizes are checked (no bytes are read).
    """
    dest = Path(dest)
    manifest = _read_manifest(dest)
    if manifest is None or [tuple(f) for f in manifest.get("files", [])] != list(job.identity()):
        return False
    for f in job.files:
        try:
            if (dest / f.name).stat().st_size != f.size:
                return False
        except OSError:
            return False
    return True


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types of the object-store clients that mean a failing network."""
    types: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):
        from botocore.exceptions import BotoCoreError

        types.append(BotoCoreError)
    with contextlib.suppress(ImportError):
        from aiohttp import ClientError

        types.append(ClientError)
    return tuple(types)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale_temporaries(dest: Path) -> None:
    """Remove temporary siblings of ``dest`` left by processes that no longer run."""
    for tmp in dest.parent.glob(f".{dest.name}-*{TMP_MARK}*"):
        pid = tmp.name.rsplit(TMP_MARK, 1)[-1].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _reuse(old: Path, f: RemoteFile, old_files: set[tuple[str, int, str]], target: Path) -> bool:
    """Link (or copy) an unchanged file from an older staged copy instead of downloading."""
    source = old / f.name
    if (f.name, f.size, f.etag) not in old_files or not f.etag:
        return False
    try:
        if source.stat().st_size != f.size:
            return False
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    except OSError:
        return False
    return True


def stage_job(job: RemoteJob, dest: str | Path, job_id: str | None = None) -> Path:
    """Copy a remote job's files into the local folder ``dest``, atomically.

    Files are downloaded into a hidden temporary sibling of ``dest`` (``.<name>...tmp-<pid>``)
    which is renamed onto ``dest`` once every file is complete and its size checked; a
    previous copy is replaced only then. Files unchanged since a previous copy (same name,
    size and ETag) are linked from it rather than downloaded again. When ``dest`` already
    holds this exact copy nothing is done. Missing parent folders are created.

    Parameters
    ----------
    job : RemoteJob
        What to stage.
    dest : path-like
        The job's local folder (``<stage_dir>/<job_id>``).
    job_id : str, optional
        Name for error messages; default the remote folder's name.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    JobError
        An object of the listing is no longer in the store (the message names the file).
    OSError
        A transient failure (network, throttling, size changed while downloading): worth
        a retry. Client exceptions that are not ``OSError`` are raised as ``ConnectionError``.
    """
    dest = Path(dest)
    job_id = job_id or job.job_id
    if is_staged(job, dest):
        log.debug("%s: staged copy in %s is current", job_id, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(dest)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-", suffix=_suffix()))
    old_manifest = _read_manifest(dest) or {}
    old_files = {tuple(f) for f in old_manifest.get("files", [])}
    downloaded = 0
    try:
        fs, root = filesystem(job.url) if job.files else (None, "")
        for f in job.files:
            target = tmp / f.name
            if _reuse(dest, f, old_files, target):
                continue
            url = job.file_url(f.name)
            try:
                fs.get_file(join_url(root, f.name), str(target))
            except FileNotFoundError as exc:
                raise JobError(job_id, f"missing in the object store ({url})", f.name) from exc
            except OSError:
                raise
            except _network_errors() as exc:
                raise ConnectionError(f"{job_id}: downloading {url} failed: {exc}") from exc
            size = target.stat().st_size
            if size != f.size:
                raise OSError(
                    f"{job_id}: {url} has {size} bytes, the listing said {f.size}: "
                    "changed while staging?"
                )
            downloaded += f.size
        (tmp / MANIFEST).write_text(json.dumps(_manifest(job), indent=1) + "\n")
        os.chmod(tmp, 0o755)
        _replace_folder(tmp, dest, job)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "%s: staged %d files (%d bytes downloaded) in %s", job_id, len(job.files), downloaded, dest
    )
    return dest


def _suffix() -> str:
    return f"{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _replace_folder(tmp: Path, dest: Path, job: RemoteJob) -> None:
    """Rename the complete folder ``tmp`` onto ``dest``, moving an older copy aside first."""
    aside = None
    if dest.exists() or dest.is_symlink():
        aside = dest.with_name(f".{dest.name}-old{_suffix()}")
        try:
            os.rename(dest, aside)
        except FileNotFoundError:  # another process moved it meanwhile
            aside = None
    try:
        os.rename(tmp, dest)
    except OSError:
        if not is_staged(job, dest):  # not another process's identical copy: a real error
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if aside is not None:
            if aside.is_dir() and not aside.is_symlink():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    aside.unlink()
