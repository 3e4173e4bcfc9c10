"""Report plots (valid, fixed-size, byte-identical PNGs) and the markdown report."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from croissant_cutouts.tasks.evaluate.metrics import (
    completeness_by_mag,
    evaluate,
    fpr_by_kind,
    mag_bins,
    reliability_table,
    threshold_at_fpr,
)
from croissant_cutouts.tasks.evaluate.plots import (
    DPI,
    FIGSIZE,
    GALLERY_CELL_IN,
    GALLERY_LABEL_IN,
    GALLERY_TITLE_IN,
    plot_completeness,
    plot_gallery,
    plot_loss,
    plot_pr,
    plot_reliability,
    plot_roc,
)
from croissant_cutouts.tasks.evaluate.report import PLOT_TITLES, render_report, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOT_PIXELS = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


@pytest.fixture(scope="module", autouse=True)
def prefect_backend():
    """Replaces conftest's session-wide Prefect server here: plots need none (saves ~8 s)."""
    yield


def scored(seed: int = 0, n: int = 400) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.15).astype(int)
    cnn = rng.normal(size=n) + 3 * y
    return {
        "y": y,
        "cnn": cnn,
        "gb": rng.normal(size=n) + 1.5 * y,
        "prob": 1 / (1 + np.exp(-(cnn - 1.5))),
        "mag": np.where(y == 1, rng.uniform(19, 24, n), np.nan),
        "kind": rng.choice(np.array(["cosmic_ray", "hot_pixel", None], dtype=object), n),
    }


def cutout(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(64, 64, 4)).astype(np.float32)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    with Image.open(path) as image:
        image.load()  # decodes the whole file: a truncated PNG raises here
        return image.size


D = scored()
T = threshold_at_fpr(D["y"], D["cnn"])
CURVES = {"cnn": (D["y"], D["cnn"]), "gradient_boosting": (D["y"], D["gb"])}
CALLED = D["cnn"] > T
COMPLETENESS = completeness_by_mag(D["y"], CALLED, D["mag"], mag_bins(D["mag"]))
GROUPS = {
    "true positive": [(cutout(1), "jid0003 #17 p=0.93"), (cutout(2), "jid0004 #2 p=0.99")],
    "false positive": [],
    "false negative": [(cutout(3), "jid0001 #5 p=0.12")],
    "true negative": [(cutout(4), "")],
}
PLOTS = {
    "roc": lambda p: plot_roc(p, CURVES),
    "pr": lambda p: plot_pr(p, CURVES),
    "reliability": lambda p: plot_reliability(p, reliability_table(D["y"], D["prob"]), "CNN"),
    "loss": lambda p: plot_loss(
        p,
        {
            "field split": {"train": [0.9, 0.6, 0.5], "validation": [0.8, 0.7, 0.72]},
            "random split": {"train": [0.9, 0.5, 0.3], "validation": [0.7, 0.5, None]},
        },
    ),
    "completeness": lambda p: plot_completeness(p, COMPLETENESS),
    # edge cases: all of them must still draw a figure
    "roc_one_class": lambda p: plot_roc(p, {"cnn": (np.zeros(5, int), np.arange(5.0))}),
    "pr_different_labels": lambda p: plot_pr(
        p, {"a": (D["y"], D["cnn"]), "b": (D["y"][:50], D["gb"][:50]), "c": ([], [])}
    ),
    "reliability_empty": lambda p: plot_reliability(
        p, reliability_table(np.array([], int), np.array([]))
    ),
    "loss_empty": lambda p: plot_loss(p, {"field split": {"train": [], "validation": []}}),
    "completeness_empty": lambda p: plot_completeness(
        p, completeness_by_mag([0, 1], [False, True], [np.nan, np.nan], mag_bins([]))
    ),
    "completeness_zero_bins": lambda p: plot_completeness(
        p, completeness_by_mag([0], [False], [20.0], [19.0, 20.0, 21.0])
    ),
}


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_plot_writes_a_fixed_size_png_byte_identical_on_rerun(tmp_path, name):
    first = PLOTS[name](tmp_path / "a" / f"{name}.png")
    assert first == tmp_path / "a" / f"{name}.png"  # returns the path, creates the folder
    assert png_size(first) == PLOT_PIXELS
    second = PLOTS[name](tmp_path / "b" / f"{name}.png")
    assert first.read_bytes() == second.read_bytes()
    PLOTS[name](first)  # overwrite in place: same bytes, no temporary left behind
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in first.parent.iterdir()) == [f"{name}.png"]


