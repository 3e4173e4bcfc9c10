"""The ZScale limits a model of ``scaling="limits"`` reads beside the cutouts.

:func:`read_limits` reads the ``zscale_limits`` records of a dataset through its Croissant
metadata (as :func:`.data.read_records` reads the index); :func:`limits_per_row` turns them
into one ``[vmin, vmax]`` pair per channel for each index row, the array the model takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlcroissant as mlc
import numpy as np
import pandas as pd

from croissant_cutouts.tasks.contract import CHANNELS, LIMITS_SET
from croissant_cutouts.tasks.evaluate.data import _read_csv_fields, check_distribution

__all__ = ["limits_per_row", "read_limits"]


def read_limits(croissant_path: str | Path, root: str | Path | None = None) -> pd.DataFrame:
    """The ``zscale_limits`` records of a dataset, through its Croissant metadata.

    Read as :func:`read_records` reads the index: straight from ``zscale_limits.csv`` when
    its sha256 matches the metadata, else by iterating mlcroissant's records.

    Returns
    -------
    pandas.DataFrame
        Columns ``job_id``, ``channel``, ``vmin``, ``vmax`` (float64, image units) and
        ``status``; one row per job and channel.

    Raises
    ------
    ValueError
        The metadata has no ``zscale_limits`` record set (a dataset written before it was
        declared: write ``croissant.json`` again with ``cutouts croissant``).
    """
    croissant_path = Path(croissant_path)
    root = Path(root) if root is not None else croissant_path.parent
    dataset = mlc.Dataset(jsonld=str(croissant_path))
    check_distribution(dataset, croissant_path, root)
    if not any(rs.id == LIMITS_SET for rs in dataset.metadata.record_sets):
        raise ValueError(
            f"{croissant_path}: no {LIMITS_SET} record set (the ZScale limits the model "
            "reads); write the metadata again with `cutouts croissant`"
        )
    frame = _read_csv_fields(dataset, croissant_path, LIMITS_SET)
    if frame is None:
        prefix = f"{LIMITS_SET}/"
        frame = pd.DataFrame([
            {k.removeprefix(prefix): v.decode("utf-8") if isinstance(v, bytes) else v
             for k, v in record.items()}
            for record in dataset.records(LIMITS_SET)
        ])
    for column in ("vmin", "vmax"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    return frame


def limits_per_row(limits: pd.DataFrame, job_ids: Any) -> np.ndarray:
    """Each row's ZScale limits, shape (n, 4, 2) float32: ``[vmin, vmax]`` per channel.

    Channels in :data:`~croissant_cutouts.tasks.contract.CHANNELS` order. A channel whose
    status is not ``ok`` gets NaN (the model reads it as 0, as it is stored).

    Raises
    ------
    ValueError
        A job of ``job_ids`` without limits for every channel, naming it.
    """
    ok = limits[limits["status"].astype(str) == "ok"]
    table = ok.pivot_table(index="job_id", columns="channel", values=["vmin", "vmax"],
                           aggfunc="first")
    jobs = pd.Index(pd.unique(np.asarray(job_ids, dtype=object)))
    listed = set(limits["job_id"].astype(str))
    absent = [j for j in jobs if str(j) not in listed]
    if absent:
        raise ValueError(f"no ZScale limits for job {absent[0]} ({len(absent)} job(s) in all) "
                         "in zscale_limits")
    per_job = np.full((len(jobs), len(CHANNELS), 2), np.nan, np.float32)
    for c, name in enumerate(CHANNELS):
        for k, bound in enumerate(("vmin", "vmax")):
            if (bound, name) in table:
                per_job[:, c, k] = table[(bound, name)].reindex(jobs).to_numpy(np.float64)
    return per_job[jobs.get_indexer(np.asarray(job_ids, dtype=object))]
