"""The ``build_dataset`` flow: load, normalize, cutout, index, Croissant, smoke-train.

The flow only sequences and fans out; the science lives in ``tasks/``. Per-job tasks run
in the subflow ``cut_jobs`` on a thread pool or a Dask cluster (``cutouts.task_runner``);
at most ``cutouts.workers`` jobs are in flight, and each job's three tasks run back to back
so its images are read while still in the page cache.
"""

# No `from __future__ import annotations` here: Prefect validates flow parameters against the
# evaluated annotations (a served deployment fails to resolve `Params` otherwise).
import contextlib
import hashlib
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from croissant_cutouts.tasks.config import CutoutParams, Params, load_params
from croissant_cutouts.tasks.contract import (
    CROISSANT_FILE,
    INDEX_FILE,
    METRICS_FILE,
    PLOTS_DIR,
    REJECTS_FILE,
    REPORT_FILE,
    STATE_DIR,
)
from croissant_cutouts.tasks.dataset.croissant import croissant_task
from croissant_cutouts.tasks.dataset.cutout import JobCutouts, cutout_task, outputs_present
from croissant_cutouts.tasks.dataset.index import IndexSummary, index_task
from croissant_cutouts.tasks.dataset.normalize import normalize_task
from croissant_cutouts.tasks.errors import JobError, JobRejection
from croissant_cutouts.tasks.infra.atomic import remove_temporaries
from croissant_cutouts.tasks.infra.caching import is_transient, module_source_digest
from croissant_cutouts.tasks.infra.digests import file_digest
from croissant_cutouts.tasks.infra.lock import dataset_lock
from croissant_cutouts.tasks.infra.outdir import (
    claim_output_dir,
    guard_foreign_outputs,
    is_dataset_dir,
)
from croissant_cutouts.tasks.infra.versions import step_modules
from croissant_cutouts.tasks.inputs.layouts import LabelOptions
from croissant_cutouts.tasks.inputs.load import JobSpec, load_task, reject_job
from croissant_cutouts.tasks.inputs.remote import is_remote
from croissant_cutouts.tasks.inputs.select import Selection, plan_jobs
from croissant_cutouts.tasks.verify import verify_task

__all__ = [
    "RunSummary",
    "build_dataset",
    "cut_jobs",
    "describe_dataset",
    "make_task_runner",
    "train_dataset",
]

STEPS = ("create", "croissant", "train")
@dataclass
class RunSummary:
    """What a run did; :meth:`line` is the one-line summary every command ends with."""

    dataset: str
    jobs: int = 0
    from_cache: int = 0
    jobs_rejected: int = 0
    cutouts: int = 0
    real: int = 0
    bogus: int = 0
    rejected: int = 0
    seconds: float = 0.0
    croissant: str | None = None
    metrics: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"jobs: {self.jobs} ({self.from_cache} from cache, {self.jobs_rejected} rejected), "
            f"cutouts: {self.cutouts}, real: {self.real}, bogus: {self.bogus}, "
            f"rejected: {self.rejected}, seconds: {self.seconds:.1f}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _failure_reason(stage: str, future: PrefectFuture, retries: int) -> str:
    """Why a per-job task failed: its final exception, and whether it was retried."""
    try:
        future.result()
    except Exception as exc:  # the task's final exception, after its retries
        if is_transient(exc) and retries:
            return f"{stage} failed after {retries + 1} attempts: {type(exc).__name__}: {exc}"
        return f"{stage} failed (not retried): {type(exc).__name__}: {exc}"
    return f"{stage} failed"


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
    from prefect_dask import DaskTaskRunner

    if opts.dask_address:
        return DaskTaskRunner(address=opts.dask_address)
    cluster: dict[str, Any] = {
        "n_workers": opts.workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }
    api = _api_url()
    if api:  # workers report to this run's API (else each would start a temporary server)
        cluster["env"] = {"PREFECT_API_URL": api}
    return DaskTaskRunner(cluster_kwargs=cluster)


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


