"""What one Prefect task run costs on the thread runner and on a local Dask cluster.

    .venv/bin/python benchmarks/bench_task_cost.py
    .venv/bin/python benchmarks/bench_task_cost.py --tasks 60 --repeat 3

Starts one Prefect server (as deployments and ``bench_scale`` run), then, per runner and
repeat (interleaved), a fresh process runs a flow that submits ``--tasks`` tasks doing
nothing and waits for them. Only that batch is measured, not start-up: its wall time, the
CPU seconds of the flow's process and of the Dask worker processes (``os.times`` on each
worker, through the cluster's client), and the server's CPU seconds from the batch's start
until it is idle again after the run (it handles task-run events in batches, later).
Each is divided by the number of tasks; the minimum over repeats counts. ``dask`` is the
runner ``--task-runner dask`` makes: 2 single-threaded worker processes reporting to the
same server.

Writes ``benchmarks/results/task-cost.json`` (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import cpu_seconds, prefect_server, write_result  # noqa: E402

RUNNERS = ("threads", "dask")
KEYS = ("wall", "flow_cpu", "worker_cpu", "server_cpu")


def _process_cpu() -> float:
    """CPU seconds (user + system) of the calling process."""
    t = os.times()
    return t.user + t.system


def _settled_cpu(pid: int, quiet: float = 0.02, every: float = 0.5) -> float:
    """CPU seconds of ``pid`` once it has stopped working (less than ``quiet`` s in ``every`` s).

    The server handles task-run events in batches after they arrive, so its share of a
    run is counted until it is idle again (the flow run's own end included).
    """
    last = cpu_seconds(pid)
    while True:
        time.sleep(every)
        now = cpu_seconds(pid)
        if now - last < quiet:
            return now
        last = now


def child(runner_name: str, n: int) -> None:
    """Run ``n`` empty tasks on ``runner_name`` in a flow; print the batch's costs as JSON."""
    from prefect import flow, task
    from prefect.context import FlowRunContext

    from croissant_cutouts.flows.runner import make_task_runner
    from croissant_cutouts.tasks.config import CutoutParams

    @task
    def nothing(i: int) -> int:
        return i

    runner = make_task_runner(CutoutParams(task_runner=runner_name, workers=2))

    @flow(task_runner=runner)
    def batch(n: int) -> dict:
        on = FlowRunContext.get().task_runner

        def workers() -> float:
            return sum(on.client.run(_process_cpu).values()) if runner_name == "dask" else 0.0

        nothing.submit(-1).result()  # the runner (and the cluster) started and warm
        server0 = cpu_seconds(int(os.environ["BENCH_SERVER_PID"]))
        w0, c0, t0 = workers(), _process_cpu(), time.perf_counter()
        assert sum(f.result() for f in [nothing.submit(i) for i in range(n)]) == n * (n - 1) // 2
        wall = time.perf_counter() - t0
        return {"wall": wall, "flow_cpu": _process_cpu() - c0, "worker_cpu": workers() - w0,
                "server_cpu_at_start": server0}

    print("RESULT " + json.dumps(batch(n)), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=60, help="tasks per measured batch")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs per runner")
    ap.add_argument("--runners", default="threads,dask", help="comma-separated runners")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "task-cost.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.tasks)
        return 0
    runners = [r for r in args.runners.split(",") if r]
    if not runners or set(runners) - set(RUNNERS) or args.tasks < 1:
        ap.error(f"--runners: a subset of {','.join(RUNNERS)}; --tasks: at least 1")
    env = {**os.environ, "PREFECT_HOME": tempfile.mkdtemp(prefix="bench-prefect-")}
    runs: dict[str, list[dict]] = {r: [] for r in runners}
    with prefect_server(env, Path(env["PREFECT_HOME"]) / "server.log") as server:
        env["PREFECT_API_URL"], env["BENCH_SERVER_PID"] = str(server), str(server.pid)
        for _ in range(args.repeat):
            for r in runners:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", r, "--tasks", str(args.tasks)],
                    env=env, capture_output=True, text=True, check=True,
                )
                line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
                run = json.loads(line[7:])
                run["server_cpu"] = _settled_cpu(server.pid) - run.pop("server_cpu_at_start")
                runs[r].append(run)
    per_task = {r: {k: round(min(x[k] for x in runs[r]) / args.tasks, 4) for k in KEYS}
                for r in runners}
    result = {"tasks": args.tasks, "repeat": args.repeat, "cpu_count": os.cpu_count(),
              "machine": platform.machine(), "seconds_per_task": per_task, "runs": runs}
    print(f"{'runner':8} " + " ".join(f"{k:>11}" for k in KEYS) + "   (seconds per task)")
    for r in runners:
        print(f"{r:8} " + " ".join(f"{per_task[r][k]:11.4f}" for k in KEYS))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
