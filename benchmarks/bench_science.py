"""Classifier quality at realistic density: the smoke-trained CNN against the catalog baseline.

Builds the configuration of ``benchmarks/science.yaml`` (the simulator's realistic defaults:
4089 x 4089 jobs, about 100 injected fakes per job, 48 sky fields split by whole fields,
36 / 6 / 6; three networks reading the pixels and the catalog features) for each simulation
seed with ``cutouts simulate`` and ``cutouts run``, then reads each dataset's
``metrics.json`` and writes one table: per seed, the test ROC AUC with its
bootstrap 95 % interval, the FNR at 1 % FPR with its interval, the FNR and FPR at the
threshold chosen on validation, the FPR per bogus kind and the completeness against
magnitude, for the CNN and for the gradient-boosting baseline on catalog features; and
whether each target is met (ROC AUC >= 0.995, FNR <= 1 % at 1 % FPR, the CNN at least as
good as the baseline on both).

    .venv/bin/python benchmarks/bench_science.py                   # 3 seeds
    .venv/bin/python benchmarks/bench_science.py --seeds 0 --keep  # one seed, keep the data
    .venv/bin/python benchmarks/bench_science.py --seeds 0,1 --metrics 2=dataset-2/metrics.json

One seed takes about an hour on 2 CPU cores (measured timings: docs/evaluation.md, "At
realistic density"). Disk: the jobs of one seed (about 46 GB) are deleted once built; each
dataset (shards, about 13 GB) is deleted after its metrics are read unless ``--keep``.
``--metrics SEED=PATH`` puts a seed whose dataset was built and trained before (its
``metrics.json``) in the table instead of building it again;
``benchmarks/science-metrics/`` keeps those of the documented run.

Writes ``benchmarks/results/science.json`` and ``benchmarks/results/science.md`` (or
``--out``), and prints the table; exit status 1 when a target is missed on any seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import CUTOUTS, write_result

HERE = Path(__file__).resolve().parent
#: Targets on every seed, on the test split (whole sky fields the models never saw).
TARGET_AUC = 0.995
TARGET_FNR = 0.01
MODELS = {"cnn": "CNN", "gradient_boosting": "gradient boosting"}


def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output in ``log``; its wall seconds. Fails loudly."""
    started = time.perf_counter()
    with open(log, "w") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} exited {done.returncode}; see {log}")
    return time.perf_counter() - started


def build(seed: int, params: Path, work: Path) -> tuple[dict, dict[str, float]]:
    """Simulate and build one seed; its ``metrics.json`` and the seconds of each step."""
    jobs, dataset = work / f"jobs-{seed}", work / f"dataset-{seed}"
    for folder in (jobs, dataset):
        shutil.rmtree(folder, ignore_errors=True)
    seconds = {
        "simulate": _run([CUTOUTS, "simulate", "-o", str(jobs), "--seed", str(seed),
                          "--params", str(params)], work / f"simulate-{seed}.log"),
        "run": _run([CUTOUTS, "run", "-i", str(jobs), "-o", str(dataset), "--params",
                     str(params)], work / f"run-{seed}.log"),
    }
    shutil.rmtree(jobs)
    metrics = json.loads((dataset / "metrics.json").read_text())
    return metrics, seconds


def given_metrics(specs: list[str]) -> dict[str, dict]:
    """The ``metrics.json`` of each ``SEED=PATH`` of ``--metrics``, by seed."""
    out = {}
    for spec in specs:
        seed, sep, path = spec.partition("=")
        seed, file = seed.strip(), Path(path)
        if not sep or not seed.isdigit():
            sys.exit(f"--metrics {spec!r}: expected SEED=PATH, e.g. 2=dataset-2/metrics.json")
        try:
            metrics = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            sys.exit(f"--metrics {spec!r}: cannot read {path}: {err}")
        out[seed] = {**metrics, "from": str(file)}
    return out


def summarise(metrics: dict) -> dict:
    """The figures of the table for one seed: per model, test metrics and their intervals."""
    out = {
        "counts": metrics["counts"],
        "n_jobs": metrics["n_jobs"],
        "train_step_seconds": metrics["seconds"],  # networks, baselines, plots
        "train_cutouts_per_s": metrics["train_cutouts_per_s"],
        "device": metrics["device"],
        "models": {},
    }
    for key in MODELS:
        test = metrics["models"][key]["test"]
        out["models"][key] = {
            "description": metrics["models"][key]["description"],
            "roc_auc": test["roc_auc"],
            "roc_auc_ci95": test["roc_auc_ci95"],
            "fnr_at_1pct_fpr": test["fnr_at_1pct_fpr"],
            "fnr_at_1pct_fpr_ci95": test["fnr_at_1pct_fpr_ci95"],
            "fnr_at_threshold": test["fnr"],
            "fpr_at_threshold": test["fpr"],
            "fpr_by_kind": metrics["models"][key]["fpr_by_kind"],
            "completeness_vs_mag": metrics["models"][key]["completeness_vs_mag"],
        }
    cnn, gbm = out["models"]["cnn"], out["models"]["gradient_boosting"]
    out["targets"] = {
        "roc_auc": cnn["roc_auc"] >= TARGET_AUC,
        "fnr_at_1pct_fpr": cnn["fnr_at_1pct_fpr"] <= TARGET_FNR,
        "cnn_at_least_baseline": cnn["roc_auc"] >= gbm["roc_auc"]
        and cnn["fnr_at_1pct_fpr"] <= gbm["fnr_at_1pct_fpr"],
    }
    return out


