"""Simulated RAPID job folders: the default data source of the demo, tests and benchmarks.

>>> from simulate import simulate_jobs
>>> summaries = simulate_jobs("jobs", n_jobs=4, size=1024, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from simulate.layouts import WRITERS
from simulate.scene import SceneParams, detect, make_scene, match_one_to_one

__all__ = ["JobSummary", "SceneParams", "format_summary", "simulate_job", "simulate_jobs"]

BOGUS_KINDS = ("star_residual", "cosmic_ray", "hot_pixel", "noise")


@dataclass
class JobSummary:
    """What was simulated for one job."""

    job_id: str
    path: Path
    n_detections: int
    n_injected: int
    n_recovered: int
    bogus: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def format_summary(s: JobSummary) -> str:
    """One line per job for the CLI."""
    kinds = ", ".join(f"{k} {s.bogus.get(k, 0)}" for k in BOGUS_KINDS)
    return (
        f"{s.job_id}: {s.n_detections} detections, {s.n_injected} injected, "
        f"{s.n_recovered} recovered; bogus: {kinds} ({s.seconds:.1f} s)"
    )


def _bogus_kinds(det_xy: np.ndarray, sources: dict[str, np.ndarray], radius: float = 3.0):
    kinds = np.full(len(det_xy), "noise", dtype=object)
    best = np.full(len(det_xy), np.inf)
    for kind in ("star_residual", "cosmic_ray", "hot_pixel"):
        xy = sources.get(kind)
        if xy is None or len(xy) == 0 or len(det_xy) == 0:
            continue
        dist, _ = cKDTree(xy).query(det_xy, distance_upper_bound=radius)
        closer = dist < best
        kinds[closer] = kind
        best[closer] = dist[closer]
    return kinds


def simulate_job(
    job_dir: str | Path,
    size: int | tuple[int, int] = 1024,
    seed: int | np.random.SeedSequence = 0,
    layout: str = "seed",
    **scene_params: Any,
) -> JobSummary:
    """Simulate one job and write it in ``layout`` to ``job_dir``.

    Parameters
    ----------
    size : int or (ny, nx)
        Image shape in pixels.
    seed : int or SeedSequence
        Randomness of this job alone.
    scene_params
        Overrides of :class:`SceneParams` fields.
    """
    t0 = time.perf_counter()
    job_dir = Path(job_dir)
    shape = (size, size) if isinstance(size, int) else tuple(size)
    params = replace(SceneParams(), **scene_params)
    rng = np.random.default_rng(seed)
    scene = make_scene(rng, shape, params)
    cat = detect(scene.difference, scene.score, params.threshold_sigma)
    det_xy = np.column_stack([cat["x"], cat["y"]])
    cat["match"] = match_one_to_one(det_xy, scene.transients[:, :2], params.match_radius_px)
    scene.catalog = cat
    meta = {
        "FILTER": "H158",
        "ZPTMAG": 17.638,
        "MJD-OBS": round(62000.0 + float(rng.uniform(0, 1000)), 5),
        "EXPTIME": 139.8,
        "SCA_NUM": int(rng.integers(1, 19)),
        "FIELD": int(rng.integers(5_000_000, 5_400_000)),
    }
    try:
        writer = WRITERS[layout]
    except KeyError:
        raise ValueError(f"unknown layout {layout!r}; known: {sorted(WRITERS)}") from None
    writer(job_dir, scene, meta)
    bogus = cat["match"] < 0
    kinds = _bogus_kinds(det_xy[bogus], scene.sources)
    return JobSummary(
        job_id=job_dir.name,
        path=job_dir,
        n_detections=len(det_xy),
        n_injected=len(scene.transients),
        n_recovered=int((~bogus).sum()),
        bogus={k: int((kinds == k).sum()) for k in BOGUS_KINDS},
        seconds=time.perf_counter() - t0,
    )


def simulate_jobs(
    out_dir: str | Path,
    n_jobs: int = 4,
    size: int | tuple[int, int] = 1024,
    seed: int = 0,
    workers: int = 1,
    layout: str = "seed",
    **scene_params: Any,
) -> list[JobSummary]:
    """Simulate ``n_jobs`` job folders ``jid0001``, ``jid0002``, ... in ``out_dir``.

    Job k draws from child k of ``SeedSequence(seed)``, so it is byte-identical whatever
    ``n_jobs`` and ``workers`` are. ``workers > 1`` simulates jobs in parallel processes.
    """
    out_dir = Path(out_dir)
    seeds = np.random.SeedSequence(seed).spawn(n_jobs)
    dirs = [out_dir / f"jid{k + 1:04d}" for k in range(n_jobs)]
    args = [(d, size, s, layout) for d, s in zip(dirs, seeds, strict=True)]
    if workers > 1 and n_jobs > 1:
        with ProcessPoolExecutor(max_workers=min(workers, n_jobs)) as pool:
            futures = [pool.submit(simulate_job, *a, **scene_params) for a in args]
            return [f.result() for f in futures]
    return [simulate_job(*a, **scene_params) for a in args]
