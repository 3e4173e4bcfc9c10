"""Time ``cutouts create`` against the seed's algorithm and the I/O floor, per job.

Ways to turn the same job folders into the same cutouts, each run as a fresh process on a
small and on a large set of jobs of real size (4089 x 4089):

- ``ours-files`` / ``ours-shards``: ``cutouts create`` (Prefect flow, memory-mapped,
  vectorised, both cores) with ``--layout files`` (one .npy per cutout) or ``shards``.
- ``seed``: the seed's algorithm re-implemented here: read each whole image, normalise it
  whole, loop over candidates, slice with zero padding, ``np.save`` each cutout.
- ``floor-files`` / ``floor-shards``: read every input byte once, then write the output
  files once (same count and size as ours: one per cutout, or one shard per job).

Per-job seconds = (T_large - T_small) / (N_large - N_small), so the fixed start-up cost
cancels; start-up = T_small - N_small x per-job. T is the best of ``--repeat`` runs, the
repeats interleaved across methods. Dirty pages are flushed (``sync``) before
every run. ``--cache warm``: inputs are in the page cache; ``--cache cold``: the page cache
is dropped before every run (needs root; inputs then come from disk, as on a real archive).
Peak resident memory of each ``ours`` run is recorded too.

``--grid`` instead times ``cutouts create`` on 1, 2, 4, 8 jobs with 100, 1,000 and 5,000
candidates each (catalogs rewritten from the simulated ones; extra rows at random positions).

    .venv/bin/python benchmarks/bench_create.py --cache warm
    .venv/bin/python benchmarks/bench_create.py --cache cold
    .venv/bin/python benchmarks/bench_create.py --grid
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CUTOUTS = str(Path(sys.executable).with_name("cutouts"))

SEED_SCRIPT = r'''
import sys, os, numpy as np, pandas as pd
from pathlib import Path
from astropy.io import fits
from astropy.visualization import ZScaleInterval
inp, out = Path(sys.argv[1]), Path(sys.argv[2])
(out / "cutouts").mkdir(parents=True, exist_ok=True)
names = ["bkg_subbed_science_image.fits", "awaicgen_output_mosaic_image_resampled.fits",
         "diffimage_masked.fits", "scorrimage_masked.fits"]
rows = []
for job in sorted(p for p in inp.iterdir() if p.name.startswith("jid")):
    norm = []
    for n in names:
        img = fits.getdata(job / n).astype(np.float32)
        vmin, vmax = ZScaleInterval().get_limits(img)
        x = np.clip((img - vmin) / (vmax - vmin), 0, 1)
        x[~np.isfinite(x)] = 0
        norm.append(x.astype(np.float32))
    cat = pd.read_csv(job / "psfcat.csv")
    h, w = norm[0].shape
    for k, (x, y) in enumerate(zip(cat.x, cat.y)):
        r, c = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
        cut = np.zeros((64, 64, 4), np.float32)
        r0, r1, c0, c1 = max(r - 32, 0), min(r + 32, h), max(c - 32, 0), min(c + 32, w)
        for ch in range(4):
            cut[r0 - r + 32:r1 - r + 32, c0 - c + 32:c1 - c + 32, ch] = norm[ch][r0:r1, c0:c1]
        name = f"cutouts/{job.name}_cutout{k:05d}.npy"
        np.save(out / name, cut)
        rows.append((job.name, x, y, name))
pd.DataFrame(rows, columns=["job_id", "x", "y", "cutout_filename"]).to_csv(out / "master_index.csv")
'''

FLOOR_SCRIPT = r'''
import sys, os
from pathlib import Path
inp, out, layout = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
sub = out / ("cutouts" if layout == "files" else "shards")
sub.mkdir(parents=True, exist_ok=True)
one = 64 * 64 * 4 * 4
payload = b"\0" * (one + 128)
for job in sorted(p for p in inp.iterdir() if p.name.startswith("jid")):
    for f in sorted(job.iterdir()):
        with open(f, "rb") as fh:
            while fh.read(8 << 20):
                pass
    with open(job / "psfcat.csv") as fh:
        n = sum(1 for _ in fh) - 1
    if layout == "files":
        for k in range(n):
            with open(sub / f"{job.name}_cutout{k:05d}.npy", "wb") as fh:
                fh.write(payload)
    else:
        block = b"\0" * (one * 256)
        with open(sub / f"{job.name}.npy", "wb") as fh:
            fh.write(payload[:128])
            for start in range(0, n, 256):
                fh.write(block[: one * min(256, n - start)])
'''


def _drop_caches() -> None:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("1\n")
    except OSError as exc:
        sys.exit(f"--cache cold needs root to drop the page cache ({exc}); use --cache warm")


def _run(cmd: list[str], env: dict[str, str], cold: bool) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command, after flushing (and dropping) caches."""
    os.sync()
    if cold:
        _drop_caches()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return wall, usage.ru_maxrss / 1024  # the largest single process (KiB on Linux)


