"""The Prefect flow: a real flow run (ephemeral API), caching and retries."""

from __future__ import annotations

import errno
import json
import re
import time

import numpy as np
import pandas as pd
import pytest

import croissant_cutouts.tasks.inputs.load as load_mod
from croissant_cutouts.flows.build import build_dataset
from croissant_cutouts.tasks.config import Params

pytestmark = pytest.mark.flow

FAST = Params().override("cutouts", retry_delay_s=0.0, workers=2)


def run(jobs, out, params=FAST, steps=("create",)):
    return build_dataset(str(jobs), str(out), params, list(steps))


@pytest.fixture
def three_jobs(tmp_path, make_job):
    for k in range(3):
        make_job(f"jid000{k + 1}", seed=k)
    return tmp_path / "jobs"


def test_cache_second_run_and_one_changed_job(tmp_path, three_jobs):
    out = tmp_path / "ds"
    first = run(three_jobs, out)
    assert (first.jobs, first.from_cache, first.cutouts) == (3, 0, 36)
    index1 = (out / "master_index.csv").read_bytes()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "cutouts").iterdir()}

    second = run(three_jobs, out)
    assert second.from_cache == 3
    assert (out / "master_index.csv").read_bytes() == index1
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cutouts").iterdir()} == mtimes

    cat = pd.read_csv(three_jobs / "jid0002" / "psfcat.csv")
    cat.loc[0, "x"] += 1.0
    cat.to_csv(three_jobs / "jid0002" / "psfcat.csv", index=False)
    third = run(three_jobs, out)
    assert third.from_cache == 2
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cutouts").iterdir()}
    changed = {n for n in after if after[n] != mtimes[n]}
    assert changed and all(n.startswith("jid0002") for n in changed)


def test_image_change_and_deleted_output_recompute(tmp_path, three_jobs):
    out = tmp_path / "ds"
    run(three_jobs, out)
    from astropy.io import fits

    path = three_jobs / "jid0003" / "scorrimage_masked.fits"
    data = fits.getdata(path) * 2
    fits.PrimaryHDU(data).writeto(path, overwrite=True)
    (out / "cutouts" / "jid0001_cutout00004.npy").unlink()
    again = run(three_jobs, out)
    assert again.from_cache == 1  # jid0002 only
    assert (out / "cutouts" / "jid0001_cutout00004.npy").exists()


def test_params_change_cache_key(tmp_path, three_jobs):
    out = tmp_path / "ds"
    run(three_jobs, out)
    # batch is an execution knob: it does not change results, so it stays cached
    assert run(three_jobs, out, FAST.override("cutouts", batch=3)).from_cache == 3


def test_transient_oserror_is_retried(tmp_path, three_jobs, monkeypatch):
    real = load_mod.read_image_info
    calls = {"n": 0}

    def flaky(job_id, path):
        if job_id == "jid0002":
            calls["n"] += 1
            if calls["n"] <= 2:
                raise OSError(errno.EIO, "Input/output error (injected)", str(path))
        return real(job_id, path)

    monkeypatch.setattr(load_mod, "read_image_info", flaky)
    summary = run(three_jobs, tmp_path / "ds")
    assert summary.jobs_rejected == 0 and summary.cutouts == 36
    assert calls["n"] >= 3  # two failures, then success on the third attempt


def test_persistent_oserror_rejects_job_after_retries(tmp_path, three_jobs, monkeypatch):
    real = load_mod.read_image_info
    calls = {"n": 0}

    def broken(job_id, path):
        if job_id == "jid0001":
            calls["n"] += 1
            raise OSError(errno.EIO, "Input/output error (injected)", str(path))
        return real(job_id, path)

    monkeypatch.setattr(load_mod, "read_image_info", broken)
    summary = run(three_jobs, tmp_path / "ds")
    assert calls["n"] == 3  # 1 + 2 retries
    assert summary.jobs_rejected == 1 and summary.cutouts == 24
    rejects = pd.read_csv(tmp_path / "ds" / "rejects.csv")
    assert "failed after 3 attempts" in rejects.reason.iloc[0]


