"""Croissant step: describe the dataset in ``croissant.json`` with mlcroissant.

The record set ``transient_candidates`` and its field ids (``transient_candidates/label``,
``transient_candidates/cutout_path``, ...) are those of the seed's metadata, so clients
written against it keep working. Fields are generated from :data:`tasks.schema.INDEX_SCHEMA`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.atomic import atomic_write_text
from tasks.config import CroissantParams
from tasks.cutout import CUTOUT_DIR, STATE_DIR
from tasks.schema import INDEX_SCHEMA

if TYPE_CHECKING:  # mlcroissant is imported where used: it costs ~0.4 s at start-up
    import mlcroissant as mlc

__all__ = [
    "RECORD_SET",
    "CroissantError",
    "build_metadata",
    "croissant_task",
    "sha256_file",
    "sha256_files",
    "validate",
    "write_croissant",
]

log = logging.getLogger(__name__)

RECORD_SET = "transient_candidates"
INDEX_ID = "master_index.csv"
CUTOUTS_ID = "cutout-files"


class CroissantError(ValueError):
    """mlcroissant reported an error or a warning about the metadata."""


def sha256_file(path: str | Path, chunk: int = 4 << 20) -> str:
    """Hex sha256 digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


DIGESTS_FILE = "sha256.json"


def sha256_files(root: Path, names: list[str], workers: int | None = None) -> dict[str, str]:
    """sha256 of many files under ``root``, in parallel, remembered between runs.

    Digests are kept in ``<root>/.cutouts/sha256.json`` keyed by relative path together
    with the file's size, mtime and inode, and reused only while all three are unchanged
    (every file of ours is replaced by rename, so a rewrite changes the inode). Hashing
    releases the GIL, so threads use every core.
    """
    store = root / STATE_DIR / DIGESTS_FILE
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}

    def stamp(name: str) -> list[int]:
        st = os.stat(root / name)
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def digest(name: str) -> tuple[str, list[int], str]:
        before = stamp(name)
        entry = known.get(name)
        if entry and entry[0] == before:
            return name, before, entry[1]
        return name, before, sha256_file(root / name)

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        done = list(pool.map(digest, names))
    fresh = {name: [st, sha] for name, st, sha in done}
    if fresh != known:  # new or changed digests, or shards gone
        store.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(store, json.dumps(fresh))
    return {name: sha for name, _, sha in done}


def _data_types() -> dict[str, object]:
    import mlcroissant as mlc

    return {
        "sc:Integer": mlc.DataType.INTEGER,
        "sc:Float": mlc.DataType.FLOAT,
        "sc:Text": mlc.DataType.TEXT,
        "sc:Boolean": mlc.DataType.BOOL,
    }


