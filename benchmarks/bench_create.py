"""Time ``cutouts create`` per job against the seed, the I/O floor and our code without Prefect.

Ways to turn the same job folders into the same cutouts, each run as a fresh process on a
small and on a large set of jobs of real size (4089 x 4089, ``--candidates`` rows each):

- ``ours-files`` / ``ours-shards``: ``cutouts create`` (the Prefect flow: cached, retried
  load, normalize and cutout tasks per job, two jobs at a time) with ``--layout files``
  (one .npy per cutout) or ``shards``.
- ``plain-files`` / ``plain-shards``: the same plain functions without Prefect (plan, load,
  normalize, cut two jobs at a time with the same read-ahead, write the index, verify):
  what our own code costs. ``1 - plain / ours`` per job is Prefect's share of a job.
- ``seed``: the seed's algorithm re-implemented here: read each whole image, normalise it
  whole, loop over candidates, slice with zero padding, ``np.save`` each cutout.
- ``floor-files`` / ``floor-shards``: read every input byte once, then write the output
  files once (same count and size as ours: one per cutout, or one shard per job).

Per-job seconds = (T_large - T_small) / (N_large - N_small), so the fixed start-up cost
cancels. T is the minimum of ``--repeat`` runs, the repeats interleaved across methods and
sets (every method once, then again), so drift in the machine's state spreads over all of
them alike; ratios are of these per-job figures. Dirty pages are flushed (``sync``) before
every run. ``--cache warm``: inputs are in the page cache; ``--cache cold``: every input
file is dropped from the page cache before every run (``posix_fadvise``, no root needed), so
inputs come from disk as from a real archive; ``--cache warm,cold`` measures both in one
run. The flow talks to a ``prefect server`` started for the benchmark (how deployments run;
``--server temporary`` starts Prefect's temporary one in every run instead). Peak resident
memory of every run is recorded too.

``--grid`` instead times ``cutouts create`` on 1, 2, 4, 8 jobs with 100, 1,000 and 5,000
candidates each (catalogs rewritten from the simulated ones; extra rows at random positions).

    .venv/bin/python benchmarks/bench_create.py                    # warm and cold, 4 and 16 jobs
    .venv/bin/python benchmarks/bench_create.py --cache warm --small 1 --large 4 --repeat 3
    .venv/bin/python benchmarks/bench_create.py --grid
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import CUTOUTS, cpu_seconds, evict, prefect_server, write_result  # noqa: E402

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


PLAIN_SCRIPT = r'''
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from croissant_cutouts.flows.runner import read_ahead
from croissant_cutouts.tasks.dataset.cutout import cut_job
from croissant_cutouts.tasks.dataset.index import write_index
from croissant_cutouts.tasks.dataset.normalize import job_limits
from croissant_cutouts.tasks.inputs.load import load_job
from croissant_cutouts.tasks.inputs.select import plan_jobs
from croissant_cutouts.tasks.verify.dataset import verify_dataset
inp, out, layout = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
out.mkdir(parents=True, exist_ok=True)
specs, rejected = plan_jobs(inp)
def one(k):
    if k + 2 < len(specs):
        read_ahead(specs[k + 2])
    job = load_job(specs[k])
    return cut_job(job, job_limits(job), out, 64, layout)
with ThreadPoolExecutor(2) as pool:
    results = list(pool.map(one, range(len(specs))))
write_index([*results, *rejected], out)
assert verify_dataset(str(out), inp, require_croissant=False).ok
'''

#: method -> command for input folder ``i`` and output folder ``o``.
METHODS = {
    "ours-files": lambda i, o: [CUTOUTS, "create", "-i", str(i), "-o", str(o)],
    "ours-shards": lambda i, o: [CUTOUTS, "create", "-i", str(i), "-o", str(o),
                                 "--layout", "shards"],
    "plain-files": lambda i, o: [sys.executable, "-c", PLAIN_SCRIPT, str(i), str(o), "files"],
    "plain-shards": lambda i, o: [sys.executable, "-c", PLAIN_SCRIPT, str(i), str(o),
                                  "shards"],
    "seed": lambda i, o: [sys.executable, "-c", SEED_SCRIPT, str(i), str(o)],
    "floor-files": lambda i, o: [sys.executable, "-c", FLOOR_SCRIPT, str(i), str(o), "files"],
    "floor-shards": lambda i, o: [sys.executable, "-c", FLOOR_SCRIPT, str(i), str(o),
                                  "shards"],
}

#: ratio name -> (numerator, denominator) of per-job seconds.
RATIOS = {
    "seed_over_ours_files": ("seed", "ours-files"),
    "seed_over_ours_shards": ("seed", "ours-shards"),
    "ours_files_over_floor_files": ("ours-files", "floor-files"),
    "ours_shards_over_floor_shards": ("ours-shards", "floor-shards"),
    "ours_over_plain_files": ("ours-files", "plain-files"),
    "ours_over_plain_shards": ("ours-shards", "plain-shards"),
}


#: The running Prefect server's process (None with ``--server temporary``): its CPU counts.
SERVER_PID: int | None = None


def _run(
    cmd: list[str], env: dict[str, str], cold: list[Path] | None
) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MiB) and CPU seconds of one command, after flushing (and
    evicting) caches.

    ``cold``: the input files to drop from the page cache first. CPU is user plus system
    time of the command and the processes it waited for, plus what the benchmark's Prefect
    server spent meanwhile (read a second after the command ends: the server records the
    run's events in the background).
    """
    os.sync()
    if cold:
        evict(cold)
    server0 = cpu_seconds(SERVER_PID) if SERVER_PID else 0.0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.stderr.write(proc.stderr.read().decode(errors="replace")[-3000:])
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    proc.stderr.close()
    server = 0.0
    if SERVER_PID:
        time.sleep(1.0)
        server = cpu_seconds(SERVER_PID) - server0
    cpu = usage.ru_utime + usage.ru_stime + server
    return wall, usage.ru_maxrss / 1024, cpu  # RSS: the largest single process (KiB on Linux)


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


