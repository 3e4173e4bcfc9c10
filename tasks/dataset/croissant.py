"""Croissant step: describe the dataset in ``croissant.json`` (Croissant 1.1) with mlcroissant.

The record set ``transient_candidates`` and its field ids (``transient_candidates/label``,
``transient_candidates/cutout_path``, ...) are those of the seed's metadata, so clients
written against it keep working. Fields are generated from :data:`tasks.contract.INDEX_SCHEMA`,
each a plain column of ``master_index.csv``.

What the Croissant 1.1 specification (http://mlcommons.org/croissant/1.1) asks, and where it
is written:

- ``conformsTo``: Croissant 1.1 first (mlcroissant validates against the first Croissant
  version it knows), then Croissant RAI 1.0; ``@context``: mlcroissant's 1.1 context plus the
  terms of the specification's Appendix 1 that map to the same IRIs (:data:`SPEC_CONTEXT`).
- Dataset-level properties, required (``name``, ``description``, ``license``, ``url``,
  ``creator``, ``datePublished``) and recommended (``keywords``, ``publisher``, ``version``,
  ``dateCreated``, ``dateModified``, ``sameAs``, ``sdLicense``, ``inLanguage``), plus
  ``citeAs``; values from :class:`tasks.config.CroissantParams`.
- Responsible AI (``rai:`` vocabulary, RAI 1.0): ``rai:dataCollection``,
  ``rai:dataCollectionType``, ``rai:dataCollectionRawData``,
  ``rai:dataCollectionMissingData``, ``rai:dataPreprocessingProtocol``,
  ``rai:dataAnnotationProtocol``, ``rai:machineAnnotationTools``, ``rai:dataLimitations``,
  ``rai:dataBiases``, ``rai:dataUseCases``, ``rai:personalSensitiveInformation``,
  ``rai:dataSocialImpact``, and ``rai:hasSyntheticData`` (not a term of RAI 1.0, which has
  no synthetic-data flag, but the boolean that dataset checklists such as NeurIPS' ask for).
- Splits (ML-specific features, Splits): the record set ``splits`` of ``dataType``
  ``cr:Split`` with inline ``data`` (name, url ``cr:TrainingSplit`` / ``cr:ValidationSplit``
  / ``cr:TestSplit``, and per-split counts); ``transient_candidates/split`` ``references``
  ``splits/name``.
- Arrays: the field ``transient_candidates/cutout_path`` carries an ``annotation`` field
  (``.../cutout_path/array``) with ``dataType`` ``cr:Float32``, ``isArray`` and
  ``arrayShape`` ``64,64,4`` (files layout) or ``-1,64,64,4`` (a shard; ``row`` selects the
  cutout); the record set ``channels`` (an ``sc:Enumeration``) gives the channel order; the
  cutout files state shape, dtype and order in their descriptions. mlcroissant cannot read
  ``.npy`` content, so no field extracts the arrays themselves.
- Parquet layout: the FileSet ``parquet-files`` (``parquet/*.parquet``,
  ``application/x-parquet``) is the source of every field of ``transient_candidates`` (each
  file holds the index columns), plus the field ``transient_candidates/image`` (``sc:Float``,
  ``isArray``, ``arrayShape`` ``64,64,4``): mlcroissant yields the pixels, a flat list of
  16,384 values, channel-last. A FileSet has no per-file checksum, so each job's file is also
  a FileObject with its ``sha256`` (as the shards are).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from croissant_cutouts.tasks.config import CroissantParams
from croissant_cutouts.tasks.contract import (
    CHANNELS,
    CUTOUT_DIR,
    CUTOUT_DTYPE,
    CUTOUT_SHAPE,
    HALF,
    INDEX_FILE,
    INDEX_SCHEMA,
    LIMITS_FILE,
    PARQUET_DIR,
    PARQUET_IMAGE,
    RECORD_SET,
)
from croissant_cutouts.tasks.dataset.record_sets import (
    LIMITS_ID,
    SPLIT_URLS,
    SPLITS_ID,
    channels_record_set,
    limits_record_set,
    splits_record_set,
)
from croissant_cutouts.tasks.dataset.splits import split_counts
from croissant_cutouts.tasks.infra.atomic import atomic_write_text
from croissant_cutouts.tasks.infra.digests import sha256_file, sha256_files

if TYPE_CHECKING:  # mlcroissant is imported where used: it costs ~0.4 s at start-up
    import mlcroissant as mlc

__all__ = [
    "CONFORMS_TO",
    "CROISSANT_1_1",
    "RAI_1_0",
    "SPEC_CONTEXT",
    "SYNTHETIC_COLLECTION_TYPE",
    "CroissantError",
    "array_statement",
    "build_metadata",
    "check_provenance",
    "croissant_task",
    "validate",
    "write_croissant",
]

log = logging.getLogger(__name__)

INDEX_ID = INDEX_FILE
CUTOUTS_ID = "cutout-files"
#: FileSet of the parquet layout's per-job files: the source of ``transient_candidates``.
PARQUET_ID = "parquet-files"
PARQUET_MEDIA_TYPE = "application/x-parquet"

CROISSANT_1_1 = "http://mlcommons.org/croissant/1.1"
RAI_1_0 = "http://mlcommons.org/croissant/RAI/1.0"
#: ``conformsTo`` of the metadata: mlcroissant validates against the first Croissant version.
CONFORMS_TO = (CROISSANT_1_1, RAI_1_0)
#: Terms of the 1.1 specification's JSON-LD context (Appendix 1) that mlcroissant 1.1.1 does
#: not emit; each maps to the IRI mlcroissant itself uses for that property. The spec's
#: ``"value": "cr:value"`` is left out: mlcroissant reads a field's value as schema.org
#: ``value``, and a ``cr:value`` alias would hide it.
SPEC_CONTEXT = {
    "annotation": "cr:annotation",
    "excludes": "cr:excludes",
    "readLines": "cr:readLines",
    "sdVersion": "cr:sdVersion",
    "unArchive": "cr:unArchive",
}
NPY_MEDIA_TYPE = "application/x-npy"
#: The .npy format's specification: the encodingFormat URL of an unregistered media type.
NPY_FORMAT_URL = "https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html"
#: rai:dataCollectionType value added when the data are synthetic.
SYNTHETIC_COLLECTION_TYPE = "Synthetic data (simulation)"


class CroissantError(ValueError):
    """mlcroissant reported an error or a warning about the metadata."""


# --------------------------------------------------------------------------- index


def _read_index(csv_path: Path) -> pd.DataFrame:
    """The index columns the metadata needs (``shard``, ``split``, ``label``, ``job_id``,
    ``field``: those of :func:`tasks.dataset.splits.split_counts`), checked.

    Raises
    ------
    CroissantError
        When the index lacks a column of :data:`INDEX_SCHEMA`, or has a ``split`` value
        other than those of :data:`SPLIT_URLS`.
    """
    columns = list(pd.read_csv(csv_path, nrows=0).columns)
    missing = [c.name for c in INDEX_SCHEMA if c.name not in columns]
    if missing:
        raise CroissantError(f"{csv_path}: index lacks column(s) {', '.join(missing)}")
    frame = pd.read_csv(
        csv_path,
        usecols=["shard", "split", "label", "job_id", "field", "bogus_kind"],
        dtype={"shard": "string", "split": "string", "job_id": "string", "field": "string",
               "bogus_kind": "string"},
        keep_default_na=True,
    )
    unknown = sorted(set(frame["split"].dropna()) - set(SPLIT_URLS))
    if unknown:
        raise CroissantError(
            f"{csv_path}: unknown split name(s) {', '.join(map(repr, unknown))}; expected "
            f"{', '.join(SPLIT_URLS)}"
        )
    return frame


def check_provenance(index: pd.DataFrame, params: CroissantParams, csv_path: Path) -> None:
    """Refuse to describe real jobs with the simulator's built-in RAI texts.

    Jobs are taken as simulated when some row of the index records a simulator cause
    (``bogus_kind``, from the simulator's ``simulated_candidate_kinds.txt`` or the
    ``simulated_kind`` column of a simulated ``psfcat.csv``); real RAPID or seed folders
    never have one.

    Raises
    ------
    CroissantError
        Naming the texts (:data:`tasks.config.SIMULATOR_RAI_TEXTS`) to set in ``params.yaml``.
    """
    kept = params.simulator_texts()
    if kept and not index["bogus_kind"].notna().any():
        raise CroissantError(
            f"{csv_path}: no row records a simulator cause (bogus_kind), so these are real "
            f"jobs, but croissant.{', croissant.'.join(kept)} still hold the simulator's "
            "built-in texts; describe your data in the croissant section of params.yaml "
            "(cutouts --params FILE) before publishing"
        )


# --------------------------------------------------------------------------- context


def _context() -> mlc.Context:
    """An mlcroissant context for Croissant 1.1 with the 1.1 JSON-LD ``@context``.

    ``make_context`` is the context mlcroissant compares a file's with on loading (it logs a
    warning when a key is missing); without it, mlcroissant writes its 1.0 context.
    """
    import mlcroissant as mlc
    from mlcroissant._src.core.rdf import make_context  # not re-exported by mlcroissant

    ctx = mlc.Context(conforms_to=CROISSANT_1_1)
    ctx.rdf = mlc.Rdf(context=make_context(ctx, **SPEC_CONTEXT))
    return ctx


def _data_types() -> dict[str, object]:
    import mlcroissant as mlc

    return {
        "sc:Integer": mlc.DataType.INTEGER,
        "sc:Float": mlc.DataType.FLOAT,
        "sc:Text": mlc.DataType.TEXT,
        "sc:Boolean": mlc.DataType.BOOL,
    }


# --------------------------------------------------------------------------- arrays


def array_statement(shape: tuple[int, ...]) -> str:
    """The metadata's statement of an array of cutouts: format, dtype, order, channels, values.

    Parameters
    ----------
    shape : tuple of int
        :data:`CUTOUT_SHAPE` for one cutout, ``(-1, *CUTOUT_SHAPE)`` for a shard.

    Returns
    -------
    str
        E.g. ``"numpy .npy, shape (64, 64, 4), dtype float32 little-endian ('<f4'), ..."``.
    """
    dims = ", ".join(map(str, shape))
    return (
        f"numpy .npy, shape ({dims}), dtype float32 little-endian ('{CUTOUT_DTYPE.str}'), "
        f"C order, channel-last: {', '.join(CHANNELS)}; each channel ZScale-normalised over "
        f"its whole image to [0, 1]; the candidate pixel at row, column [{HALF}, {HALF}]."
    )


def _array_annotation(ctx: mlc.Context, sharded: bool) -> mlc.Field:
    """Annotation of ``cutout_path``: the array its file holds (``isArray``, ``arrayShape``)."""
    import mlcroissant as mlc

    shape = (-1, *CUTOUT_SHAPE) if sharded else CUTOUT_SHAPE
    where = (
        "The job's shard that cutout_path names: row `row` of it is the cutout. "
        if sharded
        else "The cutout that cutout_path names. "
    )
    return mlc.Field(
        ctx=ctx,
        id=f"{RECORD_SET}/cutout_path/array",
        name="array",
        description=where + array_statement(shape),
        data_types=[mlc.DataType.FLOAT32, mlc.DataType.FLOAT],
        is_array=True,
        array_shape=",".join(map(str, shape)),
    )


# --------------------------------------------------------------------------- record sets


def _source(ctx: mlc.Context, column: str, parquet: bool) -> mlc.Source:
    """A column of the index CSV, or of the parquet files in the parquet layout."""
    import mlcroissant as mlc

    where = {"file_set": PARQUET_ID} if parquet else {"file_object": INDEX_ID}
    return mlc.Source(ctx=ctx, **where, extract=mlc.Extract(ctx=ctx, column=column))


def _image_field(ctx: mlc.Context) -> mlc.Field:
    """Parquet layout: ``transient_candidates/image``, the cutout's pixels (``isArray``)."""
    import mlcroissant as mlc

    return mlc.Field(
        ctx=ctx,
        id=f"{RECORD_SET}/{PARQUET_IMAGE}",
        name=PARQUET_IMAGE,
        description="The cutout's pixels, a fixed-size list of 16,384 float32 (Parquet "
        "column image): the (64, 64, 4) tensor flattened channel-last, the same bytes as the "
        "files layout's .npy data. " + array_statement(CUTOUT_SHAPE).split(", ", 1)[1],
        data_types=[mlc.DataType.FLOAT],
        is_array=True,
        array_shape=",".join(map(str, CUTOUT_SHAPE)),
        source=_source(ctx, PARQUET_IMAGE, parquet=True),
    )


