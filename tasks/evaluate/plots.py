"""The PNG plots of a training run: ROC, precision-recall, reliability, loss, completeness,
and a gallery of cutouts.

Every plot function draws one PNG from plain arrays or the tables of
:mod:`tasks.evaluate.metrics` and returns the path it wrote.

Conventions
-----------
- Labels 1 real, 0 bogus; higher score = more real; called real when ``score > threshold``
  (see :mod:`tasks.evaluate.metrics`).
- Cutouts are (64, 64, 4) float32 in [0, 1], channel-last: science, reference, difference,
  score (:data:`CHANNEL_TITLES`); shown grey with ``vmin=0, vmax=1``.
- Files are written atomically (:func:`tasks.infra.atomic.atomic_output`). PNGs have a fixed size
  (``figsize * DPI`` pixels, no tight bounding box) and no ``Software`` tag, so the same
  inputs give the same bytes.
- Figures are plain :class:`matplotlib.figure.Figure` objects drawn by the Agg renderer,
  never registered with ``pyplot``: no global backend is switched, nothing needs closing,
  and plots may be drawn from several threads (Prefect tasks) at once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.stats import binom_conf_interval
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from croissant_cutouts.tasks.evaluate.metrics import (
    pr_auc,
    pr_curve,
    rates_at_threshold,
    roc_auc,
    roc_curve,
    threshold_at_fpr,
)
from croissant_cutouts.tasks.evaluate.report import fmt
from croissant_cutouts.tasks.infra.atomic import atomic_output

__all__ = [
    "CHANNEL_TITLES",
    "DPI",
    "FIGSIZE",
    "fpr_floor",
    "plot_completeness",
    "plot_gallery",
    "plot_loss",
    "plot_pr",
    "plot_reliability",
    "plot_roc",
]

#: Resolution of every PNG, dots per inch (a figure is ``figsize * DPI`` pixels).
DPI = 110
#: Size in inches (width, height) of every plot but the gallery: 660 x 495 pixels.
FIGSIZE = (6.0, 4.5)
#: Column titles of the gallery, in channel order.
CHANNEL_TITLES = ("science", "reference", "difference", "score")
#: Gallery geometry, inches: one image, the row-label margin, the title band.
GALLERY_CELL_IN = 1.5
GALLERY_LABEL_IN = 2.0
GALLERY_TITLE_IN = 0.4

# --------------------------------------------------------------------------- plots


def _figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    return Figure(figsize=figsize, dpi=DPI, layout="constrained")


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically; same figure, same bytes."""
    path = Path(path)
    with atomic_output(path) as fh:
        fig.savefig(fh, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    return path


def _message(ax: Any, text: str) -> None:
    """Write ``text`` in the middle of an empty axis."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, transform=ax.transAxes)


def plot_roc(
    path: str | os.PathLike[str], curves: Mapping[str, tuple[Any, Any]], fpr: float = 0.01
) -> Path:
    """ROC curves of several models on one axis.

    Parameters
    ----------
    path : path-like
        PNG to write.
    curves : mapping of str to (y, score)
        Model name to its labels (1 real, 0 bogus) and scores (higher = more real), one
        split. The legend gives each model's ROC AUC.
    fpr : float
        False-positive rate marked by a vertical line (default 1 %); each curve gets a dot at
        the threshold that meets it on these data (:func:`tasks.evaluate.metrics.threshold_at_fpr`).

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    The false-positive axis is logarithmic, where a real/bogus classifier's differences lie
    (an AUC near 1 hides the curve in the corner of a linear plot). It starts at
    :func:`fpr_floor`; a false-positive rate of 0 is drawn there.
    """
    fig = _figure()
    ax = fig.add_subplot()
    floor = min((fpr_floor(y) for y, _ in curves.values()), default=1e-3)
    chance = np.geomspace(floor, 1, 50)
    ax.plot(chance, chance, color="0.6", linestyle="--", linewidth=1, label="chance")
    ax.axvline(fpr, color="0.3", linestyle=":", linewidth=1, label=f"FPR = {fpr:.0%}")
    for i, (name, (y, score)) in enumerate(curves.items()):
        color = f"C{i}"
        x, t = roc_curve(y, score)
        ax.plot(np.maximum(x, floor), t, color=color,
                label=f"{name} (AUC {fmt(roc_auc(y, score))})")
        rates = rates_at_threshold(y, score, threshold_at_fpr(y, score, fpr))
        if not math.isnan(rates["fpr"]) and not math.isnan(rates["tpr"]):
            ax.plot(max(rates["fpr"], floor), rates["tpr"], "o", color=color, markersize=4)
    ax.set_xscale("log")
    ax.set(xlim=(floor, 1), ylim=(0, 1.01), ylabel="true-positive rate",
           xlabel="false-positive rate (log; 0 drawn at the left edge)")
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def fpr_floor(y: Any) -> float:
    """Left edge of a logarithmic FPR axis: half the smallest non-zero FPR of ``y``'s negatives.

    ``0.5 / n_neg`` (1e-3 without negatives), so every reachable non-zero rate is inside.
    """
    n_neg = int(np.sum(np.asarray(y) == 0))
    return 0.5 / n_neg if n_neg else 1e-3


def plot_pr(path: str | os.PathLike[str], curves: Mapping[str, tuple[Any, Any]]) -> Path:
    """Precision-recall curves of several models on one axis.

    Curves are drawn as steps, so the area under each is its average precision (AP, in the
    legend). A horizontal line marks the prevalence (the AP of a random ranking): one line
    when every curve has the same labels, else one per model in its colour.

    Parameters
    ----------
    path : path-like
        PNG to write.
    curves : mapping of str to (y, score)
        Model name to its labels (1 real, 0 bogus) and scores (higher = more real).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = _figure()
    ax = fig.add_subplot()
    prevalences = []
    for i, (name, (y, score)) in enumerate(curves.items()):
        precision, recall = pr_curve(y, score)
        label = f"{name} (AP {fmt(pr_auc(y, score))})"
        ax.plot(recall, precision, color=f"C{i}", drawstyle="steps-pre", label=label)
        labels = np.asarray(y)
        prevalences.append(float(labels.mean()) if labels.size else math.nan)
    finite = [p for p in prevalences if not math.isnan(p)]
    if finite and max(finite) - min(finite) < 1e-12:
        ax.axhline(
            finite[0],
            color="0.5",
            linestyle="--",
            linewidth=1,
            label=f"prevalence {fmt(finite[0])}",
        )
    else:
        for i, p in enumerate(prevalences):
            if not math.isnan(p):
                ax.axhline(p, color=f"C{i}", linestyle="--", linewidth=0.8, alpha=0.7)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (completeness)", ylabel="precision")
    ax.set_title("Precision-recall")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_reliability(
    path: str | os.PathLike[str], table: pd.DataFrame, title: str = "Reliability"
) -> Path:
    """Reliability diagram: fraction real against mean probability per bin, counts below.

    Parameters
    ----------
    path : path-like
        PNG to write.
    table : pandas.DataFrame
        :func:`tasks.evaluate.metrics.reliability_table`: ``bin_lo``, ``bin_hi``, ``n``,
        ``mean_prob``, ``frac_real``. Bars show ``frac_real`` over each bin, dots sit at
        ``(mean_prob, frac_real)``; a calibrated model lies on the diagonal.
    title : str
        Title of the upper panel.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = _figure()
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    lo = table["bin_lo"].to_numpy(np.float64)
    hi = table["bin_hi"].to_numpy(np.float64)
    n = table["n"].to_numpy(np.int64)
    filled = (n > 0) & table["frac_real"].notna().to_numpy()
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    if filled.any():
        frac = table["frac_real"].to_numpy(np.float64)
        mean = table["mean_prob"].to_numpy(np.float64)
        top.bar(
            lo[filled],
            frac[filled],
            width=(hi - lo)[filled],
            align="edge",
            color="C0",
            alpha=0.3,
            edgecolor="C0",
            label="fraction real",
        )
        top.plot(mean[filled], frac[filled], "o", color="C0", label="at mean probability")
        top.legend(loc="upper left", fontsize=8)
    else:
        top.text(
            0.5,
            0.5,
            "no probabilities",
            ha="center",
            va="center",
            fontsize=12,
            transform=top.transAxes,
        )
    top.set(xlim=(0, 1), ylim=(0, 1.05), ylabel="fraction real")
    top.set_title(title)
    bottom.bar(lo, n, width=hi - lo, align="edge", color="0.6", edgecolor="0.3")
    for x, count in zip((lo + hi) / 2, n, strict=True):
        if count:
            bottom.annotate(str(count), (x, count), ha="center", va="bottom", fontsize=7)
    bottom.set(xlim=(0, 1), ylim=(0, max(int(n.max(initial=0)), 1) * 1.35))
    bottom.set(xlabel="predicted probability of real", ylabel="count")
    return _save(fig, path)


def plot_loss(
    path: str | os.PathLike[str], histories: Mapping[str, Mapping[str, Sequence[float]]]
) -> Path:
    """Loss per epoch of one or more training runs.

    Parameters
    ----------
    path : path-like
        PNG to write.
    histories : mapping of str to mapping of str to sequence of float
        Run name (colour) to series name (line style: the first solid, the second dashed,
        ...) to one loss per epoch, e.g. ``{"field split": {"train": [...], "validation":
        [...]}, "random split": {...}}``. Epochs are numbered from 1. None values are gaps.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    styles = ("-", "--", ":", "-.")
    fig = _figure()
    ax = fig.add_subplot()
    drawn = False
    for i, (run, series) in enumerate(histories.items()):
        for j, (name, values) in enumerate(series.items()):
            loss = np.array([math.nan if v is None else v for v in values], np.float64)
            if not np.isfinite(loss).any():
                continue
            ax.plot(
                np.arange(1, len(loss) + 1),
                loss,
                color=f"C{i}",
                linestyle=styles[j % len(styles)],
                marker="o",
                markersize=3,
                label=f"{run}: {name}",
            )
            drawn = True
    if not drawn:
        _message(ax, "no loss history")
        return _save(fig, path)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="loss (weighted BCE)")
    ax.set_title("Loss")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_completeness(path: str | os.PathLike[str], table: pd.DataFrame) -> Path:
    """Completeness (fraction of real candidates called real) against truth magnitude.

    Parameters
    ----------
    path : path-like
        PNG to write.
    table : pandas.DataFrame
        :func:`tasks.evaluate.metrics.completeness_by_mag`: ``mag_lo``, ``mag_hi``, ``n_real``,
        ``recovered``, ``completeness``. Bins with ``n_real = 0`` are left out; each point
        has a 68.27 % Wilson binomial interval (``astropy.stats.binom_conf_interval``: not
        zero-width at 0 or 1, unlike ``sqrt(p (1 - p) / n)``) and its ``n`` written above. An
        empty table gives a figure saying "no truth magnitudes".

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = _figure()
    ax = fig.add_subplot()
    n = table["n_real"].to_numpy(np.int64) if len(table) else np.zeros(0, np.int64)
    filled = n > 0
    if not filled.any():
        _message(ax, "no truth magnitudes")
        return _save(fig, path)
    lo = table["mag_lo"].to_numpy(np.float64)[filled]
    hi = table["mag_hi"].to_numpy(np.float64)[filled]
    n = n[filled]
    k = table["recovered"].to_numpy(np.int64)[filled]
    p = k / n
    low, high = binom_conf_interval(k, n, confidence_level=0.6827, interval="wilson")
    mid = (lo + hi) / 2
    # at p = 0 or 1 the interval's end equals p up to rounding: no negative bar lengths
    yerr = np.clip([p - low, high - p], 0.0, None)
    ax.errorbar(mid, p, xerr=(hi - lo) / 2, yerr=yerr, fmt="o", color="C0", capsize=2)
    for x, top, count in zip(mid, high, n, strict=True):
        ax.annotate(
            f"n={count}",
            (x, top),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set(ylim=(0, 1.12), xlabel="truth magnitude (AB)", ylabel="completeness")
    ax.set_title("Completeness of real candidates")
    return _save(fig, path)


def _check_cutout(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != len(CHANNEL_TITLES):
        raise ValueError(f"a cutout must have shape (H, W, 4), channel-last; got {arr.shape}")
    return arr


def plot_gallery(
    path: str | os.PathLike[str],
    groups: Mapping[str, Sequence[tuple[Any, str]]],
    per_group: int = 4,
) -> Path:
    """Example cutouts, one row each, four channels side by side.

    Parameters
    ----------
    path : path-like
        PNG to write. Width ``GALLERY_LABEL_IN + 4 GALLERY_CELL_IN`` inches, height
        ``GALLERY_TITLE_IN + rows GALLERY_CELL_IN``, at :data:`DPI`.
    groups : mapping of str to sequence of (array, str)
        Group name (e.g. ``"true positive"``, ``"false positive"``) to examples: a cutout of
        shape (64, 64, 4) (any (H, W, 4)), channel-last, values in [0, 1], and its caption
        (e.g. ``"jid0003 #17 p=0.93"``). Row label: group name and caption. A group without
        examples gets one row saying "none".
    per_group : int
        At most this many examples of each group (the first ones), >= 1.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        ``per_group < 1`` or a cutout not of shape (H, W, 4).
    """
    if per_group < 1:
        raise ValueError(f"per_group must be >= 1, got {per_group}")
    rows: list[tuple[str, np.ndarray | None, str]] = []
    for group, examples in groups.items():
        chosen = list(examples)[:per_group]
        if not chosen:
            rows.append((group, None, ""))
        rows.extend((group, _check_cutout(image), caption) for image, caption in chosen)
    n_cols = len(CHANNEL_TITLES)
    width = GALLERY_LABEL_IN + n_cols * GALLERY_CELL_IN
    fig = _figure((width, GALLERY_TITLE_IN + max(len(rows), 1) * GALLERY_CELL_IN))
    if not rows:
        _message(fig.add_subplot(), "no examples")
        return _save(fig, path)
    grid = fig.add_gridspec(len(rows), n_cols)
    titled = False
    for r, (group, image, caption) in enumerate(rows):
        if image is None:
            ax = fig.add_subplot(grid[r, :])
            ax.set(xticks=[], yticks=[])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_ylabel(group, rotation=0, ha="right", va="center", fontsize=8)
            ax.text(
                0.5,
                0.5,
                "none",
                ha="center",
                va="center",
                fontsize=10,
                color="0.4",
                transform=ax.transAxes,
            )
            continue
        for c in range(n_cols):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(image[:, :, c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            if not titled:
                ax.set_title(CHANNEL_TITLES[c], fontsize=9)
            if c == 0:
                label = f"{group}\n{caption}" if caption else group
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        titled = True
    return _save(fig, path)


