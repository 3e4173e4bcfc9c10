"""Reading a dataset for training: records through its Croissant metadata, cutouts from disk.

The index is read **through the Croissant metadata** (mlcroissant records of
``transient_candidates``), the cutouts from disk, in any output layout (one file per
cutout, one memory-mapped shard per job, or one Parquet file per job), a whole batch at a time
(:class:`CutoutDataset`, :func:`make_loader`).

Conventions
-----------
- A cutout file holds shape (64, 64, 4) float32 in [0, 1], channels science, reference,
  difference, score (channel-last); a shard holds (N, 64, 64, 4), row ``row`` of the index
  being the cutout; a parquet-layout file holds the same rows flattened in its ``image``
  column, read whole into memory once per file (``contract.open_parquet``: the file is
  memory-mapped and only that column decoded). The model takes (B, 4, 64, 64)
  (channel-first); reading transposes.
"""


import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlcroissant as mlc
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from croissant_cutouts.tasks.contract import (
    CHANNELS,
    CUTOUT_BYTES,
    CUTOUT_SHAPE,
    RECORD_SET,
    OutsideDataset,
    dataset_file,
    open_shard,
    read_cutout,
)
from croissant_cutouts.tasks.infra.digests import sha256_file

__all__ = [
    "IN_MEMORY_LIMIT_BYTES",
    "CutoutDataset",
    "IndexBatches",
    "cap_by_job",
    "check_distribution",
    "check_record_paths",
    "load_cutout",
    "make_loader",
    "read_records",
]

log = logging.getLogger(__name__)


#: Shape of one cutout as the model takes it: (channels, rows, columns).
_CHANNEL_FIRST = (CUTOUT_SHAPE[2], CUTOUT_SHAPE[0], CUTOUT_SHAPE[1])
#: Files-layout datasets up to this size (2 GiB, 32 768 cutouts) are loaded into one array;
#: larger ones, and sharded ones, are read batch by batch (shards memory-mapped).
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3


# --------------------------------------------------------------------------- reading


def _index_root(dataset: mlc.Dataset, croissant_path: Path) -> Path:
    """Folder that ``cutout_path`` values are relative to: that of the index file.

    The metadata names the index (``master_index.csv``) by a path relative to the folder of
    ``croissant.json``; its folder is the dataset root. In the standard layout both folders
    are the same. Falls back to the folder of ``croissant.json``.
    """
    base = croissant_path.resolve().parent
    try:
        record_set = next(rs for rs in dataset.metadata.record_sets if rs.id == RECORD_SET)
        field = next(f for f in record_set.fields if f.id == f"{RECORD_SET}/cutout_path")
        file_id = field.source.file_object
        content_url = next(d.content_url for d in dataset.metadata.distribution if d.id == file_id)
    except (StopIteration, AttributeError):
        return base
    if not content_url or "://" in content_url:
        return base
    return (base / content_url).resolve().parent


