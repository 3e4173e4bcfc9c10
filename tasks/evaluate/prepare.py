"""What the smoke-train trains on and where it judges: step 1 of :func:`.train.smoke_train`.

The labelled records of a dataset (through its Croissant metadata), capped by whole jobs,
with the dataset's own split masks; where the metrics are measured (``test``, else
``validation``, else ``train``: training-set figures) and where the thresholds are chosen
(``validation``, else ``train``); and the cutouts as a :class:`.data.CutoutDataset`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.config import TrainParams
from croissant_cutouts.tasks.contract import CUTOUT_BYTES
from croissant_cutouts.tasks.dataset.splits import SPLITS
from croissant_cutouts.tasks.evaluate.data import (
    IN_MEMORY_LIMIT_BYTES,
    CutoutDataset,
    cap_by_job,
    read_records,
)
from croissant_cutouts.tasks.evaluate.features import catalog_features, feature_matrix
from croissant_cutouts.tasks.evaluate.limits import limits_per_row, read_limits

__all__ = ["Prepared", "evaluation_sides", "prepare_rows", "split_sides"]

log = logging.getLogger(__name__)


def split_sides(frame: pd.DataFrame, croissant_path: Path) -> dict[str, np.ndarray]:
    """Boolean row masks of the dataset's own splits; ``train`` must hold rows.

    ``validation`` and ``test`` may be empty: a dataset of too few sky fields or jobs to split
    has every cutout in ``train`` (:func:`evaluation_sides` then judges on what there is).
    """
    if "split" not in frame or frame["split"].isna().all():
        raise ValueError(
            f"{croissant_path}: the index has no split column; rebuild the dataset with "
            "`cutouts create` (splits are assigned when the index is written)"
        )
    split = frame["split"].astype(object).to_numpy()
    unknown = sorted({str(s) for s in split} - set(SPLITS))
    if unknown:
        rows = frame.index[~np.isin(split, SPLITS)][:5].tolist()
        raise ValueError(
            f"{croissant_path}: split values {unknown} (rows {rows}); expected {list(SPLITS)}"
        )
    sides = {name: split == name for name in SPLITS}
    if not sides["train"].any():
        counts = {name: int(mask.sum()) for name, mask in sides.items()}
        raise ValueError(
            f"{croissant_path}: no labelled cutout in the train split (labelled cutouts per "
            f"split: {counts}); see the splits section of params.yaml"
        )
    return sides


def evaluation_sides(sides: dict[str, np.ndarray]) -> tuple[str, str]:
    """Where the metrics are measured and where the thresholds are chosen.

    Metrics on ``test``, else on ``validation``, else (no held-out split) on ``train``;
    thresholds on ``validation``, else on ``train``.
    """
    evaluated_on = next(n for n in ("test", "validation", "train") if sides[n].any())
    threshold_on = "validation" if sides["validation"].any() else "train"
    return evaluated_on, threshold_on


@dataclass
class Prepared:
    """The labelled, capped rows to train on, their split masks and their loader."""

    frame: pd.DataFrame
    y: np.ndarray  # labels, int64, 1 real
    sides: dict[str, np.ndarray]  # split name -> row mask
    counts: dict[str, dict[str, int]]  # split name -> jobs, fields, real, bogus, unlabelled
    split_by: str  # "field" or "job"
    unlabelled: int
    dropped: int  # rows dropped by max_cutouts
    data: CutoutDataset
    sharded: bool
    evaluated_on: str  # split the metrics are measured on: test, validation or train
    threshold_on: str  # split the thresholds are chosen on: validation or train

    @property
    def held_out(self) -> bool:
        """Whether the metrics are measured on cutouts the models were not trained on."""
        return self.evaluated_on != "train"

    @property
    def run_name(self) -> str:
        """The CNN run's name in log lines and plot legends: "field split", "job split", ..."""
        return "no held-out split" if self.split_by == "none" else f"{self.split_by} split"

    @property
    def caution(self) -> str | None:
        """The line that labels training-set figures; None when the metrics are held out."""
        if self.held_out:
            return None
        train = self.counts["train"]
        return (
            f"TRAINING-SET FIGURES: no held-out split (every labelled cutout is in train: "
            f"{train['jobs']} job(s), {train['fields']} sky field(s), too few to hold any out); "
            "every metric is measured on the cutouts the models were trained on and proves "
            "nothing about unseen data"
        )