def _timed(
    cmd, env, cold: list[Path] | None, repeat: int, out: Path
) -> tuple[float, float, float]:
    """Best wall seconds, largest peak RSS (MiB) and least CPU seconds of ``repeat`` runs,
    each into an emptied ``out`` (removed again afterwards)."""
    best, peak, cpu = float("inf"), 0.0, float("inf")
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        wall, rss, used = _run(cmd, env, cold)
        best, peak, cpu = min(best, wall), max(peak, rss), min(cpu, used)
        shutil.rmtree(out, ignore_errors=True)
    return best, peak, cpu


def _inputs(jobset: Path) -> list[Path]:
    """The real files behind a set of job links (what a cold run drops from the cache)."""
    return [job.resolve() for job in sorted(jobset.iterdir())]


def _job_sets(args: argparse.Namespace) -> dict[int, Path]:
    """The small and the large set of jobs, with ``--candidates`` rows each (0: as simulated)."""
    jobs = args.workdir / f"seed-jobs-{args.size}"
    _simulate(jobs, args.large, args.size)
    if args.candidates:
        jobs = _with_candidates(jobs, args.large, args.candidates,
                                args.workdir / f"cand-{args.size}-{args.candidates}", args.size)
    tag = f"{args.size}-{args.candidates or 'sim'}"
    return {n: _subset(jobs, n, args.workdir / f"set-{tag}-{n}") for n in (args.small, args.large)}


def _per_job(times: dict[str, dict[int, float]], small: int, large: int) -> dict[str, dict]:
    out = {}
    for name, t in times.items():
        per_job = (t[large] - t[small]) / (large - small)
        out[name] = {"seconds": t, "per_job_s": round(per_job, 3),
                     "startup_s": round(t[small] - small * per_job, 3)}
    return out


def _ratios(methods: dict[str, dict]) -> dict[str, float]:
    m = {k: v["per_job_s"] for k, v in methods.items()}
    ratios = {k: round(m[a] / m[b], 3) for k, (a, b) in RATIOS.items()
              if a in m and b in m and m[b] > 0}
    c = {k: v.get("cpu_per_job_s") for k, v in methods.items()}
    for layout in ("files", "shards"):
        ours, plain = m.get(f"ours-{layout}"), m.get(f"plain-{layout}")
        if ours and plain is not None:
            ratios[f"prefect_share_{layout}"] = round(1 - plain / ours, 3)
        ours, plain = c.get(f"ours-{layout}"), c.get(f"plain-{layout}")
        if ours and plain is not None:
            ratios[f"prefect_share_cpu_{layout}"] = round(1 - plain / ours, 3)
    return ratios


