"""What a run did: the one-line summary, and the Prefect artifacts shown on the flow run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from croissant_cutouts.tasks.contract import (
    CROISSANT_FILE,
    INDEX_FILE,
    METRICS_FILE,
    PLOTS_DIR,
    PREDICTIONS_FILE,
    PREDICTIONS_SUMMARY,
    REJECTS_FILE,
    REPORT_FILE,
)
from croissant_cutouts.tasks.dataset.cutout import JobCutouts
from croissant_cutouts.tasks.errors import JobRejection

__all__ = [
    "RunSummary", "job_counts", "prediction_lines", "publish_job_table", "publish_summary",
    "summary_from_index",
]


@dataclass
class RunSummary:
    """What a run did; :meth:`line` is the one-line summary every command ends with."""

    dataset: str
    jobs: int = 0
    from_cache: int = 0
    jobs_rejected: int = 0
    cutouts: int = 0
    real: int = 0
    bogus: int = 0
    rejected: int = 0
    seconds: float = 0.0
    croissant: str | None = None
    metrics: dict[str, Any] | None = None
    #: What ``cutouts predict`` found (``predictions.json``).
    predictions: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"jobs: {self.jobs} ({self.from_cache} from cache, {self.jobs_rejected} rejected), "
            f"cutouts: {self.cutouts}, real: {self.real}, bogus: {self.bogus}, "
            f"rejected: {self.rejected}, seconds: {self.seconds:.1f}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_counts(results: list[JobCutouts | JobRejection]) -> list[dict[str, Any]]:
    """One row per job: cutouts, real, bogus, rejected rows, and the reason of a rejected job."""
    rows = []
    for res in sorted(results, key=lambda r: r.job_id):
        if isinstance(res, JobRejection):
            rows.append(
                {
                    "job_id": res.job_id,
                    "cutouts": 0,
                    "real": 0,
                    "bogus": 0,
                    "rejected": res.n_catalog_rows,
                    "job_rejected": res.reason,
                    "worker": "",
                }
            )
            continue
        rows.append(
            {
                "job_id": res.job_id,
                "cutouts": res.n_rows,
                "real": res.real,
                "bogus": res.bogus,
                "rejected": len(res.row_rejects),
                "job_rejected": "",
                "worker": res.worker,
            }
        )
    return rows


def publish_job_table(results: list[JobCutouts | JobRejection]) -> None:
    """A table artifact of per-job counts, shown on the flow run in the Prefect UI."""
    create_table_artifact(
        key="job-counts",
        table=job_counts(results),
        description="Per job: cutouts written, real, bogus, rejected catalog rows, and the "
        "worker (host:pid) that cut it.",
    )


def _with_interval(block: dict[str, Any], key: str) -> str:
    """``0.987 [0.975, 0.994]``: a value and its bootstrap 95 % interval, where it has one."""
    low, high = block.get(f"{key}_ci95") or (None, None)
    interval = f" [{_cell(low)}, {_cell(high)}]" if low is not None else ""
    return _cell(block.get(key)) + interval


def _metrics_lines(metrics: dict[str, Any]) -> list[str]:
    """The models' table of the summary artifact, on the split the metrics were measured on."""
    models = metrics.get("models") or {}
    if not models:
        return []
    split = metrics.get("evaluated_on") or "test"
    lines = [f"**{metrics['caution']}**", ""] if metrics.get("caution") else []
    lines += [
        f"| model ({split} split) | ROC AUC [95 %] | PR AUC | FNR at 1 % FPR [95 %] | ECE |",
        "|---|---|---|---|---|",
    ]
    for name, block in models.items():
        t = block.get("test") or {}
        cells = [_with_interval(t, "roc_auc"), _cell(t.get("pr_auc")),
                 _with_interval(t, "fnr_at_1pct_fpr"), _cell(t.get("ece"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if metrics.get("held_out") is not False:
        gap = (metrics.get("leakage") or {}).get("gap")
        lines += ["", f"Leakage gap (random per-cutout split AUC minus this one): {_cell(gap)}"]
    return [*lines, ""]


def publish_summary(summary: RunSummary, out_dir: Path, gallery: Path | None = None) -> None:
    """A markdown artifact: the summary line, the test metrics, links to the report and plots."""
    lines = [f"# Dataset {summary.dataset}", "", f"`{summary.line()}`", ""]
    lines += _metrics_lines(summary.metrics or {})
    lines += [f"{line}.\n" for line in prediction_lines(summary.predictions)]
    links = [
        (PREDICTIONS_FILE, out_dir / PREDICTIONS_FILE),
        (PREDICTIONS_SUMMARY, out_dir / PREDICTIONS_SUMMARY),
        (REPORT_FILE, out_dir / REPORT_FILE),
        (CROISSANT_FILE, out_dir / CROISSANT_FILE),
        (INDEX_FILE, out_dir / INDEX_FILE),
        (REJECTS_FILE, out_dir / REJECTS_FILE),
        (METRICS_FILE, out_dir / METRICS_FILE),
    ]
    links += [
        (f"{path.stem} plot", path) for path in sorted((out_dir / PLOTS_DIR).glob("*.png"))
    ]
    if gallery is not None:
        links.append(("simulated gallery", gallery))
    lines += [f"- [{name}](file://{path.resolve()})" for name, path in links if path.exists()]
    for note in summary.notes:
        lines.append(f"- note: {note}")
    scored = summary.predictions is not None
    create_markdown_artifact(
        key="predictions-summary" if scored else "dataset-summary",
        markdown="\n".join(lines),
        description="Summary of the scoring: predictions and, with truth, ROC AUC."
        if scored else "Summary of the dataset build: test metrics, report and plots.",
    )


def prediction_lines(predictions: dict[str, Any] | None) -> list[str]:
    """What ``cutouts predict`` found, one sentence a line: calls, and AUC against truth."""
    if not predictions:
        return []
    model, truth = predictions["model"], predictions["truth"]
    lines = [f"called real: {predictions['called_real']} of {predictions['cutouts']} at the "
             f"model's threshold {model['threshold']:.4g} (logit), chosen on its "
             f"{model.get('threshold_on')} split"]
    if truth.get("roc_auc") is not None:
        lo, hi = truth["roc_auc_ci95"]
        lines.append(f"against truth ({truth['real']} real, {truth['bogus']} bogus): ROC AUC "
                     f"{truth['roc_auc']:.4f} [95 % {lo:.4f}, {hi:.4f}], FNR "
                     f"{_cell(truth['fnr_at_threshold'])}, FPR "
                     f"{_cell(truth['fpr_at_threshold'])} at the threshold")
    elif truth.get("note"):
        lines.append(f"against truth: {truth['note']}")
    return lines


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_from_index(summary: RunSummary, out_dir: Path) -> None:
    """Counts of an existing dataset, for commands that do not cut."""
    import pandas as pd

    index = pd.read_csv(out_dir / INDEX_FILE, usecols=["job_id", "label"])
    summary.jobs = index["job_id"].nunique()
    summary.cutouts = len(index)
    summary.real = int((index["label"] == 1).sum())
    summary.bogus = int((index["label"] == 0).sum())
    rejects = out_dir / REJECTS_FILE
    if rejects.exists():
        rej = pd.read_csv(rejects)
        summary.rejected = int(rej["catalog_row"].notna().sum())
        summary.jobs_rejected = int(rej["catalog_row"].isna().sum())
        summary.jobs += summary.jobs_rejected


