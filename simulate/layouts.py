"""Writers of simulated job folders, one per layout, registered by name.

``rapid`` writes what a real RAPID job folder holds (``docs/input-formats.md``, with the
RAPID source file behind each fact): the four images, the reformatted science image with
its header, ``diffpsf.fits``, the finder and PSF-fit catalogs, the injection list and the
simulation truth index (both 1-based, as galsim writes them), and one file no real folder
has: the simulator's cause of every detection, :data:`KINDS_FILE` (``id kind``, see
:data:`tasks.inputs.catalogs.SIMULATED_KINDS_FILE`). :class:`RapidVariant` picks which real RAPID
output it imitates: photutils 2 or 3 column names, 2025 or 2026 file names, text catalogs
(and the 2026 parquet), the 2026 parquet alone, or a PSF-fit catalog without a finder
catalog (before July 2025). ``seed`` writes the simplified layout the seed scripts read:
the four images and ``psfcat.csv``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table, join

from croissant_cutouts.simulate.catalogs import PHOTUTILS3_NAMES
from croissant_cutouts.simulate.scene import Scene
from croissant_cutouts.tasks.infra.atomic import atomic_output, atomic_write_text
from croissant_cutouts.tasks.inputs.catalogs import SIMULATED_KIND_COLUMN, SIMULATED_KINDS_FILE

__all__ = [
    "KINDS_FILE",
    "WRITERS",
    "JobProducts",
    "RapidVariant",
    "write_rapid",
    "write_seed",
]

SCIENCE = "bkg_subbed_science_image.fits"
REFERENCE_GM = "awaicgen_output_mosaic_image_resampled_gainmatched.fits"
REFERENCE = "awaicgen_output_mosaic_image_resampled.fits"
DIFFERENCE = "diffimage_masked.fits"
SCORE = "scorrimage_masked.fits"
#: Simulator-only sidecar of the ``rapid`` layout: ``id kind`` per PSF-fit catalog row, kind
#: ``real`` for detections matched to a real source, else the bogus kind (one definition,
#: shared with the reader :class:`tasks.inputs.rapid.RapidLayout`).
KINDS_FILE = SIMULATED_KINDS_FILE


@dataclass(frozen=True)
class RapidVariant:
    """Which real RAPID output a simulated ``rapid`` job imitates.

    ``photutils``: ``2`` writes photutils 2.2 columns (``xcentroid``, ``npix``, ``npixfit``,
    no ``reduced_chi2``), ``3`` photutils 3 columns (``x_centroid``, ``n_pixels``,
    ``n_pixels_fit``, ``reduced_chi2``). ``names``: ``2025`` writes ``diffimage_masked*``,
    ``2026`` the ``zogy_`` prefix of March 2026 on (the score image keeps its name).
    ``catalogs``: ``text`` writes the finder and PSF-fit text catalogs (with 2026 names also
    the parquet product, the PSF-fit catalog inner-joined with the finder's on ``id``),
    ``parquet_only`` that parquet alone (2026 names), ``no_finder`` the PSF-fit text
    catalog alone, as before July 2025 (2025 names). ``science_cards``: false leaves
    ``FILTER``, ``ZPTMAG`` and ``MJD-OBS`` out of the science image, so that only the
    reformatted science image carries them.
    """

    photutils: Literal["2", "3"] = "2"
    names: Literal["2025", "2026"] = "2025"
    catalogs: Literal["text", "parquet_only", "no_finder"] = "text"
    science_cards: bool = True

    def __post_init__(self) -> None:
        if self.catalogs == "parquet_only" and self.names != "2026":
            raise ValueError("catalogs='parquet_only' needs names='2026' (parquet from 2026)")
        if self.catalogs == "no_finder" and self.names != "2025":
            raise ValueError("catalogs='no_finder' needs names='2025' (finder from July 2025)")

    @property
    def prefix(self) -> str:
        """Prefix of the difference image and its catalogs."""
        return "zogy_" if self.names == "2026" else ""


@dataclass
class JobProducts:
    """Everything a layout may write for one job."""

    scene: Scene
    meta: dict[str, object]  # FILTER, ZPTMAG, MJD-OBS, EXPTIME, SCA_NUM, FIELD, OBSID
    header: fits.Header  # WCS cards of the science grid
    finder: Table
    psfcat: Table
    labels: pd.DataFrame  # per psfcat row: match (truth index or -1), fwhm, elongation
    truth: pd.DataFrame  # object_id ra dec x y realized_flux flux mag obj_type (0-based x, y)
    injected: pd.DataFrame  # x y flux (0-based; flux in raw-image counts)
    kinds: np.ndarray | None = None  # per psfcat row: "real" or its bogus kind
    variant: RapidVariant = field(default_factory=RapidVariant)


def _write_fits(path: Path, data: np.ndarray, cards: dict[str, object] | fits.Header) -> None:
    hdu = fits.PrimaryHDU(np.ascontiguousarray(data, dtype=np.float32))
    hdu.header["BUNIT"] = "DN/s"
    if isinstance(cards, dict):
        for key, value in cards.items():
            hdu.header[key] = value
    else:
        hdu.header.extend(cards.cards)
    with atomic_output(path) as fh:
        hdu.writeto(fh)


def _write_text(path: Path, table: Table | pd.DataFrame, comment_header: bool = False) -> None:
    buf = io.StringIO()
    if isinstance(table, pd.DataFrame):
        table = Table.from_pandas(table)
    table.write(
        buf, format="ascii.basic", delimiter=" ", comment=False if not comment_header else "#"
    )
    text = buf.getvalue()
    if comment_header:
        text = "# " + text
    atomic_write_text(path, text)


def _images(job_dir: Path, p: JobProducts, reference_name: str) -> None:
    sc, meta = p.scene, p.meta
    sci_cards = fits.Header()
    keys = ("FILTER", "ZPTMAG", "MJD-OBS") if p.variant.science_cards else ()
    for k in (*keys, "EXPTIME", "SCA_NUM"):
        sci_cards[k] = meta[k]
    sci_cards.extend(p.header.cards)
    _write_fits(job_dir / SCIENCE, sc.science, sci_cards)
    _write_fits(job_dir / reference_name, sc.reference, p.header)
    diff_cards = fits.Header([("FIELD", meta["FIELD"])])
    diff_cards.extend(p.header.cards)
    _write_fits(job_dir / f"{p.variant.prefix}{DIFFERENCE}", sc.difference, diff_cards)
    _write_fits(job_dir / SCORE, sc.score, p.header)


def _photutils_columns(table: Table, version: str, psf_fit: bool) -> Table:
    """``table`` (photutils 2 names, ``reduced_chi2`` kept) as photutils ``version`` writes it."""
    if version == "2":
        return table[[c for c in table.colnames if c != "reduced_chi2"]] if psf_fit else table
    out = table.copy(copy_data=False)
    out.rename_columns(
        [c for c in out.colnames if c in PHOTUTILS3_NAMES],
        [PHOTUTILS3_NAMES[c] for c in out.colnames if c in PHOTUTILS3_NAMES],
    )
    return out


def _catalogs(job_dir: Path, p: JobProducts) -> None:
    """The finder and PSF-fit catalogs as the variant's RAPID wrote them.

    Text catalogs are astropy's default ``ascii.write`` format (space-separated, one header
    line); the parquet is ``join(psfcat, finder, keys="id", join_type="inner")`` written
    through pandas, as ``awsBatchSubmitJobs_runSingleSciencePipeline.py`` does.
    """
    v = p.variant
    finder = _photutils_columns(p.finder, v.photutils, psf_fit=False)
    psfcat = _photutils_columns(p.psfcat, v.photutils, psf_fit=True)
    stem = f"{v.prefix}diffimage_masked_psfcat"
    if v.catalogs != "parquet_only":
        _write_text(job_dir / f"{stem}.txt", psfcat)
    if v.catalogs == "text":
        _write_text(job_dir / f"{stem}_finder.txt", finder)
    if v.names == "2026" and v.catalogs != "no_finder":
        joined = join(psfcat, finder, keys="id", join_type="inner").to_pandas()
        with atomic_output(job_dir / f"{stem}.parquet") as fh:
            joined.to_parquet(fh, engine="pyarrow")


def write_seed(job_dir: Path, p: JobProducts) -> None:
    """Seed layout: four images and ``psfcat.csv`` (``x y match flux fwhm elongation``).

    A last column, ``simulated_kind`` (:data:`tasks.inputs.catalogs.SIMULATED_KIND_COLUMN`),
    holds the simulator's cause of each row, as :data:`KINDS_FILE` does in the RAPID layout.
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    _images(job_dir, p, REFERENCE)
    table = pd.DataFrame(
        {
            "x": np.asarray(p.psfcat["x_fit"], float),
            "y": np.asarray(p.psfcat["y_fit"], float),
            "match": p.labels["match"].to_numpy(),
            "flux": np.asarray(p.psfcat["flux_fit"], float),
            "fwhm": p.labels["fwhm"].to_numpy(),
            "elongation": p.labels["elongation"].to_numpy(),
        }
    )
    if p.kinds is not None:
        table[SIMULATED_KIND_COLUMN] = np.asarray(p.kinds, dtype=str)
    with atomic_output(job_dir / "psfcat.csv", "w") as fh:  # floats at full (repr) precision
        table.to_csv(fh, index=False, lineterminator="\n")


