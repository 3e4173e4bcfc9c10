"""Simulate job folders: one job, or many in parallel (byte-identical whatever the workers)."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from croissant_cutouts.simulate.catalogs import bogus_kinds, find_and_fit, match_one_to_one, moments
from croissant_cutouts.simulate.layouts import WRITERS, JobProducts, RapidVariant
from croissant_cutouts.simulate.scene import (
    EXPTIME,
    FILTERS,
    SceneParams,
    make_epoch,
    make_static_sky,
)
from croissant_cutouts.tasks.config import ROMAN_BAND_ZEROPOINTS
from croissant_cutouts.tasks.infra.atomic import atomic_write_text
from croissant_cutouts.tasks.inputs.catalogs import BOGUS_KINDS as _BOGUS_KINDS
from croissant_cutouts.tasks.inputs.catalogs import SIMULATED_REAL

__all__ = [
    "BOGUS_KINDS",
    "JobSummary",
    "SceneParams",
    "format_summary",
    "simulate_job",
    "simulate_jobs",
]

#: Causes of bogus detections (defined in :mod:`tasks.inputs.layouts`, which reads them back).
BOGUS_KINDS = _BOGUS_KINDS
FIELD_BASE = 5_333_116  # FIELD of the first simulated field (a RAPID-like sky tile id)
PIXEL_SCALE_DEG = 0.11 / 3600.0


@dataclass
class JobSummary:
    """What was simulated for one job."""

    job_id: str
    path: Path
    filter: str
    field: int
    mjd: float
    n_detections: int
    n_injected: int
    n_recovered: int  # injected fakes matched by a detection
    n_real: int  # detections labelled real (injected or astrophysical transients)
    bogus: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    examples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def format_summary(s: JobSummary) -> str:
    """One line per job for the CLI."""
    kinds = ", ".join(f"{k} {s.bogus.get(k, 0)}" for k in BOGUS_KINDS)
    return (
        f"{s.job_id} ({s.filter}, field {s.field}): {s.n_detections} detections, "
        f"{s.n_real} real; {s.n_injected} injected, {s.n_recovered} recovered; bogus: {kinds} "
        f"({s.seconds:.1f} s)"
    )


def _wcs(field_index: int, shape: tuple[int, int]) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [9.5 + 0.25 * field_index, -44.0 + 0.1 * field_index]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cdelt = [-PIXEL_SCALE_DEG, PIXEL_SCALE_DEG]
    return w


def injection_counts(injected: pd.DataFrame, plan: dict[str, Any]) -> np.ndarray:
    """Raw-image counts of injected fakes, as RAPID writes them in the injection list.

    ``10 ** (-0.4 * (mag_AB - (ZPTMAG + zp_band)))`` (``rapid_source_injections.py``);
    ``injected["mag"]`` is instrumental (AB - ZPTMAG), as in the truth index.
    """
    mag_ab = injected["mag"].to_numpy(np.float64) + plan["ZPTMAG"]
    zeropoint = plan["ZPTMAG"] + ROMAN_BAND_ZEROPOINTS[plan["FILTER"]]
    return 10.0 ** (-0.4 * (mag_ab - zeropoint))


def job_plan(k: int, fields: int) -> dict[str, Any]:
    """Field, epoch, filter, obsid, SCA and MJD of job k (0-based)."""
    f, epoch = k % fields, k // fields
    filt = "R062" if epoch % 4 == 3 else "H158"
    return {
        "field_index": f,
        "FIELD": FIELD_BASE + f,
        "epoch": epoch,
        "FILTER": filt,
        "ZPTMAG": FILTERS[filt],
        "OBSID": 26000 + 37 * k,
        "SCA_NUM": 1 + f % 18,
        "MJD-OBS": round(62336.0 + 5.0 * epoch + 0.01 * f, 5),
        "EXPTIME": EXPTIME[filt],
        "SKY": 0.05,
        "PROCDATE": 20260101,
    }


def simulate_job(
    job_dir: str | Path,
    k: int = 0,
    size: int | tuple[int, int] = 1024,
    seed: int = 0,
    layout: str = "rapid",
    fields: int = 3,
    mag_limit: float = 26.0,
    match_radius_px: float = 4.0,
    photutils: str = "alternate",
    names: str = "2025",
    catalogs: str = "text",
    science_cards: bool = True,
    **scene_params: Any,
) -> JobSummary:
    """Simulate job ``k`` of a run and write it in ``layout`` to ``job_dir``.

    Parameters
    ----------
    size : int or (ny, nx)
        Image shape in pixels.
    seed : int
        Master seed of the run; field and epoch seeds are its children.
    fields : int
        Number of sky fields the run cycles through.
    mag_limit, match_radius_px : float
        Labelling: a detection is real when a transient or injected fake brighter than
        ``mag_limit`` (AB) lies within ``match_radius_px``, matched one-to-one.
    photutils, names, catalogs, science_cards
        The real RAPID output a ``rapid`` job imitates (:class:`RapidVariant`);
        ``photutils="alternate"`` writes photutils 2 columns for even ``k``, 3 for odd.
    scene_params
        Overrides of :class:`SceneParams` fields.
    """
    t0 = time.perf_counter()
    job_dir = Path(job_dir)
    if layout not in WRITERS:
        raise ValueError(f"unknown layout {layout!r}; known: {sorted(WRITERS)}")
    if photutils == "alternate":
        photutils = "2" if k % 2 == 0 else "3"
    variant = RapidVariant(photutils, names, catalogs, science_cards)  # type: ignore[arg-type]
    shape = (size, size) if isinstance(size, int) else tuple(size)
    params = replace(SceneParams(), **scene_params)
    plan = job_plan(k, fields)
    sky_rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(0, plan["field_index"]))
    )
    sky = make_static_sky(sky_rng, shape, params)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, k)))
    scene = make_epoch(rng, sky, shape, plan["FILTER"], params)
    wcs = _wcs(plan["field_index"], shape)
    finder, psfcat = find_and_fit(scene.difference, wcs)

    det_xy, match, kinds, labels, row_kinds = _labels(
        scene, psfcat, mag_limit, match_radius_px
    )
    table, injected = _truth_tables(scene.truth, wcs, plan, rng)
    products = JobProducts(
        scene=scene,
        meta=plan,
        header=fits.Header(wcs.to_header().cards),
        finder=finder,
        psfcat=psfcat,
        labels=labels,
        truth=table,
        injected=pd.DataFrame(
            {"x": injected["x"], "y": injected["y"], "flux": injection_counts(injected, plan)}
        ),
        kinds=row_kinds,
        variant=variant,
    )
    WRITERS[layout](job_dir, products)
    return _summary(job_dir, plan, scene.truth, det_xy, match, kinds, time.perf_counter() - t0)


def _labels(
    scene: Any, psfcat: pd.DataFrame, mag_limit: float, match_radius_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame, np.ndarray]:
    """Each detection matched one-to-one to a real source brighter than ``mag_limit``.

    Returns the detections' (x, y) (0-based pixels), the matched truth row (-1: bogus), the
    cause of each bogus detection, the seed layout's label table and the kinds per row.
    """
    truth = scene.truth
    real = np.isin(truth["kind"], ["transient", "injected"]) & (truth["mag"] < mag_limit)
    real_idx = np.flatnonzero(real)
    det_xy = np.column_stack(
        [np.asarray(psfcat["x_fit"], float), np.asarray(psfcat["y_fit"], float)]
    )
    m = match_one_to_one(
        det_xy, np.column_stack([truth["x"][real], truth["y"][real]]), match_radius_px
    )
    match = np.full(len(m), -1, np.int64)
    match[m >= 0] = real_idx[m[m >= 0]]
    fwhm, elong = moments(scene.difference, det_xy[:, 0], det_xy[:, 1])
    labels = pd.DataFrame({"match": match, "fwhm": fwhm, "elongation": elong})
    kinds = bogus_kinds(det_xy[match < 0], scene.bogus_sources)
    row_kinds = np.full(len(det_xy), SIMULATED_REAL, dtype=object)
    row_kinds[match < 0] = kinds
    return det_xy, match, kinds, labels, row_kinds


def _truth_tables(
    truth: dict[str, np.ndarray], wcs: Any, plan: dict[str, Any], rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The simulation truth index (stars, galaxies, transients) and the injected fakes."""
    n = len(truth["x"])
    ra, dec = wcs.all_pix2world(truth["x"], truth["y"], 0) if n else (np.zeros(0), np.zeros(0))
    realized = truth["flux"] * (1.0 + rng.normal(0, 0.01, n))
    table = pd.DataFrame(
        {
            "object_id": np.arange(1, n + 1) + 1_000_000 * plan["field_index"],
            "ra": ra,
            "dec": dec,
            "x": truth["x"],
            "y": truth["y"],
            "realized_flux": realized,
            "flux": truth["flux"],
            "mag": truth["mag"] - plan["ZPTMAG"],  # instrumental: AB = mag + ZPTMAG
            "obj_type": np.where(truth["kind"] == "injected", "injected", truth["kind"]),
        }
    )
    return table[table["obj_type"] != "injected"], table[table["obj_type"] == "injected"]


