"""DVC: `dvc repro` (first run, no-op, param change), push/pull at a tag, get and import.

Each test works in a temporary git repository holding this project's dvc.yaml, params.yaml
(shrunk), .dvc/config and the code the stages depend on, with a local remote beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.flow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git repo with the pipeline, built once with `dvc repro`, tagged and pushed."""
    base = tmp_path_factory.mktemp("dvc")
    repo, remote = base / "repo", base / "remote"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("tasks", "flows", "simulate"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["simulate"].update(
        jobs=3, size=256, workers=1, gallery=False, injections_per_mpx=400, bogus_density=2.0
    )
    params["train"].update(epochs=1, leakage_check=False)  # one training per `train` stage
    params["croissant"]["date_published"] = "2026-01-01"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".dvc").mkdir()
    config = (ROOT / ".dvc" / "config").read_text()
    (repo / ".dvc" / "config").write_text(
        config.replace("../../croissant-cutouts-dvc-remote", str(remote))
    )
    (repo / ".gitignore").write_text(".prefect/\n.cutouts/\n__pycache__/\n")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_SITE_CACHE_DIR": str(base / "site-cache"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():  # the stages use the session's server: no temporary one each
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    run(["git", "init", "-q", "-b", "main"], repo, env)
    (repo / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "pipeline"], repo, env)
    first = run(["dvc", "repro"], repo, env)
    return {"repo": repo, "remote": remote, "env": env, "first": first, "base": base}


def test_first_repro_runs_every_stage(project):
    for stage in ("simulate", "cutouts", "croissant", "train"):
        assert f"Running stage '{stage}'" in project["first"]
    ds = project["repo"] / "data" / "dataset"
    metrics = json.loads((ds / "metrics.json").read_text())
    assert metrics["epochs"] == 1
    assert (ds / "plots" / "loss.csv").exists() and (ds / "plots" / "roc.csv").exists()
    for png in ("roc", "pr", "reliability", "loss", "completeness", "gallery"):
        assert (ds / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["dataset"]["croissant_sha256"] in (ds / "report.md").read_text()
    assert set(pd.read_csv(ds / "master_index.csv")["split"]) == {"train", "validation", "test"}


def test_noop_repro_runs_nothing(project):
    out = run(["dvc", "repro"], project["repo"], project["env"])
    assert "Running stage" not in out and "up to date" in out


def test_training_param_reruns_only_train(project):
    repo, env = project["repo"], project["env"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["lr"] = 0.002
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], repo, env)
    assert "Running stage 'train'" in out
    for stage in ("simulate", "cutouts", "croissant"):
        assert f"Running stage '{stage}'" not in out


def test_release_push_then_pull_get_import_at_tag(project):
    repo, env, base = project["repo"], project["env"], project["base"]
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "dataset v1.0.0"], repo, env)
    run(["git", "tag", "v1.0.0"], repo, env)
    run(["dvc", "push"], repo, env)

    clone = base / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], base, env)
    run(["git", "checkout", "-q", "v1.0.0"], clone, env)
    run(["dvc", "pull"], clone, env)
    ds = clone / "data" / "dataset"
    croissant = json.loads((ds / "croissant.json").read_text())
    index_obj = next(d for d in croissant["distribution"] if d["@id"] == "master_index.csv")
    assert sha256(ds / "master_index.csv") == index_obj["sha256"]
    index = pd.read_csv(ds / "master_index.csv")
    assert len(index) > 0
    for rel in index["cutout_filename"]:
        assert sha256(ds / rel) == sha256(repo / "data" / "dataset" / rel)
    assert sorted(p.name for p in (ds / "cutouts").iterdir()) == sorted(
        Path(f).name for f in index["cutout_filename"]
    )

    got = base / "got.csv"
    run(
        [
            "dvc",
            "get",
            str(repo),
            "data/dataset/master_index.csv",
            "--rev",
            "v1.0.0",
            "-o",
            str(got),
        ],
        base,
        env,
    )
    assert sha256(got) == index_obj["sha256"]

    consumer = base / "consumer"
    consumer.mkdir()
    run(["git", "init", "-q"], consumer, env)
    run(["dvc", "init", "-q"], consumer, env)
    run(
        ["dvc", "import", str(repo), "data/dataset/croissant.json", "--rev", "v1.0.0"],
        consumer,
        env,
    )
    assert (consumer / "croissant.json").read_text() == (ds / "croissant.json").read_text()
    lock = yaml.safe_load((consumer / "croissant.json.dvc").read_text())
    assert lock["deps"][0]["repo"]["rev"] == "v1.0.0"