def test_png_has_no_software_tag(tmp_path):
    path = PLOTS["roc"](tmp_path / "roc.png")
    with Image.open(path) as image:
        assert "Software" not in image.info


def gallery_pixels(rows: int) -> tuple[int, int]:
    width = GALLERY_LABEL_IN + 4 * GALLERY_CELL_IN
    return round(width * DPI), round((GALLERY_TITLE_IN + rows * GALLERY_CELL_IN) * DPI)


def test_gallery_rows_and_empty_groups(tmp_path):
    # rows: 2 true positives, "none" for false positives, 1 false negative, 1 true negative
    path = plot_gallery(tmp_path / "gallery.png", GROUPS)
    assert png_size(path) == gallery_pixels(5)
    again = plot_gallery(tmp_path / "again.png", GROUPS)
    assert path.read_bytes() == again.read_bytes()
    capped = plot_gallery(tmp_path / "capped.png", GROUPS, per_group=1)  # 1 + 1 + 1 + 1
    assert png_size(capped) == gallery_pixels(4)
    all_empty = plot_gallery(tmp_path / "empty.png", {"true positive": [], "false positive": ()})
    assert png_size(all_empty) == gallery_pixels(2)
    nothing = plot_gallery(tmp_path / "nothing.png", {})
    assert png_size(nothing) == gallery_pixels(1)


def test_gallery_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"\(H, W, 4\)"):
        plot_gallery(tmp_path / "g.png", {"tp": [(np.zeros((4, 64, 64)), "channel-first")]})
    with pytest.raises(ValueError, match="per_group"):
        plot_gallery(tmp_path / "g.png", GROUPS, per_group=0)
    assert not list(tmp_path.iterdir())  # nothing written


# --------------------------------------------------------------------------- report


def block(score: np.ndarray, prob: np.ndarray | None = None) -> dict:
    return evaluate(D["y"], score, T, prob)


def full_metrics() -> dict:
    counts = {"jobs": 6, "fields": 3, "real": 120, "bogus": 880, "unlabelled": 0}
    return {
        "dataset": {
            "name": "rapid-transient-cutouts",
            "version": "0.1.0",
            "croissant": "croissant.json",
            "croissant_sha256": "a" * 64,
            "index_sha256": "b" * 64,
        },
        "params": {
            "train": {"epochs": 8, "lr": 0.001},
            "splits": {"train": 0.6, "validation": 0.2, "test": 0.2, "seed": 0, "by": "auto"},
        },
        "packages": {"python": "3.11.9", "numpy": "2.4.6", "torch": "2.13.0"},
        "device": "cpu",
        "seed": 0,
        "epochs": 8,
        "unlabelled": 3,
        "dropped_by_max_cutouts": 0,
        "splits": {
            "by": "field",
            "counts": {
                "train": counts,
                "validation": {**counts, "jobs": 2, "fields": 1, "real": 40, "bogus": 360},
                "test": {**counts, "jobs": 2, "fields": 1, "real": 0, "bogus": 0},
            },
        },
        "models": {
            "majority": {"description": "always bogus", "test": block(np.zeros(len(D["y"])))},
            "cnn": {
                "description": "SmallCNN",
                "validation": block(D["cnn"], D["prob"]),
                "test": {**block(D["cnn"], D["prob"]), "roc_auc": 0.99996},
            },
            "gradient_boosting": {"description": "HistGradientBoosting", "test": block(D["gb"])},
            "score_peak": {"description": "peak of the score image", "test": block(D["gb"] / 2)},
        },
        "threshold_rule": "per model: the lowest threshold whose validation FPR <= 1 %",
        "completeness_vs_mag": COMPLETENESS.to_dict("records"),
        "fpr_by_kind": fpr_by_kind(D["y"], CALLED, D["kind"]).to_dict("records"),
        "leakage": {
            "field_split_test_auc": 0.9512,
            "random_split_test_auc": 0.9934,
            "gap": 0.9934 - 0.9512,
            "by": "field",
        },
        "target": {"test_roc_auc": 0.99, "met": True, "beats_baselines": True},
        "loss": {"train": [0.9, 0.5], "validation": [0.8, 0.6]},
        "layout": "files",
        "train_cutouts_per_s": 1234.5,
        "seconds": 61.25,
    }