def build_metadata(
    csv_path: str | Path, output: str | Path, params: CroissantParams
) -> mlc.Metadata:
    """Build the Croissant metadata of the dataset indexed by ``csv_path``.

    Paths inside the metadata are relative to the folder of ``output`` (where
    ``croissant.json`` will be written), which is normally the dataset root.
    """
    import mlcroissant as mlc

    csv_path = Path(csv_path).resolve()
    base = Path(output).resolve().parent
    root_rel = os.path.relpath(csv_path.parent, base)
    index_rel = os.path.relpath(csv_path, base)
    cutouts_glob = CUTOUT_DIR + "/*.npy" if root_rel == "." else f"{root_rel}/{CUTOUT_DIR}/*.npy"
    columns = list(pd.read_csv(csv_path, nrows=0).columns)
    missing = [c.name for c in INDEX_SCHEMA if c.name not in columns]
    if missing:
        raise CroissantError(f"{csv_path}: index lacks column(s) {', '.join(missing)}")
    published = (
        dt.datetime.fromisoformat(params.date_published)
        if params.date_published
        else dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    )
    types = _data_types()
    fields = [
        mlc.Field(
            id=f"{RECORD_SET}/{col.field_name}",
            name=col.field_name,
            description=col.description,
            data_types=[types[col.data_type]],
            source=mlc.Source(file_object=INDEX_ID, extract=mlc.Extract(column=col.name)),
        )
        for col in INDEX_SCHEMA
    ]
    distribution: list[mlc.FileObject | mlc.FileSet] = [
        mlc.FileObject(
            id=INDEX_ID,
            name=INDEX_ID,
            description="One row per cutout: position, label, cutout path, catalog features.",
            content_url=index_rel,
            encoding_formats=["text/csv"],
            sha256=sha256_file(csv_path),
        )
    ]
    shards = sorted(pd.read_csv(csv_path, usecols=["shard"])["shard"].dropna().unique())
    if shards:
        digests = sha256_files(csv_path.parent, shards)
        prefix = "" if root_rel == "." else f"{root_rel}/"
        distribution += [
            mlc.FileObject(
                id=f"shard-{Path(name).stem}",
                name=Path(name).name,
                description=f"Cutouts of job {Path(name).stem}: numpy .npy, shape (N, 64, 64, "
                "4), float32 in [0, 1], channels science, reference, difference, score; "
                "index rows with this shard give their row.",
                content_url=prefix + name,
                encoding_formats=["application/x-npy"],
                sha256=digests[name],
            )
            for name in shards
        ]
    else:
        distribution.append(
            mlc.FileSet(
                id=CUTOUTS_ID,
                name=CUTOUTS_ID,
                description="Cutout tensors, numpy .npy, shape (64, 64, 4), float32 in [0, 1].",
                encoding_formats=["application/x-npy"],
                includes=[cutouts_glob],
            )
        )
    return mlc.Metadata(
        name=params.name,
        description=params.description,
        url=params.url,
        license=[params.license],
        creators=[mlc.Organization(name=params.creator)],
        date_published=published,
        version=params.version,
        cite_as=params.cite_as,
        distribution=distribution,
        record_sets=[
            mlc.RecordSet(
                id=RECORD_SET,
                name=RECORD_SET,
                description="Transient candidates, one record per cutout.",
                key=f"{RECORD_SET}/cutout_id",
                fields=fields,
            )
        ],
    )


def _raise_on_issues(issues: mlc.Issues, what: str) -> None:
    problems = [f"error: {e}" for e in issues.errors] + [f"warning: {w}" for w in issues.warnings]
    if problems:
        raise CroissantError(f"{what}: mlcroissant reports\n" + "\n".join(problems))


def validate(path: str | Path) -> mlc.Dataset:
    """Load ``croissant.json`` with mlcroissant; raise on any error or warning."""
    import mlcroissant as mlc

    try:
        dataset = mlc.Dataset(jsonld=str(path))
    except mlc.ValidationError as exc:
        raise CroissantError(f"{path}: {exc}") from exc
    _raise_on_issues(dataset.metadata.ctx.issues, str(path))
    return dataset


def write_croissant(
    csv_path: str | Path, output: str | Path, params: CroissantParams | None = None
) -> Path:
    """Write ``croissant.json`` for an index and check it with mlcroissant.

    Raises
    ------
    CroissantError
        When mlcroissant reports any error or warning, on building or on reloading.
    """
    import mlcroissant as mlc

    params = params or CroissantParams()
    output = Path(output)
    try:
        metadata = build_metadata(csv_path, output, params)
    except mlc.ValidationError as exc:
        raise CroissantError(str(exc)) from exc
    _raise_on_issues(metadata.issues, "building croissant.json")
    text = json.dumps(metadata.to_json(), indent=2, default=str) + "\n"
    atomic_write_text(output, text)
    validate(output)
    log.info("wrote %s", output)
    return output


@task(name="croissant", cache_policy=NO_CACHE, persist_result=False)
def croissant_task(csv_path: str, output: str, params: CroissantParams) -> str:
    """Prefect task: :func:`write_croissant`; fails on any mlcroissant error or warning."""
    return str(write_croissant(csv_path, output, params))