@flow(name="cut_jobs")
def cut_jobs(
    specs: list[JobSpec], output_dir: str, params: Params
) -> tuple[list[JobCutouts | JobRejection], int]:
    """Run load -> normalize -> cutout for every job, ``workers`` jobs at a time.

    A subflow so that its task runner (:func:`make_task_runner`) is chosen by the params
    of each run; returns the per-job results and how many jobs came whole from the cache.
    """
    out_dir = Path(output_dir)
    logger = get_run_logger()
    opts = params.cutouts
    storage = (out_dir / STATE_DIR / "cache").resolve()
    common = dict(
        result_storage=storage, retries=opts.retries, retry_delay_seconds=opts.retry_delay_s
    )
    load, normalize, cutout = (
        t.with_options(**common) for t in (load_task, normalize_task, cutout_task)
    )
    # A cached cutout result is only good while its files exist: else run and overwrite it.
    cutout_refresh = cutout.with_options(refresh_cache=True)
    queue: deque[JobSpec] = deque(specs)
    inflight: dict[PrefectFuture, tuple[str, JobSpec, list[PrefectFuture]]] = {}
    results: list[JobCutouts | JobRejection] = []
    from_cache = 0
    total = len(specs)

    # On one machine, ask the kernel to read the next jobs' files ahead while these are cut.
    prefetch = opts.task_runner == "threads"

    def start_next() -> None:
        if queue:
            spec = queue.popleft()
            fut = load.submit(spec)
            inflight[fut] = ("load", spec, [fut])
            if prefetch and len(queue) >= opts.workers:
                read_ahead(queue[opts.workers - 1])

    for _ in range(opts.workers):
        start_next()
    while inflight:
        fut = next(as_completed(list(inflight)))
        stage, spec, chain = inflight.pop(fut)
        fut.wait()
        if not fut.state.is_completed():
            reason = _failure_reason(stage, fut, opts.retries)
            logger.error("[%d/%d] %s rejected: %s", len(results) + 1, total, spec.job_id, reason)
            results.append(reject_job(spec, JobError(spec.job_id, reason)))  # rows counted
            start_next()
            continue
        if stage == "load":
            nxt = normalize.submit(fut)
            inflight[nxt] = ("normalize", spec, [*chain, nxt])
            continue
        if stage == "normalize":
            present = outputs_present(out_dir, spec.job_id, opts.layout)
            task = cutout if present else cutout_refresh
            nxt = task.submit(chain[0], fut, str(out_dir), opts.batch, opts.layout)
            inflight[nxt] = ("cutout", spec, [*chain, nxt])
            continue
        result = fut.result()
        cached = all(f.state.is_completed() and f.state.name == "Cached" for f in chain)
        from_cache += cached
        results.append(result)
        done = f"[{len(results)}/{total}] {spec.job_id}:"
        if isinstance(result, JobRejection):
            logger.warning("%s rejected: %s", done, result.reason)
        else:
            logger.info(
                "%s %d cutouts, %d rows rejected%s",
                done,
                len(result.rows),
                len(result.row_rejects),
                " (from cache)" if cached else f" in {result.seconds:.2f} s",
            )
        start_next()
    return results, from_cache


@flow(name="build_dataset", task_runner=ThreadPoolTaskRunner(max_workers=2))
def build_dataset(
    input_dir: str = "./mini_dataset",
    output_dir: str = "./hackathon_dataset",
    params: Params | None = None,
    steps: list[str] | None = None,
    params_file: str | None = None,
) -> RunSummary:
    """Build a cutout dataset from the ``jid*`` folders of ``input_dir``.

    Parameters
    ----------
    input_dir, output_dir : str
        Job folders to read; dataset root to write.
    params : Params, optional
        All parameters. When absent they are read from ``params_file``.
    steps : list of str, optional
        Any of ``create`` (load, normalize, cutout, index), ``croissant``, ``train``;
        default all three.
    params_file : str, optional
        A ``params.yaml``; absent: ``./params.yaml`` when it exists, else built-in defaults
        (what a scheduled deployment uses).
    """
    t0 = time.perf_counter()
    params = params or load_params(params_file)
    steps = list(steps or STEPS)
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from {STEPS}")
    out_dir = Path(output_dir)
    if "create" in steps:
        claim_output_dir(out_dir, "cutouts " + ("create" if steps == ["create"] else "run"))
    else:
        guard_foreign_outputs(out_dir, _step_outputs(out_dir, steps))
    with dataset_lock(out_dir):
        _clean_temporaries(out_dir)
        return _build(input_dir, out_dir, params, steps, t0)


@contextlib.contextmanager
def _own_dataset(out_dir: Path) -> Iterator[None]:
    """Lock (and tidy) ``out_dir`` when it is a dataset of ours; leave other folders alone."""
    if not is_dataset_dir(out_dir):
        yield
        return
    with dataset_lock(out_dir):
        _clean_temporaries(out_dir)
        yield


def _clean_temporaries(out_dir: Path) -> None:
    """Remove what killed runs left half-written (we hold the lock: nobody else writes)."""
    removed = remove_temporaries(out_dir)
    if removed:
        get_run_logger().info("removed %d temporary files of an interrupted run", removed)


def _step_outputs(out_dir: Path, steps: list[str]) -> list[Path]:
    """Files the croissant and train steps write into a dataset folder."""
    names = {"croissant": [CROISSANT_FILE], "train": [METRICS_FILE, REPORT_FILE, PLOTS_DIR]}
    return [out_dir / n for s in steps for n in names.get(s, [])]