def _summary(
    job_dir: Path,
    plan: dict[str, Any],
    truth: dict[str, np.ndarray],
    det_xy: np.ndarray,
    match: np.ndarray,
    kinds: np.ndarray,
    seconds: float,
) -> JobSummary:
    """Counts and a few example positions of one simulated job."""
    inj_rows = set(np.flatnonzero(truth["kind"] == "injected"))
    bogus_xy = det_xy[match < 0]
    examples = {"real": [tuple(map(float, xy)) for xy in det_xy[match >= 0][:4]]}
    for kind in BOGUS_KINDS:
        examples[kind] = [tuple(map(float, xy)) for xy in bogus_xy[kinds == kind][:4]]
    return JobSummary(
        job_id=job_dir.name,
        path=job_dir,
        filter=str(plan["FILTER"]),
        field=int(plan["FIELD"]),
        mjd=float(plan["MJD-OBS"]),
        n_detections=len(det_xy),
        n_injected=len(inj_rows),
        n_recovered=int(sum(int(j) in inj_rows for j in match[match >= 0])),
        n_real=int((match >= 0).sum()),
        bogus={kind: int((kinds == kind).sum()) for kind in BOGUS_KINDS},
        seconds=seconds,
        examples=examples,
    )


def write_field_lists(out_dir: Path, summaries: list[JobSummary], fields: int) -> None:
    """Write ``H158_fields.txt`` and ``R062_fields.txt``.

    Columns ``PROCDATE JOB FILTER OBSID SCANUM FIELD MJD``, one line per job in that filter.
    """
    for filt in FILTERS:
        lines = ["PROCDATE JOB FILTER OBSID SCANUM FIELD MJD"]
        for s in summaries:
            k = int(s.job_id.removeprefix("jid")) - 1
            plan = job_plan(k, fields)
            if plan["FILTER"] == filt:
                lines.append(
                    f"{plan['PROCDATE']} {s.job_id} {filt} {plan['OBSID']} {plan['SCA_NUM']} "
                    f"{plan['FIELD']} {plan['MJD-OBS']:.3f}"
                )
        atomic_write_text(out_dir / f"{filt}_fields.txt", "\n".join(lines) + "\n")


