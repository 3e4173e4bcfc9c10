"""Time DVC add, status, push and pull of the same cutouts as files and as shards.

Requirement under test: DVC push/pull and ``dvc status`` of a sharded dataset of 100,000
cutouts are at least 5x faster than of the same dataset as one ``.npy`` per cutout.

    .venv/bin/python benchmarks/bench_dvc.py --cutouts 100000

What it does:

1. Simulates job folders (``cutouts simulate``, ``--size`` 2048 with ``bogus_density`` 16:
   about 3,200 candidates a job, as many as a real 4089x4089 RAPID job, at a quarter of the
   pixels), reusing ``<workdir>/jobs`` when it already holds enough, and links the fewest
   leading jobs whose candidates reach ``--cutouts`` into ``<workdir>/selected``.
2. Per layout (``files`` then ``shards``), from the same jobs: a fresh git repo with
   ``dvc init``, ``cache.type`` = ``--cache-type`` (default hardlink, so the workspace and
   the cache share one copy of the data: the benchmark fits a ~30 GB disk budget), a local
   directory remote. ``cutouts create --layout L`` writes ``dataset/`` in the repo (its build
   state ``dataset/.cutouts`` is removed: not part of the dataset). Then, each a fresh
   process, timed by wall clock: ``dvc add dataset``; ``dvc status`` (clean);
   ``dvc push``; ``dvc status --cloud`` (clean); ``git clone`` + ``dvc pull`` in the clone
   (empty cache); ``dvc status`` in the clone. Status commands run ``--repeat`` times and
   the minimum counts; add, push and pull run once (a second run would be a no-op). DVC
   runs with its defaults: ``--jobs`` is not passed (DVC's default: 4 x CPU count
   transfer threads). The layout's folders are deleted afterwards unless ``--keep``.
3. Checks the cutout counts of both layouts match (and that the clone holds the same files
   and bytes), writes ``benchmarks/results/dvc.json`` and prints a table of seconds per
   operation with the files/shards ratio.

The page cache is not dropped: the data was just written (RAM permitting it stays cached),
so this measures DVC's per-file and per-byte CPU and syscall cost, not cold-disk reads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CUTOUTS = str(BIN / "cutouts")
DVC = str(BIN / "dvc")
PSFCAT = "diffimage_masked_psfcat.txt"
LAYOUTS = ("files", "shards")
# operations compared against the requirement (the status ones: clean, nothing changed)
REQUIRED = ("push", "pull", "status", "status_after_pull")

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:8.1f} s] {msg}", flush=True)


def run(cmd: list[str], cwd: Path, env: dict[str, str], logfile: Path) -> float:
    """Run ``cmd`` to completion; return its wall-clock seconds. Output goes to ``logfile``."""
    with open(logfile, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        dt = time.perf_counter() - t0
        fh.write(f"# rc={proc.returncode} {dt:.3f} s\n")
    if proc.returncode:
        tail = logfile.read_text().splitlines()[-20:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n" + "\n".join(tail))
    return dt


def tree_stats(path: Path) -> tuple[int, int]:
    """(file count, total bytes) of the regular files under ``path``."""
    n = size = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            n += 1
            size += st.st_size
    return n, size


def disk_usage(path: Path) -> int:
    """Bytes allocated under ``path``, counting each hard-linked inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def job_candidates(job: Path) -> int:
    with open(job / PSFCAT) as fh:
        return sum(1 for line in fh if line.strip()) - 1  # one header line