PLOT_PATHS = {name: f"plots/{name}.png" for name in PLOT_TITLES}


def test_render_report_full():
    metrics = full_metrics()
    text = render_report(metrics, {**PLOT_PATHS, "extra": "plots/extra curve.png"})
    for title in (
        "# Real/bogus classifier report: rapid-transient-cutouts 0.1.0",
        "## Models (test split)",
        "## Data splits",
        "## Leakage check",
        "## Completeness vs truth magnitude",
        "## False positives by kind of bogus",
        "## Reproducibility",
        "## Other plots",
    ):
        assert title in text
    assert text.index("**Target met**") < text.index("## Models")  # verdict up front
    assert "0.99996 (target 0.99)" in text  # not rounded up to a perfect 1
    assert "beats every baseline" in text
    assert "Leakage gap 0.0422 (random − field)" in text
    for name, path in PLOT_PATHS.items():
        assert f"![{PLOT_TITLES[name]}]({path})" in text
    assert "](<plots/extra curve.png>)" in text
    # models table: cnn first, then the baselines in a fixed order; numbers to 4 digits
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["cnn", "gradient_boosting", "score_peak", "majority"]
    cnn = metrics["models"]["cnn"]["test"]
    assert f"| {cnn['pr_auc']:.4g} | {cnn['fnr_at_1pct_fpr']:.4g} | {T:.4g} |" in rows[0]
    assert rows[0].endswith(f"| {cnn['ece']:.4g} |")
    assert rows[1].endswith("| – |")  # no ECE for a score that is not a probability
    # per-split counts with real fraction; an empty split has none
    assert "| train | 6 | 3 | 120 | 880 | 0 | 0.12 |" in text
    assert "| validation | 2 | 1 | 40 | 360 | 0 | 0.1 |" in text
    assert "| test | 2 | 1 | 0 | 0 | 0 | – |" in text
    assert "Unlabelled candidates skipped: 3" in text
    first_bin = metrics["completeness_vs_mag"][0]
    assert f"| {first_bin['mag_lo']:.2f}–{first_bin['mag_hi']:.2f} | {first_bin['n_real']} |" in (
        text
    )
    assert "| cosmic_ray |" in text and "| hot_pixel |" in text
    assert "a" * 64 in text and "b" * 64 in text and "torch 2.13.0" in text
    assert '"lr": 0.001' in text and "Device cpu, seed 0" in text
    assert text.endswith("```\n") and "\n\n\n" not in text


