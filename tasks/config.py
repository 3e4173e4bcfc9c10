"""One typed, validated configuration, read from ``params.yaml``.

Every knob of the tool lives here once, with its unit and bounds. ``params.yaml`` at the
project root holds the values DVC tracks; the CLI takes a few flags as overrides. Unknown
keys are rejected so a typo in ``params.yaml`` fails loudly instead of being ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "ROMAN_BAND_ZEROPOINTS",
    "SIMULATOR_RAI_TEXTS",
    "CroissantParams",
    "CutoutParams",
    "LabelParams",
    "Params",
    "RunParams",
    "SelectParams",
    "SimulateParams",
    "SplitParams",
    "TrainParams",
    "load_params",
]


#: galsim's Roman bandpass AB zero points (``galsim.roman.getBandpasses()[f].zeropoint``,
#: galsim 2.8), magnitudes, by ``FILTER`` card value. RAPID adds this to ``ZPTMAG`` to turn
#: an injected fake's magnitude into raw-image counts. ``tests/test_truth.py`` checks the
#: table against the installed galsim.
ROMAN_BAND_ZEROPOINTS: dict[str, float] = {
    "F184": 14.621994,
    "H158": 15.074165,
    "J129": 15.039625,
    "K213": 14.579316,
    "R062": 15.296832,
    "W146": 16.270076,
    "Y106": 15.023547,
    "Z087": 14.964334,
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulateParams(_Section):
    """Simulated job folders (``cutouts simulate``); see ``simulate/scene.py`` for the physics."""

    jobs: int = Field(8, ge=1, description="Number of job folders to write.")
    size: int = Field(4089, ge=64, description="Image side length in pixels (RAPID: 4089).")
    seed: int = Field(0, ge=0, description="Master random seed; fields and jobs use its children.")
    layout: Literal["rapid", "seed"] = Field("rapid", description="Folder layout to write.")
    workers: int = Field(1, ge=1, description="Jobs simulated in parallel (processes).")
    fields: int = Field(3, ge=1, description="Sky fields the jobs cycle through (job k: k % n).")
    injections_per_mpx: float = Field(
        6.0, ge=0, description="Injected fakes per million pixels (sets the real fraction)."
    )
    bogus_density: float = Field(
        1.0, ge=0, description="Multiplier of every bogus population (cosmic rays, stars, ...)."
    )
    mag_limit: float = Field(26.0, description="Truth fainter than this (AB) does not label real.")
    match_radius_px: float = Field(4.0, gt=0, description="Truth-detection matching radius, px.")
    gallery: bool = Field(True, description="Write gallery.png of example cutouts per kind.")
    photutils: Literal["2", "3", "alternate"] = Field(
        "alternate",
        description="Catalog column names: photutils 2 (xcentroid, npix, npixfit), photutils 3 "
        "(x_centroid, n_pixels, n_pixels_fit, reduced_chi2), or alternate per job.",
    )
    names: Literal["2025", "2026"] = Field(
        "2025", description="RAPID file names: 2025, or 2026 with the zogy_ prefix."
    )
    catalogs: Literal["text", "parquet_only", "no_finder"] = Field(
        "text",
        description="Catalog files: text (with 2026 names also the parquet), the 2026 "
        "parquet alone, or the PSF-fit catalog without a finder catalog (before July 2025).",
    )
    science_cards: bool = Field(
        True,
        description="False: FILTER, ZPTMAG, MJD-OBS only in the reformatted science image.",
    )

    @model_validator(mode="after")
    def _real_variant(self) -> SimulateParams:
        if self.catalogs == "parquet_only" and self.names != "2026":
            raise ValueError("simulate.catalogs parquet_only needs names 2026")
        if self.catalogs == "no_finder" and self.names != "2025":
            raise ValueError("simulate.catalogs no_finder needs names 2025")
        return self


class CutoutParams(_Section):
    """Cutting: geometry is fixed by the contract; these are execution knobs."""

    input_layout: Literal["auto", "seed", "rapid"] = Field(
        "auto", description="Input job-folder layout; auto: detected per job."
    )
    layout: Literal["files", "shards", "parquet"] = Field(
        "files",
        description="Output layout: files (one .npy per cutout, the seed's), shards (one "
        "(N, 64, 64, 4) .npy per job under shards/, with shard and row index columns) or "
        "parquet (one .parquet per job under parquet/: the index columns plus the pixels, "
        "readable through Croissant; shard and row index columns).",
    )
    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="Where per-job tasks run: a thread pool, or a Dask cluster."
    )
    dask_address: str | None = Field(
        None,
        description="Scheduler of an existing Dask cluster (tcp://host:8786); empty: a local "
        "cluster of `workers` single-threaded worker processes.",
    )
    workers: int = Field(2, ge=1, le=64, description="Jobs processed concurrently (threads).")
    batch: int = Field(
        64,
        ge=1,
        description="Candidates cut per vectorised batch (64 KiB each; 64 keeps the float64 "
        "work arrays in the CPU cache, twice as fast as 512).",
    )
    retries: int = Field(2, ge=0, description="Retries of an I/O task after a transient OSError.")
    retry_delay_s: float = Field(1.0, ge=0, description="Delay between retries, in seconds.")

    @field_validator("layout", mode="before")
    @classmethod
    def _moved_input_layout(cls, value: object) -> object:
        if value in ("auto", "seed", "rapid"):
            raise ValueError(
                f"cutouts.layout is the output layout (files or shards); the input layout "
                f"{value!r} moved to cutouts.input_layout (CLI: --input_layout)"
            )
        return value


class LabelParams(_Section):
    """Labelling from truth catalogs (RAPID layout)."""

    truth_origin: float = Field(
        1.0, description="Pixel coordinate of the first pixel centre in truth files (galsim: 1)."
    )
    mag_limit: float = Field(
        26.0,
        description="Only truth strictly brighter than this AB magnitude labels real (a "
        "source exactly at it does not).",
    )
    match_radius_px: float = Field(
        4.0, gt=0, description="One-to-one matching radius, pixels (a pair at it matches)."
    )
    band_zeropoints: dict[str, float] = Field(
        default_factory=lambda: dict(ROMAN_BAND_ZEROPOINTS),
        min_length=1,
        description="galsim's Roman bandpass AB zero point per FILTER, magnitudes: injected "
        "fakes' AB magnitude is ZPTMAG + this - 2.5 log10(flux counts). A job with an "
        "injection list whose filter is not here is rejected.",
    )
    truth_index_zeropoint: float | None = Field(
        None,
        description="Zero point added to the simulation truth index's instrumental mag, "
        "magnitudes; null: the science header's ZPTMAG.",
    )

    @field_validator("band_zeropoints")
    @classmethod
    def _finite_zeropoints(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not math.isfinite(v)}
        if bad:
            raise ValueError(f"band zero points must be finite numbers: {bad}")
        return value


class SelectParams(_Section):
    """Which jobs to read; empty selects every jid* folder."""

    field_files: list[str] = Field(
        default_factory=list,
        description="RAPID field lists (PROCDATE JOB FILTER OBSID SCANUM FIELD MJD), relative "
        "to the input folder or absolute; when given, only the jobs they list are read.",
    )
    fields: list[str] = Field(default_factory=list, description="Keep jobs of these sky fields.")
    mjd_max: float | None = Field(None, description="Keep jobs observed at or before this MJD.")


#: RAI texts of :class:`CroissantParams` whose built-in values describe this repository's
#: simulator: a build of real jobs must replace them (:meth:`CroissantParams.simulator_texts`).
SIMULATOR_RAI_TEXTS = ("data_collection", "data_limitations", "data_biases", "data_social_impact")


class CroissantParams(_Section):
    """Dataset-level metadata written into ``croissant.json`` (all required, non-empty).

    Every Responsible-AI text (``data_collection`` to ``data_social_impact``) may be given as
    ``null`` in ``params.yaml``: that means its built-in value, the default shown here. The
    built-in values of :data:`SIMULATOR_RAI_TEXTS` describe the simulator, and a dataset of
    real jobs refuses them (:func:`tasks.dataset.croissant.write_croissant`).
    """

    name: str = Field("rapid-transient-cutouts", min_length=1)
    description: str = Field(
        "64x64x4 cutouts (science, reference, difference, score; ZScale-normalised to [0, 1], "
        "float32) centred on candidate detections of RAPID difference-imaging jobs, labelled "
        "real (1) or bogus (0), for training real/bogus classifiers.",
        min_length=1,
    )
    url: str = Field("https://github.com/croissant-cutouts/croissant-cutouts", min_length=1)
    license: str = Field("https://creativecommons.org/licenses/by/4.0/", min_length=1)
    creator: str = Field("croissant-cutouts contributors", min_length=1)
    date_published: str | None = Field(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}",
        description="ISO date (YYYY-MM-DD); empty means the date of the run.",
    )
    version: str = Field(
        "0.1.0", pattern=r"^\d+\.\d+\.\d+$", description="Dataset version, MAJOR.MINOR.PATCH."
    )
    cite_as: str = Field(
        "@misc{rapid_cutouts, title={RAPID transient cutouts}, "
        "author={croissant-cutouts contributors}, year={2026}}",
        min_length=1,
    )
    # Croissant 1.1 recommended dataset properties
    keywords: tuple[str, ...] = Field(
        (
            "astronomy",
            "time-domain astronomy",
            "transient detection",
            "real-bogus classification",
            "difference imaging",
            "image cutouts",
            "Nancy Grace Roman Space Telescope",
            "RAPID",
            "simulated data",
        ),
        min_length=1,
    )
    publisher: str = Field("croissant-cutouts contributors", min_length=1)
    in_language: tuple[str, ...] = Field(
        ("en",), min_length=1, description="Languages of the texts (BCP 47 codes)."
    )
    same_as: tuple[str, ...] = Field(
        ("https://github.com/croissant-cutouts/croissant-cutouts/blob/main/README.md",),
        min_length=1,
        description="Other web pages describing this same dataset (its dataset card).",
    )
    sd_license: str = Field(
        "https://creativecommons.org/publicdomain/zero/1.0/",
        min_length=1,
        description="License of the metadata (croissant.json) itself: schema.org sdLicense.",
    )
    date_created: str | None = Field(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}",
        description="ISO date the dataset was first created; empty means date_published.",
    )
    date_modified: str | None = Field(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}",
        description="ISO date of the last change; empty means the index file's date (UTC).",
    )
    # Responsible AI (Croissant RAI vocabulary, rai: prefix)
    synthetic: bool = Field(
        True,
        description="The data are synthetic (simulated): sets rai:hasSyntheticData and adds "
        "'Synthetic data (simulation)' to rai:dataCollectionType. True for the simulator's "
        "jobs and for RAPID's Roman jobs, which are built from OpenUniverse simulations.",
    )
    data_collection: str = Field(
        "Software collection from difference-imaging job folders. By default the jobs are "
        "made by this repository's `simulate` package: sky fields of stars and galaxies "
        "observed at several epochs, a deeper reference coadd resampled to each epoch, and a "
        "ZOGY difference image and score image, with injected fake point sources and "
        "simulated astrophysical transients as the real population and bogus artefacts "
        "(saturated stars, star and galaxy subtraction residuals, cosmic rays, hot pixels, "
        "mask edges, noise). Jobs of the RAPID pipeline of the Nancy Grace Roman Space "
        "Telescope can be read instead; they are themselves built from OpenUniverse "
        "simulated images with injected fakes. Every detection of a job's catalog becomes "
        "one candidate and one 64x64x4 cutout.",
        min_length=1,
    )
    data_collection_type: tuple[str, ...] = Field(("Software Collection",), min_length=1)
    data_collection_raw_data: str = Field(
        "Per job: the background-subtracted science image, the reference image resampled to "
        "it, the difference image and the score (Scorr) image (FITS), the detection "
        "catalog, and, where present, the truth files: injected fakes and the simulation "
        "truth index.",
        min_length=1,
    )
    data_collection_missing_data: str = Field(
        "label is empty (and labelled false) for jobs without truth files. Catalog columns a "
        "job's layout does not provide are empty. Cutout pixels outside the image are 0; "
        "non-finite pixels are 0; a channel whose ZScale limits cannot be computed is all 0. "
        "Jobs that cannot be read are left out and listed in rejects.csv.",
        min_length=1,
    )
    data_preprocessing_protocol: tuple[str, ...] = Field(
        (
            "Per job and channel, ZScale limits (astropy ZScaleInterval defaults) are "
            "computed over the whole image; pixels become (value - vmin) / (vmax - vmin) "
            "clipped to [0, 1], float32, non-finite values 0.",
            "A 64x64 stamp with the candidate pixel at index [32, 32] is cut from each of "
            "the four normalised images and stacked channel-last: shape (64, 64, 4), float32 "
            "little-endian, channels science, reference, difference, score.",
            "Cutouts are assigned to the train, validation and test splits by sky field (by "
            "job when jobs carry no field), never by cutout, so one field's stars, galaxies "
            "and artefacts never appear on two sides.",
        ),
        min_length=1,
    )
    data_annotation_protocol: tuple[str, ...] = Field(
        (
            "No human annotation. A detection is labelled real (1) when it matches, "
            "one-to-one within labels.match_radius_px (default 4 pixels, closest pairs "
            "first), an injected fake or a simulated astrophysical transient brighter than "
            "labels.mag_limit (default 26 AB); every other detection is bogus (0).",
        ),
        min_length=1,
    )
    machine_annotation_tools: tuple[str, ...] = Field(
        ("croissant-cutouts tasks/truth.py: one-to-one positional matching (scipy cKDTree)",),
        min_length=1,
    )
    data_limitations: tuple[str, ...] = Field(
        (
            "Simulated data: images, artefacts and transients come from simplified models "
            "(Moffat PSFs, a ZOGY subtraction, parametric artefact populations); a "
            "classifier trained on them must be validated on real survey data before use.",
            "Class imbalance: typically 3-15 % of candidates are real; compare metrics with "
            "the majority-class baseline.",
            "Cutouts are 64x64 pixels: context beyond 32 pixels from the candidate is lost, "
            "and stamps at image edges are zero-padded.",
            "ZScale normalisation is per full image and channel, not per cutout: values are "
            "comparable within a job, not across jobs, and clipped to [0, 1], so fluxes "
            "cannot be recovered from cutouts.",
            "Labels come from positional matching: a bogus detection within the matching "
            "radius of a truth source counts as real, and a transient fainter than the "
            "magnitude limit or farther than the radius counts as bogus.",
        ),
        min_length=1,
    )
    data_biases: tuple[str, ...] = Field(
        (
            "The real class follows the injected magnitude distribution (uniform in 21-28 AB "
            "in the simulator) and placement of fakes, not the sky's transient population.",
            "Field selection: few sky fields observed at several epochs; cutouts of one field "
            "share their stars, galaxies and artefacts, and metrics from few fields vary a "
            "lot.",
            "The bogus class holds only the artefact kinds the simulator or pipeline "
            "produces, at their rates (simulate.bogus_density); real surveys have others.",
        ),
        min_length=1,
    )
    data_use_cases: tuple[str, ...] = Field(
        (
            "Training and evaluating real/bogus classifiers of difference-imaging transient "
            "candidates, on the train, validation and test splits.",
            "Developing and testing data pipelines, loaders and Croissant tooling.",
            "Not for photometry or astrometry (cutouts are normalised and clipped; use the "
            "index columns or the original images), nor for transient rates or populations.",
        ),
        min_length=1,
    )
    personal_sensitive_information: tuple[str, ...] = Field(
        ("None: astronomical images (simulated by default) with no information about people.",),
        min_length=1,
    )
    data_social_impact: str = Field(
        "Low direct impact: images of (simulated) sky. Better real/bogus classifiers reduce "
        "the human vetting time-domain surveys need; one that fails silently on real data "
        "could miss transients, so validate on real data first.",
        min_length=1,
    )

    @field_validator(
        "data_collection", "data_collection_type", "data_collection_raw_data",
        "data_collection_missing_data", "data_preprocessing_protocol",
        "data_annotation_protocol", "machine_annotation_tools", "data_limitations",
        "data_biases", "data_use_cases", "personal_sensitive_information",
        "data_social_impact", mode="before",
    )
    @classmethod
    def _built_in_when_null(cls, value: Any, info: ValidationInfo) -> Any:
        """``null`` in ``params.yaml``: the field's built-in text."""
        return cls.model_fields[info.field_name].default if value is None else value

    def simulator_texts(self) -> list[str]:
        """Names of :data:`SIMULATOR_RAI_TEXTS` that still hold their built-in value."""
        return [
            name for name in SIMULATOR_RAI_TEXTS
            if getattr(self, name) == type(self).model_fields[name].default
        ]