def simulate_jobs(
    out_dir: str | Path,
    n_jobs: int = 4,
    size: int | tuple[int, int] = 4089,
    seed: int = 0,
    workers: int = 1,
    layout: str = "rapid",
    fields: int = 3,
    gallery: bool = False,
    **job_params: Any,
) -> list[JobSummary]:
    """Simulate ``n_jobs`` job folders ``jid0001``, ``jid0002``, ... in ``out_dir``.

    Also writes the field lists, and with ``gallery=True`` a ``gallery.png`` of example
    real and bogus cutouts per kind. ``workers > 1`` simulates jobs in parallel processes.
    ``job_params`` go to :func:`simulate_job` (labelling, :class:`RapidVariant` choices,
    :class:`SceneParams` fields).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [(out_dir / f"jid{k + 1:04d}", k, size, seed, layout, fields) for k in range(n_jobs)]
    if workers > 1 and n_jobs > 1:
        with ProcessPoolExecutor(max_workers=min(workers, n_jobs)) as pool:
            futures = [pool.submit(simulate_job, *a, **job_params) for a in args]
            summaries = [f.result() for f in futures]
    else:
        summaries = [simulate_job(*a, **job_params) for a in args]
    write_field_lists(out_dir, summaries, fields)
    if gallery and summaries:
        from croissant_cutouts.simulate.gallery import write_gallery

        write_gallery(out_dir / "gallery.png", summaries)
    return summaries
