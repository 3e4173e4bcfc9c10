"""Crash safety: ``cutouts run`` killed with SIGKILL at several points, then run again.

Each kill point is a stage of the run seen from outside (start-up, the first cutout files,
the index, Croissant, training) plus a random delay. After the kill, every file visible
under its final name must be whole (byte-identical to an uninterrupted run's); the next
run must complete, reuse what finished, leave no temporary file, and produce the same
dataset as the uninterrupted run, byte for byte.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from croissant_cutouts.tasks.infra.atomic import TMP_MARK

pytestmark = pytest.mark.flow

CUTOUTS = str(Path(sys.executable).with_name("cutouts"))
N_JOBS, N_CAND = 4, 150
DATASET_FILES = ("master_index.csv", "rejects.csv", "zscale_limits.csv", "croissant.json")


@pytest.fixture(scope="module")
def crash_setup(tmp_path_factory):
    """Job folders, a params file, and one uninterrupted run to compare against."""
    root = tmp_path_factory.mktemp("crash")
    from conftest import SEED_FILES, ramp_image, write_fits

    rng = np.random.default_rng(7)
    for j in range(N_JOBS):
        job = root / "jobs" / f"jid{j + 1:04d}"
        job.mkdir(parents=True)
        for k, name in enumerate(SEED_FILES.values()):
            write_fits(job / name, ramp_image((300, 300), 10 * j + k))
        pd.DataFrame(
            {
                "x": rng.uniform(0, 299, N_CAND),
                "y": rng.uniform(0, 299, N_CAND),
                "match": np.where(rng.random(N_CAND) < 0.4, 1, -1),
                "flux": rng.uniform(1, 100, N_CAND),
                "simulated_kind": "noise",  # made here: simulated, may keep the RAI texts
            }
        ).to_csv(job / "psfcat.csv", index=False)
    params = root / "params.yaml"
    params.write_text(
        "cutouts:\n  retry_delay_s: 0.0\ntrain:\n  epochs: 2\n  leakage_check: false\n"
    )
    ref = root / "reference"
    t0 = time.perf_counter()
    done = _cutouts_run(root / "jobs", ref, params)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "jobs", params, ref, time.perf_counter() - t0


def _env(own_server: bool) -> dict[str, str]:
    """The runs' environment: the test session's Prefect API, or (``own_server``) none, so
    that the run starts its own temporary server as a user's first run does."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    if not own_server and PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()  # saves ~3 s of start-up per run
    return env


