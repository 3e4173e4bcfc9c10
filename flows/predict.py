"""The ``predict_jobs`` flow: score tonight's jobs with a saved model.

The same load, normalize and cutout tasks as a dataset build (cached and retried per job,
either input layout, labelled or not), then the ``score`` task: ``predictions.csv`` and
``predictions.json`` beside the cutouts (:mod:`croissant_cutouts.tasks.evaluate.score`).
"""

# No `from __future__ import annotations` here: Prefect validates flow parameters against the
# evaluated annotations (see build.py).
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from croissant_cutouts.flows.build import clean_temporaries, cut_and_index, verify_step
from croissant_cutouts.flows.summary import RunSummary, publish_summary
from croissant_cutouts.tasks.config import Params, load_params
from croissant_cutouts.tasks.contract import CACHE_DIR, INDEX_FILE, PREDICTIONS_FILE
from croissant_cutouts.tasks.infra.digests import sha256_file
from croissant_cutouts.tasks.infra.extras import require_extra
from croissant_cutouts.tasks.infra.lock import dataset_lock
from croissant_cutouts.tasks.infra.outdir import claim_output_dir

__all__ = ["predict_jobs"]


@flow(name="predict_jobs")
def predict_jobs(
    model_path: str = "data/dataset/model.pt",
    input_dir: str = "data/tonight",
    output_dir: str = "data/predictions",
    params: Params | None = None,
    params_file: str | None = None,
) -> RunSummary:
    """Cut the candidates of the jobs in ``input_dir`` and score them with ``model_path``.

    Parameters
    ----------
    model_path : str
        ``model.pt`` of a trained dataset. Checked first: a model that cannot be used (its
        contract version, a damaged or pickled file) stops the run before any job is read.
    input_dir, output_dir : str
        Job folders to read; folder to write the cutouts, their index and the predictions.
    params : Params, optional
        All parameters (``cutouts``, ``select``, ``labels``, ``train.device``). When absent
        they are read from ``params_file`` (``./params.yaml`` when it exists, else defaults).
    """
    t0 = time.perf_counter()
    params = params or load_params(params_file)
    require_extra("train", "scoring (cutouts predict)")
    from croissant_cutouts.tasks.evaluate.artifact import load_model

    load_model(model_path)  # refuse an unusable model before reading any job
    out_dir = Path(output_dir)
    claim_output_dir(out_dir, "cutouts predict")
    with dataset_lock(out_dir):
        clean_temporaries(out_dir)
        summary = RunSummary(dataset=str(out_dir.resolve()))
        cut_and_index(input_dir, out_dir, params, summary, splits=False)
        if summary.cutouts:
            summary.predictions = _score(out_dir, Path(model_path), params)
            verify_step(input_dir, out_dir, params, ["create"])
    summary.seconds = time.perf_counter() - t0
    get_run_logger().info(summary.line())
    publish_summary(summary, out_dir, None)
    return summary


def _score(out_dir: Path, model_path: Path, params: Params) -> dict[str, Any]:
    """The score task, cached on the model's and the index's sha256."""
    from croissant_cutouts.tasks.evaluate.model import resolve_device
    from croissant_cutouts.tasks.evaluate.score import score_task

    task = score_task.with_options(
        result_storage=(out_dir / CACHE_DIR).resolve(),
        refresh_cache=not (out_dir / PREDICTIONS_FILE).exists(),
        retries=params.cutouts.retries,
        retry_delay_seconds=params.cutouts.retry_delay_s,
    )
    return task(
        str(out_dir), str(model_path.resolve()), sha256_file(model_path),
        sha256_file(out_dir / INDEX_FILE), device=str(resolve_device(params.train.device)),
    )
