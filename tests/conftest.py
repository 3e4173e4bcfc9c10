"""Test harness: an isolated Prefect home per session, and small hand-made job folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# One OpenMP/BLAS thread per process, set before numpy, torch or scikit-learn load (their
# subprocesses inherit it; an explicit setting wins). The suite runs one pytest worker per
# core: a second thread per worker only spin-waits against the other worker, and
# scikit-learn's gradient boosting on a test's few hundred rows ran 10x slower with it
# (tests/test_train.py alone: 134 s with two threads, 75 s with one, on two busy cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import pytest

# A mutation run (docs/mutation-testing.md) runs the tests from its copy of the code in
# ./mutants, and keys each mutant by the module name of its file there (tasks.dataset.cutout):
# import croissant_cutouts.tasks.* as that mutated copy, under that name.
if os.environ.get("MUTANT_UNDER_TEST") is not None and Path("tasks").is_dir():
    import importlib
    import importlib.abc
    import importlib.util
    import sys

    class _MutantAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """``croissant_cutouts.tasks.X`` is the module ``tasks.X`` of ./mutants."""

        def find_spec(self, fullname, path=None, target=None):
            if fullname == "croissant_cutouts.tasks" or fullname.startswith(
                "croissant_cutouts.tasks."
            ):
                return importlib.util.spec_from_loader(fullname, self)
            return None

        def create_module(self, spec):
            return importlib.import_module(spec.name.removeprefix("croissant_cutouts."))

        def exec_module(self, module):
            pass

    sys.path.insert(0, str(Path.cwd()))
    sys.meta_path.insert(0, _MutantAlias())

# Before anything imports Prefect: its home, database and results live in a throw-away
# folder of this test session (ephemeral mode, no server to run by hand).
_PREFECT_HOME = tempfile.mkdtemp(prefix="cutouts-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
from croissant_cutouts.flows.settings import prepare_environment  # noqa: E402

prepare_environment()

from astropy.io import fits  # noqa: E402

SEED_FILES = {
    "science": "bkg_subbed_science_image.fits",
    "reference": "awaicgen_output_mosaic_image_resampled.fits",
    "difference": "diffimage_masked.fits",
    "score": "scorrimage_masked.fits",
}


#: Rough cost of each test file in seconds (setup included; two workers on two cores).
#: With ``--dist loadfile`` the files are handed to the workers in collection order, so the
#: costly ones go first and the many cheap ones fill in at the end: neither worker is left
#: running one long file while the other idles. A file not listed counts as ``_COST_UNKNOWN``.
_FILE_COST = {
    "test_crash.py": 150, "test_fuzz.py": 100, "test_dvc.py": 90, "test_predict.py": 90,
    "test_deploy.py": 80, "test_loader.py": 35,
    "test_flow.py": 70, "test_train.py": 60, "test_install.py": 41, "test_lock.py": 40,
    "test_cli.py": 33, "test_dask.py": 33, "test_rapid.py": 24, "test_docs.py": 21,
    "test_startup.py": 21, "test_parquet.py": 21, "test_shards.py": 16, "test_remote.py": 15,
    "test_verify.py": 10, "test_report.py": 8, "test_simulate.py": 8, "test_package.py": 7,
    "test_small_dataset.py": 6, "test_select.py": 5, "test_provenance.py": 4,
    "test_croissant11.py": 3, "test_croissant.py": 2, "test_truth.py": 1, "test_readme.py": 1,
    "test_bootstrap.py": 1, "test_cutout.py": 1, "test_load.py": 1, "test_pipeline.py": 1,
    "test_metrics.py": 1, "test_splits.py": 1, "test_artifact.py": 1, "test_normalize.py": 1,
    "test_caching.py": 1,
}
_COST_UNKNOWN = 30


def pytest_configure(config):
    # xdist would otherwise queue the files by their number of tests, most first: the few
    # long end-to-end files (crash, DVC, deploy) came last and one worker ran them alone
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """Costly files first (a stable sort: the order inside a file is kept)."""
    items.sort(key=lambda item: -_FILE_COST.get(item.path.name, _COST_UNKNOWN))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py``, imported as its script runs (``common`` on the path)."""
    import importlib.util
    import sys

    folder = str(Path(__file__).resolve().parent.parent / "benchmarks")
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, f"{folder}/{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def write_fits(path: Path, data: np.ndarray) -> Path:
    fits.PrimaryHDU(np.asarray(data)).writeto(path, overwrite=True)
    return path


