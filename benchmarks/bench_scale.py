"""Time and memory of ``cutouts create`` against the number of jobs, threads and Dask.

Requirement under test: 1,000 small jobs (512 x 512, about 200 candidates each) build on
the thread runner and on a 2-worker local Dask cluster; time against number of jobs (10,
100, 1,000) is linear (a per-job slope plus a fixed part), memory stays flat, and a re-run
with 10 new jobs processes only those 10.

    .venv/bin/python benchmarks/bench_scale.py
    .venv/bin/python benchmarks/bench_scale.py --repeat 3
    .venv/bin/python benchmarks/bench_scale.py --sizes 5,10,20 --new-jobs 2   # minutes

On 2 AMD EPYC vCPUs the default takes about 45 minutes: simulating the 1,000 jobs 19
(about 2 s a job per process, 2 at a time; reused by later runs), the builds 21 to 23.

What it does:

1. Simulates the largest size's jobs once (``cutouts simulate --size 512 --workers 2``,
   RAPID layout, ``simulate.bogus_density`` ``--bogus-density``: the default 1.0 gives
   about 14 candidates to a 512 x 512 job, 15 about 200; cosmic rays and hot pixels are
   most of them) into ``<workdir>/scale-jobs-512``, reused while it holds enough jobs of
   the same settings, and links the first 10, 100 and 1,000 into ``<workdir>/scale-set-N``.
2. Starts one Prefect server (``prefect server start`` on a free port, its own
   ``PREFECT_HOME`` in a temporary folder, stopped at the end) that every run reports to
   through ``PREFECT_API_URL``, as deployments do; ``--temporary-server`` leaves each run
   to start Prefect's temporary server instead (then counted in the run's time and memory).
3. Runs ``cutouts create --workers 2`` per size and runner (``--task-runner threads``,
   ``dask``: a local cluster of 2 single-threaded worker processes), each a fresh process
   into a fresh output folder, after one untimed warm-up run per runner. Wall seconds
   around the process; peak memory as the largest single process (``ru_maxrss`` of
   ``os.wait4``: the CLI, or its largest Dask worker) and, with psutil, the largest sum of
   RSS over the process tree (CLI plus Dask workers) sampled every 0.2 s (shared pages
   count once per process). The job count, jobs from cache and cutouts come from the
   summary line the CLI prints last. Repeats (``--repeat`` runs of the largest size,
   ``--repeat-small`` of the others) are interleaved across sizes and runners; the
   minimum time and the maximum memory count.
4. Fits ``seconds = fixed + slope x jobs`` per runner by least squares and reports the
   slope (s/job), the fixed part (s), the residuals relative to the fitted values and
   their largest magnitude (linear: small), and peak memory per size with the ratio of the
   largest size's peak to the smallest's (flat: close to 1).
5. Incremental re-run: simulates ``--new-jobs`` more jobs (another seed, into
   ``<workdir>/scale-new-jobs-512``), links them as ``jid<N+1>...`` next to the largest
   set's links in ``<workdir>/scale-set-N-plus-K``, and runs ``cutouts create`` on the
   thread runner into the output folder of the last largest thread build, right after it.
   Checks the summary says N + K jobs, N of them from cache (exit status 1 if not).

Inputs stay in the page cache (the runs read them warm). Disk: about 6 MB of inputs and
13 MB of cutouts per job (one build's output at a time: about 20 GB at 1,000 jobs). Each
run's output goes to ``<workdir>/scale-logs/``. Writes ``benchmarks/results/scale.json``
(or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import CUTOUTS, prefect_server, write_result  # noqa: E402

RUNNERS = ("threads", "dask")
SUMMARY = re.compile(
    r"jobs: (?P<jobs>\d+) \((?P<from_cache>\d+) from cache, (?P<jobs_rejected>\d+) rejected\), "
    r"cutouts: (?P<cutouts>\d+)"
)
SIMULATED = re.compile(r"^(jid\S+) \(.*?\): (\d+) detections, .*\((\d+(?:\.\d+)?) s\)$")

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:8.1f} s] {msg}", flush=True)


def _tree_rss(pid: int) -> int:
    """Sum of the resident memory (bytes) of a process and its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run(cmd: list[str], env: dict[str, str], logfile: Path, sample: bool) -> dict:
    """Run one command: wall seconds, peak RSS (MiB) and the CLI's summary counts.

    ``peak_rss_mib``: the largest single process (``ru_maxrss``); ``tree_rss_mib`` (with
    ``sample``): the largest sum over the process tree, sampled every 0.2 s.
    """
    os.sync()
    peak_tree = [0]
    done = threading.Event()
    with open(logfile, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=logfile.parent)

        def sampler() -> None:
            while not done.wait(0.2):
                peak_tree[0] = max(peak_tree[0], _tree_rss(proc.pid))

        thread = threading.Thread(target=sampler, daemon=True) if sample else None
        if thread:
            thread.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        if thread:
            thread.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = logfile.read_text(errors="replace").splitlines()[-20:]
        print("\n".join(tail), file=sys.stderr)
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    found = SUMMARY.findall(logfile.read_text(errors="replace"))
    if not found:
        raise RuntimeError(f"no summary line in {logfile}")
    counts = dict(zip(("jobs", "from_cache", "jobs_rejected", "cutouts"), map(int, found[-1]),
                      strict=True))
    out = {"seconds": round(wall, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}
    if sample:
        out["tree_rss_mib"] = round(peak_tree[0] / 2**20, 1)
    return out | counts


def simulate(dest: Path, n: int, size: int, seed: int, params: Path, env: dict[str, str],
             logfile: Path) -> dict:
    """Simulate ``n`` jobs into ``dest`` unless it holds them already; what was simulated."""
    marker = dest / ".bench_scale.json"
    settings = {"size": size, "seed": seed, "params": params.read_text()}
    old = json.loads(marker.read_text()) if marker.exists() else None
    if old and old["settings"] == settings and old["jobs"] >= n:
        return old
    log(f"simulating {n} jobs of {size}x{size} into {dest} ...")
    shutil.rmtree(dest, ignore_errors=True)
    cmd = [CUTOUTS, "simulate", "-o", str(dest), "--jobs", str(n), "--size", str(size),
           "--seed", str(seed), "--workers", "2", "--params", str(params)]
    t0 = time.perf_counter()
    with open(logfile, "w") as fh:
        subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=True,
                       cwd=logfile.parent)
    wall = time.perf_counter() - t0
    lines = [m.groups() for m in map(SIMULATED.match, logfile.read_text().splitlines()) if m]
    det = [int(d) for _, d, _ in lines]
    info = {
        "settings": settings, "jobs": n, "seconds": round(wall, 1),
        "job_seconds_mean": round(sum(float(s) for *_, s in lines) / max(len(lines), 1), 2),
        "candidates": det,
    }
    marker.write_text(json.dumps(info) + "\n")
    log(f"  {wall:.1f} s; candidates per job: mean {sum(det) / max(len(det), 1):.0f}, "
        f"min {min(det, default=0)}, max {max(det, default=0)}")
    return info