def read_records(
    croissant_path: str | Path, engine: str = "auto", root: str | Path | None = None
) -> pd.DataFrame:
    """Read the index through the Croissant metadata.

    Parameters
    ----------
    croissant_path : path-like
        ``croissant.json`` of a dataset.
    engine : {"auto", "mlcroissant"}
        ``mlcroissant``: iterate ``Dataset.records``. ``auto``: the metadata is still read
        and validated by mlcroissant, but when the record set is plain columns of the
        index CSV whose sha256 matches the metadata, the CSV is read with pandas (same
        values, much faster; see ``_read_csv_fields``); in the parquet layout, when it is
        plain columns of one local FileSet of Parquet files, their columns but ``image``
        are read with pyarrow (``_read_parquet_fields``). ``image`` (the pixels) is then
        left out: :class:`CutoutDataset` reads them from the files.
    root : path-like, optional
        The dataset folder: every file the metadata and the records name must lie inside it.
        Default: the folder of ``croissant.json`` (where it lies in a dataset of this tool).

    Returns
    -------
    pandas.DataFrame
        One row per record of ``transient_candidates``, in record order, columns named
        without the ``transient_candidates/`` prefix (``cutout_id``, ``job_id``, ``x``,
        ``y``, ``label``, ``cutout_path``, ``shard``, ``row``, ...). Text is decoded (UTF-8)
        to ``str``; missing values are ``None``/NaN; ``label`` and ``row`` are nullable
        ``Int64`` (``<NA>`` when empty: ``row`` is empty in the files layout).
        ``cutout_path`` and ``shard`` are absolute paths (``None`` when empty), resolved
        against the folder of the index file the metadata points to (the folder holding
        ``croissant.json`` in the standard layout). In the shards layout ``cutout_path``
        and ``shard`` both name the job's shard and ``row`` the cutout's row in it. An
        empty record set gives an empty frame.

    Raises
    ------
    mlcroissant.ValidationError
        When the metadata cannot be read.
    OutsideDataset
        When a ``contentUrl``, a FileSet pattern, a ``cutout_path`` or a ``shard`` leads
        outside ``root`` (:func:`check_distribution`, :func:`check_record_paths`): nothing
        is read from there.
    """
    croissant_path = Path(croissant_path)
    if engine not in ("auto", "mlcroissant"):
        raise ValueError(f"unknown engine {engine!r}; expected 'auto' or 'mlcroissant'")
    root = Path(root) if root is not None else croissant_path.parent
    dataset = mlc.Dataset(jsonld=str(croissant_path))
    check_distribution(dataset, croissant_path, root)
    fast = None
    if engine == "auto":
        fast = _read_csv_fields(dataset, croissant_path)
        if fast is None:
            fast = _read_parquet_fields(dataset, croissant_path)
    if fast is not None:
        return _finish_records(fast, dataset, croissant_path, root)
    prefix = f"{RECORD_SET}/"
    rows = [
        {
            key.removeprefix(prefix): (value.decode("utf-8") if isinstance(value, bytes) else value)
            for key, value in record.items()
        }
        for record in dataset.records(RECORD_SET)
    ]
    return _finish_records(pd.DataFrame(rows), dataset, croissant_path, root)


_PANDAS_DTYPES = {
    "sc:Text": "string",
    "sc:Integer": "Int64",
    "sc:Float": "float64",
    "sc:Boolean": "boolean",
}


def _plain_source(
    dataset: mlc.Dataset, kind: str, record_set_id: str = RECORD_SET
) -> tuple[Any, Any] | None:
    """The record set, and the one distribution entry all its fields read plain columns of.

    ``kind`` is the field-source attribute naming the entry: ``file_object`` or
    ``file_set``. None when the fields read several entries, or one through a transform.
    Raises StopIteration when the record set or the entry is missing.
    """
    record_set = next(rs for rs in dataset.metadata.record_sets if rs.id == record_set_id)
    sources = {getattr(f.source, kind) for f in record_set.fields}
    if len(sources) != 1 or any(
        f.source.extract.column is None or f.source.transforms for f in record_set.fields
    ):
        return None
    source = sources.pop()
    return record_set, next(d for d in dataset.metadata.distribution if d.id == source)


def _pandas_dtype(field: Any) -> str:
    """The pandas dtype of a Croissant field's first data type (text when unknown)."""
    data_type = field.data_types[0] if field.data_types else None
    return _PANDAS_DTYPES.get(str(data_type).replace("https://schema.org/", "sc:"), "string")


def _text_as_objects(frame: pd.DataFrame, names: list[str]) -> None:
    """Text columns as Python ``str`` with ``None`` for missing values (as mlcroissant)."""
    for name in names:
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)