def _build(
    input_dir: str, out_dir: Path, params: Params, steps: list[str], t0: float
) -> RunSummary:
    """Body of :func:`build_dataset`, run while holding the dataset's lock."""
    logger = get_run_logger()
    summary = RunSummary(dataset=str(out_dir.resolve()))
    if "create" in steps:
        specs, unavailable = plan_jobs(
            input_dir,
            params.cutouts.input_layout,
            LabelOptions(**params.labels.model_dump()),
            Selection(
                tuple(params.select.field_files),
                tuple(str(f) for f in params.select.fields),
                params.select.mjd_max,
            ),
            stage_dir=out_dir / STATE_DIR / "inputs",
        )
        logger.info("%d job folders to read in %s", len(specs), input_dir)
        for rej in unavailable:
            logger.warning("%s rejected: %s", rej.job_id, rej.reason)
        out_dir.mkdir(parents=True, exist_ok=True)
        runner = make_task_runner(params.cutouts)
        results, summary.from_cache = cut_jobs.with_options(task_runner=runner)(
            specs, str(out_dir), params
        )
        results = [*results, *unavailable]
        index: IndexSummary = index_task(results, str(out_dir), params.splits)
        publish_job_table(results)
        summary.jobs, summary.jobs_rejected = index.jobs, index.jobs_rejected
        summary.cutouts, summary.real, summary.bogus = index.cutouts, index.real, index.bogus
        summary.rejected = index.rows_rejected
        summary.notes = index.notes
        for note in index.notes:
            logger.warning(note)
        if index.cutouts == 0:
            logger.error("no cutout could be written; see %s", index.rejects_path)
            summary.seconds = time.perf_counter() - t0
            return summary
    else:
        _fill_from_index(summary, out_dir)
    csv_path = out_dir / INDEX_FILE
    if "croissant" in steps:
        summary.croissant = croissant_task(
            str(csv_path), str(out_dir / CROISSANT_FILE), params.croissant
        )
    if "train" in steps:
        key = dataset_fingerprint(specs, out_dir) if "create" in steps else None
        summary.metrics = _train(out_dir, params, key)
    # last step: check the dataset against the contract (raises DatasetInvalid, listing
    # what is wrong); a local input is recounted, so every catalog row is accounted for
    recount = "create" in steps and not is_remote(input_dir)
    verify_task(
        str(out_dir),
        input_dir if recount else None,
        require_croissant="croissant" in steps or (out_dir / CROISSANT_FILE).exists(),
        input_layout=params.cutouts.input_layout,
    )
    summary.seconds = time.perf_counter() - t0
    logger.info(summary.line())
    gallery = None if is_remote(input_dir) else Path(input_dir) / "gallery.png"
    publish_summary(summary, out_dir, gallery)
    return summary


def job_counts(results: list[JobCutouts | JobRejection]) -> list[dict[str, Any]]:
    """One row per job: cutouts, real, bogus, rejected rows, and the reason of a rejected job."""
    rows = []
    for res in sorted(results, key=lambda r: r.job_id):
        if isinstance(res, JobRejection):
            rows.append(
                {
                    "job_id": res.job_id,
                    "cutouts": 0,
                    "real": 0,
                    "bogus": 0,
                    "rejected": res.n_catalog_rows,
                    "job_rejected": res.reason,
                    "worker": "",
                }
            )
            continue
        labels = res.rows["label"]
        rows.append(
            {
                "job_id": res.job_id,
                "cutouts": len(res.rows),
                "real": int((labels == 1).sum()),
                "bogus": int((labels == 0).sum()),
                "rejected": len(res.row_rejects),
                "job_rejected": "",
                "worker": res.worker,
            }
        )
    return rows


def publish_job_table(results: list[JobCutouts | JobRejection]) -> None:
    """A table artifact of per-job counts, shown on the flow run in the Prefect UI."""
    create_table_artifact(
        key="job-counts",
        table=job_counts(results),
        description="Per job: cutouts written, real, bogus, rejected catalog rows, and the "
        "worker (host:pid) that cut it.",
    )