def test_render_report_with_missing_values():
    metrics = full_metrics()
    metrics["models"]["cnn"]["test"] = dict.fromkeys(metrics["models"]["cnn"]["test"])
    metrics["models"]["majority"]["test"]["roc_auc"] = float("nan")
    metrics["completeness_vs_mag"] = []
    metrics["fpr_by_kind"] = []
    metrics["leakage"] = {"field_split_test_auc": None, "random_split_test_auc": None}
    metrics["target"] = {"test_roc_auc": 0.99, "met": False, "beats_baselines": False}
    metrics["splits"]["counts"]["train"]["fields"] = None
    metrics["train_cutouts_per_s"] = None
    text = render_report(metrics, {"roc": "plots/roc.png"})
    assert "**Target missed**: the CNN's test ROC AUC is – (target 0.99)." in text
    assert "does **not** beat every baseline" in text
    assert "| `cnn` | – | – | – | – | – | – | – |" in text
    assert "| `majority` | – |" in text
    assert "Not available (no truth magnitudes)." in text
    assert "Not available (no bogus kinds)." in text
    assert "Not available (no random-split run)." in text
    assert "| train | 6 | – | 120 |" in text and "training cutouts/s" not in text
    assert "](plots/roc.png)" in text and "plots/pr.png" not in text
    assert re.search(r"\bnan\b", text, re.IGNORECASE) is None  # no raw NaN anywhere


def test_render_report_with_almost_nothing():
    text = render_report({}, {})
    assert text.startswith("# Real/bogus classifier report\n")
    assert (
        "**Target unknown**: the CNN's test ROC AUC is – (target –)." in text
        and "Not available (no model was evaluated)." in text
    )
    assert "Not available (no truth magnitudes)." in text and "## Reproducibility" in text


def test_write_report_is_atomic_and_matches_render(tmp_path):
    metrics = full_metrics()
    before = copy.deepcopy(metrics)
    path = write_report(tmp_path / "out" / "report.md", metrics, PLOT_PATHS)
    assert path.read_text(encoding="utf-8") == render_report(metrics, PLOT_PATHS)
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]
    assert metrics == before  # not modified


def test_report_plots_from_a_data_frame_round_trip(tmp_path):
    # metrics.json stores tables as records; the plots take data frames: both ways work
    table = pd.DataFrame(full_metrics()["completeness_vs_mag"])
    path = plot_completeness(tmp_path / "c.png", table)
    assert path.read_bytes() == PLOTS["completeness"](tmp_path / "d.png").read_bytes()


def test_completeness_of_one_in_a_bin_of_sixteen_plots(tmp_path):
    """Wilson's upper end at k = n = 16 is 1 - 1e-16: a bar length must not go negative."""
    table = pd.DataFrame({"mag_lo": [20.0, 20.5], "mag_hi": [20.5, 21.0],
                          "n_real": [16, 5], "recovered": [16, 0]})
    path = plot_completeness(tmp_path / "c.png", table)
    assert path.stat().st_size > 1000


def test_roc_axis_is_logarithmic_from_half_the_smallest_rate(tmp_path, monkeypatch):
    """The FPR axis is log, starts at 0.5 / n_neg, and a rate of 0 is drawn at that edge."""
    import matplotlib.figure

    from croissant_cutouts.tasks.evaluate.plots import fpr_floor, plot_roc

    y = np.array([0] * 40 + [1] * 10)
    score = np.r_[np.linspace(0, 1, 40), np.linspace(2, 3, 10)]  # perfect: FPR 0 at TPR 1
    assert fpr_floor(y) == 0.5 / 40 and fpr_floor(np.ones(3)) == 1e-3
    seen = []

    def spy(fig, *args, **kwargs):  # read the axis before the figure is cleared
        ax = fig.axes[0]
        seen.append((ax.get_xscale(), ax.get_xlim(), ax.lines[2].get_data()))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    plot_roc(tmp_path / "roc.png", {"CNN": (y, score)})
    ((scale, xlim, (x, t)),) = seen  # lines: chance, the FPR line, then the CNN's curve
    assert scale == "log" and xlim[0] == pytest.approx(0.5 / 40)
    assert np.min(x) == pytest.approx(0.5 / 40) and np.max(t) == 1.0


