"""A picture of what the simulator makes: example real and bogus cutouts per kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.visualization import ZScaleInterval

from croissant_cutouts.tasks.infra.atomic import atomic_output

__all__ = ["write_gallery"]

_PANELS = (
    ("science", "bkg_subbed_science_image.fits"),
    ("reference", "awaicgen_output_mosaic_image_resampled*.fits"),
    ("difference", "diffimage_masked.fits"),
)


def _stamp(image: np.ndarray, x: float, y: float, half: int = 16) -> np.ndarray:
    r, c = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
    out = np.full((2 * half, 2 * half), np.nan)
    r0, r1 = max(r - half, 0), min(r + half, image.shape[0])
    c0, c1 = max(c - half, 0), min(c + half, image.shape[1])
    out[r0 - r + half : r1 - r + half, c0 - c + half : c1 - c + half] = image[r0:r1, c0:c1]
    return out


def write_gallery(path: str | Path, summaries: list, per_kind: int = 3) -> Path:
    """Write a PNG grid: one row per kind (real first), ``per_kind`` examples, each shown as
    science | reference | difference (32x32 pixels around the candidate, ZScale per stamp)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[tuple[str, Path, float, float]] = []
    kinds = list(summaries[0].examples) if summaries else []
    for kind in kinds:
        found = [(kind, s.path, x, y) for s in summaries for x, y in s.examples.get(kind, [])]
        rows.extend(found[:per_kind])
    kinds = [k for k in kinds if any(r[0] == k for r in rows)]
    images: dict[Path, list[np.ndarray]] = {}
    ncols = per_kind * len(_PANELS)
    fig, axes = plt.subplots(
        max(len(kinds), 1), ncols, figsize=(1.1 * ncols, 1.25 * max(len(kinds), 1)), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for i, kind in enumerate(kinds):
        examples = [r for r in rows if r[0] == kind]
        for j, (_, job, x, y) in enumerate(examples):
            if job not in images:
                images[job] = [fits.getdata(next(job.glob(pattern))) for _, pattern in _PANELS]
            for k, (name, _) in enumerate(_PANELS):
                stamp = _stamp(images[job][k], x, y)
                finite = stamp[np.isfinite(stamp)]
                vmin, vmax = ZScaleInterval().get_limits(finite) if finite.size else (0, 1)
                ax = axes[i, j * len(_PANELS) + k]
                ax.imshow(stamp, origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
                if i == 0:
                    ax.set_title(name[:3], fontsize=7)
        axes[i, 0].text(
            -0.1,
            0.5,
            kind.replace("_", " "),
            transform=axes[i, 0].transAxes,
            ha="right",
            va="center",
            fontsize=8,
        )
    fig.suptitle("simulated candidates: real and bogus kinds (sci | ref | diff)", fontsize=9)
    path = Path(path)
    with atomic_output(path) as fh:
        fig.savefig(fh, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path
