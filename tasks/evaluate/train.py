"""Smoke-train step: prove a dataset by training a small CNN on it.

The index is read **through the Croissant metadata** (mlcroissant records of
``transient_candidates``), the cutouts from disk, in either output layout (one file per
cutout, or one memory-mapped shard per job), a whole batch at a time
(:class:`CutoutDataset`, :func:`make_loader`). Train and validation are split **by
job**, never a job on both sides, with a fixed seed. The real class is rare (typically 3-15 %),
so the loss weighs real candidates by ``n_bogus / n_real`` of the training split, and the report
sets the validation metrics beside the accuracy of always predicting the training majority
class: on a 90 %-bogus set, 0.9 accuracy means nothing by itself.

Every test ROC AUC and FNR at 1 % FPR comes with a 95 % percentile-bootstrap interval
(:mod:`.bootstrap`: 1,000 resamples of the test cutouts, stratified by class, seeded with
``train.seed``). A dataset of too few sky fields or jobs to split (every cutout in ``train``)
is still trained on: the thresholds are then chosen and the metrics measured on the training
set, and ``metrics.json`` (``"evaluated_on": "train"``, ``"held_out": false``, ``caution``)
and ``report.md`` say that these figures prove nothing about unseen data.

Pure functions first (no Prefect needed to test them); :func:`smoke_train_task` at the bottom
is the thin Prefect wrapper.

Conventions
-----------
- A cutout file holds shape (64, 64, 4) float32 in [0, 1], channels science, reference,
  difference, score (channel-last); a shard holds (N, 64, 64, 4), row ``row`` of the index
  being the cutout. The model takes (B, 4, 64, 64) (channel-first); reading transposes.
- Labels: 1 real, 0 bogus. Scores are logits (float32, unbounded); probabilities are
  ``sigmoid(logit)``. A candidate is *called real* when its score is **strictly above** the
  threshold, both for the 0.5 probability threshold and in :func:`fnr_at_fpr`.
"""


import importlib.metadata
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from croissant_cutouts.tasks.config import SplitParams, TrainParams
from croissant_cutouts.tasks.contract import (
    CROISSANT_FILE,
    INDEX_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PLOTS_DIR,
    REPORT_FILE,
    open_shard,
)
from croissant_cutouts.tasks.dataset.splits import SPLITS, deal_counts
from croissant_cutouts.tasks.evaluate.baselines import (
    gradient_boosting_scores,
    majority_scores,
    score_peak_scores,
)
from croissant_cutouts.tasks.evaluate.bootstrap import BOOTSTRAP_LEVEL, BOOTSTRAP_RESAMPLES
from croissant_cutouts.tasks.evaluate.metrics import (  # some re-exported
    completeness_by_mag,
    evaluate,
    fpr_by_kind,
    mag_bins,
    pr_curve,
    reliability_table,
    roc_auc,
    roc_curve,
    threshold_at_fpr,
)
from croissant_cutouts.tasks.evaluate.model import TrainedCNN, resolve_device, train_cnn
from croissant_cutouts.tasks.evaluate.prepare import Prepared, prepare_rows
from croissant_cutouts.tasks.infra.atomic import atomic_write_text
from croissant_cutouts.tasks.infra.caching import ContentPolicy
from croissant_cutouts.tasks.infra.digests import sha256_file
from croissant_cutouts.tasks.infra.versions import step_modules

__all__ = [
    "package_versions",
    "random_split",
    "smoke_train",
    "smoke_train_task",
]

log = logging.getLogger(__name__)


#: Test-split ROC AUC the CNN should reach on the default simulated data.
TARGET_TEST_AUC = 0.99
#: How each split reads in titles and log lines.
_SIDE_NAMES = {"test": "test split", "validation": "validation split", "train": "training set"}


# --------------------------------------------------------------------------- training


def _none_for_nan(value: Any) -> Any:
    """Copy of a JSON-able structure with non-finite floats replaced by ``None``."""
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {k: _none_for_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_none_for_nan(v) for v in value]
    return value