def test_real_jobs_under_dvc_instead_of_simulate(project, tmp_path):
    """A user's own jobs: delete the `simulate` stage, then `dvc add` (or `dvc import-url`)
    the jobs folder; the cutouts stage depends on it unchanged."""
    env = project["env"]
    repo = tmp_path / "mine"
    shutil.copytree(
        project["repo"], repo, ignore=shutil.ignore_patterns(".git", "data", "dvc.lock")
    )
    run(["git", "init", "-q", "-b", "main"], repo, env)
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    del pipeline["stages"]["simulate"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    elsewhere = tmp_path / "rapid-jobs"  # e.g. a RAPID processing date's folders
    shutil.copytree(project["repo"] / "data" / "raw", elsewhere)
    (repo / "data").mkdir()
    run(["dvc", "import-url", str(elsewhere), "data/raw"], repo, env)
    out = run(["dvc", "repro", "cutouts"], repo, env)
    # the same jobs as the simulated ones: DVC may restore the stage from its run cache
    assert "Running stage 'cutouts'" in out or "Stage 'cutouts' is cached" in out
    assert "simulate" not in out
    assert (repo / "data" / "dataset" / "master_index.csv").exists()
    # new jobs arrive: the imported folder is updated and only then does cutouts run again
    assert "Running stage" not in run(["dvc", "repro", "cutouts"], repo, env)
    shutil.copytree(elsewhere / "jid0001", elsewhere / "jid0004")
    run(["dvc", "update", "data/raw.dvc"], repo, env)
    out = run(["dvc", "repro", "cutouts"], repo, env)
    assert "Running stage 'cutouts'" in out
    index = pd.read_csv(repo / "data" / "dataset" / "master_index.csv")
    assert "jid0004" in set(index.job_id)

    added = tmp_path / "added"
    shutil.copytree(
        repo, added, ignore=shutil.ignore_patterns(".git", "data", "raw.dvc", "dvc.lock")
    )
    run(["git", "init", "-q", "-b", "main"], added, env)
    shutil.copytree(elsewhere, added / "data" / "raw")
    run(["dvc", "add", "data/raw"], added, env)
    out = run(["dvc", "repro", "cutouts"], added, env)
    assert "Running stage 'cutouts'" in out or "Stage 'cutouts' is cached" in out
    assert len(pd.read_csv(added / "data" / "dataset" / "master_index.csv")) == len(index)


def test_s3_remote_push_and_pull(project, s3_server, tmp_path):
    url, creds = s3_server
    repo = project["repo"]
    env = {**project["env"], **creds}
    run(["dvc", "remote", "add", "s3store", "s3://cutouts/datasets"], repo, env)
    run(["dvc", "remote", "modify", "s3store", "endpointurl", url], repo, env)
    run(["git", "add", ".dvc/config"], repo, env)
    run(["git", "commit", "-qm", "s3 remote"], repo, env)
    run(["dvc", "push", "-r", "s3store"], repo, env)
    clone = tmp_path / "from-s3"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    run(["dvc", "pull", "-r", "s3store"], clone, env)
    ds = clone / "data" / "dataset"
    croissant = json.loads((ds / "croissant.json").read_text())
    index_obj = next(d for d in croissant["distribution"] if d["@id"] == "master_index.csv")
    assert sha256(ds / "master_index.csv") == index_obj["sha256"]
    index = pd.read_csv(ds / "master_index.csv")
    for rel in index["cutout_filename"]:
        assert sha256(ds / rel) == sha256(repo / "data" / "dataset" / rel)


def test_import_url_from_object_store(project, s3_server, tmp_path):
    """Jobs in an S3 bucket come in with `dvc import-url` (here through a named remote)."""
    import boto3

    url, creds = s3_server
    env = {**project["env"], **creds}
    raw = project["repo"] / "data" / "raw"
    client = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    for path in raw.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), "cutouts", f"rapid/{path.relative_to(raw)}")
    repo = tmp_path / "consumer"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["dvc", "init", "-q"], repo, env)
    run(["dvc", "remote", "add", "bucket", "s3://cutouts"], repo, env)
    run(["dvc", "remote", "modify", "bucket", "endpointurl", url], repo, env)
    (repo / "data").mkdir()
    run(["dvc", "import-url", "remote://bucket/rapid", "data/raw"], repo, env)
    got = sorted(p.relative_to(repo / "data" / "raw") for p in (repo / "data" / "raw").rglob("*")
                 if p.is_file())
    assert got == sorted(p.relative_to(raw) for p in raw.rglob("*") if p.is_file())
    assert (repo / "data" / "raw.dvc").exists()
