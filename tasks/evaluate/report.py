"""The one-page markdown report of a trained real/bogus classifier.

:func:`render_report` turns the metrics dict of a training run into markdown that links the
PNGs of :mod:`tasks.evaluate.plots`, and :func:`write_report` writes it (atomically; the same
metrics give the same bytes).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from croissant_cutouts.tasks.contract import CROISSANT_FILE
from croissant_cutouts.tasks.infra.atomic import atomic_write_text

__all__ = [
    "PLOT_TITLES",
    "fmt",
    "render_report",
    "write_report",
]

#: Alt text of each plot the report knows, in the order the report shows them.
PLOT_TITLES = {
    "roc": "ROC curves",
    "pr": "Precision-recall curves",
    "reliability": "Reliability diagram",
    "loss": "Loss curves",
    "completeness": "Completeness vs truth magnitude",
    "gallery": "Example cutouts",
}
#: Rows of the models table, in this order; other models follow in the metrics' order.
MODEL_ORDER = ("cnn", "gradient_boosting", "score_peak", "majority")
DASH = "–"
#: How the split the metrics were measured on (``evaluated_on``) reads in titles.
SIDE_NAMES = {"test": "test split", "validation": "validation split", "train": "training set"}



# --------------------------------------------------------------------------- report


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, digits: int = 4) -> str:
    """A value for a person: "–" when undefined, ints as they are, floats to ``digits``.

    Floats get ``digits`` significant digits, more when that would round a value below 1
    up to exactly 1 (an AUC of 0.99996 is not shown as a perfect 1).
    """
    if _is_missing(value):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        value = float(value)
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = f"{value:.{digits}g}"
        for more in range(digits + 1, 10):
            if float(text) != 1.0 or value == 1.0:
                break
            text = f"{value:.{more}g}"
        return text
    return str(value)


def _get(mapping: Any, *keys: str) -> Any:
    """``mapping[k1][k2]...``, or None when any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _image(plots: Mapping[str, str | os.PathLike[str]], name: str) -> list[str]:
    if name not in plots:
        return []
    target = Path(plots[name]).as_posix()
    if any(ch in target for ch in " ()"):
        target = f"<{target}>"
    return ["", f"![{PLOT_TITLES.get(name, name)}]({target})"]


def _side(metrics: Mapping[str, Any]) -> str:
    """Where the ``test`` blocks were measured: "test split" unless ``evaluated_on`` says else."""
    side = metrics.get("evaluated_on") or "test"
    return SIDE_NAMES.get(side, f"{side} split")


def _with_ci(block: Any, key: str) -> str:
    """``block[key]`` and its 95 % interval ``block[key + "_ci95"]``: "0.9871 [0.9752, 0.9943]".

    Only the value when the block has no interval (or an undefined one).
    """
    text = fmt(_get(block, key))
    ci = _get(block, f"{key}_ci95")
    if isinstance(ci, Sequence) and len(ci) == 2 and not any(_is_missing(v) for v in ci):
        text += f" [{fmt(ci[0])}, {fmt(ci[1])}]"
    return text


def _caution(metrics: Mapping[str, Any]) -> list[str]:
    """A quoted, bold line up front when the metrics are training-set figures."""
    if metrics.get("held_out") is not False:
        return []
    text = metrics.get("caution") or (
        "TRAINING-SET FIGURES: no held-out split; every metric is measured on the cutouts "
        "the models were trained on and proves nothing about unseen data"
    )
    return [f"> **{text}.**", ""]


def _model_order(models: Mapping[str, Any]) -> list[str]:
    return [m for m in MODEL_ORDER if m in models] + [m for m in models if m not in MODEL_ORDER]