def _ci(value: float, ci: list[float], digits: int, scale: float = 1.0) -> str:
    return (f"{scale * value:.{digits}f} [{scale * ci[0]:.{digits}f}, "
            f"{scale * ci[1]:.{digits}f}]")


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{100 * value:.1f}")


def _name(key: str, model: dict) -> str:
    """The model's name in the tables; a CNN that reads catalog features says so."""
    if key == "cnn" and "catalog features" in model.get("description", ""):
        return "CNN, pixels + catalog"
    return MODELS[key]


def table(result: dict) -> str:
    """The markdown of ``science.md``: headline, per-kind FPR and completeness tables."""
    seeds = result["seeds"]
    lines = [
        "| seed | model | test ROC AUC [95 % CI] | FNR at 1 % FPR, % [95 % CI] | FNR, FPR at the "
        "validation threshold (%) | targets met |",
        "|---|---|---|---|---|---|",
    ]
    for seed, res in seeds.items():
        for key in MODELS:
            m = res["models"][key]
            name = _name(key, m)
            met = ", ".join(f"{what} {'yes' if ok else 'no'}" for what, ok in zip(
                ("AUC", "FNR", ">= baseline"), res["targets"].values(), strict=True)
            ) if key == "cnn" else ""
            lines.append(
                f"| {seed} | {name} | {_ci(m['roc_auc'], m['roc_auc_ci95'], 4)} | "
                f"{_ci(m['fnr_at_1pct_fpr'], m['fnr_at_1pct_fpr_ci95'], 2, 100)} | "
                f"{_pct(m['fnr_at_threshold'])}, {_pct(m['fpr_at_threshold'])} | {met} |"
            )
    kinds = sorted({r["kind"] for res in seeds.values() for key in MODELS
                    for r in res["models"][key]["fpr_by_kind"]})
    lines += ["", "False-positive rate (%) per bogus kind on the test split, at the threshold "
              "chosen on validation:", "",
              "| seed | model | " + " | ".join(kinds) + " |",
              "|---|---|" + "---|" * len(kinds)]
    for seed, res in seeds.items():
        for key in MODELS:
            by = {r["kind"]: r["fpr"] for r in res["models"][key]["fpr_by_kind"]}
            cells = [_pct(by.get(k)) for k in kinds]
            lines.append(f"| {seed} | {_name(key, res['models'][key])} | "
                         + " | ".join(cells) + " |")
    lines += ["", "Completeness (%) against the truth magnitude (AB) of the real candidates of "
              "the test split, at the same threshold (real candidates per bin in brackets):", ""]
    bins = sorted({(r["mag_lo"], r["mag_hi"]) for res in seeds.values() for key in MODELS
                   for r in res["models"][key]["completeness_vs_mag"]})
    lines += ["| seed | model | " + " | ".join(f"{lo:g}–{hi:g}" for lo, hi in bins) + " |",
              "|---|---|" + "---|" * len(bins)]
    for seed, res in seeds.items():
        for key in MODELS:
            by = {(r["mag_lo"], r["mag_hi"]): r for r in res["models"][key]["completeness_vs_mag"]}
            cells = [f"{_pct(by[b]['completeness'])} ({by[b]['n_real']})" if b in by else "–"
                     for b in bins]
            lines.append(f"| {seed} | {_name(key, res['models'][key])} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=HERE / "science.yaml")
    ap.add_argument("--seeds", default="0,1,2", help="simulation seeds, comma-separated")
    ap.add_argument("--workdir", type=Path, default=HERE / "results" / "work" / "science")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "science.json")
    ap.add_argument("--keep", action="store_true", help="keep each seed's dataset")
    ap.add_argument("--metrics", action="append", default=[], metavar="SEED=PATH",
                    help="a seed built before: summarise its metrics.json instead of building")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "params": str(args.params),
        "machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                    "processor": platform.processor()},
        "seeds": {},
    }
    given = given_metrics(args.metrics)
    for seed, metrics in given.items():
        result["seeds"][seed] = {**summarise(metrics), "metrics_from": metrics["from"]}
    write_result(args.out, result)
    for seed in [int(s) for s in args.seeds.split(",") if s.strip() and s.strip() not in given]:
        metrics, seconds = build(seed, args.params, args.workdir)
        result["seeds"][str(seed)] = {**summarise(metrics), "seconds": seconds}
        write_result(args.out, result)  # after each seed: a long run keeps what it has
        if not args.keep:
            shutil.rmtree(args.workdir / f"dataset-{seed}")
    markdown = table(result)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    met = all(all(res["targets"].values()) for res in result["seeds"].values())
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
