"""A released dataset as a PyTorch ``Dataset``, without the pipeline: :func:`load_dataset`.

What someone who downloaded a dataset version needs, and nothing else: the records are read
through ``croissant.json`` (:func:`~croissant_cutouts.tasks.evaluate.data.read_records`,
which refuses paths leading out of the dataset folder), the pixels from the files of any
output layout (files, shards or parquet). Importing this module imports torch, mlcroissant,
numpy and pandas, never Prefect.

>>> from croissant_cutouts import load_dataset                       # doctest: +SKIP
>>> train = load_dataset("demo/dataset", split="train")               # doctest: +SKIP
>>> image, label, row = train[0]                                      # doctest: +SKIP
>>> image.shape, label, row["job_id"]                                 # doctest: +SKIP
(torch.Size([4, 64, 64]), 1, 'jid0001')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from croissant_cutouts.tasks.contract import CROISSANT_FILE, LIMITS_SET
from croissant_cutouts.tasks.dataset.splits import SPLITS
from croissant_cutouts.tasks.evaluate.data import (
    CutoutDataset,
    IndexBatches,
    read_records,
)
from croissant_cutouts.tasks.evaluate.limits import limits_per_row, read_limits

__all__ = ["CandidateDataset", "load_dataset"]

#: ``label`` of a candidate of a job without truth (the index leaves it empty).
UNLABELLED = -1
#: What a missing value of each kind of column becomes in a row dict: every value must be
#: one that :func:`torch.utils.data.default_collate` can batch (it refuses ``None``).
_MISSING = {"i": -1, "u": -1, "f": float("nan"), "b": False, "O": ""}

Transform = Callable[[torch.Tensor], torch.Tensor]
#: ``(images, labels, rows)`` of a whole batch (:meth:`CandidateDataset.batch`).
Batch = tuple[torch.Tensor, torch.Tensor, dict[str, Any]]


def _column(values: pd.Series) -> np.ndarray:
    """A record column as a numpy array of plain values, missing ones per :data:`_MISSING`."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return values.astype("boolean").fillna(False).to_numpy(bool)
    if pd.api.types.is_integer_dtype(dtype):
        return values.astype("Int64").fillna(-1).to_numpy(np.int64)
    if pd.api.types.is_float_dtype(dtype):
        return values.to_numpy(np.float64, na_value=np.nan)
    return np.array([v if isinstance(v, str) else "" for v in values], dtype=object)


