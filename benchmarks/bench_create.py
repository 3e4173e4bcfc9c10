"""Time ``cutouts create`` against the seed's algorithm and the I/O floor, per job.

Three ways to turn the same job folders into the same files, each run as a fresh process
on a small and on a large set of jobs:

- ``ours``: ``cutouts create`` (Prefect flow, memory-mapped, vectorised).
- ``seed``: the seed's algorithm re-implemented here: read each whole image, normalise it
  whole, loop over candidates, slice with zero padding, ``np.save`` each cutout.
- ``floor``: read every input byte once, write every output file (same count, same size).

Per-job seconds = (T_large - T_small) / (N_large - N_small), so the fixed start-up cost
cancels; start-up = T_small - N_small x per-job. Files are in the page cache for all three
(the jobs were just written or read), so this measures CPU and write cost, not cold disk.

    .venv/bin/python benchmarks/bench_create.py --size 4089 --small 1 --large 6 --repeat 3
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
import pandas as pd
inp, out = Path(sys.argv[1]), Path(sys.argv[2])
(out / "cutouts").mkdir(parents=True, exist_ok=True)
payload = b"\0" * (64 * 64 * 4 * 4 + 128)
for job in sorted(p for p in inp.iterdir() if p.name.startswith("jid")):
    for f in sorted(job.iterdir()):
        with open(f, "rb") as fh:
            while fh.read(8 << 20):
                pass
    n = len(pd.read_csv(job / "psfcat.csv"))
    for k in range(n):
        with open(out / f"cutouts/{job.name}_cutout{k:05d}.npy", "wb") as fh:
            fh.write(payload)
'''


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _subset(jobs: Path, n: int, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    for job in sorted(jobs.glob("jid*"))[:n]:
        link = where / job.name
        if not link.exists():
            link.symlink_to(job.resolve())
    return where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4089)
    ap.add_argument("--small", type=int, default=1)
    ap.add_argument("--large", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3, help="runs per point; the minimum counts")
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "results" / "work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "create.json")
    args = ap.parse_args()

    jobs = args.workdir / f"seed-jobs-{args.size}"
    if len(list(jobs.glob("jid*"))) < args.large:
        sys.path.insert(0, str(ROOT))
        from simulate import simulate_jobs

        print(f"simulating {args.large} jobs of {args.size}x{args.size} ...", flush=True)
        t0 = time.perf_counter()
        sims = simulate_jobs(jobs, n_jobs=args.large, size=args.size, seed=0, workers=2,
                             layout="seed")
        print(f"  {time.perf_counter() - t0:.1f} s, detections per job: "
              f"{[s.n_detections for s in sims]}", flush=True)
    sets = {n: _subset(jobs, n, args.workdir / f"set-{args.size}-{n}")
            for n in (args.small, args.large)}
    n_cand = {n: sum(len(open(j / "psfcat.csv").readlines()) - 1 for j in s.iterdir())
              for n, s in sets.items()}
    home = tempfile.mkdtemp(prefix="bench-prefect-")
    env = {**os.environ, "PREFECT_HOME": home, "PYTHONPATH": str(ROOT)}
    methods = {
        "ours": lambda i, o: [CUTOUTS, "create", "-i", str(i), "-o", str(o)],
        "seed": lambda i, o: [sys.executable, "-c", SEED_SCRIPT, str(i), str(o)],
        "floor": lambda i, o: [sys.executable, "-c", FLOOR_SCRIPT, str(i), str(o)],
    }
    # warm the page cache and Prefect's database once
    _run(methods["floor"](sets[args.large], args.workdir / "warm"), env)
    _run(methods["ours"](sets[args.small], args.workdir / "warm2"), env)
    times: dict[str, dict[int, float]] = {m: {} for m in methods}
    for n, jobset in sets.items():
        for name, cmd in methods.items():
            best = float("inf")
            for r in range(args.repeat):
                out = args.workdir / f"out-{name}-{n}-{r}"
                shutil.rmtree(out, ignore_errors=True)
                best = min(best, _run(cmd(jobset, out), env))
                shutil.rmtree(out, ignore_errors=True)
            times[name][n] = best
            print(f"  {name:5s} {n} job(s): {best:.2f} s", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    dn = args.large - args.small
    result = {"size": args.size, "jobs": [args.small, args.large], "candidates": n_cand,
              "cpu_count": os.cpu_count(), "methods": {}}
    for name, t in times.items():
        per_job = (t[args.large] - t[args.small]) / dn
        result["methods"][name] = {
            "seconds": t, "per_job_s": round(per_job, 3),
            "startup_s": round(t[args.small] - args.small * per_job, 3),
        }
    ours = result["methods"]["ours"]["per_job_s"]
    result["ours_vs_seed"] = round(result["methods"]["seed"]["per_job_s"] / ours, 2)
    result["ours_vs_floor"] = round(ours / result["methods"]["floor"]["per_job_s"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'method':8s} {'per job (s)':>12s} {'start-up (s)':>13s}")
    for name, m in result["methods"].items():
        print(f"{name:8s} {m['per_job_s']:12.3f} {m['startup_s']:13.3f}")
    print(f"ours is {result['ours_vs_seed']}x faster than seed, "
          f"{result['ours_vs_floor']}x the I/O floor; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