def test_completeness_error_bars_are_wilson_intervals(tmp_path, monkeypatch):
    """Not zero-width at 0 or 1: astropy's Wilson interval, 68.27 %."""
    import matplotlib.axes
    from astropy.stats import binom_conf_interval

    from croissant_cutouts.tasks.evaluate.plots import plot_completeness

    table = pd.DataFrame({"mag_lo": [20.0, 21.0], "mag_hi": [21.0, 22.0], "n_real": [5, 4],
                          "recovered": [5, 0], "completeness": [1.0, 0.0]})
    bars = {}
    real = matplotlib.axes.Axes.errorbar

    def spy(ax, x, y, **kw):
        bars.update(kw)
        return real(ax, x, y, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    plot_completeness(tmp_path / "c.png", table)
    low, high = binom_conf_interval(np.array([5, 0]), np.array([5, 4]), 0.6827, "wilson")
    below, above = bars["yerr"]
    np.testing.assert_allclose(below, [1 - low[0], 0 - low[1]], atol=1e-12)
    np.testing.assert_allclose(above, [high[0] - 1, high[1] - 0], atol=1e-12)
    assert below[0] > 0 and above[1] > 0  # a real interval at p = 1 and at p = 0


def test_report_shows_bootstrap_intervals_beside_their_values():
    from croissant_cutouts.tasks.evaluate.bootstrap import bootstrap_ci

    metrics = full_metrics()
    models = metrics["models"]
    for name, score in (("cnn", D["cnn"]), ("gradient_boosting", D["gb"])):
        models[name]["test"] = evaluate(D["y"], score, T, resamples=200, seed=3)
    metrics["bootstrap"] = {"resamples": 200, "level": 0.95, "seed": 3, "method": "percentile"}
    text = render_report(metrics, {})
    cnn = models["cnn"]["test"]
    lo, hi = bootstrap_ci(D["y"], D["cnn"], 200, seed=3)["roc_auc"]
    assert lo <= cnn["roc_auc"] <= hi and (lo, hi) == tuple(cnn["roc_auc_ci95"])
    auc = f"{cnn['roc_auc']:.4g} [{lo:.4g}, {hi:.4g}]"
    row = next(line for line in text.splitlines() if line.startswith("| `cnn`"))
    flo, fhi = cnn["fnr_at_1pct_fpr_ci95"]
    assert row.startswith(f"| `cnn` | {auc} | {cnn['pr_auc']:.4g} | ")
    assert f"| {cnn['fnr_at_1pct_fpr']:.4g} [{flo:.4g}, {fhi:.4g}] |" in row
    assert f"test ROC AUC is {auc} (target 0.99)" in text  # the verdict quotes it too
    majority = next(line for line in text.splitlines() if line.startswith("| `majority`"))
    assert "[" not in majority  # a block without intervals shows its values only
    assert "95 % percentile-bootstrap intervals over the cutouts of the test split, 200 " in text
    assert "seed 3." in text
    assert "percentile-bootstrap" not in render_report(full_metrics(), {})


def test_report_of_training_set_figures_says_so_first():
    metrics = full_metrics()
    caution = "TRAINING-SET FIGURES: no held-out split (2 jobs); proves nothing"
    metrics.update(evaluated_on="train", held_out=False, caution=caution, threshold_on="train")
    metrics["target"] = {"test_roc_auc": 0.99, "met": None, "beats_baselines": None}
    text = render_report(metrics, PLOT_PATHS)
    lines = text.splitlines()
    assert lines[2] == f"> **{caution}.**"  # right under the title, before any number
    auc = metrics["models"]["cnn"]["test"]["roc_auc"]
    assert (f"**Not judged** (nothing held out): the CNN's ROC AUC on the training set is "
            f"{auc} (no target).") in text
    for title in ("## Models (training set)", "## Completeness vs truth magnitude (CNN, "
                  "training set)", "## False positives by kind of bogus (CNN, training set)",
                  "## Examples (CNN, training set)"):
        assert title in text
    assert "test split" not in text
    assert "threshold chosen on the training set" in text
    assert "Target met" not in text and "TRAINING-SET" not in render_report(full_metrics(), {})
    # without the sentence, the flag alone still puts a caution up front
    del metrics["caution"]
    assert render_report(metrics, {}).splitlines()[2].startswith("> **TRAINING-SET FIGURES")