class TrainParams(_Section):
    """Smoke training of a small CNN on the dataset."""

    epochs: int = Field(8, ge=1, description="Passes over the training split.")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (the peak, with a schedule).")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="Learning rate over training: constant (lr throughout) or cosine (from lr "
        "down to 0 along half a cosine over every step of every epoch).",
    )
    seed: int = Field(0, ge=0, description="Seed of the weights, batch order and baselines.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present.")
    max_cutouts: int | None = Field(
        None, ge=1, description="Cap on cutouts used (whole jobs kept together); empty: all."
    )
    augment: bool = Field(
        True,
        description="Turn and flip each training cutout at random (8 orientations): real/bogus "
        "does not depend on the orientation of the sky.",
    )
    orientations: Literal[1, 8] = Field(
        1,
        description="Orientations of each cutout whose logits the trained CNN averages when "
        "it scores (test-time augmentation): 1, the cutout as stored; 8, the turns and flips "
        "that augment draws from (needs augment), at eight times the inference arithmetic.",
    )
    keep_best: bool = Field(
        False,
        description="Keep the weights of the epoch with the best validation ROC AUC (early "
        "stopping on the validation split), not those of the last epoch.",
    )
    leakage_check: bool = Field(
        True,
        description="Also train on a random per-cutout split and report its test AUC beside "
        "the field split's (the leakage gap); doubles the training time.",
    )
    width: int = Field(16, ge=1, le=256, description="Channels of the CNN's first block.")
    scaling: Literal["none", "limits"] = Field(
        "limits",
        description="Input scaling inside the CNN: limits (the job's ZScale limits undone: "
        "signed, science, reference and difference in one unit) or none (the stored [0, 1]).",
    )
    crop: int = Field(
        32, ge=16, le=64, multiple_of=16,
        description="Side of the central square of the cutout the CNN reads, pixels.",
    )
    catalog: bool = Field(
        False,
        description="Also feed each candidate's catalog features (the finder's and PSF fit's "
        "columns of the index, those the gradient-boosting baseline uses) to the CNN's head; "
        "scoring then needs the same columns in the index.",
    )
    members: int = Field(
        1, ge=1, le=16,
        description="CNNs trained with seeds seed, seed + 1, ...; their mean logit scores "
        "(an ensemble). Multiplies the training time.",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_val_fraction(cls, value: object) -> object:
        if isinstance(value, dict) and "val_fraction" in value:
            raise ValueError(
                "train.val_fraction moved: the dataset's splits are set in the `splits` "
                "section (train, validation, test fractions and seed) and written to the index"
            )
        return value

    @model_validator(mode="after")
    def _orientations_need_augment(self) -> TrainParams:
        if not self.augment and self.orientations != 1:
            raise ValueError(
                f"train.orientations: {self.orientations} averages turned and flipped cutouts, "
                "which a network trained with augment: false never saw; set augment: true or "
                "orientations: 1"
            )
        return self


class SplitParams(_Section):
    """Train / validation / test split of the dataset (written to the index's ``split``)."""

    train: float = Field(0.6, ge=0, le=1, description="Fraction of groups (fields or jobs).")
    validation: float = Field(0.2, gt=0, lt=1, description="Fraction of groups held out for "
                              "early checks and for choosing the decision threshold.")
    test: float = Field(0.2, ge=0, lt=1, description="Fraction of groups for the final metrics.")
    seed: int = Field(0, ge=0, description="Seed of the shuffle of the groups.")
    by: Literal["auto", "field", "job"] = Field(
        "auto",
        description="auto: by sky field when every job has one and there are enough fields, "
        "else by job; field: by field or fail; job: by job.",
    )

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitParams:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6 or self.train <= 0:
            raise ValueError(
                f"splits: train ({self.train}) + validation ({self.validation}) + test "
                f"({self.test}) must be 1, with train > 0; got {total:g}"
            )
        return self


class RunParams(_Section):
    """What ``cutouts run`` does after cutting."""

    strict: bool = Field(False, description="Exit 1 when anything was rejected.")


class Params(_Section):
    """All parameters; each section matches a top-level key of ``params.yaml``."""

    simulate: SimulateParams = SimulateParams()
    select: SelectParams = SelectParams()
    labels: LabelParams = LabelParams()
    cutouts: CutoutParams = CutoutParams()
    splits: SplitParams = SplitParams()
    croissant: CroissantParams = CroissantParams()
    train: TrainParams = TrainParams()
    run: RunParams = RunParams()

    def override(self, section: str, **values: Any) -> Params:
        """Return a copy with ``values`` replacing keys of ``section`` (``None`` ignored)."""
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            return self
        current = getattr(self, section).model_dump()
        current.update(values)
        return self.model_validate({**self.model_dump(), section: current})


def load_params(path: str | Path | None = None) -> Params:
    """Read and validate a params file.

    Parameters
    ----------
    path : path-like, optional
        YAML file. ``None`` reads ``./params.yaml`` when it exists, else uses the defaults.

    Raises
    ------
    ValueError
        When the file holds unknown keys or values out of range (the message names them).
    """
    if path is None:
        candidate = Path("params.yaml")
        if not candidate.exists():
            return Params()
        path = candidate
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except Exception as exc:  # pydantic.ValidationError is a ValueError
        raise ValueError(f"{path}: {exc}") from exc