def write_rapid(job_dir: Path, p: JobProducts) -> None:
    """Full RAPID layout as :attr:`JobProducts.variant` says, plus :data:`KINDS_FILE`."""
    job_dir.mkdir(parents=True, exist_ok=True)
    _images(job_dir, p, REFERENCE_GM)
    m = p.meta
    stem = f"Roman_TDS_simple_model_{m['FILTER']}_{m['OBSID']}_{m['SCA_NUM']}_lite"
    raw = p.scene.science + np.float32(m["SKY"])  # before background subtraction
    header = fits.Header()
    for k in ("FILTER", "ZPTMAG", "MJD-OBS", "EXPTIME", "SCA_NUM"):
        header[k] = m[k]
    header.extend(p.header.cards)
    _write_fits(job_dir / f"{stem}_inject_reformatted.fits", raw, header)
    with atomic_output(job_dir / "diffpsf.fits") as fh:
        fits.PrimaryHDU(p.scene.psf_difference.astype(np.float32)).writeto(fh)
    _catalogs(job_dir, p)
    inj = p.injected
    _write_text(
        job_dir / f"{stem}_inject.txt",
        pd.DataFrame({"xpix": inj["x"] + 1.0, "ypix": inj["y"] + 1.0, "flux": inj["flux"]}),
    )
    truth = p.truth.copy()
    truth["x"] += 1.0
    truth["y"] += 1.0
    _write_text(
        job_dir / f"Roman_TDS_index_{m['FILTER']}_{m['OBSID']}_{m['SCA_NUM']}.txt",
        truth,
        comment_header=True,
    )
    if p.kinds is not None:
        kinds = np.asarray(p.kinds, dtype=object)
        if len(kinds) != len(p.psfcat):
            raise ValueError(f"{len(kinds)} kinds for {len(p.psfcat)} PSF-fit catalog rows")
        table = Table({"id": p.psfcat["id"], "kind": kinds.astype(str)})  # ids as in psfcat
        _write_text(job_dir / KINDS_FILE, table)


WRITERS: dict[str, Callable[[Path, JobProducts], None]] = {"rapid": write_rapid, "seed": write_seed}