def simulate(args: argparse.Namespace, env: dict[str, str], logs: Path) -> dict:
    """Make (or reuse) job folders; link the fewest leading jobs reaching ``--cutouts``."""
    jobs_dir = args.workdir / "jobs"
    marker = jobs_dir / ".complete.json"
    sim = {
        "size": args.size,
        "bogus_density": args.bogus_density,
        "injections_per_mpx": args.injections_per_mpx,
        "seed": 0,
    }
    params = args.workdir / "params.yaml"
    params.write_text(
        "# written by benchmarks/bench_dvc.py\nsimulate:\n"
        f"  bogus_density: {args.bogus_density}\n"
        f"  injections_per_mpx: {args.injections_per_mpx}\n"
        "  gallery: false\n"
    )
    n_jobs = math.ceil(args.cutouts / args.per_job_guess) + 1
    sim_s = None
    for _ in range(4):
        old = json.loads(marker.read_text()) if marker.exists() else None
        if old and old["sim"] == sim:
            counts = [job_candidates(jobs_dir / f"jid{k + 1:04d}") for k in range(old["jobs"])]
            if sum(counts) >= args.cutouts:
                break
            n_jobs = max(n_jobs, math.ceil(len(counts) * args.cutouts / sum(counts)) + 1)
        log(f"simulating {n_jobs} jobs of {args.size}x{args.size} into {jobs_dir} ...")
        shutil.rmtree(jobs_dir, ignore_errors=True)
        sim_s = run(
            [
                CUTOUTS,
                "simulate",
                "-o",
                str(jobs_dir),
                "--jobs",
                str(n_jobs),
                "--size",
                str(args.size),
                "--workers",
                "2",
                "--params",
                str(params),
            ],
            args.workdir,
            env,
            logs / "croissant_cutouts.simulate.log",
        )
        marker.write_text(json.dumps({"sim": sim, "jobs": n_jobs}) + "\n")
        log(f"  simulated in {sim_s:.1f} s")
    else:
        raise RuntimeError("could not simulate enough candidates")
    selected = args.workdir / "selected"
    shutil.rmtree(selected, ignore_errors=True)
    selected.mkdir()
    total, used = 0, []
    for k, n in enumerate(counts):
        if total >= args.cutouts:
            break
        name = f"jid{k + 1:04d}"
        (selected / name).symlink_to((jobs_dir / name).resolve())
        total += n
        used.append(n)
    log(
        f"using {len(used)} of {len(counts)} jobs: {total} candidates "
        f"({min(used)}..{max(used)} a job)"
    )
    return {
        "params": sim,
        "jobs_simulated": len(counts),
        "jobs_used": len(used),
        "candidates": total,
        "candidates_per_job": used,
        "simulate_s": sim_s,
        "jobs_bytes": disk_usage(jobs_dir),
    }


def count_cutouts(ds: Path, layout: str) -> int:
    if layout == "files":
        return sum(1 for _ in (ds / "cutouts").glob("*.npy"))
    import numpy as np

    return sum(np.load(p, mmap_mode="r").shape[0] for p in (ds / "shards").glob("*.npy"))


