"""The dataset's on-disk format, declared once: names, tensor, ``.npy`` bytes, index columns.

Every module that writes or reads a dataset imports these; none defines its own.

A dataset folder holds

- ``cutouts/<job_id>_cutout<k>.npy`` (files layout: one (64, 64, 4) tensor per file, ``k``
  the 0-based catalog row, zero-padded to 5), ``shards/<job_id>.npy`` (shards layout: one
  (N, 64, 64, 4) array per job, a cutout per row) or ``parquet/<job_id>.parquet`` (parquet
  layout: one Parquet file per job, a cutout per row: the index columns plus ``image``, the
  tensor flattened to a fixed-size list of 16,384 float32, see :func:`parquet_table`);
- ``master_index.csv`` (one row per cutout, columns :data:`INDEX_SCHEMA`), ``rejects.csv``,
  ``jobs.csv``, ``zscale_limits.csv``, ``croissant.json`` (record set :data:`RECORD_SET`),
  and after training ``metrics.json``, ``report.md`` and ``plots/``;
- ``.cutouts/``: the tool's bookkeeping (marker, lock, per-job manifests, task cache).

A cutout is float32, little-endian, C order, channel-last (:data:`CHANNELS`), each channel
ZScale-normalised to [0, 1], the candidate pixel at ``[HALF, HALF]``. Files are written as
``numpy.save`` writes them (``.npy`` format 1.0); :func:`npy_bytes` makes those bytes
without ``numpy.save``'s overhead and :func:`read_cutout` reads them back in one ``read``.

The columns of ``master_index.csv``: the CSV writer, the input layouts and the Croissant
fields are all generated from :data:`INDEX_SCHEMA`. The first nine columns are the seed's,
in its order; the rest are extras that a layout fills when its inputs have them (empty
otherwise). Positions are 0-based pixels (``x`` column, ``y`` row, pixel centres on
integers); fluxes are DN/s; magnitudes AB unless stated.
"""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pyarrow and pandas are imported where used: start-up time
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "CACHE_DIR",
    "CANDIDATE_COLUMNS",
    "CHANNELS",
    "CONTRACT_VERSION",
    "CROISSANT_FILE",
    "CUTOUT_BYTES",
    "CUTOUT_DIR",
    "CUTOUT_DTYPE",
    "CUTOUT_SHAPE",
    "CUTOUT_SIZE",
    "DATASET_NAMES",
    "DIGESTS_FILE",
    "HALF",
    "INDEX_FILE",
    "INDEX_SCHEMA",
    "JOBS_FILE",
    "LIMITS_FILE",
    "LIMITS_SET",
    "LOCK_FILE",
    "MANIFEST_DIR",
    "MARKER",
    "METRICS_FILE",
    "MODEL_FILE",
    "NPY_HEADER",
    "OUTPUT_LAYOUTS",
    "PARQUET_DIR",
    "PARQUET_IMAGE",
    "PLOTS_DIR",
    "PREDICTIONS_FILE",
    "PREDICTIONS_SUMMARY",
    "RECORD_SET",
    "REJECTS_FILE",
    "REPORT_FILE",
    "SHARD_DIR",
    "STAGE_DIR",
    "STATE_DIR",
    "Column",
    "OutsideDataset",
    "cutout_filename",
    "cutout_sha256",
    "dataset_file",
    "inside_dataset",
    "npy_bytes",
    "npy_header",
    "open_parquet",
    "open_shard",
    "parquet_filename",
    "parquet_schema",
    "parquet_table",
    "read_cutout",
    "shard_filename",
]

# --------------------------------------------------------------------------- the tensor

#: Version of this contract (channels, shape, dtype, normalisation, centring). A saved model
#: records the version its inputs followed; a model of another version is refused.
CONTRACT_VERSION = 1
#: Channel order of every cutout tensor (last axis).
CHANNELS: tuple[str, ...] = ("science", "reference", "difference", "score")
#: Side of a cutout in pixels, and the index of the candidate pixel on each axis.
CUTOUT_SIZE = 64
HALF = CUTOUT_SIZE // 2
#: Shape of one stored cutout: (rows, columns, channels).
CUTOUT_SHAPE: tuple[int, int, int] = (CUTOUT_SIZE, CUTOUT_SIZE, len(CHANNELS))
#: Stored dtype: float32, little-endian.
CUTOUT_DTYPE = np.dtype("<f4")
#: Data bytes of one cutout (64 * 64 * 4 float32 = 64 KiB).
CUTOUT_BYTES = int(np.prod(CUTOUT_SHAPE)) * CUTOUT_DTYPE.itemsize

