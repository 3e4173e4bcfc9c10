"""Scoring the cutouts of new jobs with a saved model: ``predictions.csv`` and its summary.

:func:`score_dataset` reads a folder written by the cutout steps (``master_index.csv`` and
the cutouts, any layout), runs the model of ``model.pt`` (:mod:`.artifact`) over every
cutout and writes, atomically:

- ``predictions.csv``: one row per cutout, in index order: ``cutout_id`` (as in the index),
  ``job_id``, ``x``, ``y`` (0-based pixels), ``score`` (the model's probability of real, in
  [0, 1], 9 significant digits), ``real`` (1 when the logit is above the model's stored
  threshold, the rule its threshold was chosen with; else 0) and ``label`` (1 real, 0 bogus,
  empty for a job without truth);
- ``predictions.json``: the model (file, sha256, threshold, the dataset it was trained on),
  counts, and, when the jobs carry truth of both classes, ROC AUC with its bootstrap 95 %
  interval and the false-negative and false-positive rates at the threshold; for a model
  that reads catalog features, the fraction of rows missing each (``catalog_missing``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from croissant_cutouts.tasks.contract import (
    INDEX_FILE,
    INDEX_SCHEMA,
    LIMITS_FILE,
    PREDICTIONS_FILE,
    PREDICTIONS_SUMMARY,
)
from croissant_cutouts.tasks.evaluate.artifact import load_model
from croissant_cutouts.tasks.evaluate.bootstrap import bootstrap_ci
from croissant_cutouts.tasks.evaluate.data import (
    CutoutDataset,
    check_record_paths,
    make_loader,
)
from croissant_cutouts.tasks.evaluate.features import feature_matrix
from croissant_cutouts.tasks.evaluate.limits import limits_per_row
from croissant_cutouts.tasks.evaluate.metrics import rates_at_threshold, roc_auc
from croissant_cutouts.tasks.evaluate.model import (
    EVAL_BATCH,
    catalog_names,
    predict_logits,
    reads_limits,
)
from croissant_cutouts.tasks.infra.atomic import atomic_write_text
from croissant_cutouts.tasks.infra.caching import ContentPolicy
from croissant_cutouts.tasks.infra.digests import sha256_file
from croissant_cutouts.tasks.infra.versions import step_modules

__all__ = ["PREDICTION_COLUMNS", "score_dataset", "score_task"]

log = logging.getLogger(__name__)

#: Columns of ``predictions.csv``, in order.
PREDICTION_COLUMNS = ("cutout_id", "job_id", "x", "y", "score", "real", "label")
_READ = ("cutout_id", "job_id", "x", "y", "label", "cutout_filename", "row")


def _index(folder: Path, features: list[str]) -> pd.DataFrame:
    """The columns of ``master_index.csv`` scoring needs (``features`` where the index has
    them); paths checked to stay inside ``folder``."""
    wanted = {*_READ, *features}
    dtypes = {c.name: c.dtype for c in INDEX_SCHEMA if c.name in _READ}
    index = pd.read_csv(folder / INDEX_FILE, usecols=lambda c: c in wanted, dtype=dtypes)
    absent = [c for c in _READ if c not in index]
    if absent:
        raise ValueError(f"{folder / INDEX_FILE}: no column {', '.join(absent)}")
    check_record_paths(index, "cutout_filename", folder, folder / INDEX_FILE)
    return index


def _truth(labels: pd.Series, logits: np.ndarray, threshold: float, seed: int) -> dict:
    """ROC AUC (and interval) and rates at the threshold on the labelled rows, if any."""
    known = labels.notna().to_numpy()
    y = labels[known].astype(int).to_numpy()
    out: dict[str, Any] = {"labelled": int(known.sum()), "real": int(y.sum()),
                           "bogus": int(len(y) - y.sum())}
    if len(set(y.tolist())) < 2:
        out["note"] = "truth of one class or none: no ROC AUC"
        return out
    score = logits[known].astype(np.float64)
    rates = rates_at_threshold(y, score, threshold)
    out.update(
        roc_auc=roc_auc(y, score),
        roc_auc_ci95=bootstrap_ci(y, score, seed=seed)["roc_auc"],
        fnr_at_threshold=rates["fnr"],
        fpr_at_threshold=rates["fpr"],
    )
    return out


def score_dataset(
    folder: str | Path,
    model_path: str | Path,
    batch_size: int = EVAL_BATCH,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score every cutout of ``folder`` with the model in ``model_path``.

    Parameters
    ----------
    folder : path-like
        A folder the cutout steps wrote (``master_index.csv`` and the cutouts, any layout).
    model_path : path-like
        ``model.pt`` of a smoke-trained dataset (read with ``weights_only=True``).
    batch_size : int
        Cutouts per forward pass.
    device : {"cpu", "cuda"}
        Where the model runs.

    Returns
    -------
    dict
        What ``predictions.json`` holds (see the module docstring).

    Raises
    ------
    croissant_cutouts.tasks.evaluate.artifact.ModelError
        When the model file cannot be used (damaged, pickled objects, another contract).
    croissant_cutouts.tasks.contract.OutsideDataset
        When an index path leads outside ``folder``.
    """
    folder, model_path = Path(folder), Path(model_path)
    model, meta = load_model(model_path, device)
    names = catalog_names(model)
    index = _index(folder, names)
    limits, catalog = _model_inputs(folder, model, names, index)
    cutouts = CutoutDataset([str(folder / f) for f in index["cutout_filename"]],
                            np.zeros(len(index)), in_memory=False, rows=index["row"],
                            limits=limits, catalog=catalog)
    logits = predict_logits(model, make_loader(cutouts, batch_size), device)
    threshold = float(meta["threshold"])
    table = index[["cutout_id", "job_id", "x", "y"]].assign(
        score=[f"{s:.9g}" for s in 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))],
        real=(logits > threshold).astype(int),
        label=index["label"],
    )
    atomic_write_text(folder / PREDICTIONS_FILE,
                      table[list(PREDICTION_COLUMNS)].to_csv(index=False))
    summary = {
        "predictions": PREDICTIONS_FILE,
        "model": _model_summary(model_path, meta),
        "cutouts": len(index),
        "called_real": int((logits > threshold).sum()),
        "truth": _truth(index["label"], logits, threshold, seed=0),
    }
    if catalog is not None:
        summary["catalog_missing"] = {k: float(v) for k, v in catalog.isna().mean().items()}
    atomic_write_text(folder / PREDICTIONS_SUMMARY,
                      json.dumps(summary, indent=2, default=_plain) + "\n")
    auc = summary["truth"].get("roc_auc")
    log.info("scored %d cutouts with %s: %d called real%s", len(index), model_path.name,
             summary["called_real"], f"; ROC AUC against truth {auc:.4f}" if auc else "")
    return summary