def link_jobs(jobs: list[Path], where: Path, names: list[str] | None = None) -> Path:
    """A fresh folder of symlinks to ``jobs`` (named ``names``, default the jobs' own)."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for job, name in zip(jobs, names or [j.name for j in jobs], strict=True):
        (where / name).symlink_to(job.resolve())
    return where


def fit(points: dict[int, float]) -> dict:
    """Least-squares ``seconds = fixed + slope x jobs``, with residuals relative to the fit."""
    import numpy as np

    n = np.array(sorted(points), float)
    t = np.array([points[k] for k in sorted(points)])
    slope, fixed = np.polyfit(n, t, 1)
    fitted = fixed + slope * n
    rel = (t - fitted) / fitted
    return {
        "slope_s_per_job": round(float(slope), 4),
        "fixed_s": round(float(fixed), 3),
        "relative_residuals": {int(k): round(float(r), 4) for k, r in zip(n, rel, strict=True)},
        "max_abs_relative_residual": round(float(np.abs(rel).max()), 4),
    }


def _create(subset: Path, out: Path, runner: str, params: Path) -> list[str]:
    return [CUTOUTS, "create", "-i", str(subset), "-o", str(out), "--workers", "2",
            "--task-runner", runner, "--params", str(params)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100,1000", help="comma-separated numbers of jobs")
    ap.add_argument("--runners", default="threads,dask", help="comma-separated task runners")
    ap.add_argument("--size", type=int, default=512, help="image side, pixels")
    ap.add_argument("--bogus-density", type=float, default=15.0,
                    help="simulate.bogus_density (15: about 200 candidates a 512 x 512 job)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of the largest size")
    ap.add_argument("--repeat-small", type=int, default=None,
                    help="runs of the other sizes (default: 3, at least --repeat)")
    ap.add_argument("--new-jobs", type=int, default=10, help="jobs added for the re-run")
    ap.add_argument("--temporary-server", action="store_true",
                    help="no shared Prefect server: each run starts a temporary one")
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "results" / "work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = ap.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    runners = [r for r in args.runners.split(",") if r]
    if not sizes or sizes[0] < 1 or set(runners) - set(RUNNERS) or not runners:
        ap.error(f"--sizes: positive integers; --runners: a subset of {','.join(RUNNERS)}")
    repeat_small = max(args.repeat, 3 if args.repeat_small is None else args.repeat_small)
    try:
        import psutil  # noqa: F401

        sample = True
    except ImportError:
        sample = False
        log("psutil not installed: no process-tree memory")
    work = args.workdir.resolve()
    logs = work / "scale-logs"
    logs.mkdir(parents=True, exist_ok=True)
    params = work / "scale-params.yaml"
    params.write_text(
        "# written by benchmarks/bench_scale.py\nsimulate:\n"
        f"  bogus_density: {args.bogus_density}\n  gallery: false\n"
    )
    home = tempfile.mkdtemp(prefix="bench-prefect-")
    env = {**os.environ, "PREFECT_HOME": home}
    env.pop("PREFECT_API_URL", None)
    nmax = sizes[-1]
    jobs_dir = work / f"scale-jobs-{args.size}"
    sim = simulate(jobs_dir, nmax, args.size, 0, params, env, logs / "simulate.log")
    if args.new_jobs:
        simulate(work / f"scale-new-jobs-{args.size}", args.new_jobs, args.size, 1, params,
                 env, logs / "simulate-new.log")
    jobs = sorted(jobs_dir.glob("jid*"))[:nmax]
    sets = {n: link_jobs(jobs[:n], work / f"scale-set-{n}") for n in sizes}
    result: dict = {
        "image_size": args.size, "bogus_density": args.bogus_density, "sizes": sizes,
        "runners": runners, "workers": 2, "repeat": args.repeat, "repeat_small": repeat_small,
        "server": "temporary" if args.temporary_server else "shared",
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "versions": {p: version(p) for p in ("prefect", "prefect-dask", "distributed")},
        "simulation": {
            "seconds": sim["seconds"], "job_seconds_mean": sim["job_seconds_mean"],
            "candidates_mean": round(sum(sim["candidates"][:nmax]) / nmax, 1),
            "candidates_min": min(sim["candidates"][:nmax]),
            "candidates_max": max(sim["candidates"][:nmax]),
        },
        "runs": {r: {} for r in runners},
    }
    try:
        with contextlib.ExitStack() as stack:
            if not args.temporary_server:
                url = stack.enter_context(prefect_server(env, logs / "prefect-server.log"))
                env["PREFECT_API_URL"] = str(url)
            for runner in runners:  # imports, the Dask cluster's first start
                out = work / f"scale-out-warm-{runner}"
                shutil.rmtree(out, ignore_errors=True)
                got = run(_create(sets[sizes[0]], out, runner, params), env,
                          logs / f"warm-{runner}.log", sample)
                shutil.rmtree(out, ignore_errors=True)
                log(f"warm-up {runner}: {got['seconds']:.1f} s")

            def rerun() -> None:  # into the output of the last largest thread build
                result["rerun"] = _rerun(args, sets[nmax], nmax, params, env, logs, work)

            _timings(args, sets, runners, params, env, logs, sample, repeat_small, result,
                     rerun if args.new_jobs else None)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    _report(result)
    write_result(args.out, result)
    return 0 if result.get("rerun", {}).get("only_new_processed", True) else 1


def _timings(args: argparse.Namespace, sets: dict[int, Path], runners: list[str],
             params: Path, env: dict[str, str], logs: Path, sample: bool, repeat_small: int,
             result: dict, rerun: Callable[[], None] | None) -> None:
    """Interleaved timed runs of every size and runner; fills ``result['runs']`` and fits.

    ``rerun`` is called right after the last thread build of the largest size, whose
    output folder is kept for it (and deleted after it).
    """
    nmax = max(sets)
    rounds = max(args.repeat, repeat_small)
    for r in range(rounds):
        for n, subset in sets.items():
            if r >= (args.repeat if n == nmax else repeat_small):
                continue
            for runner in runners:
                out = sets[n].parent / f"scale-out-{runner}-{n}"
                shutil.rmtree(out, ignore_errors=True)
                got = run(_create(subset, out, runner, params), env,
                          logs / f"create-{runner}-{n}-{r + 1}.log", sample)
                if got["jobs"] != n or got["from_cache"] or got["jobs_rejected"]:
                    shutil.rmtree(out, ignore_errors=True)
                    raise RuntimeError(f"{runner} {n} jobs: unexpected summary {got}")
                log(f"[{r + 1}/{rounds}] {runner:7s} {n:5d} jobs: {got['seconds']:.2f} s, "
                    f"{got['cutouts']} cutouts, peak RSS {got['peak_rss_mib']:.0f} MiB"
                    + (f", tree {got['tree_rss_mib']:.0f} MiB" if sample else ""))
                if rerun and runner == "threads" and n == nmax and r == args.repeat - 1:
                    rerun()
                shutil.rmtree(out, ignore_errors=True)
                prev = result["runs"][runner].get(n)
                if prev:
                    got = got | {
                        "seconds": min(prev["seconds"], got["seconds"]),
                        "peak_rss_mib": max(prev["peak_rss_mib"], got["peak_rss_mib"]),
                        "all_seconds": [*prev["all_seconds"], got["seconds"]],
                    }
                    if sample:
                        got["tree_rss_mib"] = max(prev["tree_rss_mib"], got["tree_rss_mib"])
                else:
                    got["all_seconds"] = [got["seconds"]]
                result["runs"][runner][n] = got
    result["fits"], result["memory"] = {}, {}
    small = min(sets)
    for runner in runners:
        runs = result["runs"][runner]
        if len(runs) >= 2:
            result["fits"][runner] = fit({n: v["seconds"] for n, v in runs.items()})
        mem = {"peak_rss_ratio": round(runs[nmax]["peak_rss_mib"] / runs[small]["peak_rss_mib"],
                                       3)}
        if sample:
            mem["tree_rss_ratio"] = round(runs[nmax]["tree_rss_mib"] / runs[small]["tree_rss_mib"],
                                          3)
        result["memory"][runner] = mem


def _rerun(args: argparse.Namespace, largest: Path, nmax: int, params: Path,
           env: dict[str, str], logs: Path, work: Path) -> dict:
    """Add ``--new-jobs`` jobs to the largest set and rebuild into its thread build's output."""
    new = sorted((work / f"scale-new-jobs-{args.size}").glob("jid*"))[: args.new_jobs]
    width = max(4, len(str(nmax + len(new))))
    names = [f"jid{nmax + k + 1:0{width}d}" for k in range(len(new))]
    old = sorted(largest.iterdir())
    both = link_jobs([*old, *new], work / f"scale-set-{nmax}-plus-{len(new)}",
                     [p.name for p in old] + names)
    out = work / f"scale-out-threads-{nmax}"
    got = run(_create(both, out, "threads", params), env, logs / "rerun-threads.log", False)
    got.pop("jobs_rejected", None)
    got["new_jobs"] = len(new)
    got["processed"] = got["jobs"] - got["from_cache"]
    got["only_new_processed"] = got["jobs"] == nmax + len(new) and got["from_cache"] == nmax
    log(f"re-run with {len(new)} new jobs: {got['seconds']:.2f} s, {got['jobs']} jobs, "
        f"{got['from_cache']} from cache ({'ok' if got['only_new_processed'] else 'NOT OK'})")
    return got


