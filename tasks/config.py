"""One typed, validated configuration, read from ``params.yaml``.

Every knob of the tool lives here once, with its unit and bounds. ``params.yaml`` at the
project root holds the values DVC tracks; the CLI takes a few flags as overrides. Unknown
keys are rejected so a typo in ``params.yaml`` fails loudly instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "CroissantParams",
    "CutoutParams",
    "LabelParams",
    "Params",
    "RunParams",
    "SelectParams",
    "SimulateParams",
    "TrainParams",
    "load_params",
]


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


class CutoutParams(_Section):
    """Cutting: geometry is fixed by the contract; these are execution knobs."""

    input_layout: Literal["auto", "seed", "rapid"] = Field(
        "auto", description="Input job-folder layout; auto: detected per job."
    )
    layout: Literal["files", "shards"] = Field(
        "files",
        description="Output layout: files (one .npy per cutout, the seed's) or shards (one "
        "(N, 64, 64, 4) .npy per job under shards/, with shard and row index columns).",
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
    mag_limit: float = Field(26.0, description="Truth fainter than this AB magnitude is ignored.")
    match_radius_px: float = Field(
        4.0, gt=0, description="One-to-one matching radius, pixels (a pair at it matches)."
    )


class SelectParams(_Section):
    """Which jobs to read; empty selects every jid* folder."""

    field_files: list[str] = Field(
        default_factory=list,
        description="RAPID field lists (PROCDATE JOB FILTER OBSID SCANUM FIELD MJD), relative "
        "to the input folder or absolute; when given, only the jobs they list are read.",
    )
    fields: list[str] = Field(default_factory=list, description="Keep jobs of these sky fields.")
    mjd_max: float | None = Field(None, description="Keep jobs observed at or before this MJD.")


class CroissantParams(_Section):
    """Dataset-level metadata written into ``croissant.json`` (all required, non-empty)."""

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


class TrainParams(_Section):
    """Smoke training of a small CNN on the dataset."""

    epochs: int = Field(8, ge=1, description="Passes over the training split.")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    val_fraction: float = Field(
        0.25, gt=0, lt=1, description="Fraction of jobs (not cutouts) held out for validation."
    )
    seed: int = Field(0, ge=0, description="Seed of the job split, weights and batch order.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present.")
    max_cutouts: int | None = Field(
        None, ge=1, description="Cap on cutouts used (whole jobs kept together); empty: all."
    )


class RunParams(_Section):
    """What ``cutouts run`` does after cutting."""

    strict: bool = Field(False, description="Exit 1 when anything was rejected.")


class Params(_Section):
    """All parameters; each section matches a top-level key of ``params.yaml``."""

    simulate: SimulateParams = SimulateParams()
    select: SelectParams = SelectParams()
    labels: LabelParams = LabelParams()
    cutouts: CutoutParams = CutoutParams()
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