def ramp_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A float32 image whose pixel values encode their position plus a little noise."""
    ny, nx = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    return (yy * 1000.0 + xx + rng.normal(0, 0.01, shape)).astype(np.float32)


def write_seed_jobs(jobs: Path, n_jobs: int, shape: tuple[int, int], rows: int) -> None:
    """``n_jobs`` seed-layout jobs of ramp images; every third catalog row is real."""
    for j in range(n_jobs):
        job = jobs / f"jid{j + 1:04d}"
        job.mkdir(parents=True)
        for k, name in enumerate(SEED_FILES.values()):
            write_fits(job / name, ramp_image(shape, 10 * j + k) * (k + 1))
        rng = np.random.default_rng(j)
        pd.DataFrame({
            "x": rng.uniform(0, shape[1] - 1, rows), "y": rng.uniform(0, shape[0] - 1, rows),
            "match": np.where(np.arange(rows) % 3 == 0, np.arange(rows), -1),
            "flux": rng.uniform(1, 100, rows),
        }).to_csv(job / "psfcat.csv", index=False)


def build_plain_dataset(jobs: Path, out: Path, layout: str = "files") -> Path:
    """A dataset made by the plain functions (no flow, no server): cutouts, index, Croissant."""
    from croissant_cutouts.tasks.dataset.croissant import write_croissant
    from croissant_cutouts.tasks.dataset.cutout import cut_job
    from croissant_cutouts.tasks.dataset.index import write_index
    from croissant_cutouts.tasks.dataset.normalize import job_limits
    from croissant_cutouts.tasks.inputs.load import discover_jobs, load_job

    results = []
    for spec in discover_jobs(jobs):
        job = load_job(spec)
        results.append(cut_job(job, job_limits(job), out, layout=layout))
    write_index(results, out)
    write_croissant(out / "master_index.csv", out / "croissant.json")
    return out


@pytest.fixture
def three_jobs(tmp_path, make_job) -> Path:
    """jid0001 (40 x 50), jid0002 (70 x 90), jid0003 with one row off the image (rejected,
    so a job file's rows differ from its catalog rows); returns the jobs folder."""
    make_job("jid0001", seed=1)
    make_job("jid0002", shape=(70, 90), seed=2)
    make_job(
        "jid0003",
        catalog=pd.DataFrame({"x": [3.0, 500.0, 20.2], "y": [4.0, 5.0, 30.7], "match": [-1, 1, 2]}),
        seed=3,
    )
    return tmp_path / "jobs"


@pytest.fixture
def make_job(tmp_path: Path) -> Callable[..., Path]:
    """Write a seed-layout job folder; returns its path.

    ``make_job(name, shape=(40, 50), catalog=DataFrame or str, images={channel: array})``.
    """

    def _make(
        name: str = "jid0001",
        shape: tuple[int, int] = (40, 50),
        catalog: pd.DataFrame | str | None = None,
        images: dict[str, np.ndarray] | None = None,
        root: Path | None = None,
        seed: int = 0,
    ) -> Path:
        job = (root or tmp_path / "jobs") / name
        job.mkdir(parents=True, exist_ok=True)
        images = images or {}
        for k, (channel, fname) in enumerate(SEED_FILES.items()):
            data = images.get(channel)
            if data is None:
                data = ramp_image(shape, seed + k) * (k + 1)
            write_fits(job / fname, data)
        if catalog is None:
            rng = np.random.default_rng(seed)
            n = 12
            catalog = pd.DataFrame(
                {
                    "x": rng.uniform(0, shape[1] - 1, n),
                    "y": rng.uniform(0, shape[0] - 1, n),
                    "match": np.where(rng.random(n) < 0.3, np.arange(n), -1),
                    "flux": rng.uniform(1, 100, n),
                    "fwhm": rng.uniform(1.5, 3, n),
                    "elongation": rng.uniform(1, 2, n),
                }
            )
        if isinstance(catalog, pd.DataFrame):
            catalog.to_csv(job / "psfcat.csv", index=False)
        else:
            (job / "psfcat.csv").write_text(catalog)
        return job

    return _make


_REAL_CHECKS: dict[str, Callable[..., None]] = {}


@pytest.fixture(scope="session", autouse=True)
def hand_made_jobs_may_keep_built_in_rai_texts():
    """Most tests build from hand-made seed catalogs, which carry no simulator record and so
    count as real jobs: in this process they may keep the built-in RAI texts. The tests of
    that refusal take the ``provenance`` fixture; subprocesses always keep the rule.
    """
    import croissant_cutouts.tasks.dataset.croissant as croissant

    _REAL_CHECKS["provenance"] = croissant.check_provenance
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(croissant, "check_provenance", lambda *args: None)
        yield


@pytest.fixture
def provenance(monkeypatch):
    """The refusal of the simulator's RAI texts for real jobs, as in production."""
    import croissant_cutouts.tasks.dataset.croissant as croissant

    monkeypatch.setattr(croissant, "check_provenance", _REAL_CHECKS["provenance"])


@pytest.fixture(scope="session", autouse=True)
def prefect_backend():
    """One temporary Prefect API server (own database) for the whole test session."""
    if os.environ.get("MUTMUT_SKIP_PREFECT_HARNESS") == "1":  # mutation runs: non-flow tests
        yield
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def s3_server(tmp_path):
    """A moto S3 server on 127.0.0.1 (never a real cloud endpoint).

    Yields its URL and the environment variables of its (fake) credentials; the bucket
    ``cutouts`` exists.
    """
    import socket
    import subprocess
    import sys

    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "moto.log", "w")
    BIN = Path(sys.executable).parent
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    creds = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        import time

        client = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        for _ in range(100):
            try:
                client.create_bucket(Bucket="cutouts")
                break
            except Exception:
                time.sleep(0.2)
        yield url, creds
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def fail_second_batch(monkeypatch) -> None:
    """Make ``dataset.cutout.make_tensors`` raise ``OSError("disk full")`` on its second call."""
    import croissant_cutouts.tasks.dataset.cutout as cutout_mod

    calls = {"n": 0}
    real = cutout_mod.make_tensors

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*args)

    monkeypatch.setattr(cutout_mod, "make_tensors", failing)