def _report(result: dict) -> None:
    sizes = result["sizes"]
    print(f"\n{'runner':8s} {'jobs':>6s} {'cutouts':>8s} {'seconds':>8s} {'rel. resid.':>11s} "
          f"{'peak RSS':>9s} {'tree RSS':>9s}")
    for runner, runs in result["runs"].items():
        resid = result["fits"].get(runner, {}).get("relative_residuals", {})
        for n in sizes:
            v = runs[n]
            tree = f"{v['tree_rss_mib']:9.0f}" if "tree_rss_mib" in v else f"{'-':>9s}"
            print(f"{runner:8s} {n:6d} {v['cutouts']:8d} {v['seconds']:8.2f} "
                  f"{resid.get(n, float('nan')):+11.1%} {v['peak_rss_mib']:9.0f} {tree}")
    print(f"\n{'runner':8s} {'s/job':>8s} {'fixed s':>8s} {'max |resid|':>11s} "
          f"{'peak ratio':>10s} {'tree ratio':>10s}   (ratios: {sizes[-1]} / {sizes[0]} jobs)")
    for runner, f in result["fits"].items():
        mem = result["memory"][runner]
        print(f"{runner:8s} {f['slope_s_per_job']:8.4f} {f['fixed_s']:8.2f} "
              f"{f['max_abs_relative_residual']:11.1%} {mem['peak_rss_ratio']:10.2f} "
              f"{mem.get('tree_rss_ratio', float('nan')):10.2f}")
    if "rerun" in result:
        r = result["rerun"]
        print(f"\nre-run + {r['new_jobs']} new jobs: {r['jobs']} jobs, {r['from_cache']} from "
              f"cache, {r['processed']} processed, {r['seconds']:.2f} s "
              f"({'only the new ones' if r['only_new_processed'] else 'NOT only the new ones'})")


if __name__ == "__main__":
    sys.exit(main())