def _candidate_fields(ctx: mlc.Context, layout: str) -> list[mlc.Field]:
    """Fields of ``transient_candidates``: one plain column of the index each (of the
    parquet files in the parquet layout, plus :func:`_image_field`)."""
    import mlcroissant as mlc

    types = _data_types()
    parquet = layout == "parquet"
    fields = []
    for col in INDEX_SCHEMA:
        extra: dict[str, Any] = {}
        if col.field_name == "split":
            extra["references"] = mlc.Source(ctx=ctx, field=f"{SPLITS_ID}/name")
        elif col.field_name == "cutout_path" and not parquet:
            extra["annotations"] = [_array_annotation(ctx, layout == "shards")]
        fields.append(
            mlc.Field(
                ctx=ctx,
                id=f"{RECORD_SET}/{col.field_name}",
                name=col.field_name,
                description=col.description,
                data_types=[types[col.data_type]],
                source=_source(ctx, col.name, parquet),
                **extra,
            )
        )
    return [*fields, _image_field(ctx)] if parquet else fields


# --------------------------------------------------------------------------- distribution


def _distribution(
    ctx: mlc.Context, csv_path: Path, base: Path, shards: list[str]
) -> list[mlc.FileObject | mlc.FileSet]:
    """The index FileObject, then the cutout FileSet, or one FileObject per shard (parquet
    layout: the FileSet of the parquet files, then one FileObject per file)."""
    import mlcroissant as mlc

    root_rel = os.path.relpath(csv_path.parent, base)
    prefix = "" if root_rel == "." else f"{root_rel}/"
    formats = [NPY_MEDIA_TYPE, NPY_FORMAT_URL]
    distribution: list[mlc.FileObject | mlc.FileSet] = [
        _csv_file_object(ctx, INDEX_ID, csv_path, base, "One row per cutout: position, "
                         "label, split, cutout path, catalog features.")
    ]
    if not shards:
        distribution.append(
            mlc.FileSet(
                ctx=ctx,
                id=CUTOUTS_ID,
                name=CUTOUTS_ID,
                description="Cutout tensors, one per file: " + array_statement(CUTOUT_SHAPE),
                encoding_formats=formats,
                includes=[f"{prefix}{CUTOUT_DIR}/*.npy"],
            )
        )
        return distribution
    digests = sha256_files(csv_path.parent, shards)
    parquet = _layout(shards) == "parquet"
    if parquet:
        formats = [PARQUET_MEDIA_TYPE]
        distribution.append(
            mlc.FileSet(
                ctx=ctx,
                id=PARQUET_ID,
                name=PARQUET_ID,
                description="One Parquet file per job, one row per cutout: the index columns "
                "plus image (16,384 float32, the (64, 64, 4) tensor flattened channel-last).",
                encoding_formats=formats,
                includes=[f"{prefix}{PARQUET_DIR}/*.parquet"],
            )
        )
    what = "Columns: the index's, plus image." if parquet else array_statement(
        (-1, *CUTOUT_SHAPE)
    )
    return distribution + [
        mlc.FileObject(
            ctx=ctx,
            id=f"{'parquet' if parquet else 'shard'}-{Path(name).stem}",
            name=Path(name).name,
            description=f"Cutouts of job {Path(name).stem}, one per row; index rows with "
            f"this shard give their row. {what}",
            content_url=prefix + name,
            encoding_formats=formats,
            sha256=digests[name],
        )
        for name in shards
    ]


