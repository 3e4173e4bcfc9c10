"""The small record sets of ``croissant.json`` beside ``transient_candidates``.

- ``splits`` (``dataType`` ``cr:Split``): the split names, their Croissant split types and
  per-split counts, inline; ``transient_candidates/split`` references ``splits/name``.
- ``channels`` (an ``sc:Enumeration``): index and name of each channel of a cutout array.
- ``zscale_limits``: per job and channel, the ZScale limits the cutouts were scaled with,
  read from ``zscale_limits.csv`` (its FileObject is :data:`LIMITS_ID`).

:mod:`.croissant` assembles them into the dataset's metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from croissant_cutouts.tasks.contract import CHANNELS, LIMITS_FILE, LIMITS_SET
from croissant_cutouts.tasks.dataset.splits import SPLITS

if TYPE_CHECKING:  # mlcroissant is imported where used: it costs ~0.4 s at start-up
    import mlcroissant as mlc

__all__ = [
    "CHANNELS_ID",
    "CHANNEL_DESCRIPTIONS",
    "LIMITS_FIELDS",
    "LIMITS_ID",
    "SPLITS_ID",
    "SPLIT_COUNTS",
    "SPLIT_URLS",
    "channels_record_set",
    "limits_record_set",
    "splits_record_set",
]

#: Record set declaring the splits (``dataType`` ``cr:Split``).
SPLITS_ID = "splits"
#: Record set enumerating the cutout channels, in array order.
CHANNELS_ID = "channels"
#: FileObject of ``zscale_limits.csv`` and the record set of its rows.
LIMITS_ID = LIMITS_FILE
#: Fields of the ``zscale_limits`` record set: column of ``zscale_limits.csv``, data type,
#: description.
LIMITS_FIELDS = (
    ("job_id", "TEXT", "Job folder name, as in transient_candidates/job_id."),
    ("channel", "TEXT", "Channel name: science, reference, difference or score."),
    ("vmin", "FLOAT", "Lower ZScale limit of the job's whole image, in its units (DN/s; "
     "the score in sigmas): a stored 0."),
    ("vmax", "FLOAT", "Upper ZScale limit: a stored 1. A stored value x is the image value "
     "vmin + x (vmax - vmin) inside [vmin, vmax]."),
    ("status", "TEXT", "ok, or why the channel is stored as zeros: constant, "
     "no_finite_pixels, limits_not_finite."),
)
#: Split names of the index (``split`` column) and their Croissant split types.
SPLIT_URLS = dict(zip(SPLITS, ("cr:TrainingSplit", "cr:ValidationSplit", "cr:TestSplit"),
                      strict=True))
#: Per-split counts written into the ``splits`` records.
SPLIT_COUNTS = {
    "cutouts": "Cutouts (index rows) in the split.",
    "real": "Cutouts labelled real (1).",
    "bogus": "Cutouts labelled bogus (0).",
    "unlabelled": "Cutouts without a label (jobs without truth files).",
}
#: Description of each channel in the ``channels`` records.
CHANNEL_DESCRIPTIONS = {
    "science": "Background-subtracted science image (the new epoch).",
    "reference": "Reference image (deep coadd) resampled to the science image.",
    "difference": "Difference image, science minus PSF-matched reference.",
    "score": "Score image (Scorr, S/N units) of the difference.",
}


def _inline_field(
    ctx: mlc.Context, record_set: str, name: str, types: list[Any], text: str
) -> mlc.Field:
    """A field of a record set whose records are inline ``data``."""
    import mlcroissant as mlc

    return mlc.Field(
        ctx=ctx, id=f"{record_set}/{name}", name=name, description=text, data_types=types
    )


def splits_record_set(ctx: mlc.Context, counts: dict[str, dict[str, int]]) -> mlc.RecordSet:
    """The ``splits`` record set: ``cr:Split`` names, split types and counts, inline."""
    import mlcroissant as mlc

    t = mlc.DataType
    fields = [
        _inline_field(ctx, SPLITS_ID, "name", [t.TEXT], "Split name, as in the index."),
        _inline_field(
            ctx, SPLITS_ID, "url", [t.URL, t.SPLIT],
            "Croissant split type: cr:TrainingSplit, cr:ValidationSplit or cr:TestSplit.",
        ),
        *(
            _inline_field(ctx, SPLITS_ID, name, [t.INTEGER], text)
            for name, text in SPLIT_COUNTS.items()
        ),
    ]
    data = [
        {
            f"{SPLITS_ID}/name": name,
            f"{SPLITS_ID}/url": url,
            **{f"{SPLITS_ID}/{k}": counts[name][k] for k in SPLIT_COUNTS},
        }
        for name, url in SPLIT_URLS.items()
    ]
    return mlc.RecordSet(
        ctx=ctx,
        id=SPLITS_ID,
        name=SPLITS_ID,
        description="Splits of the dataset, by sky field (by job when jobs carry no field), "
        "never by cutout; transient_candidates/split references splits/name.",
        data_types=[t.SPLIT],
        key=[f"{SPLITS_ID}/name"],
        fields=fields,
        data=data,
    )


def channels_record_set(ctx: mlc.Context) -> mlc.RecordSet:
    """The ``channels`` enumeration: index and name of each channel of a cutout array."""
    import mlcroissant as mlc
    from rdflib.namespace import SDO

    t = mlc.DataType
    return mlc.RecordSet(
        ctx=ctx,
        id=CHANNELS_ID,
        name=CHANNELS_ID,
        description="Channels of a cutout array, by their index on its last axis.",
        data_types=[SDO.Enumeration],
        key=[f"{CHANNELS_ID}/index"],
        fields=[
            _inline_field(ctx, CHANNELS_ID, "index", [t.INTEGER], "Index on the last axis."),
            _inline_field(ctx, CHANNELS_ID, "name", [t.TEXT], "Channel name."),
            _inline_field(ctx, CHANNELS_ID, "description", [t.TEXT], "What the channel is."),
        ],
        data=[
            {
                f"{CHANNELS_ID}/index": i,
                f"{CHANNELS_ID}/name": name,
                f"{CHANNELS_ID}/description": CHANNEL_DESCRIPTIONS[name],
            }
            for i, name in enumerate(CHANNELS)
        ],
    )


def limits_record_set(ctx: mlc.Context) -> mlc.RecordSet:
    """The ``zscale_limits`` record set: one record per job and channel."""
    import mlcroissant as mlc

    return mlc.RecordSet(
        ctx=ctx,
        id=LIMITS_SET,
        name=LIMITS_SET,
        description="Per job and channel, the ZScale limits the cutouts were scaled with "
        "(cutout contract, normalisation).",
        key=[f"{LIMITS_SET}/job_id", f"{LIMITS_SET}/channel"],
        fields=[
            mlc.Field(
                ctx=ctx,
                id=f"{LIMITS_SET}/{name}",
                name=name,
                description=text,
                data_types=[getattr(mlc.DataType, kind)],
                source=mlc.Source(
                    ctx=ctx, file_object=LIMITS_ID, extract=mlc.Extract(ctx=ctx, column=name)
                ),
            )
            for name, kind, text in LIMITS_FIELDS
        ],
    )
