"""How per-job tasks run: the task runner, read-ahead, and the bounded per-job scheduler."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from croissant_cutouts.tasks.config import CutoutParams, Params
from croissant_cutouts.tasks.contract import CACHE_DIR
from croissant_cutouts.tasks.dataset.cutout import JobCutouts, cutout_task, outputs_present
from croissant_cutouts.tasks.dataset.normalize import normalize_task
from croissant_cutouts.tasks.errors import JobError, JobRejection
from croissant_cutouts.tasks.infra.caching import is_transient
from croissant_cutouts.tasks.infra.extras import require_extra
from croissant_cutouts.tasks.infra.progress import progress_bar
from croissant_cutouts.tasks.inputs.load import JobSpec, load_task, reject_job

__all__ = [
    "DASK_LOG_LENGTH",
    "dask_log_length",
    "forget_links",
    "make_task_runner",
    "read_ahead",
    "run_jobs",
]


def make_task_runner(opts: CutoutParams) -> TaskRunner:
    """The task runner of the per-job tasks, from ``cutouts.task_runner``.

    ``threads``: a thread pool of ``workers`` threads in this process (numpy and file
    writes release the GIL, so threads use every core). ``dask``: prefect-dask's
    ``DaskTaskRunner`` on the cluster at ``dask_address``, or, when that is empty, on a
    local cluster of ``workers`` single-threaded worker processes started for the run.
    Tasks exchange only paths, limits and small tables, never pixels.
    """
    if opts.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=opts.workers)
    require_extra("dask", "cutouts.task_runner: dask")
    from prefect_dask import DaskTaskRunner

    if opts.dask_address:
        return DaskTaskRunner(address=opts.dask_address)
    cluster: dict[str, Any] = {
        "n_workers": opts.workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        # the scheduler's HTTP routes (/health, /metrics) still need a port: any free one,
        # not 8787, which another cluster (a user's, a parallel run's) may hold
        "scheduler_kwargs": {"dashboard_address": ":0"},
        # no statistical profiler: it samples each worker's stacks every 10 ms and keeps
        # 1,000 one-second trees of them, with every task's key, that nobody reads here
        "config": {"distributed.worker.profile.enabled": False},
    }
    api = _api_url()
    if api:  # workers report to this run's API (else each would start a temporary server)
        cluster["env"] = {"PREFECT_API_URL": api}
    return DaskTaskRunner(cluster_kwargs=cluster)


#: Messages Dask keeps per connection, and scheduler transitions and events, for debugging
#: (``distributed.admin.low-level-log-length``; Dask's default is 1,000).
DASK_LOG_LENGTH = 20


@contextlib.contextmanager
def dask_log_length(opts: CutoutParams) -> Iterator[None]:
    """Shorten Dask's debugging logs in this process while the per-job tasks run.

    Each connection of Dask's client and of the local cluster's scheduler (which runs in
    this process) keeps its last 1,000 messages. A message that starts a task holds the
    task's arguments and the Prefect context it runs in (the flow run, its parameters),
    about 0.2 MB each, so the flow process grew by about 0.55 MiB per job up to thousands
    of jobs. At :data:`DASK_LOG_LENGTH` messages it stays flat. A lower value a user set
    is kept. No effect with the thread runner.
    """
    if opts.task_runner != "dask":
        yield
        return
    import dask
    import distributed  # noqa: F401  (adds its config defaults, which set() must not shadow)

    key = "distributed.admin.low-level-log-length"
    current = dask.config.get(key, None)
    length = DASK_LOG_LENGTH if current is None else min(int(current), DASK_LOG_LENGTH)
    with dask.config.set({key: length}):
        yield


def _api_url() -> str | None:
    """The Prefect API this process talks to, including a temporary (ephemeral) server."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return url
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    return server.api_url if server.running else None