def _cutouts_run(
    jobs: Path, out: Path, params: Path, own_server: bool = False
) -> subprocess.CompletedProcess:
    cmd = [CUTOUTS, "run", "-i", str(jobs), "-o", str(out), "--params", str(params)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(own_server))


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _serving(pid: int) -> bool:
    """Whether a child of ``pid`` is Prefect's API server (uvicorn); other children come and
    go at start-up (``platform`` runs ``file``, for one)."""
    for child in _children(pid):
        try:
            if b"uvicorn" in Path(f"/proc/{child}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead


def _n_cutouts(out: Path) -> int:
    folder = out / "cutouts"
    return sum(1 for _ in folder.glob("jid*.npy")) if folder.is_dir() else 0


#: name -> (condition on the output folder, extra random delay range in seconds)
#: (the start-up point waits for the tool's temporary API server to exist: its start time
#: varies by seconds with the page cache, e.g. in a fresh clone's new .venv)
KILL_POINTS: dict[str, tuple[Callable[[Path, int], bool], tuple[float, float]]] = {
    "start-up": (lambda out, pid: _serving(pid), (0.0, 1.0)),
    "first cutouts": (lambda out, pid: _n_cutouts(out) >= 1, (0.0, 0.05)),
    "half the cutouts": (
        lambda out, pid: _n_cutouts(out) >= N_JOBS * N_CAND // 2, (0.0, 0.05)
    ),
    "index written": (lambda out, pid: (out / "master_index.csv").exists(), (0.0, 0.3)),
    "training": (lambda out, pid: (out / "croissant.json").exists(), (0.5, 2.5)),
}


def _kill_at(jobs: Path, out: Path, params: Path, point: str, rng: random.Random) -> dict:
    """Start ``cutouts run``, SIGKILL it at ``point``; what was on disk at that moment."""
    ready, (lo, hi) = KILL_POINTS[point]
    cmd = [CUTOUTS, "run", "-i", str(jobs), "-o", str(out), "--params", str(params)]
    # the start-up point runs its own temporary API server, to see it die with the tool
    own_server = point == "start-up"
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(own_server)
    )
    deadline = time.monotonic() + 120
    while not ready(out, proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(rng.uniform(lo, hi))
    helpers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Prefect's temporary API server dies with the tool (it is bound to its parent)
    t_end = time.monotonic() + 10
    while any(_alive(p) for p in helpers) and time.monotonic() < t_end:
        time.sleep(0.05)
    assert not any(_alive(p) for p in helpers), f"left running after the kill: {helpers}"
    if own_server:
        assert helpers, "no temporary API server was running at the kill"
    return {"exit": proc.returncode, "index": (out / "master_index.csv").exists()}


def _final_files(out: Path) -> list[Path]:
    """Files under their final names (no temporary files, no tool state)."""
    return sorted(
        p
        for p in out.rglob("*")
        if p.is_file() and ".cutouts" not in p.parts and TMP_MARK not in p.name
    )


#: Keys of metrics.json that are wall-clock measurements, the only values allowed to differ.
TIMINGS = ("seconds", "train_cutouts_per_s")


def _metrics(path: Path) -> dict:
    """metrics.json without its timings."""
    metrics = json.loads(path.read_text())
    return {k: v for k, v in metrics.items() if k not in TIMINGS}


def _assert_same_file(out: Path, ref: Path, rel: Path, what: str) -> None:
    """``out/rel`` holds what ``ref/rel`` holds: byte for byte; metrics.json value for value
    apart from its timings (training is deterministic on one machine)."""
    assert (ref / rel).exists(), f"{rel}: not in the reference dataset"
    if rel.name == "metrics.json":
        a, b = _metrics(out / rel), _metrics(ref / rel)
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        assert a == b, f"{rel}: {what}: {diff} differ"
    else:
        assert (out / rel).read_bytes() == (ref / rel).read_bytes(), f"{rel}: {what}"


def _assert_whole(out: Path, ref: Path) -> None:
    """Every file visible under its final name is whole: identical to the reference's."""
    for path in _final_files(out):
        _assert_same_file(out, ref, path.relative_to(out), "partly written")


def _assert_same_dataset(out: Path, ref: Path) -> None:
    """The same files as the reference, with the same contents: the dataset and the
    training outputs (metrics.json, report.md, every plot and plot CSV)."""
    names = {p.relative_to(out) for p in _final_files(out)}
    ref_names = {p.relative_to(ref) for p in _final_files(ref)}
    assert names == ref_names
    assert {Path("metrics.json"), Path("report.md"), Path("plots/loss.csv")} <= names
    for rel in sorted(names):
        _assert_same_file(out, ref, rel, "not what an uninterrupted run wrote")


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_rerun(crash_setup, tmp_path, point):
    jobs, params, ref, _ = crash_setup
    out = tmp_path / "ds"
    rng = random.Random(f"crash-{point}")
    at_kill = _kill_at(jobs, out, params, point, rng)
    assert at_kill["exit"] == -signal.SIGKILL, "the run ended before it could be killed"
    _assert_whole(out, ref)

    again = _cutouts_run(jobs, out, params)
    assert again.returncode == 0, again.stderr[-3000:]
    leftovers = [p for p in out.rglob("*") if TMP_MARK in p.name]
    assert leftovers == [], f"temporary files left: {leftovers}"
    _assert_same_dataset(out, ref)
    m = re.search(r"jobs: (\d+) \((\d+) from cache", again.stdout)
    assert m, again.stdout[-2000:]
    if at_kill["index"]:  # every job had finished: all of them come from the cache
        assert m.groups() == (str(N_JOBS), str(N_JOBS))