# --------------------------------------------------------------------------- names

#: Output layouts: one .npy per cutout (the seed's), one (N, 64, 64, 4) .npy per job, or one
#: Parquet file per job (index columns plus the pixels).
OUTPUT_LAYOUTS = ("files", "shards", "parquet")
#: Folder of cutout files (files layout), relative to the dataset root.
CUTOUT_DIR = "cutouts"
#: Folder of per-job shards (shards layout), relative to the dataset root.
SHARD_DIR = "shards"
#: Folder of per-job Parquet files (parquet layout), relative to the dataset root.
PARQUET_DIR = "parquet"
#: Column of a parquet-layout file holding the pixels: fixed-size list of 16,384 float32.
PARQUET_IMAGE = "image"
INDEX_FILE = "master_index.csv"
REJECTS_FILE = "rejects.csv"
LIMITS_FILE = "zscale_limits.csv"
JOBS_FILE = "jobs.csv"
CROISSANT_FILE = "croissant.json"
METRICS_FILE = "metrics.json"
#: The smoke-trained model (weights and what they expect), beside metrics.json.
MODEL_FILE = "model.pt"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
#: ``cutouts predict``: one row per cutout scored by a model, and what the scoring found.
PREDICTIONS_FILE = "predictions.csv"
PREDICTIONS_SUMMARY = "predictions.json"
#: The Croissant record set of the candidates (the seed's name).
RECORD_SET = "transient_candidates"
#: Croissant record set of ``zscale_limits.csv``: the ZScale limits per job and channel.
LIMITS_SET = "zscale_limits"
#: Folder of the tool's own bookkeeping inside a dataset (marker, lock, manifests, cache).
STATE_DIR = ".cutouts"
#: The file that marks a folder as a dataset this tool made.
MARKER = f"{STATE_DIR}/dataset.json"
#: The lock a writing command holds (who, since when).
LOCK_FILE = f"{STATE_DIR}/lock"
#: Prefect's task results (the cache), per-job cutout manifests, staged remote inputs.
CACHE_DIR = f"{STATE_DIR}/cache"
MANIFEST_DIR = f"{STATE_DIR}/jobs"
STAGE_DIR = f"{STATE_DIR}/inputs"
#: The memo of file digests behind ``croissant.json``'s sha256 values.
DIGESTS_FILE = f"{STATE_DIR}/sha256.json"
#: Every name this tool writes at the top of a dataset folder (``.gitignore`` is DVC's,
#: for the outs).
DATASET_NAMES = frozenset(
    {
        STATE_DIR, CUTOUT_DIR, SHARD_DIR, PARQUET_DIR, INDEX_FILE, REJECTS_FILE, LIMITS_FILE,
        JOBS_FILE, CROISSANT_FILE, METRICS_FILE, MODEL_FILE, PLOTS_DIR, REPORT_FILE,
        PREDICTIONS_FILE, PREDICTIONS_SUMMARY, ".gitignore",
    }
)


def cutout_filename(job_id: str, catalog_row: int) -> str:
    """Relative path of a cutout: ``cutouts/<job_id>_cutout<k>.npy``, k zero-padded to 5."""
    return f"{CUTOUT_DIR}/{job_id}_cutout{catalog_row:05d}.npy"


def shard_filename(job_id: str) -> str:
    """Relative path of a job's shard: ``shards/<job_id>.npy``."""
    return f"{SHARD_DIR}/{job_id}.npy"


def parquet_filename(job_id: str) -> str:
    """Relative path of a job's Parquet file (parquet layout): ``parquet/<job_id>.parquet``."""
    return f"{PARQUET_DIR}/{job_id}.parquet"