def _csv_file_object(
    ctx: mlc.Context, file_id: str, path: Path, base: Path, description: str
) -> mlc.FileObject:
    """A local CSV FileObject with its sha256, its URL relative to ``base``."""
    import mlcroissant as mlc

    return mlc.FileObject(
        ctx=ctx,
        id=file_id,
        name=file_id,
        description=description,
        content_url=os.path.relpath(path, base),
        encoding_formats=["text/csv"],
        sha256=sha256_file(path),
    )


def _layout(shards: list[str]) -> str:
    """The output layout of an index whose ``shard`` column holds ``shards``."""
    if not shards:
        return "files"
    return "parquet" if shards[0].endswith(".parquet") else "shards"


# --------------------------------------------------------------------------- dataset level


def _day(text: str | None, default: dt.datetime) -> dt.datetime:
    return dt.datetime.fromisoformat(text) if text else default


def _dates(params: CroissantParams, csv_path: Path) -> dict[str, dt.datetime]:
    """``date_published``, ``date_created`` and ``date_modified`` of the metadata.

    Defaults: published today (UTC); created when published; modified on the index file's
    date (UTC), or when created if that is later. Dates given in ``params`` are kept as given.
    """
    midnight = {"hour": 0, "minute": 0, "second": 0, "microsecond": 0}
    published = _day(params.date_published, dt.datetime.now(dt.UTC).replace(**midnight))
    created = _day(params.date_created, published)
    if params.date_modified:
        modified = _day(params.date_modified, created)
    else:
        mtime = dt.datetime.fromtimestamp(csv_path.stat().st_mtime, dt.UTC).replace(**midnight)
        later = mtime.replace(tzinfo=None) >= created.replace(tzinfo=None)
        modified = mtime if later else created
    return {"date_published": published, "date_created": created, "date_modified": modified}