def read_ahead(spec: JobSpec) -> None:
    """Start reading a job's input files into the page cache in the background.

    ``posix_fadvise(WILLNEED)`` queues the reads and returns; by the time the job's own
    tasks run, its bytes are (partly) in memory, so disk reads overlap the cutting of the
    jobs before it. Best effort: a job whose files cannot be listed is skipped.
    """
    if spec.remote is not None or not hasattr(os, "posix_fadvise"):
        return
    try:
        files = spec.input_files()
    except (OSError, ValueError):
        return
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def _failure_reason(stage: str, future: PrefectFuture, retries: int) -> str:
    """Why a per-job task failed: its final exception, and whether it was retried."""
    try:
        future.result()
    except Exception as exc:  # the task's final exception, after its retries
        if is_transient(exc) and retries:
            return f"{stage} failed after {retries + 1} attempts: {type(exc).__name__}: {exc}"
        return f"{stage} failed (not retried): {type(exc).__name__}: {exc}"
    return f"{stage} failed"


class _Jobs:
    """The bounded per-job scheduler of :func:`run_jobs`: which task of which job runs next."""

    def __init__(
        self, runner: TaskRunner, specs: list[JobSpec], output_dir: str, opts: CutoutParams
    ) -> None:
        self.runner = runner
        self.out_dir = Path(output_dir)
        self.opts = opts
        common = dict(
            result_storage=(self.out_dir / CACHE_DIR).resolve(),
            retries=opts.retries,
            retry_delay_seconds=opts.retry_delay_s,
            # results are on disk; Prefect's in-memory copy (up to 1,000 per store) would
            # hold every job's catalog table until the run ends
            cache_result_in_memory=False,
        )
        self.load, self.normalize, self.cutout = (
            t.with_options(**common) for t in (load_task, normalize_task, cutout_task)
        )
        # A cached cutout result is only good while its files exist: else run and overwrite.
        self.cutout_refresh = self.cutout.with_options(refresh_cache=True)
        self.queue: deque[JobSpec] = deque(specs)
        self.inflight: dict[PrefectFuture, tuple[str, JobSpec, list[PrefectFuture]]] = {}
        # On one machine, ask the kernel to read the next jobs' files ahead while these are cut.
        self.prefetch = opts.task_runner == "threads"

    def start_next(self) -> None:
        """Submit the next job's load task, and read ahead the job ``workers`` behind it."""
        if self.queue:
            spec = self.queue.popleft()
            fut = self.runner.submit(self.load, {"spec": spec})
            self.inflight[fut] = ("load", spec, [fut])
            if self.prefetch and len(self.queue) >= self.opts.workers:
                read_ahead(self.queue[self.opts.workers - 1])

    def next_done(self) -> tuple[str, JobSpec, list[PrefectFuture]]:
        """Wait for any in-flight task; its stage, job and the job's futures so far."""
        fut = next(as_completed(list(self.inflight)))
        stage, spec, chain = self.inflight.pop(fut)
        fut.wait()
        return stage, spec, chain

    def submit_after(self, stage: str, spec: JobSpec, chain: list[PrefectFuture]) -> bool:
        """Submit the task that follows ``stage``; False when the job is finished."""
        fut = chain[-1]
        if stage == "load":
            nxt = self.runner.submit(self.normalize, {"job": fut})
        elif stage == "normalize":
            present = outputs_present(self.out_dir, spec.job_id, self.opts.layout)
            args = {
                "job": chain[0],
                "limits": fut,
                "out_dir": str(self.out_dir),
                "batch": self.opts.batch,
                "layout": self.opts.layout,
            }
            nxt = self.runner.submit(self.cutout if present else self.cutout_refresh, args)
        else:
            return False
        self.inflight[nxt] = ({"load": "normalize"}.get(stage, "cutout"), spec, [*chain, nxt])
        return True