def _verdict(metrics: Mapping[str, Any]) -> list[str]:
    models = metrics.get("models") or {}
    cnn_auc = _with_ci(_get(models, "cnn", "test"), "roc_auc")
    target = _get(metrics, "target", "test_roc_auc")
    met = _get(metrics, "target", "met")
    side = _side(metrics)
    if metrics.get("held_out") is False:
        head = "**Not judged** (nothing held out)"
    elif met is None:
        head = "**Target unknown**"
    else:
        head = "**Target met**" if met else "**Target missed**"
    auc_on = "test ROC AUC" if side == "test split" else f"ROC AUC on the {side}"
    aim = f"target {fmt(target)}" if metrics.get("held_out") is not False else "no target"
    lines = [f"{head}: the CNN's {auc_on} is {cnn_auc} ({aim})."]

    baselines = {
        name: _get(block, "test", "roc_auc") for name, block in models.items() if name != "cnn"
    }
    scored = {k: v for k, v in baselines.items() if not _is_missing(v)}
    best = ""
    if scored:
        name = max(scored, key=lambda k: scored[k])
        best = f" (best baseline {name}: {fmt(scored[name])})"
    beats = _get(metrics, "target", "beats_baselines")
    if beats is None:
        lines.append(f"Beats the baselines on {auc_on}: –{best}.")
    elif beats:
        lines.append(f"It beats every baseline on {auc_on}{best}.")
    else:
        lines.append(f"It does **not** beat every baseline on {auc_on}{best}.")

    leakage = metrics.get("leakage") or {}
    field_auc, random_auc = (
        leakage.get("field_split_test_auc"),
        leakage.get("random_split_test_auc"),
    )
    if _is_missing(field_auc) and _is_missing(random_auc):
        lines.append("Leakage check: not available.")
    else:
        by = leakage.get("by") or _get(metrics, "splits", "by") or "field"
        lines.append(
            f"Leakage gap {fmt(leakage.get('gap'))}{_gap_sense(leakage)}: test ROC AUC "
            f"{fmt(field_auc)} split by {by}, {fmt(random_auc)} split at random."
        )
    return lines


def _gap_sense(leakage: Mapping[str, Any]) -> str:
    """`` (random − field)`` or the reverse, when the gap is one of those differences."""
    gap = leakage.get("gap")
    field_auc, random_auc = (
        leakage.get("field_split_test_auc"),
        leakage.get("random_split_test_auc"),
    )
    if any(_is_missing(v) for v in (gap, field_auc, random_auc)):
        return ""
    by = leakage.get("by") or "field"
    if math.isclose(gap, random_auc - field_auc, abs_tol=1e-9):
        return f" (random − {by})"
    if math.isclose(gap, field_auc - random_auc, abs_tol=1e-9):
        return f" ({by} − random)"
    return ""


def _models_section(metrics: Mapping[str, Any], plots: Mapping[str, Any]) -> list[str]:
    models = metrics.get("models") or {}
    side = _side(metrics)
    out = [f"## Models ({side})", ""]
    if not models:
        return [
            *out,
            "Not available (no model was evaluated).",
            *_image(plots, "roc"),
            *_image(plots, "pr"),
        ]
    rule = metrics.get("threshold_rule")
    if rule:
        out += [f"Decision threshold — {rule}.", ""]
    header = ["model", "ROC AUC", "PR AUC", "FNR @ 1 % FPR", "threshold", "FNR", "FPR", "ECE"]
    keys = ("roc_auc", "pr_auc", "fnr_at_1pct_fpr", "threshold", "fnr", "fpr", "ece")
    rows = [
        [f"`{name}`", *(_with_ci(_get(models, name, "test"), k) for k in keys)]
        for name in _model_order(models)
    ]
    out.append(_table(header, rows))
    test = _get(models, "cnn", "test") or {}
    chosen = SIDE_NAMES.get(metrics.get("threshold_on") or "validation", "validation split")
    out += [
        "",
        f"{side[0].upper()}{side[1:]}: {fmt(test.get('n'))} candidates "
        f"({fmt(test.get('real'))} real, {fmt(test.get('bogus'))} bogus). FNR @ 1 % FPR is "
        f"threshold-free (its threshold is set on the {side} itself); FNR and FPR use the "
        f"threshold chosen on the {chosen}; ECE (10 bins) only where the score is a "
        "probability.",
        *_bootstrap_note(metrics),
    ]
    described = [(n, _get(models, n, "description")) for n in _model_order(models)]
    described = [(n, d) for n, d in described if d]
    if described:
        out.append("")
        out += [f"- `{name}`: {text}" for name, text in described]
    return out + _image(plots, "roc") + _image(plots, "pr")