def _rai(params: CroissantParams) -> dict[str, Any]:
    """Responsible-AI keyword arguments of :class:`mlcroissant.Metadata`."""
    collection_types = list(params.data_collection_type)
    if params.synthetic and SYNTHETIC_COLLECTION_TYPE not in collection_types:
        collection_types.append(SYNTHETIC_COLLECTION_TYPE)
    return {
        "data_collection": params.data_collection,
        "data_collection_type": collection_types,
        "data_collection_raw_data": params.data_collection_raw_data,
        "data_collection_missing_data": params.data_collection_missing_data,
        "data_preprocessing_protocol": list(params.data_preprocessing_protocol),
        "data_annotation_protocol": list(params.data_annotation_protocol),
        "machine_annotation_tools": list(params.machine_annotation_tools),
        "data_limitations": list(params.data_limitations),
        "data_biases": list(params.data_biases),
        "data_use_cases": list(params.data_use_cases),
        "personal_sensitive_information": list(params.personal_sensitive_information),
        "data_social_impact": params.data_social_impact,
        "extra_properties": {"rai:hasSyntheticData": bool(params.synthetic)},
    }


def build_metadata(
    csv_path: str | Path, output: str | Path, params: CroissantParams
) -> mlc.Metadata:
    """Build the Croissant 1.1 metadata of the dataset indexed by ``csv_path``.

    Paths inside the metadata are relative to the folder of ``output`` (where
    ``croissant.json`` will be written), which is normally the dataset root.

    Raises
    ------
    CroissantError
        When the index lacks a column of :data:`INDEX_SCHEMA` or names an unknown split.
    mlcroissant.ValidationError
        When mlcroissant rejects the metadata it is given.
    """
    import mlcroissant as mlc

    csv_path = Path(csv_path).resolve()
    base = Path(output).resolve().parent
    index = _read_index(csv_path)
    check_provenance(index, params, csv_path)
    shards = sorted(index["shard"].dropna().unique())
    limits = csv_path.parent / LIMITS_FILE  # written by the index step beside the index
    ctx = _context()
    return mlc.Metadata(
        ctx=ctx,
        name=params.name,
        description=params.description,
        conforms_to=list(CONFORMS_TO),
        url=params.url,
        license=[params.license],
        creators=[mlc.Organization(ctx=ctx, name=params.creator)],
        publisher=[mlc.Organization(ctx=ctx, name=params.publisher)],
        version=params.version,
        cite_as=params.cite_as,
        keywords=list(params.keywords),
        in_language=list(params.in_language),
        same_as=list(params.same_as),
        sd_licence=[params.sd_license],
        **_dates(params, csv_path),
        **_rai(params),
        distribution=[*_distribution(ctx, csv_path, base, shards), *(
            [_csv_file_object(ctx, LIMITS_ID, limits, base, "ZScale limits of each job's four "
                              "images: how the stored [0, 1] values map back to image units.")]
            if limits.is_file() else [])],
        record_sets=[
            mlc.RecordSet(
                ctx=ctx,
                id=RECORD_SET,
                name=RECORD_SET,
                description="Transient candidates, one record per cutout.",
                key=f"{RECORD_SET}/cutout_id",
                fields=_candidate_fields(ctx, _layout(shards)),
            ),
            splits_record_set(ctx, split_counts(index)),
            channels_record_set(ctx),
            *([limits_record_set(ctx)] if limits.is_file() else []),
        ],
    )