def _log_job(logger: Any, done: str, result: JobCutouts | JobRejection, cached: bool) -> None:
    if isinstance(result, JobRejection):
        logger.warning("%s rejected: %s", done, result.reason)
    else:
        logger.info(
            "%s %d cutouts, %d rows rejected%s",
            done,
            result.n_rows,
            len(result.row_rejects),
            " (from cache)" if cached else f" in {result.seconds:.2f} s",
        )


def run_jobs(
    specs: list[JobSpec], output_dir: str, params: Params
) -> tuple[list[JobCutouts | JobRejection], int]:
    """Run load -> normalize -> cutout for every job, ``cutouts.workers`` jobs at a time.

    Called inside a flow run: the tasks are that run's task runs, submitted to a task runner
    made for this call from ``params.cutouts`` (:func:`make_task_runner`), not to the flow's
    own, so each run picks threads or Dask and their number without a nested flow run.

    Each job's three tasks are submitted back to back (its images are read while still in
    the page cache), and a new job starts when one finishes; on one machine the files of
    the job ``workers`` places ahead are read ahead (:func:`read_ahead`). A job whose task
    fails after its retries becomes a :class:`JobRejection` naming the step and the error.
    Returns the per-job results and how many jobs came whole from the cache. Each finished
    job is logged (``[k/n] jid...: ...``) and, on a terminal, advances a progress bar.

    Why not Prefect's own fan-out: one task per job calling the three tasks, mapped with
    ``.map`` under the same bounded runner, cut the same bytes but took 1.12x the time per
    job with a warm page cache and 2.1x with a cold one (``benchmarks/bench_create.py``, 1
    and 5 jobs of 4089 x 4089, best of 3 interleaved runs, 2 AMD EPYC vCPUs).
    """
    opts = params.cutouts
    with dask_log_length(opts), make_task_runner(opts) as runner:
        return _run(_Jobs(runner, specs, output_dir, opts), len(specs))


def _run(jobs: _Jobs, n: int) -> tuple[list[JobCutouts | JobRejection], int]:
    """The loop of :func:`run_jobs`: submit, wait, log, until every job is finished."""
    logger = get_run_logger()
    results: list[JobCutouts | JobRejection] = []
    from_cache = 0
    for _ in range(jobs.opts.workers):
        jobs.start_next()
    with progress_bar("jobs", n) as advance:
        while jobs.inflight:
            stage, spec, chain = jobs.next_done()
            done = f"[{len(results) + 1}/{n}] {spec.job_id}:"
            if not chain[-1].state.is_completed():
                reason = _failure_reason(stage, chain[-1], jobs.opts.retries)
                logger.error("%s rejected: %s", done, reason)
                results.append(reject_job(spec, JobError(spec.job_id, reason)))  # rows counted
            elif jobs.submit_after(stage, spec, chain):
                continue
            else:
                cached = all(f.state.is_completed() and f.state.name == "Cached" for f in chain)
                from_cache += cached
                results.append(chain[-1].result())
                _log_job(logger, done, results[-1], cached)
            forget_links(chain)
            advance()
            jobs.start_next()
    return results, from_cache


def forget_links(futures: list[PrefectFuture]) -> int:
    """Drop the flow run's links from a finished job's task results to their states.

    Prefect links every task result, and each object directly inside it, to its task run's
    state until the flow run ends (``FlowRunContext.run_results``), so that a result passed
    to a later task is recorded as that task's input: 21 links and about 9 KiB a job here
    (PrefectHQ/prefect#12668), 9 MiB per thousand jobs held for nothing, since a finished
    job's results are passed to no other task. Returns the number of links dropped (0
    outside a flow run, or if Prefect no longer keeps them there).
    """
    from prefect.context import FlowRunContext

    links = getattr(FlowRunContext.get(), "run_results", None)
    if not isinstance(links, dict):
        return 0
    runs = {f.task_run_id for f in futures}
    stale = [key for key, (state, *_) in links.items() if state.state_details.task_run_id in runs]
    for key in stale:
        del links[key]
    return len(stale)