def _bootstrap_note(metrics: Mapping[str, Any]) -> list[str]:
    """What the bracketed intervals of the models table are, when there are any."""
    boot = metrics.get("bootstrap") or {}
    if not boot.get("resamples"):
        return []
    level = boot.get("level")
    percent = f"{fmt(100 * level)} %" if isinstance(level, int | float) else "95 %"
    return [
        "",
        f"In brackets: {percent} percentile-bootstrap intervals over the cutouts of the "
        f"{_side(metrics)}, {fmt(boot['resamples'])} resamples drawn with replacement within "
        f"each class (so each holds the split's real and bogus counts), seed "
        f"{fmt(boot.get('seed'))}.",
    ]


def _splits_section(metrics: Mapping[str, Any]) -> list[str]:
    out = ["## Data splits", ""]
    splits = metrics.get("splits") or {}
    asked = _get(metrics, "params", "splits") or {}
    fractions = " / ".join(
        f"{name} {fmt(asked[name])}" for name in ("train", "validation", "test") if name in asked
    )
    seed = asked.get("seed", metrics.get("seed"))
    text = f"Split by {splits.get('by') or DASH}"
    if asked.get("by"):
        text += f" (requested: {asked['by']})"
    if fractions:
        text += f"; fractions {fractions}"
    out.append(text + f"; seed {fmt(seed)}.")
    counts = splits.get("counts") or {}
    if counts:
        header = ["split", "jobs", "fields", "real", "bogus", "unlabelled", "real fraction"]
        rows = []
        for name, c in counts.items():
            real, bogus = c.get("real"), c.get("bogus")
            labelled = (real or 0) + (bogus or 0)
            fraction = real / labelled if real is not None and labelled else None
            cells = (c.get(k) for k in ("jobs", "fields", "real", "bogus", "unlabelled"))
            rows.append([name, *map(fmt, cells), fmt(fraction)])
        out += ["", _table(header, rows)]
    else:
        out += ["", "Per-split counts: not available."]
    out += [
        "",
        f"Unlabelled candidates skipped: {fmt(metrics.get('unlabelled'))}; dropped by "
        f"`max_cutouts`: {fmt(metrics.get('dropped_by_max_cutouts'))}.",
    ]
    return out


def _leakage_section(metrics: Mapping[str, Any]) -> list[str]:
    out = ["## Leakage check", ""]
    leakage = metrics.get("leakage") or {}
    field_auc, random_auc = (
        leakage.get("field_split_test_auc"),
        leakage.get("random_split_test_auc"),
    )
    if _is_missing(field_auc) and _is_missing(random_auc):
        return [*out, "Not available (no random-split run)."]
    by = leakage.get("by") or "field"
    out.append(
        _table(
            ["split", "CNN test ROC AUC"],
            [
                [f"by {by}", fmt(field_auc)],
                ["random (per cutout)", fmt(random_auc)],
                [f"gap{_gap_sense(leakage)}", fmt(leakage.get("gap"))],
            ],
        )
    )
    out += [
        "",
        f"A random split puts cutouts of one {by} on both sides, so the model can recognise "
        "the sky instead of the transient; a large gap means the random-split score is inflated.",
    ]
    return out


def _completeness_section(metrics: Mapping[str, Any], plots: Mapping[str, Any]) -> list[str]:
    out = [f"## Completeness vs truth magnitude (CNN, {_side(metrics)})", ""]
    rows = [r for r in metrics.get("completeness_vs_mag") or [] if r]
    if rows:
        body = [
            [
                f"{_fmt_mag(r.get('mag_lo'))}–{_fmt_mag(r.get('mag_hi'))}",
                fmt(r.get("n_real")),
                fmt(r.get("recovered")),
                fmt(r.get("completeness")),
            ]
            for r in rows
        ]
        out.append(_table(["magnitude (AB)", "real", "recovered", "completeness"], body))
    else:
        out.append("Not available (no truth magnitudes).")
    return out + _image(plots, "completeness")