def test_bad_input_is_not_retried(tmp_path, three_jobs, monkeypatch):
    path = three_jobs / "jid0001" / "diffimage_masked.fits"
    path.write_bytes(path.read_bytes()[:3000])
    real = load_mod.read_image_info
    calls = {"n": 0}

    def counting(job_id, p):
        if job_id == "jid0001" and p.name == "diffimage_masked.fits":
            calls["n"] += 1
        return real(job_id, p)

    monkeypatch.setattr(load_mod, "read_image_info", counting)
    summary = run(three_jobs, tmp_path / "ds")
    assert calls["n"] == 1, calls  # checked once (reject_job re-reads only the catalog)
    assert summary.jobs_rejected == 1
    reason = pd.read_csv(tmp_path / "ds" / "rejects.csv").reason.iloc[0]
    assert "diffimage_masked.fits" in reason and "truncated" in reason


def test_permanent_oserror_fails_once(tmp_path, three_jobs, monkeypatch):
    """A forbidden file (EACCES) is not worth a retry: one attempt, the reason on record."""
    real = load_mod.read_image_info
    calls = {"n": 0}

    def forbidden(job_id, path):
        if job_id == "jid0003":
            calls["n"] += 1
            raise PermissionError(errno.EACCES, "Permission denied (injected)", str(path))
        return real(job_id, path)

    monkeypatch.setattr(load_mod, "read_image_info", forbidden)
    summary = run(three_jobs, tmp_path / "ds", FAST.override("cutouts", retry_delay_s=5.0))
    assert calls["n"] == 1
    assert summary.jobs_rejected == 1 and summary.cutouts == 24
    rejects = pd.read_csv(tmp_path / "ds" / "rejects.csv")
    job_row = rejects[rejects.catalog_row.isna()].iloc[0]
    assert job_row.job_id == "jid0003"
    assert "not retried" in job_row.reason and "Permission denied" in job_row.reason


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (OSError(errno.EIO, "I/O error"), True),
        (OSError(errno.ETIMEDOUT, "timed out"), True),
        (OSError(errno.ESTALE, "stale NFS handle"), True),
        (OSError("connection dropped"), True),  # no errno: network clients
        (FileNotFoundError(errno.ENOENT, "missing"), False),
        (PermissionError(errno.EACCES, "forbidden"), False),
        (OSError(errno.ENOSPC, "disk full"), False),
        (ValueError("bad content"), False),
    ],
)
def test_transient_classification(exc, transient):
    from croissant_cutouts.tasks.infra.caching import is_transient

    assert is_transient(exc) is transient


def test_full_flow_with_croissant(tmp_path, three_jobs):
    out = tmp_path / "ds"
    summary = run(three_jobs, out, steps=("create", "croissant"))
    assert summary.croissant and (out / "croissant.json").exists()
    import mlcroissant as mlc

    records = list(mlc.Dataset(jsonld=str(out / "croissant.json")).records("transient_candidates"))
    assert len(records) == summary.cutouts
    assert np.load(out / records[0]["transient_candidates/cutout_path"].decode()).shape == (
        64,
        64,
        4,
    )


