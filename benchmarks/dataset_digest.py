"""Fingerprint a dataset folder: the sha256 of every file, to show a change left its bytes alone.

Every file under the dataset folder is hashed, except the tool's own bookkeeping that is
keyed by code and not by data (``.cutouts/cache``: Prefect results named by a hash of the
code; ``.cutouts/lock``; ``.cutouts/dataset.json``, which holds its creation time). Inside
``croissant.json`` the ``dateCreated``, ``dateModified`` and ``datePublished`` fields are
blanked before hashing, and inside ``metrics.json`` the wall-clock ``seconds`` and
``train_cutouts_per_s``: these are times, not data (two runs of the same code on the same
machine differ in them only).

    .venv/bin/python benchmarks/dataset_digest.py demo/dataset > before.json
    .venv/bin/python benchmarks/dataset_digest.py demo/dataset --compare before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from croissant_cutouts.tasks.infra.digests import sha256_file

SKIPPED = (".cutouts/cache/", ".cutouts/lock", ".cutouts/dataset.json")
TIMES = {
    "croissant.json": ("dateCreated", "dateModified", "datePublished"),
    "metrics.json": ("seconds", "train_cutouts_per_s"),
}


def file_digest(path: Path, rel: str) -> str:
    """Return the sha256 (hex) of one file, with its time fields blanked if it has any."""
    if rel in TIMES:
        doc = json.loads(path.read_text())
        for key in TIMES[rel]:
            doc[key] = None
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return sha256_file(path)


def dataset_digest(root: Path) -> dict[str, str]:
    """Map each file's path relative to ``root`` (POSIX) to its sha256."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if not rel.startswith(SKIPPED):
            out[rel] = file_digest(path, rel)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--compare", type=Path, help="an earlier digest (JSON) to compare with")
    args = parser.parse_args()
    now = dataset_digest(args.dataset)
    if args.compare is None:
        json.dump(now, sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    before = json.loads(args.compare.read_text())
    changed = sorted(k for k in before.keys() & now.keys() if before[k] != now[k])
    for label, names in (("only before", sorted(before.keys() - now.keys())),
                         ("only now", sorted(now.keys() - before.keys())),
                         ("changed", changed)):
        for name in names:
            print(f"{label}: {name}")
    same = len(before.keys() & now.keys()) - len(changed)
    print(f"{same} of {len(before)} files identical")
    return 0 if same == len(before) == len(now) else 1


if __name__ == "__main__":
    sys.exit(main())