class CandidateDataset(Dataset):
    """Candidates of one split: ``(image, label, row)`` per item, read a batch at a time.

    Made by :func:`load_dataset`. Item ``i`` is

    - ``image``: :class:`torch.Tensor`, float32, shape (4, 64, 64): channels science,
      reference, difference, score (channel-first), each ZScale-normalised to [0, 1], the
      candidate at pixel [32, 32] (after ``transform``, when one was given);
    - ``label``: int, 1 real, 0 bogus, -1 unlabelled (a job without truth);
    - ``row``: dict of the record's fields (``cutout_id``, ``job_id``, ``x``, ``y``,
      ``field``, ``split``, ``cutout_path``, ...; the index columns, see the output docs).
      Missing values are ``""`` (text), NaN (floats), -1 (integers: ``label``, ``row``,
      ``flags``, ``npix``, ``npixfit``) or ``False`` (booleans), so that the default
      ``DataLoader`` collation batches them. With the dataset's ZScale limits (datasets
      whose ``croissant.json`` declares ``zscale_limits``), ``row["limits"]`` is the
      record's job's ``[vmin, vmax]`` per channel, a float32 tensor (4, 2), batched to
      (B, 4, 2): what a saved model of ``scaling="limits"`` takes beside the images,
      ``model(images, rows["limits"])``.

    ``__getitems__`` (called by :class:`torch.utils.data.DataLoader` for a whole batch of
    indices) reads the batch's pixels at once: one read per shard or Parquet file it touches
    (memory-mapped), or one per cutout file. Safe with ``DataLoader(num_workers>0)``: open
    memory maps are not pickled; each worker opens its own.

    Attributes
    ----------
    records : pandas.DataFrame
        The split's records, as :func:`~croissant_cutouts.tasks.evaluate.data.read_records`
        returns them (``cutout_path`` and ``shard`` absolute).
    labels : numpy.ndarray of int64, shape (n,)
    """

    def __init__(
        self,
        records: pd.DataFrame,
        transform: Transform | None = None,
        in_memory: bool = False,
        limits: np.ndarray | None = None,
    ) -> None:
        self.records = records.reset_index(drop=True)
        label = self.records["label"] if "label" in self.records else pd.Series([], dtype=float)
        self.labels = pd.array(label, dtype="Int64").fillna(UNLABELLED).to_numpy(np.int64)
        rows = self.records["row"] if "row" in self.records else None
        self.cutouts = CutoutDataset(
            self.records["cutout_path"].tolist() if len(self.records) else [],
            self.labels, in_memory=in_memory, rows=rows,
        )
        self.transform = transform
        self._columns = {name: _column(self.records[name]) for name in self.records.columns}
        #: Each record's ZScale limits, float32 (n, 4, 2), or None.
        self.limits = None if limits is None else np.asarray(limits, np.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def row(self, i: int) -> dict[str, Any]:
        """The record of item ``i`` as a dict of plain Python values."""
        return self._rows(np.array([i]))[0]

    def _indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """``indices`` as int64 positions in ``[0, n)`` (negative ones count from the end)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} candidates")
        return idx % max(len(self), 1)

    def _rows(self, idx: np.ndarray) -> list[dict[str, Any]]:
        names = list(self._columns)
        values = [self._columns[name][idx].tolist() for name in names]
        rows = [dict(zip(names, item, strict=True)) for item in zip(*values, strict=True)]
        if self.limits is not None:
            for row, i in zip(rows, idx.tolist(), strict=True):
                row["limits"] = torch.from_numpy(self.limits[i])
        return rows

    def __getitems__(
        self, indices: Sequence[int] | np.ndarray
    ) -> list[tuple[torch.Tensor, int, dict[str, Any]]]:
        """Items ``indices``, their pixels read in one batch (see the class notes)."""
        idx = self._indices(indices)
        images, _ = self.cutouts.__getitems__(idx)
        transform = self.transform or (lambda image: image)
        return [
            (transform(image), int(label), row)
            for image, label, row in zip(
                images, self.labels[idx].tolist(), self._rows(idx), strict=True
            )
        ]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, dict[str, Any]]:
        return self.__getitems__([i])[0]

    def batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        """Items ``indices`` as one batch, without splitting and stacking items.

        Returns
        -------
        tuple
            ``images`` float32 (B, 4, 64, 64) (``transform`` applied per image), ``labels``
            int64 (B,), and ``rows``: per field, a tensor (numbers: float64, int64, bool) or
            a list of str, as :func:`torch.utils.data.default_collate` batches the items.
        """
        idx = self._indices(indices)
        images, _ = self.cutouts.__getitems__(idx)
        if self.transform is not None:
            images = torch.stack([self.transform(image) for image in images])
        rows = {name: (column[idx].tolist() if column.dtype == object
                       else torch.from_numpy(column[idx]))
                for name, column in self._columns.items()}
        if self.limits is not None:
            rows["limits"] = torch.from_numpy(self.limits[idx])
        return images, torch.from_numpy(self.labels[idx]), rows

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, num_workers: int = 0
    ) -> DataLoader:
        """A ``DataLoader`` of whole batches (:meth:`batch`): the fastest way to iterate.

        Each batch is read at once and handed on as it is, so no per-item tensors are made,
        collated and stacked. Shuffled batches are drawn from a generator seeded with
        ``seed`` (the same order for the same seed). ``num_workers`` processes read batches
        ahead; the last batch may be short.
        """
        return DataLoader(
            _Batches(self), batch_size=None, num_workers=num_workers,
            sampler=IndexBatches(len(self), batch_size, shuffle, seed),
        )


class _Batches(Dataset):
    """Index arrays to whole batches of a :class:`CandidateDataset` (``batch_size=None``)."""

    def __init__(self, base: CandidateDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, indices: np.ndarray) -> Batch:
        return self.base.batch(indices)


def _croissant_file(path: str | Path) -> Path:
    """``croissant.json`` of a dataset folder, or ``path`` itself when it names a file."""
    path = Path(path)
    found = path / CROISSANT_FILE if path.is_dir() else path
    if not found.is_file():
        raise FileNotFoundError(
            f"{found}: no such file; give a dataset folder holding {CROISSANT_FILE} or the "
            "file itself (cutouts croissant writes it)"
        )
    return found


def load_dataset(
    path: str | Path,
    split: str | None = "train",
    transform: Transform | None = None,
    in_memory: bool = False,
    root: str | Path | None = None,
) -> CandidateDataset:
    """The candidates of one split of a dataset, as a :class:`torch.utils.data.Dataset`.

    Parameters
    ----------
    path : path-like
        A dataset folder, or its ``croissant.json``. The records are read through the
        Croissant metadata, in any output layout (``files``, ``shards``, ``parquet``).
    split : {"train", "validation", "test"} or None, optional
        Which records; ``None`` for all of them.
    transform : callable, optional
        Applied to each image tensor, shape (4, 64, 64), returning a tensor (e.g. an
        augmentation).
    in_memory : bool, optional
        Read every cutout of the split into memory now (64 KiB each) instead of on demand.
    root : path-like, optional
        The dataset folder, when ``croissant.json`` is kept elsewhere; default the folder of
        ``croissant.json``. No file outside it is read.

    Returns
    -------
    CandidateDataset
        Items ``(image, label, row)``: float32 (4, 64, 64), 1 real / 0 bogus / -1
        unlabelled, the record's fields.

    Raises
    ------
    FileNotFoundError
        When there is no ``croissant.json`` at ``path``.
    ValueError
        For an unknown ``split``.
    croissant_cutouts.tasks.contract.OutsideDataset
        When the metadata or a record points outside the dataset folder (``root``).

    Examples
    --------
    >>> from torch.utils.data import DataLoader                       # doctest: +SKIP
    >>> loader = DataLoader(load_dataset("demo/dataset"), batch_size=256, shuffle=True,
    ...                     num_workers=2)                              # doctest: +SKIP
    >>> images, labels, rows = next(iter(loader))                     # doctest: +SKIP
    >>> images.shape, rows["job_id"][:1]                              # doctest: +SKIP
    (torch.Size([256, 4, 64, 64]), ['jid0003'])
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or None")
    croissant = _croissant_file(path)
    records = read_records(croissant, root=root)
    if split is not None and len(records):
        records = records[records["split"] == split]
    limits = None
    if len(records) and _declares(croissant, LIMITS_SET):
        limits = limits_per_row(read_limits(croissant, root), records["job_id"])
    return CandidateDataset(records, transform=transform, in_memory=in_memory, limits=limits)


def _declares(croissant: Path, record_set: str) -> bool:
    """Whether the metadata in ``croissant`` declares a record set of that id."""
    sets = json.loads(croissant.read_text()).get("recordSet") or []
    return any(isinstance(rs, dict) and rs.get("@id") == record_set for rs in sets)
