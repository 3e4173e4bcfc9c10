"""Start-up: ``cutouts create`` on one tiny job against Prefect's own one-task flow run.

Each method runs as a fresh process on one simulated 256x256 job, in two modes:

- ``running``: against a ``prefect server`` this script starts (how deployments and
  repeated interactive use run: ``PREFECT_API_URL`` set);
- ``temporary``: no server; every process starts Prefect's temporary one (the default of a
  first ``cutouts create``). Its home is created by one untimed run first.

Methods:

- ``prefect``: Prefect's minimum, a flow of one task and no parameters;
- ``prefect-param``: the same flow with one parameter (Prefect imports FastAPI's encoder to
  record flow parameters: every real flow pays it);
- ``libs``: that flow, whose task imports numpy, pandas and astropy's FITS reader and
  ZScale and reads the job: the floor of any flow that reads a RAPID job with those
  libraries;
- ``ours``: ``cutouts create -i JOB -o OUT``;
- ``seed``: the seed's script (``benchmarks/bench_create.py``'s re-implementation), no Prefect.

Repeats are interleaved across methods (all once, then again); the minimum of each counts,
and ratios are of minima. Results go to ``benchmarks/results/startup.json``.

    .venv/bin/python benchmarks/bench_startup.py --repeat 5
    .venv/bin/python benchmarks/bench_startup.py --modes running --methods prefect,ours
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_create import SEED_SCRIPT, _timed  # noqa: E402
from common import CUTOUTS, prefect_server, write_result  # noqa: E402

FLOWS = {
    "prefect": """
from prefect import flow, task

@task
def one():
    return 1

@flow
def minimal():
    return one()

minimal()
""",
    "prefect-param": """
import sys
from prefect import flow, task

@task
def one(x):
    return x

@flow
def minimal(x: str):
    return one(x)

minimal(sys.argv[1])
""",
    "libs": """
import sys
from pathlib import Path
from prefect import flow, task

@task
def read(job: str) -> int:
    import numpy as np
    import pandas as pd
    from astropy.io import fits
    from astropy.visualization import ZScaleInterval

    n = 0
    for f in sorted(Path(job).rglob("*.fits")):
        with fits.open(f, memmap=True) as hdul:
            data = next(h.data for h in hdul if h.data is not None)
            n += int(np.isfinite(ZScaleInterval().get_limits(data)).all())
    for f in sorted(Path(job).rglob("*.txt")) + sorted(Path(job).rglob("*.csv")):
        n += len(pd.read_csv(f, sep=None, engine="python", nrows=5))
    return n

@flow
def libs(job: str):
    return read(job)

libs(sys.argv[1])
""",
}


def _commands(job_dir: Path, out: Path) -> dict[str, list[str]]:
    job = str(next(job_dir.glob("jid*")))
    return {
        "prefect": [sys.executable, "-c", FLOWS["prefect"]],
        "prefect-param": [sys.executable, "-c", FLOWS["prefect-param"], job],
        "libs": [sys.executable, "-c", FLOWS["libs"], job],
        "ours": [CUTOUTS, "create", "-i", str(job_dir), "-o", str(out)],
        "seed": [sys.executable, "-c", SEED_SCRIPT, str(job_dir.parent / "seed-1"), str(out)],
    }


def _jobs(workdir: Path) -> Path:
    """One 256x256 RAPID job (for the flows) and the same job in the seed's layout."""
    rapid, seed = workdir / "startup-1", workdir / "seed-1"
    for where, layout in ((rapid, "rapid"), (seed, "seed")):
        if not any(where.glob("jid*")):
            subprocess.run([CUTOUTS, "simulate", "-o", str(where), "--jobs", "1", "--size",
                            "256", "--layout", layout], check=True,
                           stdout=subprocess.DEVNULL)
    return rapid


def measure(args: argparse.Namespace) -> dict:
    jobs = _jobs(args.workdir)
    out = args.workdir / "startup-out"
    commands = {k: v for k, v in _commands(jobs, out).items() if k in args.methods}
    result: dict = {"repeat": args.repeat, "cpu_count": os.cpu_count(), "modes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        envs: dict[str, dict[str, str]] = {}
        base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        with contextlib.ExitStack() as stack:
            if "running" in args.modes:
                server = {**base, "PREFECT_HOME": str(Path(tmp) / "server-home")}
                url = stack.enter_context(prefect_server(server, Path(tmp) / "server.log"))
                envs["running"] = {**base, "PREFECT_API_URL": str(url),
                                   "PREFECT_HOME": str(Path(tmp) / "client-home")}
            if "temporary" in args.modes:
                envs["temporary"] = {**base, "PREFECT_HOME": str(Path(tmp) / "temp-home")}
                _timed(commands.get("ours", commands["prefect"]), envs["temporary"], None, 1, out)
            for mode, env in envs.items():
                times: dict[str, list[float]] = {m: [] for m in commands}
                for r in range(args.repeat):
                    for name, cmd in commands.items():
                        times[name].append(_timed(cmd, env, None, 1, out)[0])
                        print(f"  {mode:9s} [{r + 1}/{args.repeat}] {name:13s} "
                              f"{times[name][-1]:.2f} s", flush=True)
                best = {m: min(t) for m, t in times.items()}
                ratios = {m: round(best[m] / best["prefect"], 3)
                          for m in best if "prefect" in best}
                result["modes"][mode] = {"seconds": times, "min": best,
                                         "over_prefect": ratios}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per method; the minimum counts")
    ap.add_argument("--modes", default="running,temporary")
    ap.add_argument("--methods", default="prefect,prefect-param,libs,ours,seed")
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "results" / "work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = ap.parse_args()
    args.modes, args.methods = args.modes.split(","), args.methods.split(",")
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = measure(args)
    print(f"\n{'mode':10s} {'method':14s} {'min (s)':>8s} {'/ prefect':>10s}")
    for mode, m in result["modes"].items():
        for name, best in m["min"].items():
            print(f"{mode:10s} {name:14s} {best:8.2f} {m['over_prefect'].get(name, 0):10.2f}")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