def _read_csv_fields(
    dataset: mlc.Dataset, croissant_path: Path, record_set_id: str = RECORD_SET
) -> pd.DataFrame | None:
    """The record set read straight from its CSV, when the metadata allows it; else None.

    When every field of ``transient_candidates`` is a plain column of one local CSV
    FileObject (no transforms), the records are exactly that CSV's columns, cast to the
    fields' types. Reading it with pandas gives the same values as iterating
    ``dataset.records`` (tested), about a thousand times faster (mlcroissant yields about
    1,500 records/s). The CSV's sha256 must match the metadata's, else this returns None
    and the caller falls back to mlcroissant.
    """
    try:
        found = _plain_source(dataset, "file_object", record_set_id)
        if found is None:
            return None
        record_set, file_object = found
        url = file_object.content_url
        if not url or "://" in url or file_object.encoding_formats != ["text/csv"]:
            return None
        path = (croissant_path.resolve().parent / url).resolve()
        if not file_object.sha256 or sha256_file(path) != file_object.sha256:
            return None
        types = {f.source.extract.column: _pandas_dtype(f) for f in record_set.fields}
        columns = {f.source.extract.column: f.id.removeprefix(f"{record_set_id}/")
                   for f in record_set.fields}
    except (StopIteration, AttributeError, IndexError, OSError):
        return None
    frame = pd.read_csv(path, usecols=list(columns), dtype=types, keep_default_na=True)
    frame = frame[list(columns)].rename(columns=columns)
    _text_as_objects(frame, [columns[c] for c, dtype in types.items() if dtype == "string"])
    return frame


def _read_parquet_fields(dataset: mlc.Dataset, croissant_path: Path) -> pd.DataFrame | None:
    """Parquet layout: the record set read from its local Parquet files, else None.

    When every field of ``transient_candidates`` is a plain column of one FileSet of
    ``application/x-parquet`` files included by local patterns, the files the patterns match
    are read in name order (the index's job order), only the columns of the fields other
    than array fields (``image``): Parquet is columnar, so the pixels are not read. Values
    and types are those of :func:`_read_csv_fields`.
    """
    import pyarrow.parquet as pq

    try:
        found = _plain_source(dataset, "file_set")
        if found is None:
            return None
        record_set, file_set = found
        fields = [f for f in record_set.fields if not f.is_array]
        if file_set.encoding_formats != ["application/x-parquet"] or any(
            "://" in pattern for pattern in file_set.includes
        ):
            return None
        base = croissant_path.resolve().parent
        paths = sorted({p for pattern in file_set.includes for p in base.glob(pattern)})
    except (StopIteration, AttributeError, IndexError, OSError, ValueError):
        return None
    columns = {f.source.extract.column: f.id.removeprefix(f"{RECORD_SET}/") for f in fields}
    if not paths:
        return pd.DataFrame(columns=list(columns.values()))
    frame = pd.concat(
        [pq.read_table(p, columns=list(columns)).to_pandas() for p in paths], ignore_index=True
    ).rename(columns=columns)
    dtypes = {columns[f.source.extract.column]: _pandas_dtype(f) for f in fields}
    frame = frame.astype(dtypes)
    _text_as_objects(frame, [name for name, dtype in dtypes.items() if dtype == "string"])
    return frame