def bench_layout(layout: str, args: argparse.Namespace, env: dict[str, str], logs: Path) -> dict:
    base = args.workdir / layout
    shutil.rmtree(base, ignore_errors=True)
    repo, remote, clone = base / "repo", base / "remote", base / "clone"
    for p in (repo, remote):
        p.mkdir(parents=True)
    logf = logs / f"{layout}.log"
    logf.unlink(missing_ok=True)

    def sh(*cmd: str, cwd: Path = repo) -> float:
        return run(list(cmd), cwd, env, logf)

    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    sh(*git, "init", "-q")
    sh(DVC, "init", "-q")
    sh(DVC, "config", "core.analytics", "false")
    if args.cache_type != "default":
        sh(DVC, "config", "cache.type", args.cache_type)
    sh(DVC, "remote", "add", "-d", "store", str(remote))
    # DVC's state/index databases: inside this layout's folder, not /var/tmp/dvc
    sh(DVC, "config", "--local", "core.site_cache_dir", str(base / "site-repo"))
    sh(*git, "add", "-A")
    sh(*git, "commit", "-q", "-m", "init")

    log(f"[{layout}] building dataset with cutouts create --layout {layout} ...")
    ds = repo / "dataset"
    build_s = sh(
        CUTOUTS,
        "create",
        "-i",
        str(args.workdir / "selected"),
        "-o",
        str(ds),
        "--layout",
        layout,
        "--params",
        str(args.workdir / "params.yaml"),
        cwd=args.workdir,
    )
    m = re.findall(r"cutouts: (\d+)", logf.read_text())
    reported = int(m[-1]) if m else None
    shutil.rmtree(ds / ".cutouts")  # the build's resume state, not part of the dataset
    n_cut = count_cutouts(ds, layout)
    n_files, n_bytes = tree_stats(ds)
    log(
        f"[{layout}] built in {build_s:.1f} s: {n_cut} cutouts, {n_files} files, "
        f"{n_bytes / 1e9:.3f} GB"
    )
    if reported is not None and reported != n_cut:
        raise RuntimeError(f"{layout}: create reported {reported} cutouts, found {n_cut}")

    t: dict[str, float] = {}
    runs: dict[str, list[float]] = {}

    def timed(op: str, *cmd: str, cwd: Path = repo, repeat: int = 1) -> None:
        runs[op] = [sh(*cmd, cwd=cwd) for _ in range(repeat)]
        t[op] = min(runs[op])
        extra = f" (runs: {', '.join(f'{x:.2f}' for x in runs[op])})" if repeat > 1 else ""
        log(f"[{layout}] {op:18s} {t[op]:9.2f} s{extra}")

    timed("add", DVC, "add", "dataset")
    sh(*git, "add", "dataset.dvc", ".gitignore")
    sh(*git, "commit", "-q", "-m", f"dataset ({layout})")
    timed("status", DVC, "status", repeat=args.repeat)
    timed("push", DVC, "push")
    timed("status_cloud", DVC, "status", "--cloud", repeat=args.repeat)
    sh("git", "clone", "-q", str(repo), str(clone), cwd=base)
    sh(DVC, "config", "--local", "core.site_cache_dir", str(base / "site-clone"), cwd=clone)
    timed("pull", DVC, "pull", cwd=clone)
    timed("status_after_pull", DVC, "status", cwd=clone, repeat=args.repeat)

    clone_stats = tree_stats(clone / "dataset")
    if clone_stats != (n_files, n_bytes):
        raise RuntimeError(f"{layout}: clone holds {clone_stats}, repo {(n_files, n_bytes)}")
    remote_files, remote_bytes = tree_stats(remote)
    result = {
        "cutouts": n_cut,
        "files": n_files,
        "bytes": n_bytes,
        "build_s": round(build_s, 3),
        "remote_objects": remote_files,
        "remote_bytes": remote_bytes,
        "seconds": {k: round(v, 3) for k, v in t.items()},
        "runs": {k: [round(x, 3) for x in v] for k, v in runs.items()},
        "disk_bytes": disk_usage(base),
    }
    log(f"[{layout}] disk used by repo+remote+clone: {result['disk_bytes'] / 1e9:.2f} GB")
    if not args.keep:
        shutil.rmtree(base)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cutouts", type=int, default=100_000, help="cutouts at least")
    ap.add_argument(
        "--workdir", type=Path, default=ROOT / "benchmarks" / "results" / "work" / "dvc"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dvc.json")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each status; minimum counts")
    ap.add_argument(
        "--cache-type",
        default="hardlink",
        help="dvc cache.type (default hardlink; 'default': leave DVC's default)",
    )
    ap.add_argument("--size", type=int, default=2048, help="simulated image side, pixels")
    ap.add_argument("--bogus-density", type=float, default=16.0)
    ap.add_argument("--injections-per-mpx", type=float, default=24.0)
    ap.add_argument(
        "--per-job-guess",
        type=float,
        default=3500.0,
        help="candidates a job, to size the first simulation",
    )
    ap.add_argument("--keep", action="store_true", help="keep each layout's repo and remote")
    args = ap.parse_args()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    logs = args.workdir / "logs"
    logs.mkdir(exist_ok=True)

    need = 3.3 * args.cutouts * 65_664  # dataset (= cache, hardlinked) + remote + clone cache
    free = shutil.disk_usage(args.workdir).free
    if free < need:
        raise SystemExit(
            f"need ~{need / 1e9:.1f} GB free in {args.workdir}, have {free / 1e9:.1f} GB"
        )
    env = {
        **os.environ,
        "PREFECT_HOME": str(args.workdir / "prefect"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_TERMINAL_PROMPT": "0",
    }
    dvc_version = subprocess.run(
        [DVC, "--version"], capture_output=True, text=True, env=env
    ).stdout.strip()
    log(f"DVC {dvc_version}, {os.cpu_count()} CPUs, workdir {args.workdir}")

    sim = simulate(args, env, logs)
    layouts = {layout: bench_layout(layout, args, env, logs) for layout in LAYOUTS}
    f, s = layouts["files"], layouts["shards"]
    if f["cutouts"] != s["cutouts"]:
        raise RuntimeError(f"cutout counts differ: files {f['cutouts']}, shards {s['cutouts']}")
    ratio = {op: round(f["seconds"][op] / s["seconds"][op], 2) for op in f["seconds"]}
    result = {
        "requirement": "push, pull and status of shards >= 5x faster than files",
        "command": " ".join(["python benchmarks/bench_dvc.py", *sys.argv[1:]]).strip(),
        "cutouts": f["cutouts"],
        "dvc": dvc_version,
        "cache_type": args.cache_type,
        "dvc_jobs": "DVC default (4 x cpu_count transfer threads)",
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "repeat": args.repeat,
        "simulation": sim,
        "layouts": layouts,
        "ratio_files_over_shards": ratio,
        "meets_5x": {op: ratio[op] >= 5.0 for op in REQUIRED},
        "total_s": round(time.perf_counter() - T0, 1),
        "workdir_bytes_after": disk_usage(args.workdir),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"\n{f['cutouts']} cutouts; files: {f['files']} files, {f['bytes'] / 1e9:.3f} GB; "
        f"shards: {s['files']} files, {s['bytes'] / 1e9:.3f} GB; cache.type "
        f"{args.cache_type}; DVC {dvc_version}"
    )
    print(
        f"{'operation':20s} {'files (s)':>10s} {'shards (s)':>11s} {'files/shards':>13s} "
        f"{'>=5x':>5s}"
    )
    for op in f["seconds"]:
        ok = ("yes" if ratio[op] >= 5 else "NO") if op in REQUIRED else ""
        print(
            f"{op:20s} {f['seconds'][op]:10.2f} {s['seconds'][op]:11.2f} {ratio[op]:13.1f} {ok:>5s}"
        )
    print(f"total {result['total_s']:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