def _labelled(frame: pd.DataFrame, croissant_path: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """The labelled rows, and the unlabelled count per split; labels must be 0 or 1."""
    if frame.empty:
        raise ValueError(f"{croissant_path}: no records to train on")
    labelled = frame["label"].notna().to_numpy()
    split_all = frame["split"] if "split" in frame else pd.Series(None, index=frame.index)
    unlabelled = {name: int(((split_all == name).to_numpy() & ~labelled).sum()) for name in SPLITS}
    unlabelled["all"] = int((~labelled).sum())
    frame = frame[labelled].reset_index(drop=True)
    if frame.empty:
        raise ValueError(f"{croissant_path}: no labelled records to train on")
    if not frame["label"].isin([0, 1]).all():
        bad = sorted(set(frame["label"].tolist()) - {0, 1})
        raise ValueError(f"{croissant_path}: labels must be 0 or 1, found {bad}")
    return frame, unlabelled


def _split_counts(
    frame: pd.DataFrame, y: np.ndarray, sides: dict[str, np.ndarray], unlabelled: dict[str, int]
) -> dict[str, dict[str, int]]:
    """Per split: jobs, fields, real, bogus and unlabelled cutouts."""
    job_ids = frame["job_id"].to_numpy()
    fields = frame["field"] if "field" in frame else pd.Series(None, index=frame.index)
    return {
        name: {
            "jobs": len(np.unique(job_ids[mask])),
            "fields": int(fields[mask].dropna().nunique()),
            "real": int((y[mask] == 1).sum()),
            "bogus": int((y[mask] == 0).sum()),
            "unlabelled": unlabelled[name],
        }
        for name, mask in sides.items()
    }


def prepare_rows(
    croissant_path: Path, params: TrainParams, root: Path | None = None
) -> Prepared:
    """Records through Croissant, the labelled rows, the cap by job, the dataset's splits.

    ``root`` is the dataset folder (default: that of ``croissant.json``); a record or a
    ``contentUrl`` leading outside it is refused (``OutsideDataset``).

    Raises
    ------
    ValueError
        No labelled record, labels other than 0/1, no split column or an empty train split.
    FileNotFoundError
        A cutout file listed in the index is missing.
    """
    frame, unlabelled = _labelled(read_records(croissant_path, root=root), croissant_path)
    split_sides(frame, croissant_path)  # a clear error before the cap
    keep = cap_by_job(frame["job_id"], params.max_cutouts, params.seed, frame["split"])
    dropped = int((~keep).sum())
    frame = frame[keep].reset_index(drop=True)
    if dropped:
        log.info("max_cutouts=%d: dropped %d cutouts (whole jobs)", params.max_cutouts, dropped)
    sides = split_sides(frame, croissant_path)
    missing = [p for p in pd.unique(frame["cutout_path"]) if not p or not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} cutout file(s) listed in the index are missing, e.g. {missing[0]}"
        )
    y = frame["label"].to_numpy(np.int64)
    counts = _split_counts(frame, y, sides, unlabelled)
    evaluated_on, threshold_on = evaluation_sides(sides)
    used = [c for name, c in counts.items() if sides[name].any()]
    split_by = "field" if all(c["fields"] for c in used) and _by_field(frame) else "job"
    if evaluated_on == "train":
        split_by = "none"
        log.info("no held-out split: the metrics are training-set figures")
    rows = frame["row"].to_numpy() if "row" in frame else np.full(len(frame), None)
    sharded = bool(pd.notna(rows).any())
    in_memory = not sharded and len(frame) * CUTOUT_BYTES <= IN_MEMORY_LIMIT_BYTES
    limits = None
    if params.scaling == "limits":  # the model reads each cutout's job's ZScale limits
        limits = limits_per_row(read_limits(croissant_path, root), frame["job_id"])
    catalog = None
    if params.catalog:  # the features the training rows have, as the CNN's head will read them
        names = catalog_features(frame, sides["train"])
        catalog = pd.DataFrame(feature_matrix(frame, names), columns=names)
    data = CutoutDataset(frame["cutout_path"].to_numpy(), y, in_memory, rows, limits, catalog)
    return Prepared(
        frame, y, sides, counts, split_by, unlabelled["all"], dropped, data, sharded,
        evaluated_on, threshold_on,
    )


def _by_field(frame: pd.DataFrame) -> bool:
    """Whether the splits follow sky fields: no field in two splits (and every row has one)."""
    if "field" not in frame or frame["field"].isna().any():
        return False
    return bool((frame.groupby("field")["split"].nunique() == 1).all())
