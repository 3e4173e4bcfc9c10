"""Learning curves: the CNN's and the catalog model's test metrics against fields and epochs.

On a built dataset (``bench_science.py --seeds 0 --keep`` leaves one), trains one network of
the params' ``train`` section (``members`` ignored: one network per point) on the first
``k`` of the training split's sky fields, for each ``k`` of ``--fields`` (a nested series: the
fields of a smaller ``k`` are among those of a larger one, drawn in a fixed shuffled order;
jobs for a dataset split by job), and records after every epoch the validation and test ROC
AUC and FNR at 1 % FPR. The gradient-boosting baseline is fitted on the same fields.
Validation and test are the dataset's own (whole fields the models never see).

    .venv/bin/python benchmarks/bench_science.py --seeds 0 --keep
    .venv/bin/python benchmarks/bench_learning_curve.py \\
        --dataset benchmarks/results/work/science/dataset-0

Writes ``benchmarks/results/learning_curve.json`` and ``.md`` (or ``--out``) and prints the
tables. On 2 AMD EPYC vCPUs, the 60-job configuration of ``science20.yaml`` with 16 epochs and
``--fields 3,6,9,12``: about 24 minutes (each epoch also scores validation and test).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import write_result

from croissant_cutouts.tasks.config import TrainParams, load_params
from croissant_cutouts.tasks.evaluate.baselines import gradient_boosting_scores
from croissant_cutouts.tasks.evaluate.metrics import fnr_at_fpr, roc_auc
from croissant_cutouts.tasks.evaluate.model import resolve_device, train_member
from croissant_cutouts.tasks.evaluate.prepare import Prepared, prepare_rows

HERE = Path(__file__).resolve().parent


def _scores(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """ROC AUC and FNR at 1 % FPR of one side."""
    return {"roc_auc": roc_auc(y, score), "fnr_at_1pct_fpr": fnr_at_fpr(y, score, 0.01)}


def nested_fields(fields: list[str], counts: list[int], seed: int) -> dict[int, list[str]]:
    """The first ``k`` fields of one seeded shuffle of ``fields``, for each ``k`` of ``counts``."""
    order = [fields[i] for i in np.random.default_rng(seed).permutation(len(fields))]
    too_many = [k for k in counts if not 1 <= k <= len(order)]
    if too_many:
        raise SystemExit(f"--fields {too_many}: the training split has {len(order)} fields")
    return {k: sorted(order[:k]) for k in counts}


def _groups(prep: Prepared) -> pd.Series:
    """What the dataset's splits deal whole: sky fields, or jobs for a dataset split by job."""
    return prep.frame["field" if prep.split_by == "field" else "job_id"].astype(str)


def curve_point(
    prep: Prepared, params: TrainParams, fields: list[str], device: torch.device
) -> dict:
    """Train on ``fields`` of the training split; per-epoch CNN metrics and the baseline's."""
    train = prep.sides["train"] & _groups(prep).isin(fields).to_numpy()
    sides = {**prep.sides, "train": train}
    y = prep.y
    epochs: list[dict] = []

    def record(epoch: int, logits: dict[str, np.ndarray]) -> None:
        epochs.append({side: _scores(y[sides[side]], logits[side]) for side in logits})
        test = epochs[-1].get("test", {})
        print(f"  {len(fields)} fields, epoch {epoch}: test ROC AUC "
              f"{test.get('roc_auc', float('nan')):.4f}, FNR at 1 % FPR "
              f"{test.get('fnr_at_1pct_fpr', float('nan')):.4f}", flush=True)

    started = time.perf_counter()
    train_member(prep.data, y, sides, params, device, f"{len(fields)} fields", record)
    seconds = time.perf_counter() - started
    gbm, _ = gradient_boosting_scores(prep.frame, y, train, params.seed)
    baseline = {side: _scores(y[sides[side]], gbm[sides[side]])
                for side in ("validation", "test") if sides[side].any()}
    return {"fields": fields, "train_real": int(y[train].sum()),
            "train_bogus": int((y[train] == 0).sum()), "epochs": epochs,
            "gradient_boosting": baseline, "seconds": seconds}


def table(result: dict) -> str:
    """Markdown: test metrics against training fields (last epoch), then against epochs."""
    points = result["points"]
    lines = [
        "| training fields | real / bogus cutouts | CNN test ROC AUC | CNN test FNR at 1 % FPR "
        "| baseline test ROC AUC | baseline test FNR at 1 % FPR |",
        "|---|---|---|---|---|---|",
    ]
    for k, point in points.items():
        cnn, gbm = point["epochs"][-1]["test"], point["gradient_boosting"]["test"]
        lines.append(
            f"| {k} | {point['train_real']} / {point['train_bogus']} | {cnn['roc_auc']:.4f} "
            f"| {100 * cnn['fnr_at_1pct_fpr']:.2f} % | {gbm['roc_auc']:.4f} "
            f"| {100 * gbm['fnr_at_1pct_fpr']:.2f} % |"
        )
    ks = list(points)
    lines += ["", "| epoch | " + " | ".join(f"{k} fields: AUC, FNR" for k in ks) + " |",
              "|---|" + "---|" * len(ks)]
    for e in range(max(len(p["epochs"]) for p in points.values())):
        cells = []
        for k in ks:
            test = points[k]["epochs"][e]["test"]
            cells.append(f"{test['roc_auc']:.4f}, {100 * test['fnr_at_1pct_fpr']:.2f} %")
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True, help="folder with croissant.json")
    ap.add_argument("--params", type=Path, default=HERE / "science.yaml")
    ap.add_argument("--fields", default="3,6,9,12", help="training field counts, comma-separated")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "learning_curve.json")
    args = ap.parse_args(argv)
    params = load_params(args.params).train.model_copy(
        update={"epochs": args.epochs, "members": 1, "keep_best": False})
    prep = prepare_rows(args.dataset / "croissant.json", params, root=args.dataset)
    if not prep.sides["test"].any():
        raise SystemExit(f"{args.dataset}: no test split to draw curves on")
    fields = sorted(_groups(prep)[prep.sides["train"]].unique())
    subsets = nested_fields(fields, [int(k) for k in args.fields.split(",")], params.seed)
    device = resolve_device(params.device)
    result: dict = {"dataset": str(args.dataset), "params": str(args.params),
                    "epochs": args.epochs, "device": str(device),
                    "machine": {"cpu_count": os.cpu_count(), "machine": platform.machine()},
                    "points": {}}
    for k, chosen in subsets.items():
        result["points"][str(k)] = curve_point(prep, params, chosen, device)
        write_result(args.out, result)  # after each point: a long run keeps what it has
    markdown = table(result)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
