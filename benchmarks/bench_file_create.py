"""How steady is file creation on this machine? Time writing one job's worth of cutout files.

Writes ``--files`` files of one cutout's size (65,664 bytes) into a fresh folder, three ways,
repeated and interleaved: ``direct`` (open, write, close: what the I/O floor does),
``rename`` (a temporary name, then rename: what ``cutouts create`` does where the file system
has no ``O_TMPFILE``) and ``tmpfile`` (an unnamed ``O_TMPFILE``, then ``linkat``: what it does
where it has one). Both of the latter are atomic: no half-written file is ever visible. The spread
between repeats of one way tells how precisely a ratio to the floor can be measured here.
``--threads`` splits the files over threads writing into the same folder, as two jobs cut at
once do.

    .venv/bin/python benchmarks/bench_file_create.py --files 2900 --repeat 5
    .venv/bin/python benchmarks/bench_file_create.py --files 2000 --repeat 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PAYLOAD = b"\1" * 65664


def _write(dfd: int, names: list[str], how: str) -> None:
    """Create ``names`` in the folder open as ``dfd`` the way ``how`` says."""
    for name in names:
        if how == "direct":
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dfd)
            os.write(fd, PAYLOAD)
            os.close(fd)
        elif how == "rename":
            tmp = f".{name}.tmp-{os.getpid()}-{threading.get_ident()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dfd)
            os.write(fd, PAYLOAD)
            os.close(fd)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        else:
            fd = os.open(".", os.O_WRONLY | os.O_TMPFILE, 0o644, dir_fd=dfd)
            os.write(fd, PAYLOAD)
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd, follow_symlinks=True)
            os.close(fd)


def write_files(folder: Path, n: int, how: str, threads: int = 1) -> float:
    """Seconds to create ``n`` files in ``folder`` (emptied first) the way ``how`` says,
    split over ``threads`` threads (as two jobs cut at once write into one folder)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.sync()
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    names = [f"jid{k % threads:04d}_cutout{k:05d}.npy" for k in range(n)]
    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda part: _write(dfd, part, how),
                          [names[i::threads] for i in range(threads)]))
    finally:
        os.close(dfd)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2900)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="threads writing into the folder")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "file-create.json"
    )
    args = ap.parse_args()
    ways = ("direct", "rename", "tmpfile")
    times: dict[str, list[float]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for _ in range(args.repeat):
            for how in ways:
                times[how].append(write_files(Path(tmp) / "f", args.files, how, args.threads))
    result = {"files": args.files, "threads": args.threads, "seconds": times}
    for how, t in times.items():
        print(f"{how:8s} min {min(t):.3f}  median {statistics.median(t):.3f}  max {max(t):.3f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
