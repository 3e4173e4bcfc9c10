"""Checks of ``croissant.json``: its FileObjects exist and their sha256 match."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from croissant_cutouts.tasks.contract import (
    INDEX_FILE,
    OutsideDataset,
    dataset_file,
    inside_dataset,
)
from croissant_cutouts.tasks.infra.digests import sha256_file
from croissant_cutouts.tasks.verify.report import Problem, VerifyReport
from croissant_cutouts.tasks.verify.streaming import IndexRows

__all__ = [
    "check_croissant",
    "croissant_objects",
]

log = logging.getLogger(__name__)

def croissant_objects(
    root: Path, path: Path, require: bool, problems: list[Problem]
) -> list[dict] | None:
    """The FileObjects of ``croissant.json`` (dicts), or None when absent/unreadable."""
    rel = os.path.relpath(path, root) if path.is_relative_to(root) else str(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if require:
            problems.append(Problem("croissant", "file missing", file=rel))
        return None
    except (OSError, ValueError) as exc:
        problems.append(Problem("croissant", f"unreadable: {exc}", file=rel))
        return None
    dist = doc.get("distribution") if isinstance(doc, dict) else None
    if not isinstance(dist, list):
        problems.append(Problem("croissant", "has no distribution list", file=rel))
        return None
    return [d for d in dist if isinstance(d, dict) and _stays_inside(root, path, d, problems)
            and "FileObject" in str(d.get("@type", ""))]


def _stays_inside(root: Path, path: Path, entry: dict, problems: list[Problem]) -> bool:
    """False, with a problem, for a distribution entry whose paths lead out of the dataset.

    A FileObject's ``contentUrl`` and a FileSet's ``includes`` patterns are relative to the
    folder of ``croissant.json`` and must resolve inside the dataset folder ``root``
    (:func:`~croissant_cutouts.tasks.contract.dataset_file`): such an entry is neither hashed
    nor read. Empty or missing paths are reported by :func:`check_croissant`.
    """
    rel = os.path.relpath(path, root) if path.is_relative_to(root) else str(path)
    includes = entry.get("includes", [])
    names = [entry.get("contentUrl")] + (includes if isinstance(includes, list) else [includes])
    oid = entry.get("@id", entry.get("name", "?"))
    for name in names:
        if name is None or name == "":
            continue
        try:
            dataset_file(root, name, f"{oid!r}: path", base=path.parent)
        except OutsideDataset:
            problems.append(Problem(
                "croissant", f"{oid!r}: path {name!r} leads outside the dataset folder; "
                "not read", file=rel,
            ))
            return False
    return True


def check_croissant(
    root: Path,
    cpath: Path,
    objects: list[dict],
    index: IndexRows | None,
    pool: ThreadPoolExecutor,
    digests: dict[Path, str],
    file_problems: dict[str, Sequence],
    missing: set[str],
    report: VerifyReport,
) -> None:
    """contentUrl of every FileObject exists; sha256 matches; index and shards described."""
    problems = report.problems
    base = cpath.parent
    crel = os.path.relpath(cpath, root) if cpath.is_relative_to(root) else str(cpath)
    todo = {}
    described: set[Path] = set()
    for obj in objects:
        oid = obj.get("@id", obj.get("name", "?"))
        url = obj.get("contentUrl")
        if not isinstance(url, str) or not url:
            problems.append(
                Problem("croissant", f"FileObject {oid!r} has no contentUrl", file=crel)
            )
            continue
        path = (base / url).resolve()
        described.add(path)
        rel = os.path.relpath(path, root.resolve())
        if not path.is_file():
            if rel not in missing:
                problems.append(
                    Problem(
                        "croissant", f"FileObject {oid!r}: contentUrl {url!r} is missing", file=rel
                    )
                )
            continue
        sha = obj.get("sha256")
        if isinstance(sha, str) and path not in digests and not file_problems.get(rel):
            todo[path] = pool.submit(sha256_file, path)
    for path, fut in todo.items():
        digests[path] = fut.result()
    broken = {name for name, found in file_problems.items() if found}
    index_kinds = ("table", "index", "duplicate-row")
    if any(p.file == INDEX_FILE for p in problems if p.kind in index_kinds):
        broken.add(INDEX_FILE)
    for obj in objects:
        url, sha = obj.get("contentUrl"), obj.get("sha256")
        if not isinstance(url, str) or not isinstance(sha, str):
            continue
        path = (base / url).resolve()
        if path not in digests:
            continue
        report.sha256 += 1
        rel = os.path.relpath(path, root.resolve())
        if digests[path] != sha.lower() and rel not in broken:
            problems.append(
                Problem(
                    "checksum",
                    f"sha256 {digests[path][:16]}..., croissant.json says {sha[:16]}...",
                    file=rel,
                )
            )
    if (root / INDEX_FILE).resolve() not in described:
        problems.append(Problem("croissant", f"no FileObject for {INDEX_FILE}", file=crel))
    if index is not None:
        for name in sorted(index.shards):
            if inside_dataset(name) and (root / name).resolve() not in described:
                problems.append(
                    Problem("croissant", f"no FileObject describes shard {name}", file=crel)
                )