def random_split(n: int, splits: SplitParams, seed: int) -> np.ndarray:
    """Split names for ``n`` rows drawn per row (the leaky way), with the same fractions.

    As many rows per split as :func:`tasks.dataset.splits.deal_counts` deals groups, in the order
    of ``numpy.random.default_rng(seed)``.
    Used only to measure how much a per-cutout split flatters a model.
    """
    order = np.random.default_rng(seed).permutation(n)
    counts = deal_counts(
        n, {"train": splits.train, "validation": splits.validation, "test": splits.test}
    )
    n_test, n_val = counts["test"], counts["validation"]
    out = np.full(n, "train", dtype=object)
    out[order[:n_test]] = "test"
    out[order[n_test : n_test + n_val]] = "validation"
    return out


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape the numbers."""
    versions = {"python": platform.python_version()}
    for name in (
        "croissant-cutouts", "numpy", "pandas", "scipy", "torch", "scikit-learn",
        "mlcroissant", "prefect", "astropy", "photutils",
    ):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _dataset_identity(croissant_path: Path) -> dict[str, Any]:
    """Name, version and sha256 digests of the dataset version trained on."""
    meta = json.loads(croissant_path.read_text(encoding="utf-8"))
    files = meta.get("distribution", [])
    index_sha = next((d.get("sha256") for d in files if d.get("@id") == INDEX_FILE), None)
    return {
        "name": meta.get("name"),
        "version": meta.get("version"),
        "croissant": croissant_path.name,
        "croissant_sha256": sha256_file(croissant_path),
        "index_sha256": index_sha,
        "synthetic": meta.get("rai:hasSyntheticData"),
    }


def _judge(
    prep: Prepared,
    score: np.ndarray,
    prob: np.ndarray | None,
    description: str,
    seed: int,
) -> dict[str, Any]:
    """Threshold at 1 % FPR on ``prep.threshold_on``, then the metrics of one model.

    ``validation``: on the validation split (None when it is empty); ``test``: on
    ``prep.evaluated_on`` (the test split, or what there is), with bootstrap intervals of
    ROC AUC and FNR at 1 % FPR (:data:`BOOTSTRAP_RESAMPLES` resamples, ``seed``).
    """
    y, sides = prep.y, prep.sides
    chosen = sides[prep.threshold_on]
    threshold = threshold_at_fpr(y[chosen], score[chosen], 0.01)

    def block(mask: np.ndarray, resamples: int = 0) -> dict[str, Any]:
        p = None if prob is None else prob[mask]
        return evaluate(y[mask], score[mask], threshold, p, resamples, seed)

    val = sides["validation"]
    return {
        "description": description,
        "validation": block(val) if val.any() else None,
        "test": block(sides[prep.evaluated_on], BOOTSTRAP_RESAMPLES),
    }


def _gallery(
    frame: pd.DataFrame,
    y: np.ndarray,
    score: np.ndarray,
    prob: np.ndarray,
    called: np.ndarray,
    per_group: int = 4,
) -> dict[str, list[tuple[np.ndarray, str]]]:
    """Up to ``per_group`` cutouts (64, 64, 4) of each outcome, the hardest first.

    True positives and true negatives nearest the threshold are not shown: the
    *most* confident true positives, the highest-scored false positives, the lowest-scored
    false negatives and the highest-scored true negatives (the bogus the model almost took).
    """
    groups = {
        "true positive": (called & (y == 1), -score),
        "false positive": (called & (y == 0), -score),
        "false negative": (~called & (y == 1), score),
        "true negative": (~called & (y == 0), -score),
    }
    out: dict[str, list[tuple[np.ndarray, str]]] = {}
    for name, (mask, key) in groups.items():
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(key[idx], kind="stable")][:per_group]
        out[name] = []
        for i in idx.tolist():
            row = frame.iloc[i]
            path, shard_row = row["cutout_path"], row.get("row")
            if pd.notna(shard_row):
                cutout = open_shard(path)[int(shard_row)]  # a .npy shard or a .parquet
            else:
                cutout = np.load(path)
            caption = f"{row['job_id']} #{row['cutout_id']} p={prob[i]:.2f}"
            out[name].append((np.asarray(cutout, np.float32), caption))
    return out


def write_plot_data(folder: Path, history: dict[str, list[float]], y: np.ndarray,
                    scores: np.ndarray) -> None:
    """``loss.csv`` (epoch, train, validation) and ``roc.csv`` (fpr, tpr) for DVC plots."""
    loss = pd.DataFrame({"epoch": np.arange(1, len(history["train"]) + 1), **history})
    atomic_write_text(folder / "loss.csv", loss.to_csv(index=False, lineterminator="\n"))
    fpr, tpr = roc_curve(y, scores) if len(scores) else (np.zeros(0), np.zeros(0))
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr})
    atomic_write_text(folder / "roc.csv", roc.to_csv(index=False, lineterminator="\n"))
    precision, recall = pr_curve(y, scores) if len(scores) else (np.zeros(0), np.zeros(0))
    pr = pd.DataFrame({"recall": recall, "precision": precision})
    atomic_write_text(folder / "pr.csv", pr.to_csv(index=False, lineterminator="\n"))


def smoke_train(
    dataset_dir: str | Path,
    croissant_path: str | Path | None = None,
    params: TrainParams | None = None,
    output: str | Path | None = None,
    splits: SplitParams | None = None,
) -> dict[str, Any]:
    """Prove a dataset: train :class:`SmallCNN` on its train split, report on its test split.

    Steps: read the index through Croissant (:func:`read_records`); drop rows without a
    label; cap to ``params.max_cutouts`` keeping whole jobs (:func:`cap_by_job`); take the
    dataset's own ``split`` column (assigned by field or job when the index was written;
    :mod:`tasks.dataset.splits`); train on ``train`` (:func:`train_cnn`), record the loss on
    ``validation`` per epoch; choose each model's threshold on ``validation`` (the lowest
    with a false-positive rate <= 1 %) and evaluate on ``test``
    (:func:`tasks.evaluate.metrics.evaluate`), with 95 % bootstrap intervals of ROC AUC and
    FNR at 1 % FPR (:mod:`.bootstrap`). An empty split is tolerated: without ``validation``
    the thresholds are chosen on ``train``; without ``test`` the metrics are measured on
    ``validation``, and without either on ``train`` (training-set figures, flagged
    ``"held_out": false``; no leakage check). Beside the CNN, on the same rows: the baselines of
    :mod:`tasks.evaluate.baselines` (majority class, score-image peak, gradient boosting on catalog
    features). With ``params.leakage_check``, a second CNN trained on a random per-cutout
    split of the same rows with the fractions of ``splits`` gives the leakage gap (its test
    AUC minus the field split's). Writes ``metrics.json``, ``report.md`` and ``plots/``
    (PNG pictures and the CSVs of the DVC plots) next to it.

    Reproducible: the same dataset, params and seed give the same splits, and on one
    machine with the same thread count, the same metrics (torch CPU kernels, numpy and
    scikit-learn are deterministic there); across machines, expect ROC AUC within 0.01.

    Parameters
    ----------
    dataset_dir : path-like
        Dataset root.
    croissant_path : path-like, optional
        Default ``<dataset_dir>/croissant.json``.
    params : TrainParams, optional
        Default ``TrainParams()``.
    output : path-like, optional
        Default ``<dataset_dir>/metrics.json``; written atomically, NaN as ``null``.
    splits : SplitParams, optional
        Fractions for the random split of the leakage check, recorded in the report
        (default ``SplitParams()``); the dataset's own splits are in its index.

    Returns
    -------
    dict
        What was written to ``metrics.json`` (described in ``docs/evaluation.md``):
        ``dataset`` (name, version, croissant and index sha256), ``params``, ``packages``,
        ``splits`` (rule and per-split counts), ``evaluated_on`` (the split the ``test``
        blocks were measured on: test, validation or train), ``held_out`` (False: training-set
        figures), ``caution`` (the line saying so, else None), ``models`` (cnn,
        gradient_boosting, score_peak, majority: validation and test blocks of
        :func:`.metrics.evaluate`, the test blocks with ``roc_auc_ci95`` and
        ``fnr_at_1pct_fpr_ci95``), ``bootstrap`` (resamples, level, seed, method),
        ``completeness_vs_mag``, ``fpr_by_kind``, ``leakage``, ``target``, ``loss``,
        ``validation`` and ``test`` (the CNN's blocks again), ``counts``, ``n_jobs``,
        timings. Undefined values are ``None``.

    Raises
    ------
    ValueError
        No labelled record, labels other than 0/1, no split column, an empty train split,
        fewer than 2 jobs after the cap, or a cutout of the wrong shape/dtype.
    FileNotFoundError
        A cutout listed in the index is missing.
    OutsideDataset
        The metadata or a record names a file outside ``dataset_dir``.
    RuntimeError
        ``device='cuda'`` without CUDA.
    """
    t0 = time.perf_counter()
    params = params if params is not None else TrainParams()
    splits = splits if splits is not None else SplitParams()
    dataset_dir = Path(dataset_dir)
    croissant_path = Path(croissant_path) if croissant_path else dataset_dir / CROISSANT_FILE
    output = Path(output) if output else dataset_dir / METRICS_FILE
    device = resolve_device(params.device)

    prep = prepare_rows(croissant_path, params, root=dataset_dir)
    fit = _fit(prep, params, device)
    test = _judge_test(prep, fit)
    leakage = _leakage_check(prep, fit, params, splits, device)
    metrics = _metrics(croissant_path, prep, fit, test, leakage, params, splits, device)
    metrics["model"] = _save_model(output.parent / MODEL_FILE, prep, fit, metrics["dataset"])
    _write(output, metrics, prep, fit, test, leakage, t0)
    return metrics


def _save_model(
    path: Path, prep: Prepared, fit: "_Fitted", dataset: dict[str, Any]
) -> dict[str, Any] | None:
    """Step 4b: ``model.pt`` (:mod:`.artifact`) with the CNN's threshold; its summary.

    No file when the threshold is undefined (one class only where it is chosen): such a
    model could not call anything real or bogus. An older ``model.pt`` is removed then.
    """
    from croissant_cutouts.tasks.evaluate.artifact import model_record, save_model

    threshold = fit.models["cnn"]["test"]["threshold"]
    if fit.cnn.model is None or threshold is None or not math.isfinite(threshold):
        log.warning("no model.pt: the CNN's threshold is undefined on %s", prep.threshold_on)
        path.unlink(missing_ok=True)
        return None
    record = model_record(fit.cnn.model, threshold, prep.threshold_on, dataset)
    save_model(path, record)
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        **{k: record[k] for k in ("architecture", "architecture_version", "contract_version",
                                  "threshold", "threshold_on", "threshold_target_fpr")},
    }


@dataclass
class _Fitted:
    """The CNN and the baselines on the same rows: scores per row and their metrics."""

    cnn: TrainedCNN
    logits: np.ndarray  # NaN outside validation and test
    prob: np.ndarray  # sigmoid(logits)
    scores: dict[str, np.ndarray]  # gradient boosting, score peak, majority
    models: dict[str, Any]


@dataclass
class _Test:
    """The CNN on the test split: rows, called real, completeness, false positives by kind."""

    mask: np.ndarray
    called: np.ndarray
    completeness: pd.DataFrame
    by_kind: pd.DataFrame


def _fit(prep: Prepared, params: TrainParams, device: Any) -> _Fitted:
    """Step 2: the CNN on the train split, and the baselines on the same rows; all judged."""
    y, sides = prep.y, prep.sides
    log.info(
        "split by %s: %s; device %s",
        prep.split_by,
        ", ".join(f"{n} {c['jobs']} jobs {c['real']} real / {c['bogus']} bogus"
                  for n, c in prep.counts.items()),
        device,
    )
    if params.keep_best and not sides["validation"].any():
        log.info("no validation split: keep_best off, the weights of the last epoch are kept")
        params = params.model_copy(update={"keep_best": False})
    judged = {**sides, "test": sides[prep.evaluated_on]}  # the rows to predict as "test"
    cnn = train_cnn(prep.data, y, judged, params, device, prep.run_name)
    logits = np.full(len(y), np.nan)
    for name in ("validation", "test"):
        logits[judged[name]] = cnn.logits[name]
    prob = 1.0 / (1.0 + np.exp(-np.clip(logits, -700, 700)))
    seed = params.seed
    models: dict[str, Any] = {
        "cnn": _judge(prep, logits, prob, _cnn_description(params, prep.data.catalog_names),
                      seed),
    }
    boost, features = gradient_boosting_scores(prep.frame, y, sides["train"], params.seed)
    models["gradient_boosting"] = _judge(
        prep, boost, boost,
        "HistGradientBoostingClassifier on catalog features: " + (", ".join(features) or "none"),
        seed,
    )
    peak = score_peak_scores(prep.frame)
    models["score_peak"] = _judge(
        prep, peak, None, "threshold on the score-image peak at the candidate (S/N)", seed
    )
    majority = majority_scores(y[sides["train"]], len(y))
    models["majority"] = _judge(
        prep, majority, majority, "always the training majority class", seed
    )
    scores = {"gradient boosting": boost, "score peak": peak, "majority": majority}
    return _Fitted(cnn, logits, prob, scores, models)


def _calls_by_group(
    prep: Prepared, score: np.ndarray, threshold: float | None
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """One model's calls on the evaluated split: called real, completeness, FPR by kind.

    A candidate is called real when ``score > threshold`` (the threshold chosen on
    validation); an undefined threshold calls nothing real.
    """
    frame, y = prep.frame, prep.y
    test = prep.sides[prep.evaluated_on]
    cut = math.inf if threshold is None or math.isnan(threshold) else threshold
    called = score > cut
    truth_mag = (
        pd.to_numeric(frame["truth_mag"], errors="coerce").to_numpy(np.float64)
        if "truth_mag" in frame
        else np.full(len(y), np.nan)
    )
    completeness = completeness_by_mag(
        y[test], called[test], truth_mag[test], mag_bins(truth_mag[test & (y == 1)])
    )
    kinds = frame["bogus_kind"] if "bogus_kind" in frame else pd.Series(None, index=frame.index)
    by_kind = fpr_by_kind(y[test], called[test], kinds[test].to_numpy(dtype=object))
    return called, completeness, by_kind


def _cnn_description(params: TrainParams, catalog: list[str]) -> str:
    """The CNN's line in the models table: members, input scaling, crop, catalog features,
    orientations; score and probability."""
    what = f"SmallCNN (width {params.width}) on the central {params.crop} x {params.crop} " \
        f"pixels of the four channels, input scaling {params.scaling}"
    if catalog:
        what += f", and {len(catalog)} catalog features ({', '.join(catalog)})"
    if params.orientations > 1:
        what += f", logit averaged over {params.orientations} orientations"
    if params.members > 1:
        what = f"ensemble of {params.members} x {what} (mean logit)"
    return what + "; score: logit, probability: sigmoid"


def _judge_test(prep: Prepared, fit: _Fitted) -> _Test:
    """Step 3: the CNN's calls on the evaluated split: completeness by magnitude, FPR by kind.

    The gradient-boosting baseline's are added to its block of ``fit.models``
    (``completeness_vs_mag``, ``fpr_by_kind``), so that the two can be set side by side.
    """
    boost = fit.models["gradient_boosting"]
    _, completeness, by_kind = _calls_by_group(
        prep, fit.scores["gradient boosting"], boost["test"]["threshold"]
    )
    boost["completeness_vs_mag"] = completeness.to_dict(orient="records")
    boost["fpr_by_kind"] = by_kind.to_dict(orient="records")
    called, completeness, by_kind = _calls_by_group(
        prep, fit.logits, fit.models["cnn"]["test"]["threshold"]
    )
    fit.models["cnn"]["completeness_vs_mag"] = completeness.to_dict(orient="records")
    fit.models["cnn"]["fpr_by_kind"] = by_kind.to_dict(orient="records")
    return _Test(prep.sides[prep.evaluated_on], called, completeness, by_kind)


@dataclass
class _Leakage:
    """The random per-cutout split's CNN beside the dataset's own split (the leakage gap)."""

    summary: dict[str, Any]
    history: dict[str, list[float]] | None
    train_seconds: float
    n_train: int


def _leakage_check(
    prep: Prepared, fit: _Fitted, params: TrainParams, splits: SplitParams, device: Any
) -> _Leakage:
    """Step 4: with ``params.leakage_check``, a second CNN on a random per-cutout split.

    Not without a held-out split: a training-set AUC has no leakage to measure.
    """
    summary: dict[str, Any] = {
        "by": prep.split_by,
        "field_split_test_auc": fit.models["cnn"]["test"]["roc_auc"] if prep.held_out else None,
        "random_split_test_auc": None,
        "gap": None,
    }
    if not params.leakage_check or not prep.held_out:  # nothing held out: no gap to measure
        return _Leakage(summary, None, 0.0, 0)
    y = prep.y
    leaky = random_split(len(y), splits, params.seed)
    sides = {name: leaky == name for name in SPLITS}
    rnd = train_cnn(prep.data, y, sides, params, device, "random split")
    auc = roc_auc(y[sides["test"]], rnd.logits["test"])
    summary["random_split_test_auc"] = auc
    summary["gap"] = auc - summary["field_split_test_auc"]
    return _Leakage(summary, rnd.history, rnd.train_seconds, rnd.n_train)


def _metrics(
    croissant_path: Path,
    prep: Prepared,
    fit: _Fitted,
    test: _Test,
    leakage: _Leakage,
    params: TrainParams,
    splits: SplitParams,
    device: Any,
) -> dict[str, Any]:
    """What ``metrics.json`` holds, in its order (plots and seconds are added on writing)."""
    models, counts = fit.models, prep.counts
    cnn_auc = models["cnn"]["test"]["roc_auc"]
    judged = prep.held_out  # training-set figures cannot meet a target
    baselines = [models[m]["test"]["roc_auc"] for m in ("gradient_boosting", "score_peak",
                                                         "majority")]
    train_seconds = fit.cnn.train_seconds + leakage.train_seconds
    trained = (fit.cnn.n_train + leakage.n_train) * params.members  # every member passes
    return {
        "dataset": _dataset_identity(croissant_path),
        "params": {"train": params.model_dump(), "splits": splits.model_dump()},
        "packages": package_versions(),
        "device": device.type,
        "seed": params.seed,
        "epochs": params.epochs,
        "unlabelled": prep.unlabelled,
        "dropped_by_max_cutouts": prep.dropped,
        "splits": {"by": prep.split_by, "counts": counts},
        "evaluated_on": prep.evaluated_on,
        "held_out": prep.held_out,
        "caution": prep.caution,
        "models": models,
        "threshold_on": prep.threshold_on,
        "threshold_rule": "per model: the lowest threshold whose "
        f"{'validation' if prep.threshold_on == 'validation' else 'training-set'} FPR <= 1 %",
        "bootstrap": {
            "resamples": BOOTSTRAP_RESAMPLES,
            "level": BOOTSTRAP_LEVEL,
            "seed": params.seed,
            "method": "percentile bootstrap over the evaluated cutouts, resampled with "
            "replacement within each class",
        },
        "completeness_vs_mag": test.completeness.to_dict(orient="records"),
        "fpr_by_kind": test.by_kind.to_dict(orient="records"),
        "leakage": leakage.summary,
        "target": {
            "test_roc_auc": TARGET_TEST_AUC,
            "met": bool(cnn_auc >= TARGET_TEST_AUC) if judged else None,
            "beats_baselines": (
                bool(all(cnn_auc > b for b in baselines if not math.isnan(b))) if judged else None
            ),
        },
        "loss": fit.cnn.history,
        "weights_from_epoch": fit.cnn.best_epoch,
        "loss_random_split": leakage.history,
        "validation": models["cnn"]["validation"],
        "test": models["cnn"]["test"],
        "n_jobs": {name: c["jobs"] for name, c in counts.items()},
        "counts": {name: {"real": c["real"], "bogus": c["bogus"]} for name, c in counts.items()},
        "layout": "files" if not prep.sharded else (
            "parquet" if prep.data.shard_paths[0].endswith(".parquet") else "shards"
        ),
        "train_cutouts_per_s": (
            round(params.epochs * trained / train_seconds, 1) if train_seconds else None
        ),
    }


def _pictures(
    folder: Path, prep: Prepared, fit: _Fitted, test: _Test, leakage: _Leakage
) -> dict[str, Path]:
    """The PNG plots of the report, by name."""
    from croissant_cutouts.tasks.evaluate.plots import (
        plot_completeness,
        plot_gallery,
        plot_loss,
        plot_pr,
        plot_reliability,
        plot_roc,
    )

    mask, y_test = test.mask, prep.y[test.mask]
    curves = {"CNN": (y_test, fit.logits[mask])}
    curves.update({name: (y_test, score[mask]) for name, score in fit.scores.items()})
    histories = {prep.run_name: fit.cnn.history}
    if leakage.history is not None:
        histories["random split (leaky)"] = leakage.history
    gallery = _gallery(prep.frame[mask].reset_index(drop=True), y_test, fit.logits[mask],
                       fit.prob[mask], test.called[mask])
    return {
        "roc": plot_roc(folder / "roc.png", curves),
        "pr": plot_pr(folder / "pr.png", curves),
        "reliability": plot_reliability(
            folder / "reliability.png", reliability_table(y_test, fit.prob[mask]),
            f"CNN, {_SIDE_NAMES[prep.evaluated_on]}",
        ),
        "loss": plot_loss(folder / "loss.png", histories),
        "completeness": plot_completeness(folder / "completeness.png", test.completeness),
        "gallery": plot_gallery(folder / "gallery.png", gallery),
    }


def _write(
    output: Path,
    metrics: dict[str, Any],
    prep: Prepared,
    fit: _Fitted,
    test: _Test,
    leakage: _Leakage,
    t0: float,
) -> None:
    """Step 5: plots and their data, ``report.md``, then ``metrics.json`` (each atomic)."""
    from croissant_cutouts.tasks.evaluate.report import write_report

    folder = output.parent / PLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    write_plot_data(folder, fit.cnn.history, prep.y[test.mask], fit.logits[test.mask])
    pictures = _pictures(folder, prep, fit, test, leakage)
    plots = {name: os.path.relpath(path, output.parent) for name, path in pictures.items()}
    metrics["plots"] = plots
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    metrics.update(_none_for_nan(metrics))
    write_report(output.parent / REPORT_FILE, metrics, plots)
    atomic_write_text(output, json.dumps(metrics, indent=2) + "\n")
    log.info(
        "%s ROC AUC %.4f (target %.2f), leakage gap %s; wrote %s (%.1f s)",
        _SIDE_NAMES[prep.evaluated_on],
        metrics["test"]["roc_auc"] if metrics["test"]["roc_auc"] is not None else math.nan,
        TARGET_TEST_AUC,
        leakage.summary["gap"],
        output,
        metrics["seconds"],
    )


# --------------------------------------------------------------------------- Prefect


@task(
    name="smoke-train",
    cache_policy=ContentPolicy(
        modules=step_modules("train")
    ),
    persist_result=True,
)
def smoke_train_task(
    dataset_dir: str,
    croissant_path: str | None,
    params: TrainParams,
    dataset_key: str | None = None,
    splits: SplitParams | None = None,
) -> dict[str, Any]:
    """Prefect task: :func:`smoke_train`; returns the metrics.

    ``dataset_key`` (a fingerprint of the inputs and code that made the dataset) only enters
    the cache key, so an unchanged dataset is not trained again; without one the flow forces
    a fresh run (``refresh_cache=True``).
    """
    return smoke_train(dataset_dir, croissant_path, params, splits=splits)