def _finish_records(
    frame: pd.DataFrame, dataset: mlc.Dataset, croissant_path: Path, root: Path
) -> pd.DataFrame:
    """Types and absolute paths shared by both ways of reading the records."""
    if frame.empty:
        return frame
    for column in ("label", "row"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    base = _index_root(dataset, croissant_path)
    for column in ("cutout_path", "shard"):
        if column in frame:
            check_record_paths(frame, column, base, croissant_path, root)
            frame[column] = [
                str(base / p) if isinstance(p, str) and p else None for p in frame[column]
            ]
    return frame


def check_distribution(dataset: mlc.Dataset, croissant_path: Path, root: Path) -> None:
    """Refuse metadata whose files lie outside the dataset folder ``root``.

    Every FileObject's ``contentUrl`` and every FileSet's ``includes`` pattern, relative to
    the folder of ``croissant.json``, must resolve inside ``root``
    (:func:`~croissant_cutouts.tasks.contract.dataset_file`); checked before any record is
    read, so mlcroissant never opens such a file.

    Raises
    ------
    OutsideDataset
        Naming the file, the entry and the path.
    """
    for entry in dataset.metadata.distribution:
        names = [entry.content_url] if getattr(entry, "content_url", None) else []
        names += list(getattr(entry, "includes", None) or [])
        for name in names:
            dataset_file(root, name, f"{croissant_path}: {entry.id!r} path",
                         base=croissant_path.parent)


#: A path that is absolute, has a URL scheme or a ``..`` component (vectorised
#: :func:`~croissant_cutouts.tasks.contract.inside_dataset`).
_CLIMBS = r"^(?:/|[^/]*:)|(?:^|/)\.\.(?:/|$)"


def check_record_paths(
    frame: pd.DataFrame, column: str, base: Path, croissant_path: Path, root: Path | None = None
) -> None:
    """Refuse records whose ``column`` (``cutout_path``, ``shard``) leaves the dataset.

    ``base`` is the folder the paths are relative to (the index's). Each must be a plain
    relative path (no ``..``, not absolute, no URL) and stay inside the dataset folder
    ``root`` (default ``base``) once the folders it names are resolved (symbolic links).

    Raises
    ------
    OutsideDataset
        Naming the first such record (its position and ``cutout_id``) and how many there are.
    """
    values = frame[column]
    present = values.map(lambda v: isinstance(v, str) and bool(v))
    bad = present & values.where(present, "").str.contains(_CLIMBS, regex=True)
    top = Path(root if root is not None else base).resolve()
    if not bad.any():
        folders = {str(Path(v).parent) for v in values[present].unique()}
        outside = {f for f in folders if not (base / f).resolve().is_relative_to(top)}
        if outside:
            bad = values.map(lambda v: isinstance(v, str) and str(Path(v).parent) in outside)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        cid = frame["cutout_id"].iloc[i] if "cutout_id" in frame else "?"
        raise OutsideDataset(
            f"{croissant_path}: {column} {values.iloc[i]!r} of record {i} (cutout_id {cid}) "
            f"leads outside the dataset folder {top}"
            f"{f' ({int(bad.sum())} records in all)' if bad.sum() > 1 else ''}; "
            "refusing to read it"
        )


# --------------------------------------------------------------------------- splitting


def cap_by_job(
    job_ids: Sequence[str] | np.ndarray | pd.Series,
    max_cutouts: int | None,
    seed: int,
    splits: Sequence[str] | np.ndarray | pd.Series | None = None,
) -> np.ndarray:
    """Rows kept under a cap on the number of cutouts, keeping whole jobs.

    Jobs are visited in the order of ``numpy.random.default_rng(seed).permutation`` of the
    sorted distinct jobs, except that with ``splits`` the first job of each split (in that
    order) comes first, so every split keeps a job when the cap allows; each job is kept
    when it fits in what is left of the cap, else skipped (greedy fill). Deterministic for
    a given set of jobs and seed.

    Parameters
    ----------
    job_ids : array-like of str, shape (n,)
    max_cutouts : int or None
        Cap; ``None`` (or a cap >= n) keeps every row.
    seed : int
    splits : array-like of str, shape (n,), optional
        Split of each row (a job lies in one split).

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
        Rows kept.

    Raises
    ------
    ValueError
        When the cap keeps fewer than two whole jobs while more exist; the message names
        the two smallest job sizes.
    """
    job_ids = np.asarray(job_ids)
    if max_cutouts is None or len(job_ids) <= max_cutouts:
        return np.ones(len(job_ids), dtype=bool)
    jobs, first, sizes = np.unique(job_ids, return_index=True, return_counts=True)
    size_of = dict(zip(jobs.tolist(), sizes.tolist(), strict=True))
    order = np.random.default_rng(seed).permutation(jobs).tolist()
    if splits is not None:
        split_of = dict(zip(jobs.tolist(), np.asarray(splits)[first].tolist(), strict=True))
        leaders = []
        for name in dict.fromkeys(split_of[j] for j in order):
            leaders.append(next(j for j in order if split_of[j] == name))
        order = leaders + [j for j in order if j not in leaders]
    kept, total = [], 0
    for job in order:
        if total + size_of[job] <= max_cutouts:
            kept.append(job)
            total += size_of[job]
    if len(kept) < 2:
        smallest = sorted(sizes.tolist())[:2]
        raise ValueError(
            f"max_cutouts={max_cutouts} keeps fewer than 2 whole jobs; the two smallest jobs "
            f"hold {smallest[0]} + {smallest[1]} cutouts"
        )
    return np.isin(job_ids, kept)


# --------------------------------------------------------------------------- data


def load_cutout(path: str | Path) -> np.ndarray:
    """One cutout, channel-first.

    Parameters
    ----------
    path : path-like
        ``.npy`` file holding shape (64, 64, 4) float32 (rows, columns, channels).

    Returns
    -------
    numpy.ndarray, shape (4, 64, 64), float32, C-contiguous
        Channels science, reference, difference, score; values as stored ([0, 1]).

    Raises
    ------
    ValueError
        When the file holds another shape or dtype (see
        :func:`~croissant_cutouts.tasks.contract.read_cutout`).
    """
    return np.ascontiguousarray(read_cutout(path).transpose(2, 0, 1))


def _shard_rows(rows: Any, n: int) -> np.ndarray:
    """``rows`` as int64 (n,), -1 where missing (``None``, NaN, ``<NA>``): a whole file."""
    if rows is None:
        return np.full(n, -1, np.int64)
    series = pd.to_numeric(pd.Series(list(rows), dtype=object))
    if len(series) != n:
        raise ValueError(f"{n} paths but {len(series)} rows")
    values = series.astype("Float64").fillna(-1).to_numpy(np.float64)
    if (values != np.floor(values)).any() or (values < -1).any():
        raise ValueError("shard rows must be whole numbers >= 0 (or missing for whole files)")
    return values.astype(np.int64)


#: Items read into memory per chunk when a dataset is loaded whole (256 MiB of cutouts).
_LOAD_CHUNK = 4096


class CutoutDataset(Dataset):
    """Cutouts and labels for torch, read a whole batch at a time from files or shards.

    Parameters
    ----------
    paths : sequence of path-like, length n
        Where each cutout lives: a cutout file of shape (64, 64, 4) float32 (files layout),
        or a shard of shape (N, 64, 64, 4) float32 (shards layout; a ``.parquet`` file in the
        parquet layout, read by ``contract.open_parquet``) when the item's ``rows`` entry is
        given.
    labels : array-like of int, shape (n,)
        1 real, 0 bogus.
    in_memory : bool, optional
        ``True``: read every cutout now into one (n, 4, 64, 64) float32 array (64 KiB per
        cutout). ``False``: read on demand. ``None`` (default): in memory for a files-layout
        dataset of ``n * CUTOUT_BYTES <= IN_MEMORY_LIMIT_BYTES`` (2 GiB); never when shards
        are involved (the page cache holds them already; a copy would double the memory).
    rows : array-like of int, shape (n,), optional
        Row of each item in its shard ``paths[i]``; missing entries (``None``, NaN, ``<NA>``)
        and ``rows=None`` mean the path is a single-cutout file. Both kinds may mix.
    limits : numpy.ndarray, shape (n, 4, 2), optional
        Each item's ZScale limits ``[vmin, vmax]`` per channel (:func:`limits_per_row`),
        for a model with ``scaling="limits"``: batches are then ``(x, y, limits)``.
    catalog : pandas.DataFrame, optional
        Each item's catalog features (n rows, one column per feature, NaN where missing;
        :func:`~croissant_cutouts.tasks.evaluate.features.feature_matrix`), for a model that
        reads them: batches are then ``(x, y, limits, catalog)``, ``catalog`` float32 (B, k)
        and ``limits`` None when not given. ``catalog_names`` lists its columns (empty
        without).

    Notes
    -----
    Reading on demand: each distinct shard is opened once (``np.load(mmap_mode='r')``,
    checked for shape, dtype and that every row exists) and kept; a batch takes one fancy
    index per shard it touches, straight into the (B, 4, 64, 64) output. Cutout files are
    read with one ``read`` each (see :func:`load_cutout` for the checks).

    ``__getitems__`` (what :class:`torch.utils.data.DataLoader` calls with a
    ``batch_sampler``; see :func:`make_loader`) returns a whole batch ``(x, y)``: ``x`` float32
    of shape (B, 4, 64, 64), C-contiguous, ``y`` float32 of shape (B,). Item ``i`` alone is
    ``(x, y)`` with ``x`` of shape (4, 64, 64) and ``y`` a scalar (0.0 or 1.0). The bytes of
    a cutout are the same whichever layout and mode it is read from.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | np.ndarray,
        in_memory: bool | None = None,
        rows: Sequence[int | None] | np.ndarray | pd.Series | None = None,
        limits: np.ndarray | None = None,
        catalog: pd.DataFrame | None = None,
    ) -> None:
        self.paths = [str(p) for p in paths]
        n = len(self.paths)
        self.labels = np.asarray(labels, dtype=np.float32)
        if n != len(self.labels):
            raise ValueError(f"{n} paths but {len(self.labels)} labels")
        self.limits = None if limits is None else np.asarray(limits, np.float32)
        if self.limits is not None and self.limits.shape != (n, len(CHANNELS), 2):
            raise ValueError(f"limits of shape {self.limits.shape}; expected ({n}, 4, 2)")
        self.catalog_names: list[str] = [] if catalog is None else [str(c) for c in catalog]
        self.catalog = None if catalog is None else catalog.to_numpy(np.float32)
        if self.catalog is not None and len(self.catalog) != n:
            raise ValueError(f"catalog features of {len(self.catalog)} rows; expected {n}")
        self.rows = _shard_rows(rows, n)
        in_shard = self.rows >= 0
        codes, names = pd.factorize(np.asarray(self.paths, dtype=object)[in_shard], sort=True)
        #: Distinct shards, in sorted order; ``shard_of[i]`` indexes it, -1 for a file item.
        self.shard_paths: list[str] = [str(p) for p in names]
        self.shard_of = np.full(n, -1, np.int64)
        self.shard_of[in_shard] = codes
        self._shards: list[np.ndarray | None] = [open_shard(p) for p in self.shard_paths]
        if self.shard_paths:
            lengths = np.array([len(s) for s in self._shards], np.int64)
            beyond = in_shard & (self.rows >= lengths[np.maximum(self.shard_of, 0)])
            if beyond.any():
                i = int(np.flatnonzero(beyond)[0])
                raise ValueError(
                    f"{int(beyond.sum())} row(s) beyond the end of their shard, e.g. row "
                    f"{self.rows[i]} of {self.paths[i]} "
                    f"({lengths[self.shard_of[i]]} rows)"
                )
        if in_memory is None:
            in_memory = not self.shard_paths and n * CUTOUT_BYTES <= IN_MEMORY_LIMIT_BYTES
        self.in_memory = bool(in_memory)
        self._data: np.ndarray | None = None
        if self.in_memory:
            data = np.empty((n, *_CHANNEL_FIRST), np.float32)
            for start in range(0, n, _LOAD_CHUNK):
                stop = min(start + _LOAD_CHUNK, n)
                self._read(np.arange(start, stop), data[start:stop])
            self._data = data
            self._shards = [None] * len(self.shard_paths)  # everything is in memory now

    def __len__(self) -> int:
        return len(self.paths)

    def _shard(self, k: int) -> np.ndarray:
        shard = self._shards[k]
        if shard is None:  # after unpickling (a DataLoader worker): open again, once
            shard = self._shards[k] = open_shard(self.shard_paths[k])
        return shard

    def _read(self, idx: np.ndarray, out: np.ndarray) -> None:
        """Read items ``idx`` from disk, channel-first, into ``out`` (len(idx), 4, 64, 64)."""
        shard_of = self.shard_of[idx]
        if not self.shard_paths:  # files only
            for k, i in enumerate(idx.tolist()):
                out[k] = read_cutout(self.paths[i]).transpose(2, 0, 1)
            return
        order = np.argsort(shard_of, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(shard_of[order])) + 1)
        for at in groups:
            shard = int(shard_of[at[0]])
            if shard < 0:
                for k, i in zip(at.tolist(), idx[at].tolist(), strict=True):
                    out[k] = read_cutout(self.paths[i]).transpose(2, 0, 1)
            else:  # one fancy index per shard, transposed to channel-first on assignment
                out[at] = self._shard(shard)[self.rows[idx[at]]].transpose(0, 3, 1, 2)

    def __getitems__(
        self, indices: Sequence[int] | np.ndarray
    ) -> tuple[torch.Tensor | None, ...]:
        """A whole batch: ``x`` float32 (B, 4, 64, 64), ``y`` float32 (B,), and with
        ``limits`` the batch's limits, float32 (B, 4, 2), with ``catalog`` then its
        features, float32 (B, k) (after ``None`` where there are no limits)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} items")
        idx = idx % max(len(self), 1)
        if self._data is not None:
            x = self._data[idx]
        else:
            x = np.empty((len(idx), *_CHANNEL_FIRST), np.float32)
            self._read(idx, x)
        batch = (torch.from_numpy(x), torch.from_numpy(self.labels[idx]))
        if self.limits is not None:
            batch += (torch.from_numpy(self.limits[idx]),)
        elif self.catalog is not None:  # the model's arguments are positional
            batch += (None,)
        if self.catalog is not None:
            batch += (torch.from_numpy(self.catalog[idx]),)
        return batch

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, ...]:
        return tuple(part if part is None else part[0] for part in self.__getitems__([i]))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shards"] = [None] * len(self.shard_paths)  # memory maps are not pickled
        return state