def _fmt_mag(value: Any) -> str:
    return DASH if _is_missing(value) else f"{float(value):.2f}"


def _kinds_section(metrics: Mapping[str, Any]) -> list[str]:
    out = [f"## False positives by kind of bogus (CNN, {_side(metrics)})", ""]
    rows = [r for r in metrics.get("fpr_by_kind") or [] if r]
    if not rows:
        return [*out, "Not available (no bogus kinds)."]
    body = [
        [
            str(r.get("kind")),
            fmt(r.get("n_bogus")),
            fmt(r.get("false_positives")),
            fmt(r.get("fpr")),
        ]
        for r in rows
    ]
    return [*out, _table(["kind", "bogus", "false positives", "FPR"], body)]


def _model_card_section(metrics: Mapping[str, Any]) -> list[str]:
    """The model of ``model.pt``: data, splits, metrics with intervals, intended use, limits."""
    model = metrics.get("model")
    if not model:
        return ["## Model card", "", "No `model.pt` was written: the CNN's decision threshold "
                "is undefined (one class only where it is chosen)."]
    dataset = metrics.get("dataset") or {}
    train = _get(metrics, "splits", "counts", "train") or {}
    cnn = _get(metrics, "models", "cnn", "test") or {}
    synthetic = {True: "simulated", False: "real"}.get(dataset.get("synthetic"), "unstated")
    return [
        "## Model card",
        "",
        f"- **Model**: `{model.get('file')}` (sha256 `{model.get('sha256')}`), "
        f"{model.get('architecture')} version {fmt(model.get('architecture_version'))}, for "
        f"64x64x4 cutouts of contract version {fmt(model.get('contract_version'))} (science, "
        "reference, difference, score; ZScale-normalised to [0, 1]), given channel-first.",
        f"- **Data**: {dataset.get('name') or DASH} {dataset.get('version') or ''}, index "
        f"sha256 `{dataset.get('index_sha256') or DASH}`; trained on {fmt(train.get('real'))} "
        f"real and {fmt(train.get('bogus'))} bogus cutouts of {fmt(train.get('jobs'))} jobs "
        f"({fmt(train.get('fields'))} fields), split by {_get(metrics, 'splits', 'by') or DASH}.",
        f"- **Decision**: real when the logit exceeds {fmt(model.get('threshold'))}, the lowest "
        f"threshold with a false-positive rate <= {fmt(model.get('threshold_target_fpr'))} on "
        f"the {model.get('threshold_on')} split.",
        f"- **Metrics** ({_side(metrics)}): ROC AUC {_with_ci(cnn, 'roc_auc')}, FNR at 1 % FPR "
        f"{_with_ci(cnn, 'fnr_at_1pct_fpr')}; at the threshold FPR {fmt(cnn.get('fpr'))}, "
        f"FNR {fmt(cnn.get('fnr'))} (95 % bootstrap intervals in brackets).",
        "- **Intended use**: ranking and vetting the candidates of difference-imaging jobs "
        "made and cut as this dataset was (same pipeline, same normalisation), for example "
        "with `cutouts predict`; a person or a stricter classifier decides on what it flags.",
        f"- **Limits**: trained on {synthetic} data of a few sky fields; its rates hold for "
        "candidates like these, at this class balance. A model that has not been checked on "
        "real survey data must not be trusted with it; one trained without a held-out split "
        "has no measured performance at all.",
    ]