def _subset(jobs: Path, n: int, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    for job in sorted(jobs.glob("jid*"))[:n]:
        link = where / job.name
        if not link.exists():
            link.symlink_to(job.resolve())
    return where


def _simulate(jobs: Path, n: int, size: int) -> None:
    if len(list(jobs.glob("jid*"))) >= n:
        return
    from croissant_cutouts.simulate import simulate_jobs

    print(f"simulating {n} jobs of {size}x{size} ...", flush=True)
    t0 = time.perf_counter()
    sims = simulate_jobs(jobs, n_jobs=n, size=size, seed=0, workers=2, layout="seed")
    print(f"  {time.perf_counter() - t0:.1f} s, detections per job: "
          f"{[s.n_detections for s in sims]}", flush=True)


def _with_candidates(jobs: Path, n_jobs: int, n_cand: int, where: Path, size: int) -> Path:
    """Job folders linking the simulated images, with a catalog of exactly ``n_cand`` rows."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(n_cand)
    for job in sorted(jobs.glob("jid*"))[:n_jobs]:
        dest = where / job.name
        if (dest / "psfcat.csv").exists():
            continue
        dest.mkdir(parents=True, exist_ok=True)
        for f in job.glob("*.fits"):
            (dest / f.name).symlink_to(f.resolve())
        cat = pd.read_csv(job / "psfcat.csv")
        if len(cat) >= n_cand:
            cat = cat.iloc[:n_cand]
        else:
            extra = cat.sample(n_cand - len(cat), replace=True, random_state=n_cand).copy()
            extra["x"] = rng.uniform(0, size - 1, len(extra))
            extra["y"] = rng.uniform(0, size - 1, len(extra))
            extra["match"] = -1
            cat = pd.concat([cat, extra], ignore_index=True)
        cat.to_csv(dest / "psfcat.csv", index=False)
    return where


def _timed(cmd, env, cold: bool, repeat: int, out: Path) -> tuple[float, float]:
    best, peak = float("inf"), 0.0
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        wall, rss = _run(cmd, env, cold)
        best, peak = min(best, wall), max(peak, rss)
        shutil.rmtree(out, ignore_errors=True)
    return best, peak


def compare(args: argparse.Namespace, env: dict[str, str]) -> dict:
    jobs = args.workdir / f"seed-jobs-{args.size}"
    _simulate(jobs, args.large, args.size)
    sets = {n: _subset(jobs, n, args.workdir / f"set-{args.size}-{n}")
            for n in (args.small, args.large)}
    n_cand = {n: sum(len(open(j / "psfcat.csv").readlines()) - 1 for j in s.iterdir())
              for n, s in sets.items()}
    input_mib = sum(f.stat().st_size for j in sets[args.large].iterdir()
                    for f in j.resolve().iterdir()) / args.large / 2**20
    methods = {
        "ours-files": lambda i, o: [CUTOUTS, "create", "-i", str(i), "-o", str(o)],
        "ours-shards": lambda i, o: [CUTOUTS, "create", "-i", str(i), "-o", str(o),
                                     "--layout", "shards"],
        "seed": lambda i, o: [sys.executable, "-c", SEED_SCRIPT, str(i), str(o)],
        "floor-files": lambda i, o: [sys.executable, "-c", FLOOR_SCRIPT, str(i), str(o), "files"],
        "floor-shards": lambda i, o: [sys.executable, "-c", FLOOR_SCRIPT, str(i), str(o),
                                      "shards"],
    }
    if args.methods:
        methods = {k: v for k, v in methods.items() if k in args.methods.split(",")}
    cold = args.cache == "cold"
    # warm Prefect's database once
    _run([CUTOUTS, "create", "-i", str(sets[args.small]), "-o", str(args.workdir / "warm")],
         env, False)
    shutil.rmtree(args.workdir / "warm", ignore_errors=True)
    times: dict[str, dict[int, float]] = {m: {} for m in methods}
    rss: dict[str, dict[int, float]] = {m: {} for m in methods}
    # repeats are interleaved (every method and set once, then again) so that drift in the
    # machine's state (writeback, other load) spreads over all methods alike
    for r in range(args.repeat):
        for n, jobset in sets.items():
            for name, cmd in methods.items():
                out = args.workdir / f"out-{name}-{n}"
                wall, peak = _timed(cmd(jobset, out), env, cold, 1, out)
                times[name][n] = min(times[name].get(n, float("inf")), wall)
                rss[name][n] = max(rss[name].get(n, 0.0), peak)
                print(f"  [{r + 1}/{args.repeat}] {name:12s} {n} job(s): {wall:.2f} s, peak RSS "
                      f"{peak:.0f} MiB", flush=True)
    dn = args.large - args.small
    result = {"size": args.size, "cache": args.cache, "jobs": [args.small, args.large],
              "candidates": n_cand, "input_mib_per_job": round(input_mib, 1),
              "workers": 2, "cpu_count": os.cpu_count(), "methods": {}}
    for name, t in times.items():
        per_job = (t[args.large] - t[args.small]) / dn
        result["methods"][name] = {
            "seconds": t, "per_job_s": round(per_job, 3),
            "startup_s": round(t[args.small] - args.small * per_job, 3),
            "peak_rss_mib": rss[name],
        }
    m = {k: v["per_job_s"] for k, v in result["methods"].items()}
    pairs = {
        "seed_over_ours_files": ("seed", "ours-files"),
        "seed_over_ours_shards": ("seed", "ours-shards"),
        "ours_files_over_floor_files": ("ours-files", "floor-files"),
        "ours_shards_over_floor_shards": ("ours-shards", "floor-shards"),
    }
    result["ratios"] = {
        k: round(m[a] / m[b], 3) for k, (a, b) in pairs.items() if a in m and b in m and m[b]
    }
    print(f"\n{'method':14s} {'per job (s)':>12s} {'start-up (s)':>13s}")
    for name, v in result["methods"].items():
        print(f"{name:14s} {v['per_job_s']:12.3f} {v['startup_s']:13.3f}")
    for k, v in result["ratios"].items():
        print(f"{k}: {v}")
    return result


def grid(args: argparse.Namespace, env: dict[str, str]) -> dict:
    jobs = args.workdir / f"seed-jobs-{args.size}"
    _simulate(jobs, 8, args.size)
    rows = []
    warm = args.workdir / "grid-warm"  # Prefect creates its database on the first run
    _run([CUTOUTS, "create", "-i", str(_subset(jobs, 1, args.workdir / "set-grid-1")), "-o",
          str(warm)], env, False)
    shutil.rmtree(warm, ignore_errors=True)
    for n_cand in (100, 1000, 5000):
        src = _with_candidates(jobs, 8, n_cand, args.workdir / f"grid-{n_cand}", args.size)
        for n_jobs in (1, 2, 4, 8):
            subset = _subset(src, n_jobs, args.workdir / f"grid-{n_cand}-{n_jobs}")
            row = {"candidates_per_job": n_cand, "jobs": n_jobs}
            for layout in ("files", "shards"):
                out = args.workdir / f"grid-out-{layout}"
                cmd = [CUTOUTS, "create", "-i", str(subset), "-o", str(out), "--layout", layout]
                row[f"{layout}_s"], row[f"{layout}_rss_mib"] = _timed(
                    cmd, env, args.cache == "cold", args.repeat, out)
            rows.append(row)
            print(f"  {n_cand:5d} cand x {n_jobs} jobs: files {row['files_s']:.2f} s, "
                  f"shards {row['shards_s']:.2f} s", flush=True)
    return {"size": args.size, "cache": args.cache, "grid": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4089)
    ap.add_argument("--small", type=int, default=1)
    ap.add_argument("--large", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3, help="runs per point; the minimum counts")
    ap.add_argument("--cache", choices=["warm", "cold"], default="warm")
    ap.add_argument("--grid", action="store_true", help="jobs x candidates table instead")
    ap.add_argument("--methods", default="", help="comma-separated subset of the methods")
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "results" / "work")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="bench-prefect-")
    env = {**os.environ, "PREFECT_HOME": home}
    try:
        result = grid(args, env) if args.grid else compare(args, env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    name = f"create-grid-{args.cache}.json" if args.grid else f"create-{args.cache}.json"
    out = args.out or ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