class IndexBatches(Sampler[np.ndarray]):
    """Batches of indices into ``range(n)``, for ``DataLoader(batch_sampler=...)``.

    Shuffled: every pass (epoch) draws ``torch.randperm(n)`` from ``generator``, one
    ``torch.Generator`` seeded with ``seed`` when the sampler is made, so the sequence of
    epochs is fixed by the seed. Not shuffled: ``0 .. n-1`` in order. The last batch may be
    short. Each batch is an int64 numpy array.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = False, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.shuffle = int(n), int(batch_size), shuffle
        self.generator = torch.Generator().manual_seed(seed) if shuffle else None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator).numpy()
        else:
            order = np.arange(self.n, dtype=np.int64)
        for start in range(0, self.n, self.batch_size):
            yield order[start : start + self.batch_size]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


def _whole_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Collate function of :func:`make_loader`: the dataset already returns whole batches."""
    return batch


def make_loader(
    dataset: CutoutDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> DataLoader:
    """A DataLoader that reads each batch of ``dataset`` whole (``CutoutDataset.__getitems__``).

    Batches are :class:`IndexBatches` (shuffled deterministically from ``seed`` when
    ``shuffle``), read in the main process (no workers: a batch is a few fancy indexes into
    memory-mapped shards). The DataLoader gets a generator of its own (it draws a worker
    seed from it per epoch), so the batch order is exactly that of the sampler and the global
    torch RNG is left alone. On a CUDA ``device`` the batches are pinned, so that
    ``.to(device, non_blocking=True)`` overlaps the copy.
    """
    cuda = device is not None and torch.device(device).type == "cuda"
    batches = IndexBatches(len(dataset), batch_size, shuffle, seed)
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=_whole_batch,
        generator=torch.Generator(),
        pin_memory=cuda,
    )


