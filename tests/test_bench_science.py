"""benchmarks/bench_science.py: the table and the targets, without simulating anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from croissant_cutouts.tasks.config import load_params
from croissant_cutouts.tasks.dataset.splits import deal_counts

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    from conftest import load_benchmark

    return load_benchmark("bench_science")


def _model(auc: float, fnr: float, kinds: dict[str, float], what: str = "") -> dict:
    return {
        "description": what,
        "test": {"roc_auc": auc, "roc_auc_ci95": [auc - 0.001, min(auc + 0.001, 1.0)],
                 "fnr_at_1pct_fpr": fnr, "fnr_at_1pct_fpr_ci95": [fnr / 2, fnr * 2],
                 "fnr": fnr + 0.002, "fpr": 0.009},
        "fpr_by_kind": [{"kind": k, "n_bogus": 100, "false_positives": round(100 * v),
                         "fpr": v} for k, v in kinds.items()],
        "completeness_vs_mag": [
            {"mag_lo": 21.0, "mag_hi": 21.5, "n_real": 90, "recovered": 90, "completeness": 1.0},
            {"mag_lo": 25.0, "mag_hi": 25.5, "n_real": 20, "recovered": 15,
             "completeness": 0.75},
        ],
    }


def _metrics(cnn: tuple[float, float], gbm: tuple[float, float], cnn_what: str = "") -> dict:
    return {
        "counts": {"test": {"real": 728, "bogus": 17554}}, "n_jobs": {"test": 12},
        "train_cutouts_per_s": 2441.3, "device": "cpu", "seconds": 212.4,
        "models": {"cnn": _model(*cnn, {"cosmic_ray": 0.004, "hot_pixel": 0.011}, cnn_what),
                   "gradient_boosting": _model(*gbm, {"cosmic_ray": 0.0, "noise": 0.02})},
    }


@pytest.mark.parametrize(
    ("cnn", "gbm", "met"),
    [
        ((0.9987, 0.0096), (0.9983, 0.0179), (True, True, True)),
        ((0.9987, 0.0110), (0.9983, 0.0179), (True, False, True)),  # FNR above 1 %
        ((0.9940, 0.0080), (0.9983, 0.0179), (False, True, False)),  # below 0.995, below GBM
        ((0.9990, 0.0100), (0.9983, 0.0090), (True, True, False)),  # GBM misses fewer
    ],
)
def test_targets_per_seed(bench, cnn, gbm, met):
    summary = bench.summarise(_metrics(cnn, gbm))
    assert tuple(summary["targets"].values()) == met
    assert summary["models"]["cnn"]["roc_auc"] == cnn[0]


def test_table_shows_intervals_kinds_and_completeness_of_both_models(bench):
    catalog = "SmallCNN ... input scaling limits, and 2 catalog features (qfit, sharpness)"
    result = {"seeds": {"0": bench.summarise(_metrics((0.9987, 0.0096), (0.9983, 0.0179))),
                        "1": bench.summarise(_metrics((0.9940, 0.0110), (0.9983, 0.0179),
                                                      catalog))}}
    text = bench.table(result)
    lines = text.splitlines()
    assert "| 0 | CNN | 0.9987 [0.9977, 0.9997] | 0.96 [0.48, 1.92] | 1.2, 0.9 | AUC yes, " \
           "FNR yes, >= baseline yes |" in lines
    assert "| 1 | CNN, pixels + catalog | 0.9940 [0.9930, 0.9950] | 1.10 [0.55, 2.20] | " \
           "1.3, 0.9 | AUC no, FNR no, >= baseline no |" in lines
    assert "| 1 | CNN, pixels + catalog | 0.4 | 1.1 | – |" in lines
    header = next(line for line in lines if line.startswith("| seed | model | cosmic_ray"))
    assert header == "| seed | model | cosmic_ray | hot_pixel | noise |"
    assert "| 0 | gradient boosting | 0.0 | – | 2.0 |" in lines  # a kind it never met: –
    assert "| 0 | gradient boosting | 100.0 (90) | 75.0 (20) |" in lines


@pytest.mark.parametrize(("name", "fields", "dealt", "catalog"), [
    ("science.yaml", 48, {"train": 36, "validation": 6, "test": 6}, True),
    ("science20.yaml", 20, {"train": 12, "validation": 4, "test": 4}, False),
])
def test_benchmark_configurations_split_whole_fields(name, fields, dealt, catalog):
    """Valid params; realistic 4089 x 4089 jobs, every field at 3 epochs, dealt as the docs say."""
    params = load_params(ROOT / "benchmarks" / name)
    sim = params.simulate
    assert (sim.fields, sim.size, sim.jobs) == (fields, 4089, 3 * fields)
    assert params.splits.by in ("auto", "field")
    fractions = {s: getattr(params.splits, s) for s in ("train", "validation", "test")}
    assert deal_counts(fields, fractions) == dealt
    assert params.train.leakage_check is False and params.cutouts.layout == "shards"
    assert (params.train.members, params.train.catalog) == (3, catalog)


def test_a_seed_built_before_is_summarised_from_its_metrics(bench, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(_metrics((0.9994, 0.0083), (0.9979, 0.0473))))
    out = tmp_path / "science.json"
    assert bench.main(["--seeds", "2", "--metrics", f"2={path}", "--out", str(out),
                       "--workdir", str(tmp_path / "work")]) == 0  # seed 2 is not built
    result = json.loads(out.read_text())
    assert list(result["seeds"]) == ["2"]
    assert result["seeds"]["2"]["metrics_from"] == str(path)
    assert "| 2 | CNN | 0.9994 [0.9984, 1.0000] | 0.83 [0.41, 1.66]" in out.with_suffix(
        ".md").read_text()
    with pytest.raises(SystemExit, match="expected SEED=PATH"):
        bench.main(["--metrics", str(path), "--out", str(out)])
    (tmp_path / "cut.json").write_text('{"counts": ')
    for spec, why in [(f"2={tmp_path / 'none.json'}", "No such file"),
                      (f"2={tmp_path / 'cut.json'}", "Expecting value")]:
        with pytest.raises(SystemExit, match=f"cannot read .*{why}"):
            bench.main(["--metrics", spec, "--out", str(out)])