def _raise_on_issues(issues: mlc.Issues, what: str) -> None:
    problems = [f"error: {e}" for e in issues.errors] + [f"warning: {w}" for w in issues.warnings]
    if problems:
        raise CroissantError(f"{what}: mlcroissant reports\n" + "\n".join(problems))


def validate(path: str | Path) -> mlc.Dataset:
    """Load ``croissant.json`` with mlcroissant; raise on any error or warning."""
    import mlcroissant as mlc

    try:
        dataset = mlc.Dataset(jsonld=str(path))
    except mlc.ValidationError as exc:
        raise CroissantError(f"{path}: {exc}") from exc
    _raise_on_issues(dataset.metadata.ctx.issues, str(path))
    return dataset


def write_croissant(
    csv_path: str | Path, output: str | Path, params: CroissantParams | None = None
) -> Path:
    """Write ``croissant.json`` for an index and check it with mlcroissant.

    Raises
    ------
    CroissantError
        When mlcroissant reports any error or warning, on building or on reloading.
    """
    import mlcroissant as mlc

    params = params or CroissantParams()
    output = Path(output)
    try:
        metadata = build_metadata(csv_path, output, params)
    except mlc.ValidationError as exc:
        raise CroissantError(str(exc)) from exc
    _raise_on_issues(metadata.issues, "building croissant.json")
    text = json.dumps(metadata.to_json(), indent=2, default=str) + "\n"
    atomic_write_text(output, text)
    validate(output)
    log.info("wrote %s", output)
    return output


@task(name="croissant", cache_policy=NO_CACHE, persist_result=False)
def croissant_task(csv_path: str, output: str, params: CroissantParams) -> str:
    """Prefect task: :func:`write_croissant`; fails on any mlcroissant error or warning."""
    return str(write_croissant(csv_path, output, params))