def test_artifacts_are_published(tmp_path, three_jobs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    params = FAST.override("train", epochs=1, leakage_check=False)
    state = build_dataset(
        str(three_jobs), str(tmp_path / "ds"), params, ["create", "croissant", "train"],
        return_state=True,
    )
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    by_key = {a.key: a for a in found}
    table, summary = by_key["job-counts"], by_key["dataset-summary"]
    assert [row["job_id"] for row in json.loads(table.data)] == ["jid0001", "jid0002", "jid0003"]
    assert "croissant.json" in summary.data and "jobs: 3" in summary.data
    # the test metrics of every model, and links to the report and every picture
    assert "| model (test split) | ROC AUC" in summary.data and "| cnn |" in summary.data
    assert "| gradient_boosting |" in summary.data and "Leakage gap" in summary.data
    assert re.search(r"\| cnn \| [\d.]+ \[[\d.]+, [\d.]+\] \|", summary.data)  # its interval
    ds = (tmp_path / "ds").resolve()
    for name in ("report.md", *(f"plots/{p}.png" for p in
                                ("roc", "pr", "reliability", "loss", "completeness", "gallery"))):
        assert f"file://{ds / name})" in summary.data, name


def test_summary_artifact_says_when_figures_are_training_set_figures():
    from croissant_cutouts.flows.summary import _metrics_lines

    block = {"roc_auc": 0.5, "roc_auc_ci95": [0.25, 0.75], "pr_auc": 0.1,
             "fnr_at_1pct_fpr": 1.0, "fnr_at_1pct_fpr_ci95": [None, None], "ece": None}
    metrics = {"models": {"cnn": {"test": block}}, "evaluated_on": "train", "held_out": False,
               "caution": "TRAINING-SET FIGURES: nothing held out.", "leakage": {"gap": None}}
    text = "\n".join(_metrics_lines(metrics))
    assert text.startswith("**TRAINING-SET FIGURES: nothing held out.**")
    assert "| model (train split) |" in text and "| cnn | 0.5 [0.25, 0.75] | 0.1 | 1 | – |" in text
    assert "Leakage gap" not in text
    assert _metrics_lines({}) == []


# --- the last step (verify), cache keys of labels and code, the cached smoke-train ----------


@pytest.fixture(scope="module")
def rapid_jobs(tmp_path_factory):
    """Three small simulated RAPID jobs (with truth files, so labels depend on `labels:`)."""
    from croissant_cutouts.simulate import simulate_jobs

    root = tmp_path_factory.mktemp("rapid") / "jobs"
    simulate_jobs(root, n_jobs=3, size=256, seed=4, fields=3, injections_per_mpx=400,
                  gallery=False)
    return root


def test_run_fails_when_its_dataset_does_not_verify(tmp_path, three_jobs):
    """A cutout damaged on disk is still present, so the re-run serves its job from the cache
    and writes a new index around it: only the last step (verify) can see the damage, and
    the run must fail naming it instead of reporting success."""
    from croissant_cutouts.tasks.verify import DatasetInvalid

    out = tmp_path / "ds"
    assert run(three_jobs, out).cutouts == 36  # a valid dataset: the run succeeds
    damaged = out / "cutouts" / "jid0002_cutout00003.npy"
    tensor = np.load(damaged)
    tensor[32, 32, 2] = 2.0  # outside [0, 1]; same shape, dtype and file size
    np.save(damaged, tensor)
    with pytest.raises(DatasetInvalid) as failed:
        run(three_jobs, out)
    message = str(failed.value)
    assert "out-of-range" in message and "cutouts/jid0002_cutout00003.npy" in message, message
    assert failed.value.report.kinds() == {"out-of-range": 1}, message


def test_label_params_enter_the_cache_key(tmp_path, rapid_jobs):
    """Same input files, other `labels:`: the jobs are labelled again, not served stale."""
    out = tmp_path / "ds"
    first = run(rapid_jobs, out)
    before = pd.read_csv(out / "master_index.csv")
    assert first.real > 0 and before["truth_mag"].min() < 25.0
    strict = FAST.override("labels", mag_limit=25.0, match_radius_px=1.0)
    again = run(rapid_jobs, out, strict)
    after = pd.read_csv(out / "master_index.csv")
    assert again.from_cache == 0, "jobs served from the cache of other labels"
    assert again.real < first.real and (after["label"] != before["label"]).any()
    assert (after["truth_mag"].dropna() < 25.0).all()
    assert (after["match_distance"].dropna() <= 1.0).all()


class _Counting:
    """``read_image_info`` that records the jobs it read (the load task's body ran)."""

    def __init__(self) -> None:
        self.real = load_mod.read_image_info
        self.jobs: set[str] = set()

    def __call__(self, job_id, path):
        self.jobs.add(job_id)
        return self.real(job_id, path)


def test_code_change_invalidates_the_load_cache(tmp_path, three_jobs, monkeypatch):
    """The load task's key holds the source of its modules: an edit re-runs the load.

    A temporary module is added to the modules the load task's cache policy hashes and then
    edited; the policy reads its source as it reads ``tasks.inputs.load``'s. The digest is memoised
    per process (code does not change while it runs): clearing the memo stands for the
    next process.
    """
    import sys

    from croissant_cutouts.tasks.infra.caching import module_source_digest
    from croissant_cutouts.tasks.infra.versions import step_modules
    from croissant_cutouts.tasks.inputs.load import load_task

    name = "cutouts_code_probe"
    source = tmp_path / "code" / f"{name}.py"
    source.parent.mkdir()
    source.write_text("ZPT = 1.0\n")
    monkeypatch.syspath_prepend(str(source.parent))
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(load_task.cache_policy, "modules", (*step_modules("load"), name))
    counting = _Counting()
    monkeypatch.setattr(load_mod, "read_image_info", counting)
    out = tmp_path / "ds"
    assert run(three_jobs, out).from_cache == 0
    assert counting.jobs == {"jid0001", "jid0002", "jid0003"}

    source.write_text("ZPT = 2.0  # an edit of the science code\n")
    module_source_digest.cache_clear()  # a new process
    counting.jobs.clear()
    edited = run(three_jobs, out)
    assert counting.jobs == {"jid0001", "jid0002", "jid0003"}, "load came from the cache"
    assert edited.from_cache == 0 and edited.cutouts == 36

    counting.jobs.clear()  # unchanged code again: every job from the cache
    assert run(three_jobs, out).from_cache == 3 and counting.jobs == set()


def test_smoke_train_runs_again_when_the_dataset_changes(tmp_path, rapid_jobs):
    """The cached smoke-train is keyed on the dataset: new labels (same input files, same
    training params) train again; an unchanged dataset is served from the cache."""
    import hashlib

    steps = ("create", "croissant", "train")
    params = FAST.override("train", epochs=1, leakage_check=False)
    out = tmp_path / "ds"
    metrics = out / "metrics.json"

    def index_sha256() -> str:
        return hashlib.sha256((out / "master_index.csv").read_bytes()).hexdigest()

    first = run(rapid_jobs, out, params, steps)
    m1 = json.loads(metrics.read_text())
    assert m1["dataset"]["index_sha256"] == index_sha256()

    relabelled = params.override("labels", mag_limit=25.0, match_radius_px=1.0)
    second = run(rapid_jobs, out, relabelled, steps)
    m2 = json.loads(metrics.read_text())
    assert index_sha256() != m1["dataset"]["index_sha256"]
    assert m2["dataset"]["index_sha256"] == index_sha256(), "metrics of the old dataset"
    real = sum(c["real"] for c in m2["counts"].values())
    assert real == second.real < first.real == sum(c["real"] for c in m1["counts"].values())
    assert second.metrics == m2

    written = metrics.stat().st_mtime_ns
    third = run(rapid_jobs, out, relabelled, steps)  # same dataset: training from cache
    assert metrics.stat().st_mtime_ns == written and third.metrics == m2


def test_per_job_tasks_are_task_runs_of_the_build_itself(tmp_path, three_jobs):
    """No nested flow run (each cost a flow-run start and a heartbeat wait at its end)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    state = build_dataset(str(three_jobs), str(tmp_path / "ds"), FAST, ["create"],
                          return_state=True)
    run_id = state.state_details.flow_run_id
    want = sorted(["load", "normalize", "cutout"] * 3 + ["index", "verify"])
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(
                any_=[run_id]))
        )
        deadline = time.monotonic() + 30
        while True:  # the server records task runs from their events, in batches, later
            tasks = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id]))
            )
            names = sorted(t.name.rsplit("-", 1)[0] for t in tasks)
            if len(names) >= len(want) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert children == []
    assert names == want, names