def compare(args: argparse.Namespace, env: dict[str, str]) -> dict:
    sets = _job_sets(args)
    n_cand = {n: sum(len(open(j / "psfcat.csv").readlines()) - 1 for j in s.iterdir())
              for n, s in sets.items()}
    input_mib = sum(f.stat().st_size for j in _inputs(sets[args.large]) for f in j.iterdir()
                    if f.suffix == ".fits") / args.large / 2**20
    methods = {k: v for k, v in METHODS.items() if k in args.methods}
    # Prefect's database warmed once, and every file read once
    _run(METHODS["ours-files"](sets[args.small], args.workdir / "warm"), env, None)
    shutil.rmtree(args.workdir / "warm", ignore_errors=True)
    result = {"size": args.size, "jobs": [args.small, args.large], "candidates": n_cand,
              "input_mib_per_job": round(input_mib, 1), "workers": 2, "server": args.server,
              "cpu_count": os.cpu_count(), "repeat": args.repeat, "caches": {}}
    for cache in args.cache:
        times: dict[str, dict[int, float]] = {m: {} for m in methods}
        cpus: dict[str, dict[int, float]] = {m: {} for m in methods}
        rss: dict[str, dict[int, float]] = {m: {} for m in methods}
        for r in range(args.repeat):
            for n, jobset in sets.items():
                cold = _inputs(jobset) if cache == "cold" else None
                for name, cmd in methods.items():
                    out = args.workdir / f"out-{name}-{n}"
                    wall, peak, cpu = _timed(cmd(jobset, out), env, cold, 1, out)
                    times[name][n] = min(times[name].get(n, float("inf")), wall)
                    cpus[name][n] = min(cpus[name].get(n, float("inf")), cpu)
                    rss[name][n] = max(rss[name].get(n, 0.0), peak)
                    print(f"  {cache} [{r + 1}/{args.repeat}] {name:12s} {n:2d} job(s): "
                          f"{wall:6.2f} s, {cpu:6.2f} CPU s, peak RSS {peak:4.0f} MiB",
                          flush=True)
        per = _per_job(times, args.small, args.large)
        per_cpu = _per_job(cpus, args.small, args.large)
        for name in per:
            per[name]["peak_rss_mib"] = rss[name]
            per[name]["cpu_seconds"] = cpus[name]
            per[name]["cpu_per_job_s"] = per_cpu[name]["per_job_s"]
        result["caches"][cache] = {"methods": per, "ratios": _ratios(per)}
    _print(result)
    return result


def _print(result: dict) -> None:
    for cache, block in result["caches"].items():
        print(f"\n{cache} cache       {'per job (s)':>12s} {'start-up (s)':>13s} "
              f"{'CPU per job (s)':>16s}")
        for name, v in block["methods"].items():
            print(f"{name:18s} {v['per_job_s']:12.3f} {v['startup_s']:13.3f} "
                  f"{v['cpu_per_job_s']:16.3f}")
        for k, v in block["ratios"].items():
            print(f"  {k}: {v}")


def grid(args: argparse.Namespace, env: dict[str, str]) -> dict:
    jobs = args.workdir / f"seed-jobs-{args.size}"
    _simulate(jobs, 8, args.size)
    rows = []
    warm = args.workdir / "grid-warm"  # Prefect creates its database on the first run
    _run([CUTOUTS, "create", "-i", str(_subset(jobs, 1, args.workdir / "set-grid-1")), "-o",
          str(warm)], env, None)
    shutil.rmtree(warm, ignore_errors=True)
    for n_cand in (100, 1000, 5000):
        src = _with_candidates(jobs, 8, n_cand, args.workdir / f"grid-{n_cand}", args.size)
        for n_jobs in (1, 2, 4, 8):
            subset = _subset(src, n_jobs, args.workdir / f"grid-{n_cand}-{n_jobs}")
            cold = _inputs(subset) if "cold" in args.cache else None
            row = {"candidates_per_job": n_cand, "jobs": n_jobs}
            for layout in ("files", "shards"):
                out = args.workdir / f"grid-out-{layout}"
                cmd = [CUTOUTS, "create", "-i", str(subset), "-o", str(out), "--layout", layout]
                row[f"{layout}_s"], row[f"{layout}_rss_mib"], _ = _timed(
                    cmd, env, cold, args.repeat, out)
            rows.append(row)
            print(f"  {n_cand:5d} cand x {n_jobs} jobs: files {row['files_s']:.2f} s, "
                  f"shards {row['shards_s']:.2f} s", flush=True)
    return {"size": args.size, "cache": args.cache[0], "grid": rows}


def main() -> int:
    global SERVER_PID
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4089)
    ap.add_argument("--small", type=int, default=4)
    ap.add_argument("--large", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=1000,
                    help="catalog rows per job (0: as simulated)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per point; the minimum counts")
    ap.add_argument("--cache", default="warm,cold", help="warm, cold or both (comma-separated)")
    ap.add_argument("--server", choices=["running", "temporary"], default="running")
    ap.add_argument("--grid", action="store_true", help="jobs x candidates table instead")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "results" / "work")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.cache, args.methods = args.cache.split(","), args.methods.split(",")
    args.workdir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home / "client")
    try:
        with ExitStack() as stack:
            if args.server == "running":
                server_env = {**env, "PREFECT_HOME": str(home / "server")}
                server = stack.enter_context(prefect_server(server_env, home / "server.log"))
                env["PREFECT_API_URL"] = str(server)
                SERVER_PID = server.pid
            result = grid(args, env) if args.grid else compare(args, env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    name = "create-grid.json" if args.grid else "create.json"
    write_result(args.out or ROOT / "benchmarks" / "results" / name, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