def publish_summary(summary: RunSummary, out_dir: Path, gallery: Path | None = None) -> None:
    """A markdown artifact: the summary line, the test metrics, links to the report and plots."""
    lines = [f"# Dataset {summary.dataset}", "", f"`{summary.line()}`", ""]
    models = (summary.metrics or {}).get("models") or {}
    if models:
        lines += [
            "| model (test split) | ROC AUC | PR AUC | FNR at 1 % FPR | ECE |",
            "|---|---|---|---|---|",
        ]
        for name, block in models.items():
            t = block.get("test") or {}
            cells = [_cell(t.get(k)) for k in ("roc_auc", "pr_auc", "fnr_at_1pct_fpr", "ece")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        gap = (summary.metrics or {}).get("leakage", {}).get("gap")
        lines += ["", f"Leakage gap (random per-cutout split AUC minus this one): {_cell(gap)}", ""]
    links = [
        (REPORT_FILE, out_dir / REPORT_FILE),
        (CROISSANT_FILE, out_dir / CROISSANT_FILE),
        (INDEX_FILE, out_dir / INDEX_FILE),
        (REJECTS_FILE, out_dir / REJECTS_FILE),
        (METRICS_FILE, out_dir / METRICS_FILE),
    ]
    links += [
        (f"{path.stem} plot", path) for path in sorted((out_dir / PLOTS_DIR).glob("*.png"))
    ]
    if gallery is not None:
        links.append(("simulated gallery", gallery))
    lines += [f"- [{name}](file://{path.resolve()})" for name, path in links if path.exists()]
    for note in summary.notes:
        lines.append(f"- note: {note}")
    create_markdown_artifact(
        key="dataset-summary",
        markdown="\n".join(lines),
        description="Summary of the dataset build: test metrics, report and plots.",
    )


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _train(out_dir: Path, params: Params, dataset_key: str | None = None) -> dict[str, Any]:
    """Run the smoke-train task (torch is imported only when training).

    With a ``dataset_key`` the result is cached in the dataset's own cache folder, so an
    unchanged dataset is not trained again while its ``metrics.json`` exists.
    """
    from croissant_cutouts.tasks.evaluate.train import smoke_train_task

    fresh = dataset_key is None or not (out_dir / METRICS_FILE).exists()
    train = smoke_train_task.with_options(
        result_storage=(out_dir / STATE_DIR / "cache").resolve(), refresh_cache=fresh
    )
    return train(
        str(out_dir), str(out_dir / CROISSANT_FILE), params.train, dataset_key, params.splits
    )


def dataset_fingerprint(specs: list[JobSpec], out_dir: Path) -> str:
    """Hash of every job's input bytes, the index and the code that made the dataset."""
    h = hashlib.sha256()
    for spec in specs:
        try:
            files = spec.input_files()
        except ValueError:  # a rejected job: its name still counts
            files = []
        h.update(spec.job_id.encode())
        for f in files:
            h.update(file_digest(f).encode())
    h.update(file_digest(out_dir / INDEX_FILE).encode())
    h.update(module_source_digest(step_modules("dataset")).encode())
    return h.hexdigest()


def _fill_from_index(summary: RunSummary, out_dir: Path) -> None:
    """Counts of an existing dataset, for commands that do not cut."""
    import pandas as pd

    index = pd.read_csv(out_dir / INDEX_FILE, usecols=["job_id", "label"])
    summary.jobs = index["job_id"].nunique()
    summary.cutouts = len(index)
    summary.real = int((index["label"] == 1).sum())
    summary.bogus = int((index["label"] == 0).sum())
    rejects = out_dir / REJECTS_FILE
    if rejects.exists():
        rej = pd.read_csv(rejects)
        summary.rejected = int(rej["catalog_row"].notna().sum())
        summary.jobs_rejected = int(rej["catalog_row"].isna().sum())
        summary.jobs += summary.jobs_rejected


@flow(name="describe_dataset")
def describe_dataset(csv_path: str, output: str, params: Params | None = None) -> RunSummary:
    """Write ``croissant.json`` for an existing index (the seed's ``generate_croissant.py``)."""
    t0 = time.perf_counter()
    params = params or Params()
    out_dir = Path(csv_path).parent
    summary = RunSummary(dataset=str(out_dir.resolve()))
    guard_foreign_outputs(out_dir, [Path(output)])
    with _own_dataset(out_dir):
        _fill_from_index(summary, out_dir)
        summary.croissant = croissant_task(csv_path, output, params.croissant)
    summary.seconds = time.perf_counter() - t0
    get_run_logger().info(summary.line())
    return summary


@flow(name="train_dataset")
def train_dataset(dataset_dir: str, params: Params | None = None) -> RunSummary:
    """Smoke-train on an existing dataset (the seed's ``test_croissant_dataset.py``)."""
    t0 = time.perf_counter()
    params = params or Params()
    out_dir = Path(dataset_dir)
    summary = RunSummary(dataset=str(out_dir.resolve()))
    guard_foreign_outputs(out_dir, _step_outputs(out_dir, ["train"]))
    with _own_dataset(out_dir):
        _fill_from_index(summary, out_dir)
        summary.metrics = _train(out_dir, params)
    summary.seconds = time.perf_counter() - t0
    get_run_logger().info(summary.line())
    return summary