def _reproducibility_section(metrics: Mapping[str, Any]) -> list[str]:
    dataset = metrics.get("dataset") or {}
    croissant = dataset.get("croissant") or CROISSANT_FILE
    out = [
        "## Reproducibility",
        "",
        f"- Dataset: {dataset.get('name') or DASH} {dataset.get('version') or ''}".rstrip(),
        f"- Croissant: `{croissant}`, sha256 `{dataset.get('croissant_sha256') or DASH}`",
        f"- Index sha256: `{dataset.get('index_sha256') or DASH}`",
        f"- Device {metrics.get('device') or DASH}, seed {fmt(metrics.get('seed'))}, "
        f"epochs {fmt(metrics.get('epochs'))}, layout {metrics.get('layout') or DASH} "
        "(timings are in metrics.json: the report of a repeated run is byte-identical)",
    ]
    packages = metrics.get("packages") or {}
    if packages:
        out.append("- Packages: " + ", ".join(f"{k} {v or DASH}" for k, v in packages.items()))
    params = metrics.get("params")
    if params:
        text = json.dumps(params, indent=2, sort_keys=True, default=str, allow_nan=True)
        out += ["", "Parameters:", "", "```json", text, "```"]
    return out


def render_report(metrics: Mapping[str, Any], plots: Mapping[str, str | os.PathLike[str]]) -> str:
    """Markdown report of one training run, to read in a minute.

    Sections: title (dataset name and version), a bold caution when the metrics are
    training-set figures (``held_out`` False), verdict (CNN test ROC AUC against the target,
    baselines, leakage gap), models table (test split: ROC AUC and FNR @ 1 % FPR with their
    bootstrap intervals in brackets, PR AUC, validation threshold, FNR and FPR at it, ECE)
    with the ROC and PR plots, calibration and
    training plots, per-split class counts, leakage check, completeness by magnitude, false
    positives by kind of bogus, example gallery, reproducibility (hashes, parameters,
    package versions, device, seed).

    Parameters
    ----------
    metrics : mapping
        The metrics of a run (``metrics.json``): ``dataset``, ``params``, ``packages``,
        ``device``, ``seed``, ``epochs``, ``unlabelled``, ``dropped_by_max_cutouts``,
        ``splits``, ``evaluated_on``, ``held_out``, ``caution``, ``threshold_on``,
        ``models`` (name to ``description``, ``validation`` and ``test`` blocks of
        :func:`tasks.evaluate.metrics.evaluate`, ``*_ci95`` intervals included), ``bootstrap``,
        ``threshold_rule``, ``completeness_vs_mag``,
        ``fpr_by_kind``, ``leakage``, ``target``, ``loss``, ``layout`` (timings
        are left out, so a repeated run gives the same report). Missing keys, None and
        NaN show as "–" or "not available".
    plots : mapping of str to path-like
        Plot name (``roc``, ``pr``, ``reliability``, ``loss``, ``completeness``,
        ``gallery``; others go under "Other plots") to its path relative to the report.

    Returns
    -------
    str
        Markdown, ending in a newline.
    """
    dataset = metrics.get("dataset") or {}
    title = " ".join(str(v) for v in (dataset.get("name"), dataset.get("version")) if v)
    lines = [f"# Real/bogus classifier report{': ' + title if title else ''}", ""]
    lines += _caution(metrics)
    sections = [_verdict(metrics), _models_section(metrics, plots)]
    if "reliability" in plots:
        sections.append(["## Calibration", *_image(plots, "reliability")])
    if "loss" in plots:
        sections.append(["## Training", *_image(plots, "loss")])
    sections += [
        _splits_section(metrics),
        _leakage_section(metrics),
        _completeness_section(metrics, plots),
        _kinds_section(metrics),
    ]
    if "gallery" in plots:
        sections.append([f"## Examples (CNN, {_side(metrics)})", *_image(plots, "gallery")])
    others = [name for name in plots if name not in PLOT_TITLES]
    if others:
        sections.append(["## Other plots", *(line for n in others for line in _image(plots, n))])
    sections += [_model_card_section(metrics), _reproducibility_section(metrics)]
    for section in sections:
        lines += [*section, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(
    path: str | os.PathLike[str],
    metrics: Mapping[str, Any],
    plots: Mapping[str, str | os.PathLike[str]],
) -> Path:
    """Write :func:`render_report` to ``path`` (UTF-8, atomically); returns ``path``."""
    path = Path(path)
    atomic_write_text(path, render_report(metrics, plots))
    return path
