"""Scale-out: the same flow on Dask (prefect-dask) writes byte-identical datasets."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

import pytest
from prefect import flow

from croissant_cutouts.flows.build import build_dataset
from croissant_cutouts.flows.runner import run_jobs
from croissant_cutouts.tasks.config import Params
from croissant_cutouts.tasks.inputs.select import plan_jobs

pytestmark = pytest.mark.flow

THREADS = Params().override("cutouts", retry_delay_s=0.0, workers=2)


def tree(root: Path) -> dict[str, bytes]:
    """Every file of a dataset but the tool's own bookkeeping (.cutouts/)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cutouts" not in p.relative_to(root).parts
    }


@pytest.fixture
def jobs(tmp_path, make_job):
    for k in range(4):
        make_job(f"jid000{k + 1}", shape=(60 + 10 * k, 80), seed=k)
    return tmp_path / "jobs"


def _cut_on(flow_state) -> set[int]:
    """Pids of the processes that cut the jobs of a flow run: the ``worker`` (host:pid, the
    cutout task's ``os.getpid()``) of each job in the run's job-counts artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    (table,) = [a for a in found if a.key == "job-counts"]
    return {int(row["worker"].rsplit(":", 1)[1]) for row in json.loads(table.data)}


def test_local_dask_cluster_matches_threads(tmp_path, jobs, monkeypatch):
    import distributed

    started: list[set[int]] = []

    class Recorded(distributed.LocalCluster):
        """The local cluster the run starts, noting its workers' pids once they are up."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            with distributed.Client(self) as client:
                client.wait_for_workers(kwargs["n_workers"])
                started.append(set(client.run(os.getpid).values()))

    # prefect-dask's DaskTaskRunner instantiates distributed.LocalCluster by default
    monkeypatch.setattr(distributed, "LocalCluster", Recorded)
    steps = ["create", "croissant"]
    ref_state = build_dataset(
        str(jobs), str(tmp_path / "threads"), THREADS, steps, return_state=True
    )
    dask = THREADS.override("cutouts", task_runner="dask")
    # Dask's default HTTP port taken (another cluster): no warning (an error here), no failure
    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # already taken by someone else: as good
            taken.bind(("127.0.0.1", 8787))
            taken.listen()
        got_state = build_dataset(
            str(jobs), str(tmp_path / "dask"), dask, steps, return_state=True
        )
    ref, got = ref_state.result(), got_state.result()
    assert (got.jobs, got.cutouts, got.rejected) == (ref.jobs, ref.cutouts, ref.rejected)
    assert tree(tmp_path / "dask") == tree(tmp_path / "threads")
    assert len(tree(tmp_path / "dask")) > 40
    # Dask ran: one cluster of `workers` processes was started for the dask run (none for
    # the threads run), and every job was cut in one of its workers, not in this process
    assert _cut_on(ref_state) == {os.getpid()}
    assert len(started) == 1, f"local Dask clusters started: {started}"
    (workers,) = started
    assert len(workers) == dask.cutouts.workers and os.getpid() not in workers
    cut_on = _cut_on(got_state)
    assert cut_on and cut_on <= workers, (cut_on, workers)


def test_existing_scheduler_address_and_shards(tmp_path, jobs):
    from distributed import Client, LocalCluster

    shards = THREADS.override("cutouts", layout="shards")
    build_dataset(str(jobs), str(tmp_path / "threads"), shards, ["create"])
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        remote = shards.override(
            "cutouts", task_runner="dask", dask_address=cluster.scheduler_address
        )
        got = build_dataset(str(jobs), str(tmp_path / "dask"), remote, ["create"])
        worker_pids = set(client.run(os.getpid).values())
    assert got.cutouts > 0
    assert tree(tmp_path / "dask") == tree(tmp_path / "threads")
    # the jobs were cut in the cluster's worker processes (their results record host:pid)
    specs, _ = plan_jobs(str(jobs))
    here = remote.override("cutouts", task_runner="threads")  # the cluster is gone
    results, from_cache = flow(run_jobs)(specs, str(tmp_path / "dask"), here)
    assert from_cache == len(specs) == 4
    ran_on = {int(r.worker.rsplit(":", 1)[1]) for r in results}
    assert ran_on <= worker_pids and os.getpid() not in ran_on


def test_local_cluster_workers_run_without_the_profiler():
    """Dask's statistical profiler would keep 1,000 s of stack trees per worker."""
    from croissant_cutouts.flows.runner import make_task_runner
    from croissant_cutouts.tasks.config import CutoutParams

    def profiled(dask_worker) -> bool:
        return "profile-cycle" in dask_worker.periodic_callbacks

    with make_task_runner(CutoutParams(task_runner="dask", workers=1)) as runner:
        assert list(runner.client.run(profiled).values()) == [False]


def test_dask_keeps_short_debugging_logs_in_the_flow_process():
    """Each Dask connection's log of its last messages would keep 1,000 task arguments."""
    import dask

    from croissant_cutouts.flows.runner import DASK_LOG_LENGTH, dask_log_length, make_task_runner
    from croissant_cutouts.tasks.config import CutoutParams

    opts = CutoutParams(task_runner="dask", workers=1)
    with dask_log_length(opts), make_task_runner(opts) as runner:
        client = runner.client
        logs = [client.scheduler_comm.recent_message_log]
        logs += [s.recent_message_log for s in client.cluster.scheduler.stream_comms.values()]
        assert len(logs) == 2  # the client's and the scheduler's to its one worker
        assert {log.maxlen for log in logs} == {DASK_LOG_LENGTH}
    assert dask.config.get("distributed.admin.low-level-log-length") == 1000  # restored
    with dask.config.set({"distributed.admin.low-level-log-length": 5}), dask_log_length(opts):
        assert dask.config.get("distributed.admin.low-level-log-length") == 5  # lower: kept


def test_finished_jobs_leave_no_links_in_the_flow_run(tmp_path, jobs, monkeypatch):
    """Prefect's links from each task result to its state would stay until the run ends.

    Threads: 88 links for these 4 jobs without :func:`forget_links`. On Dask the tasks,
    and so their links, live in the worker processes.
    """
    from prefect.context import FlowRunContext

    from croissant_cutouts.flows import runner

    specs, _ = plan_jobs(str(jobs))
    dropped: list[int] = []
    forget = runner.forget_links

    def counting(futures):
        dropped.append(forget(futures))
        return dropped[-1]

    monkeypatch.setattr(runner, "forget_links", counting)

    @flow
    def cut() -> tuple[int, int]:
        results, _ = run_jobs(specs, str(tmp_path / "out"), THREADS)
        return len(FlowRunContext.get().run_results), len(results)

    left, done = cut()
    assert done == len(specs) == len(dropped) == 4
    assert left == 0
    assert all(n >= 3 for n in dropped), dropped  # each result and what is directly inside
