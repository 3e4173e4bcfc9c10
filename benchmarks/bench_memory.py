"""Peak memory of ``cutouts create`` on jobs of real size, per concurrent job.

Runs ``cutouts create`` as a child process on 0 jobs (the baseline: Python, Prefect and the
tool loaded) and on N jobs with ``--workers W``, sampling the resident memory of the
process and all its children every 20 ms from ``/proc/<pid>/status``: ``RssAnon`` (memory
the tool allocated) and ``RssFile`` (pages of memory-mapped input images, which the kernel
can drop at any time). Reports the peaks, and per concurrent job
``(peak - baseline) / W``, against the size of one job's input files.

    .venv/bin/python benchmarks/bench_memory.py --jobs 4 --workers 2 --layout files
    .venv/bin/python benchmarks/bench_memory.py --jobs 4 --workers 2 --layout shards
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


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


def _status(pid: int) -> dict[str, int]:
    got = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                if key in ("RssAnon", "RssFile", "RssShmem"):
                    got[key] = int(val.split()[0]) * 1024
    except OSError:
        pass
    return got


def measure(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> dict[str, float]:
    """Peak anonymous and file-backed resident memory (MiB) of the main process."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = {"RssAnon": 0, "RssFile": 0, "total": 0}
    t0 = time.perf_counter()
    while proc.poll() is None:
        st = _status(proc.pid)  # the Prefect server child is separate and not counted
        peak["RssAnon"] = max(peak["RssAnon"], st.get("RssAnon", 0))
        peak["RssFile"] = max(peak["RssFile"], st.get("RssFile", 0))
        peak["total"] = max(peak["total"], st.get("RssAnon", 0) + st.get("RssFile", 0))
        time.sleep(0.02)
    if proc.returncode not in ok:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return {k: round(v / 2**20, 1) for k, v in peak.items()} | {
        "seconds": round(time.perf_counter() - t0, 2)
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--layout", choices=["files", "shards"], default="files")
    ap.add_argument("--size", type=int, default=4089)
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "results" / "work")
    args = ap.parse_args()
    jobs = args.workdir / f"seed-jobs-{args.size}"
    if len(list(jobs.glob("jid*"))) < args.jobs:
        from croissant_cutouts.simulate import simulate_jobs

        simulate_jobs(jobs, n_jobs=args.jobs, size=args.size, seed=0, workers=2, layout="seed")
    subset = args.workdir / f"mem-{args.jobs}"
    empty = args.workdir / "mem-0"
    empty.mkdir(parents=True, exist_ok=True)
    subset.mkdir(parents=True, exist_ok=True)
    for job in sorted(jobs.glob("jid*"))[: args.jobs]:
        if not (subset / job.name).exists():
            (subset / job.name).symlink_to(job.resolve())
    input_mib = sum(f.stat().st_size for f in next(subset.iterdir()).resolve().iterdir()) / 2**20
    home = tempfile.mkdtemp(prefix="bench-prefect-")
    env = {**os.environ, "PREFECT_HOME": home}
    result = {"jobs": args.jobs, "workers": args.workers, "layout": args.layout,
              "input_mib_per_job": round(input_mib, 1)}
    try:
        for name, src in (("baseline", empty), ("run", subset)):
            out = args.workdir / "mem-out"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [CUTOUTS, "create", "-i", str(src), "-o", str(out), "--workers",
                   str(args.workers), "--layout", args.layout]
            result[name] = measure(cmd, env, (0, 1) if name == "baseline" else (0,))
            shutil.rmtree(out, ignore_errors=True)
            print(f"{name}: {result[name]}", flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    base, run = result["baseline"], result["run"]
    per_job = {k: round((run[k] - base[k]) / args.workers, 1)
               for k in ("RssAnon", "RssFile", "total")}
    result["per_concurrent_job_mib"] = per_job
    result["per_job_over_input"] = round(per_job["total"] / input_mib, 2)
    print(f"per concurrent job: {per_job} MiB; input per job {input_mib:.0f} MiB; "
          f"total/input = {result['per_job_over_input']}")
    out = ROOT / "benchmarks" / "results" / f"memory-{args.layout}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
