"""The ``build_dataset`` flow: load, normalize, cutout, index, Croissant, smoke-train.

The flow only sequences and fans out; the science lives in ``tasks/``. Per-job tasks run
on a thread pool or a Dask cluster chosen per run (``cutouts.task_runner``);
at most ``cutouts.workers`` jobs are in flight, and each job's three tasks run back to back
so its images are read while still in the page cache.
"""

# No `from __future__ import annotations` here: Prefect validates flow parameters against the
# evaluated annotations (a served deployment fails to resolve `Params` otherwise).
import hashlib
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from croissant_cutouts.flows.runner import run_jobs
from croissant_cutouts.flows.summary import (
    RunSummary,
    publish_job_table,
    publish_summary,
    summary_from_index,
)
from croissant_cutouts.tasks.config import Params, load_params
from croissant_cutouts.tasks.contract import (
    CACHE_DIR,
    CROISSANT_FILE,
    INDEX_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PLOTS_DIR,
    REPORT_FILE,
    STAGE_DIR,
)
from croissant_cutouts.tasks.dataset.croissant import croissant_task
from croissant_cutouts.tasks.dataset.index import IndexSummary, index_task
from croissant_cutouts.tasks.infra.atomic import remove_temporaries
from croissant_cutouts.tasks.infra.caching import module_source_digest
from croissant_cutouts.tasks.infra.digests import file_digest
from croissant_cutouts.tasks.infra.extras import require_extra
from croissant_cutouts.tasks.infra.lock import dataset_lock
from croissant_cutouts.tasks.infra.memory import release_freed
from croissant_cutouts.tasks.infra.outdir import (
    claim_output_dir,
    guard_foreign_outputs,
)
from croissant_cutouts.tasks.infra.versions import step_modules
from croissant_cutouts.tasks.inputs.catalogs import LabelOptions
from croissant_cutouts.tasks.inputs.load import JobSpec
from croissant_cutouts.tasks.inputs.remote import is_remote
from croissant_cutouts.tasks.inputs.select import Selection, plan_jobs
from croissant_cutouts.tasks.verify import verify_task

__all__ = [
    "build_dataset", "clean_temporaries", "cut_and_index", "step_outputs", "train_step",
    "verify_step",
]

STEPS = ("create", "croissant", "train")
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
        guard_foreign_outputs(out_dir, step_outputs(out_dir, steps))
    with dataset_lock(out_dir):
        clean_temporaries(out_dir)
        return _build(input_dir, out_dir, params, steps, t0)


def clean_temporaries(out_dir: Path) -> None:
    """Remove what killed runs left half-written (we hold the lock: nobody else writes)."""
    removed = remove_temporaries(out_dir)
    if removed:
        get_run_logger().info("removed %d temporary files of an interrupted run", removed)


def step_outputs(out_dir: Path, steps: list[str]) -> list[Path]:
    """Files the croissant and train steps write into a dataset folder."""
    names = {"croissant": [CROISSANT_FILE], "train": [METRICS_FILE, REPORT_FILE, PLOTS_DIR]}
    return [out_dir / n for s in steps for n in names.get(s, [])]


def _build(
    input_dir: str, out_dir: Path, params: Params, steps: list[str], t0: float
) -> RunSummary:
    """Body of :func:`build_dataset`, run while holding the dataset's lock."""
    summary = RunSummary(dataset=str(out_dir.resolve()))
    specs: list[JobSpec] = []
    if "create" in steps:
        specs = cut_and_index(input_dir, out_dir, params, summary)
        if summary.cutouts == 0:
            summary.seconds = time.perf_counter() - t0
            return summary
    else:
        summary_from_index(summary, out_dir)
    if "croissant" in steps:
        summary.croissant = croissant_task(
            str(out_dir / INDEX_FILE), str(out_dir / CROISSANT_FILE), params.croissant
        )
    if "train" in steps:
        key = dataset_fingerprint(specs, out_dir) if "create" in steps else None
        summary.metrics = train_step(out_dir, params, key)
    verify_step(input_dir, out_dir, params, steps)
    summary.seconds = time.perf_counter() - t0
    get_run_logger().info(summary.line())
    gallery = None if is_remote(input_dir) else Path(input_dir) / "gallery.png"
    publish_summary(summary, out_dir, gallery)
    return summary


def cut_and_index(
    input_dir: str, out_dir: Path, params: Params, summary: RunSummary, splits: bool = True
) -> list[JobSpec]:
    """Plan the jobs, cut them (:func:`~croissant_cutouts.flows.runner.run_jobs`), write the
    index; fill ``summary``.

    The create step of :func:`build_dataset`, and the first step of ``predict_jobs``, whose
    output's splits mean nothing (``splits=False``: their notes are left out).
    """
    logger = get_run_logger()
    specs, unavailable = plan_jobs(
        input_dir,
        params.cutouts.input_layout,
        LabelOptions(**params.labels.model_dump()),
        Selection(
            tuple(params.select.field_files),
            tuple(str(f) for f in params.select.fields),
            params.select.mjd_max,
        ),
        stage_dir=out_dir / STAGE_DIR,
    )
    logger.info("%d job folders to read in %s", len(specs), input_dir)
    for rej in unavailable:
        logger.warning("%s rejected: %s", rej.job_id, rej.reason)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, summary.from_cache = run_jobs(specs, str(out_dir), params)
    release_freed()  # the jobs' freed images and tables, before the index is written
    results = [*results, *unavailable]
    index: IndexSummary = index_task(results, str(out_dir), params.splits)
    publish_job_table(results)
    summary.jobs, summary.jobs_rejected = index.jobs, index.jobs_rejected
    summary.cutouts, summary.real, summary.bogus = index.cutouts, index.real, index.bogus
    summary.rejected = index.rows_rejected
    summary.notes = [n for n in index.notes if splits or n not in index.split_notes]
    for note in summary.notes:
        logger.warning(note)
    if index.cutouts == 0:
        logger.error("no cutout could be written; see %s", index.rejects_path)
    return specs


def verify_step(input_dir: str, out_dir: Path, params: Params, steps: list[str]) -> None:
    """The last step: check the dataset against the contract (raises ``DatasetInvalid``).

    A local input is recounted, so every catalog row is accounted for.
    """
    recount = "create" in steps and not is_remote(input_dir)
    verify_task(
        str(out_dir),
        input_dir if recount else None,
        require_croissant="croissant" in steps or (out_dir / CROISSANT_FILE).exists(),
        input_layout=params.cutouts.input_layout,
    )


def train_step(out_dir: Path, params: Params, dataset_key: str | None = None) -> dict[str, Any]:
    """Run the smoke-train task (torch is imported only when training).

    With a ``dataset_key`` the result is cached in the dataset's own cache folder, so an
    unchanged dataset is not trained again while its ``metrics.json`` exists.
    """
    require_extra("train", "training (the train step)")
    from croissant_cutouts.tasks.evaluate.train import smoke_train_task

    written = all((out_dir / name).exists() for name in (METRICS_FILE, MODEL_FILE))
    fresh = dataset_key is None or not written
    train = smoke_train_task.with_options(
        result_storage=(out_dir / CACHE_DIR).resolve(), refresh_cache=fresh
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
