"""Writers of simulated job folders, one per layout, registered by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from simulate.scene import Scene
from tasks.atomic import atomic_output

__all__ = ["WRITERS", "write_seed"]


def _write_fits(path: Path, data: np.ndarray, cards: dict[str, object]) -> None:
    hdu = fits.PrimaryHDU(np.ascontiguousarray(data, dtype=np.float32))
    hdu.header["BUNIT"] = "DN/s"
    for key, value in cards.items():
        hdu.header[key] = value
    with atomic_output(path) as fh:
        hdu.writeto(fh)


def write_seed(job_dir: Path, scene: Scene, meta: dict[str, object]) -> None:
    """The seed layout: four images and ``psfcat.csv`` (``x y match flux fwhm elongation``)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    sci_cards = {k: meta[k] for k in ("FILTER", "ZPTMAG", "MJD-OBS", "EXPTIME", "SCA_NUM")}
    _write_fits(job_dir / "bkg_subbed_science_image.fits", scene.science, sci_cards)
    _write_fits(job_dir / "awaicgen_output_mosaic_image_resampled.fits", scene.reference, {})
    _write_fits(job_dir / "diffimage_masked.fits", scene.difference, {"FIELD": meta["FIELD"]})
    _write_fits(job_dir / "scorrimage_masked.fits", scene.score, {})
    cat = scene.catalog
    table = pd.DataFrame(
        {
            "x": cat["x"],
            "y": cat["y"],
            "match": cat["match"],
            "flux": cat["flux"],
            "fwhm": cat["fwhm"],
            "elongation": cat["elongation"],
        }
    )
    with atomic_output(job_dir / "psfcat.csv", "w") as fh:
        table.to_csv(fh, index=False, lineterminator="\n", float_format="%.17g")


WRITERS: dict[str, Callable[[Path, Scene, dict[str, object]], None]] = {"seed": write_seed}