def _model_inputs(
    folder: Path, model: Any, names: list[str], index: pd.DataFrame
) -> tuple[np.ndarray | None, pd.DataFrame | None]:
    """What ``model`` reads beside the pixels, per index row: the job's ZScale limits (as the
    index step wrote them) and the catalog features ``names`` (NaN where the index or a job
    lacks them; a column missing from the whole index is logged)."""
    limits = catalog = None
    if reads_limits(model):
        limits = limits_per_row(pd.read_csv(folder / LIMITS_FILE, dtype={"job_id": str}),
                                index["job_id"])
    if names:
        catalog = pd.DataFrame(feature_matrix(index, names), columns=names)
        absent = [name for name in names if name not in index]
        if absent:
            log.warning("%s has no column %s, which the model reads: scored as missing values",
                        folder / INDEX_FILE, ", ".join(absent))
    return limits, catalog


def _model_summary(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The model file, its digest, its threshold and the dataset it was trained on."""
    return {
        "file": str(path.resolve()),
        "sha256": sha256_file(path),
        "threshold": float(meta["threshold"]),
        **{k: meta.get(k) for k in ("threshold_on", "threshold_target_fpr", "contract_version",
                                    "architecture", "architecture_version")},
        "trained_on": meta.get("dataset"),
    }


def _plain(value: Any) -> Any:
    """JSON for numpy scalars; NaN stays NaN (as in metrics.json)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


@task(
    name="score",
    cache_policy=ContentPolicy(modules=step_modules("score"), exclude=("device",)),
    persist_result=True,
)
def score_task(
    folder: str, model_path: str, model_sha256: str, index_sha256: str,
    batch_size: int = EVAL_BATCH, device: str = "cpu",
) -> dict[str, Any]:
    """Prefect task: :func:`score_dataset`; returns the summary.

    ``model_sha256`` and ``index_sha256`` (the index holds every cutout's sha256) only enter
    the cache key: the same model on the same cutouts is served from the cache while
    ``predictions.csv`` exists (the flow forces a fresh run when it does not).
    """
    return score_dataset(folder, model_path, batch_size, device)