# --------------------------------------------------------------------------- .npy bytes


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """The ``.npy`` format 1.0 header ``numpy.save`` writes for a C-order array."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


#: Header of a files-layout cutout; a plain cutout file is this plus :data:`CUTOUT_BYTES`.
NPY_HEADER = npy_header(CUTOUT_SHAPE)


def _check_tensor(tensor: np.ndarray) -> None:
    if tensor.shape != CUTOUT_SHAPE or tensor.dtype != CUTOUT_DTYPE:
        raise ValueError(f"expected {CUTOUT_SHAPE} <f4, got {tensor.shape} {tensor.dtype.str}")


def npy_bytes(tensor: np.ndarray) -> bytes:
    """The bytes ``numpy.save`` writes for one cutout (a (64, 64, 4) ``<f4`` tensor)."""
    if tensor.shape != CUTOUT_SHAPE or tensor.dtype != CUTOUT_DTYPE:
        raise ValueError(f"expected {CUTOUT_SHAPE} float32, got {tensor.shape} {tensor.dtype}")
    return NPY_HEADER + np.ascontiguousarray(tensor).tobytes()


def cutout_sha256(tensor: np.ndarray) -> str:
    """Lowercase hex SHA-256 of a cutout's 65,536 data bytes (the index's ``sha256``).

    Parameters
    ----------
    tensor : ndarray, shape (64, 64, 4), float32
        One cutout, in the little-endian byte order it is stored in (what the files layout
        writes after the .npy header, and what a shard holds in its row).

    Returns
    -------
    str
        64 hex digits. The .npy header is not hashed, so both output layouts give a cutout
        the same digest.
    """
    _check_tensor(tensor)
    return hashlib.sha256(np.ascontiguousarray(tensor).data).hexdigest()


@functools.lru_cache(maxsize=16)
def _plain_header(header: bytes) -> bool:
    """Whether a whole .npy header (magic included) declares a C-order (64, 64, 4) ``<f4``."""
    try:
        buf = io.BytesIO(header)
        if np.lib.format.read_magic(buf) != (1, 0):
            return False
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
    except ValueError:
        return False
    return shape == CUTOUT_SHAPE and not fortran and dtype == CUTOUT_DTYPE


def read_cutout(path: str | Path) -> np.ndarray:
    """One cutout file as a read-only (64, 64, 4) float32 array, channel-last.

    Fast path: one ``read`` of the whole file; when its header is the plain one
    (:data:`NPY_HEADER`, or any format 1.0 header declaring the same array) the data are
    viewed in place. Anything else (another header version, Fortran order, a truncated
    file) goes through ``numpy.load``, and a wrong shape or dtype raises.

    Raises
    ------
    ValueError
        When the file holds another shape or dtype, or is not a ``.npy`` file.
    """
    with open(path, "rb", buffering=0) as fh:
        raw = fh.read(CUTOUT_BYTES + 4096)
    if raw[:6] == b"\x93NUMPY" and len(raw) > 10 and raw[6] == 1:
        end = 10 + (raw[8] | raw[9] << 8)
        if len(raw) - end == CUTOUT_BYTES and _plain_header(raw[:end]):
            return np.frombuffer(raw, CUTOUT_DTYPE, offset=end).reshape(CUTOUT_SHAPE)
    stored = np.load(path, mmap_mode="r")
    if stored.shape != CUTOUT_SHAPE or stored.dtype != np.float32:
        raise ValueError(
            f"{path}: expected a {CUTOUT_SHAPE} float32 cutout, got {stored.shape} {stored.dtype}"
        )
    return stored


def open_shard(path: str | Path) -> np.ndarray:
    """A shard memory-mapped read-only, as a plain (N, 64, 64, 4) float32 ndarray view.

    A ``.parquet`` path (parquet layout) is read by :func:`open_parquet` instead.
    """
    if str(path).endswith(".parquet"):
        return open_parquet(path)
    stored = np.load(path, mmap_mode="r")
    if stored.ndim != 4 or stored.shape[1:] != CUTOUT_SHAPE or stored.dtype != np.float32:
        raise ValueError(
            f"{path}: expected an (N, {', '.join(map(str, CUTOUT_SHAPE))}) float32 shard, "
            f"got {stored.shape} {stored.dtype}"
        )
    return stored.view(np.ndarray)


# --------------------------------------------------------------------------- paths


class OutsideDataset(ValueError):
    """A path in a dataset's metadata or index that leads outside the dataset folder.

    Datasets are downloaded from others: a ``contentUrl`` or ``cutout_path`` such as
    ``../../home/me/.ssh/id_rsa`` or ``/etc/passwd`` must never be read.
    """


def inside_dataset(name: str) -> bool:
    """True for a plain relative path that stays inside the dataset folder.

    Not empty, not absolute, no ``..`` component and no URL scheme (``s3://``, ``file:``): the
    rule for the index's paths, which are relative to the dataset folder itself. Symbolic
    links are not followed here; :func:`dataset_file` checks where a resolved path lands.
    """
    if not isinstance(name, str) or not name or ":" in name.split("/", 1)[0]:
        return False
    # string operations, not Path: Path interns every part, one str per cutout file
    return not name.startswith("/") and ".." not in name.split("/")


def dataset_file(
    root: str | Path, name: str, what: str, base: str | Path | None = None
) -> Path:
    """``base / name`` resolved, once it is known to lie inside the dataset folder ``root``.

    Parameters
    ----------
    root : path-like
        The dataset folder: nothing outside it is read.
    name : str
        A path from the dataset's metadata, relative to ``base``. Absolute paths and URLs
        (``s3://``, ``file:``) are refused; ``..`` is allowed while the resolved path stays
        inside ``root`` (a ``croissant.json`` in a subfolder names ``../master_index.csv``).
    what : str
        What ``name`` is, for the message (e.g. ``"croissant.json: 'master_index.csv' path"``).
    base : path-like, optional
        The folder ``name`` is relative to (that of ``croissant.json``); default ``root``.

    Raises
    ------
    OutsideDataset
        When ``name`` is not a relative path, or resolves (through ``..`` or symbolic links)
        to a place outside ``root``.
    """
    top = Path(root).resolve()
    if isinstance(name, str) and name and ":" not in name.split("/", 1)[0]:
        if not Path(name).is_absolute():
            path = (Path(base if base is not None else top).resolve() / name).resolve()
            if path.is_relative_to(top):
                return path
    raise OutsideDataset(f"{what} {name!r} leads outside the dataset folder {top}; "
                         "refusing to read it")


# --------------------------------------------------------------------------- Parquet bytes

#: Floats of one flattened cutout: the length of the ``image`` list.
_IMAGE_FLOATS = int(np.prod(CUTOUT_SHAPE))


_ARROW_TYPES = {"int64": "int64", "Int64": "int64", "float64": "float64", "string": "string",
                "boolean": "bool_"}


def parquet_schema() -> pa.Schema:
    """Schema of a parquet-layout file: :data:`INDEX_SCHEMA` columns in order, then ``image``.

    Returns
    -------
    pyarrow.Schema
        Integers int64 (nullable), floats float64, text string, booleans bool; ``image``
        ``fixed_size_list<float32>[16384]``.
    """
    import pyarrow as pa

    fields = [pa.field(c.name, getattr(pa, _ARROW_TYPES[c.dtype])()) for c in INDEX_SCHEMA]
    image = pa.field(PARQUET_IMAGE, pa.list_(pa.float32(), _IMAGE_FLOATS), nullable=False)
    return pa.schema([*fields, image])


def parquet_table(frame: pd.DataFrame, tensors: np.ndarray) -> pa.Table:
    """A parquet-layout table: the index columns of ``frame``, then ``image`` (zero-copy).

    Parameters
    ----------
    frame : pandas.DataFrame, N rows
        Index rows; columns of :data:`INDEX_SCHEMA` it lacks are written null, others dropped.
    tensors : ndarray, shape (N, 64, 64, 4), float32 little-endian, C order
        The cutouts; ``image`` of row i is ``tensors[i]`` flattened channel-last, the same
        65,536 bytes as the files layout's ``.npy`` data (so :func:`cutout_sha256` agrees).

    Returns
    -------
    pyarrow.Table
        With :func:`parquet_schema`.
    """
    import pyarrow as pa

    if tensors.ndim != 4 or tensors.shape[1:] != CUTOUT_SHAPE or tensors.dtype != CUTOUT_DTYPE:
        raise ValueError(f"expected (N, {CUTOUT_SHAPE}) <f4, got {tensors.shape} {tensors.dtype}")
    if len(frame) != len(tensors):
        raise ValueError(f"{len(frame)} index rows but {len(tensors)} cutouts")
    schema = parquet_schema()
    names = [c.name for c in INDEX_SCHEMA]
    nullable = {c.name: "Int64" if c.dtype == "int64" else c.dtype for c in INDEX_SCHEMA}
    frame = frame.reindex(columns=names).astype(nullable)
    table = pa.Table.from_pandas(frame, schema=pa.schema(list(schema)[:-1]), preserve_index=False)
    flat = pa.array(np.ascontiguousarray(tensors).reshape(-1), pa.float32())
    image = pa.FixedSizeListArray.from_arrays(flat, _IMAGE_FLOATS)
    return table.append_column(schema.field(PARQUET_IMAGE), image)


def open_parquet(path: str | Path) -> np.ndarray:
    """The cutouts of a parquet-layout file, a read-only (N, 64, 64, 4) float32 array.

    The file is memory-mapped (``pyarrow.memory_map``) and only its ``image`` column is read;
    the result views the decoded column's buffer (no further copy when it is one chunk).

    Raises
    ------
    ValueError
        When the file is not readable Parquet, lacks ``image``, or ``image`` is not a
        fixed-size list of 16,384 float32 without nulls.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pa.memory_map(str(path)) as source:
            column = pq.read_table(source, columns=[PARQUET_IMAGE]).column(PARQUET_IMAGE)
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise ValueError(f"{path}: not a readable parquet-layout file ({exc})") from exc
    want = pa.list_(pa.float32(), _IMAGE_FLOATS)
    if column.type != want or column.null_count:
        raise ValueError(
            f"{path}: column {PARQUET_IMAGE!r} is {column.type} with {column.null_count} "
            f"null(s), expected {want} without nulls"
        )
    chunks = [c.flatten().to_numpy(zero_copy_only=True) for c in column.chunks]
    flat = chunks[0] if len(chunks) == 1 else np.concatenate(chunks or [np.empty(0, np.float32)])
    out = flat.reshape(-1, *CUTOUT_SHAPE)
    out.flags.writeable = False
    return out


# --------------------------------------------------------------------------- the index


@dataclass(frozen=True)
class Column:
    """One column of ``master_index.csv`` and its Croissant field.

    ``dtype`` is the pandas dtype; ``data_type`` the Croissant type (``sc:Integer``,
    ``sc:Float``, ``sc:Text``, ``sc:Boolean``); ``field`` the Croissant field name when it
    differs from the column name.
    """

    name: str
    dtype: str
    data_type: str
    description: str
    field: str | None = None

    @property
    def field_name(self) -> str:
        return self.field or self.name


def _c(name: str, dtype: str, description: str, field: str | None = None) -> Column:
    data_type = {"Int64": "sc:Integer", "int64": "sc:Integer", "float64": "sc:Float",
                 "string": "sc:Text", "boolean": "sc:Boolean"}[dtype]
    return Column(name, dtype, data_type, description, field)


#: Columns of master_index.csv, in order.
INDEX_SCHEMA: tuple[Column, ...] = (
    # the seed's nine
    _c("cutout_id", "int64", "Unique cutout identifier, 0 .. N-1 over the dataset."),
    _c("job_id", "string", "RAPID job folder the candidate comes from (jid...)."),
    _c("x", "float64", "Candidate column position in the job's images, 0-based pixels "
       "(RAPID layout: PSF-fit x_fit)."),
    _c("y", "float64", "Candidate row position in the job's images, 0-based pixels "
       "(RAPID layout: PSF-fit y_fit)."),
    _c("label", "Int64", "1 real, 0 bogus; empty when the job has no truth (unlabelled)."),
    _c("cutout_filename", "string",
       "Path of the file holding the cutout, relative to the dataset root: files layout, the "
       ".npy of the (64, 64, 4) float32 cutout itself; shards layout, its job's (N, 64, 64, 4) "
       ".npy shard; parquet layout, its job's .parquet file (column `image`); in both of the "
       "latter the cutout is row `row`. Channels science, reference, difference, score, each "
       "ZScale-normalised to [0, 1].",
       field="cutout_path"),
    _c("flux", "float64", "Candidate flux, DN/s (seed: catalog flux; RAPID: PSF-fit flux_fit)."),
    _c("fwhm", "float64", "Catalog FWHM of the candidate, pixels, when the catalog has it."),
    _c("elongation", "float64", "Catalog elongation (major/minor axis), when the catalog has it."),
    # sharded layout
    _c("shard", "string", "Shards and parquet layouts: path of the job's file holding its "
       "cutouts, one per row (shards/<job_id>.npy, an (N, 64, 64, 4) float32 array, or "
       "parquet/<job_id>.parquet); empty in the files layout."),
    _c("row", "Int64", "Shards and parquet layouts: 0-based row of the cutout in its job's "
       "file; empty in the files layout."),
    # provenance
    _c("catalog_row", "int64", "0-based data row of the candidate in its job's catalog."),
    _c("flags", "Int64", "Catalog flags of the candidate (RAPID: PSF-fit flags), when present."),
    _c("filter", "string", "Filter of the job's science image (e.g. H158, R062)."),
    _c("field", "string", "Sky field (tile) of the job, from the field lists or the FIELD card."),
    _c("mjd", "float64", "Modified Julian Date of the science exposure (MJD-OBS), days."),
    _c("reference_file", "string", "Reference image used: the gain-matched one when present."),
    # labels
    _c("labelled", "boolean", "True when the job had truth files, so label is meaningful."),
    _c("match_id", "string", "Matched truth source: <row>_inj (injected) or <object_id>_ou."),
    _c("truth_id", "string", "Row of the injection list or object_id of the simulation truth."),
    _c("injected", "boolean", "True when the matched truth source is an injected fake."),
    _c("match_distance", "float64", "Distance to the matched truth source, pixels."),
    _c("truth_mag", "float64", "AB magnitude of the matched truth source."),
    # RAPID finder (photutils DAOStarFinder on D)
    _c("xcentroid", "float64", "Finder centroid column, 0-based pixels (photutils 3: "
       "x_centroid); empty when the job has no finder catalog."),
    _c("ycentroid", "float64", "Finder centroid row, 0-based pixels (photutils 3: y_centroid)."),
    _c("sharpness", "float64", "DAOStarFinder sharpness."),
    _c("roundness1", "float64", "DAOStarFinder roundness from symmetry."),
    _c("roundness2", "float64", "DAOStarFinder roundness from marginal Gaussian fits."),
    _c("npix", "Int64", "Pixels in the finder's footprint (photutils 3: n_pixels)."),
    _c("peak", "float64", "Peak pixel value of D at the source, DN/s."),
    _c("finder_flux", "float64", "Finder flux (DAOStarFinder flux column), DN/s."),
    _c("mag", "float64", "Finder instrumental magnitude, -2.5 log10(flux) (NaN for flux <= 0)."),
    _c("daofind_mag", "float64", "DAOStarFinder magnitude relative to the detection threshold."),
    # RAPID PSF photometry (photutils PSFPhotometry seeded by the finder)
    _c("flux_fit", "float64", "PSF-fit flux, DN/s."),
    _c("flux_err", "float64", "Uncertainty of flux_fit, DN/s."),
    _c("x_err", "float64", "Uncertainty of x_fit, pixels."),
    _c("y_err", "float64", "Uncertainty of y_fit, pixels."),
    _c("qfit", "float64", "PSF-fit quality: sum of absolute residuals over flux."),
    _c("cfit", "float64", "PSF-fit central pixel residual over flux."),
    _c("local_bkg", "float64", "Local background subtracted by the PSF fit, DN/s."),
    _c("npixfit", "Int64", "Pixels used in the PSF fit (photutils 3: n_pixels_fit)."),
    _c("reduced_chi2", "float64", "Reduced chi-squared of the PSF fit (photutils 2.3 and "
       "later); empty for catalogs without it."),
    _c("ra", "float64", "Right ascension of the PSF-fit position, degrees (ICRS)."),
    _c("dec", "float64", "Declination of the PSF-fit position, degrees (ICRS)."),
    # evaluation
    _c("score_peak", "float64", "Peak of the score image (Scorr, S/N units) over the 3 x 3 "
       "pixels centred on the candidate pixel; NaN when all nine are non-finite."),
    _c("bogus_kind", "string", "Cause of a bogus candidate where the simulator records it "
       "(saturated_star, star_residual, galaxy_residual, cosmic_ray, hot_pixel, mask_edge, "
       "noise; unmatched_real where the simulator matched a real source that our labels did not); "
       "empty for real candidates and for jobs without such a record."),
    _c("split", "string", "train, validation or test: assigned by sky field (by job when the "
       "jobs carry no field), never by cutout; a truth source never straddles two splits. "
       "See the `splits` record set."),
    # integrity
    _c("sha256", "string", "Lowercase hex SHA-256 of the cutout's 65,536 data bytes: the "
       "(64, 64, 4) float32 tensor, little-endian, C order (files layout: the .npy file without "
       "its header; shards layout: row `row` of the shard; parquet layout: the `image` values "
       "of row `row`). Computed when the cutout is written; "
       "`cutouts verify` checks every cutout against it."),
)

#: What a layout returns per catalog row: every index column but the ones the cutout and
#: index steps add.
_ADDED_BY_INDEX = (
    "cutout_id", "job_id", "cutout_filename", "shard", "row", "score_peak", "split", "sha256"
)
#: Column name to pandas dtype of the candidate table a layout returns per catalog row.
CANDIDATE_COLUMNS: dict[str, str] = {
    c.name: c.dtype for c in INDEX_SCHEMA if c.name not in _ADDED_BY_INDEX
}
