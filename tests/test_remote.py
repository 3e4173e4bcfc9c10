"""Job folders in an object store: list, stage atomically, build a dataset, cache, reject.

Every test talks to a real moto S3 server on 127.0.0.1 (the ``s3_server`` fixture); the
code under test finds it through ``AWS_ENDPOINT_URL`` like any S3-compatible endpoint.
"""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import boto3
import pandas as pd
import pytest

from croissant_cutouts.flows.cli import main
from croissant_cutouts.simulate import simulate_jobs
from croissant_cutouts.tasks.errors import JobError
from croissant_cutouts.tasks.inputs.load import load_job
from croissant_cutouts.tasks.inputs.remote import (
    MANIFEST,
    RemoteFile,
    RemoteJob,
    is_remote,
    is_staged,
    stage_job,
)
from croissant_cutouts.tasks.inputs.select import Selection, plan_jobs

BUCKET = "cutouts"
SUMMARY = re.compile(r"^jobs: (\d+) \((\d+) from cache, (\d+) rejected\), cutouts: (\d+)")


@pytest.fixture(scope="module")
def local_jobs(tmp_path_factory) -> Path:
    """Two simulated RAPID jobs (with field lists), written once for the module."""
    root = tmp_path_factory.mktemp("remote-jobs")
    simulate_jobs(root, n_jobs=2, size=256, seed=5, fields=2, gallery=False)
    return root


@pytest.fixture
def bucket(s3_server, local_jobs, monkeypatch):
    """The jobs uploaded under ``s3://cutouts/rapid``; the AWS environment points at moto."""
    url, creds = s3_server
    for key, value in {**creds, "AWS_ENDPOINT_URL": url}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", endpoint_url=url)
    for path in sorted(local_jobs.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"rapid/{path.relative_to(local_jobs)}")
    return client


def ids(specs):
    return [s.job_id for s in specs]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Name -> (mtime_ns, inode) of every file of a folder."""
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(folder.iterdir())}


def test_is_remote():
    assert is_remote("s3://bucket/prefix") and is_remote("memory://x")
    for local in ("data/raw", "/abs/path", "file:///abs/path", Path("s3:/x"), "./s3"):
        assert not is_remote(local)


def test_unreachable_store_is_a_transient_oserror(tmp_path, monkeypatch):
    """A network failure is an OSError (the load task retries it), not a rejection."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries, for speed
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    job = RemoteJob("s3://cutouts/rapid/jid0001", (RemoteFile("diffimage_masked.fits", 9, "e"),))
    with pytest.raises(OSError, match="jid0001"):
        stage_job(job, tmp_path / "stage" / "jid0001")
    assert list((tmp_path / "stage").iterdir()) == []


def test_plan_stage_select(bucket, local_jobs, tmp_path):
    stage = tmp_path / "stage"
    with pytest.raises(ValueError, match="stage_dir"):
        plan_jobs("s3://cutouts/rapid")
    with pytest.raises(FileNotFoundError):
        plan_jobs("s3://cutouts/nothing-here", stage_dir=stage)

    # (a) the jobs are listed; each spec points into the staging folder, nothing is staged
    specs, missing = plan_jobs("s3://cutouts/rapid/", stage_dir=stage)
    assert ids(specs) == ["jid0001", "jid0002"] and not missing
    spec = specs[0]
    assert spec.path == stage.resolve() / "jid0001" and not stage.exists()
    assert spec.remote.url == "s3://cutouts/rapid/jid0001" and spec.resolved_layout() == "rapid"
    names = {f.name for f in spec.remote.files}
    local_names = {p.name for p in (local_jobs / "jid0001").iterdir()}
    assert "diffpsf.fits" in local_names and "diffpsf.fits" not in names  # never read
    assert {"bkg_subbed_science_image.fits", "diffimage_masked_psfcat.txt"} <= names
    assert all(f.size > 0 and re.fullmatch(r"[0-9a-f]{32}", f.etag) for f in spec.remote.files)
    hash(spec)

    # staged copies are byte-identical and loaded from disk; a current copy is left alone
    job = load_job(spec)
    for f in spec.remote.files:
        assert (spec.path / f.name).read_bytes() == (local_jobs / "jid0001" / f.name).read_bytes()
    assert job.images["science"].path.parent == spec.path and len(job.table) > 0
    before = snapshot(spec.path)
    assert is_staged(spec.remote, spec.path) and stage_job(spec.remote, spec.path) == spec.path
    assert snapshot(spec.path) == before

    # an object gone between listing and staging: JobError naming job and file; nothing
    # half-written under the final name, no temporary folder left behind
    bucket.delete_object(Bucket=BUCKET, Key="rapid/jid0002/scorrimage_masked.fits")
    with pytest.raises(JobError, match=r"job jid0002 \(scorrimage_masked.fits\): missing"):
        load_job(specs[1])
    assert sorted(p.name for p in stage.iterdir()) == ["jid0001"]

    # a changed object gets a new ETag: staged again, unchanged files linked, not fetched
    data = (local_jobs / "jid0001" / "diffimage_masked_psfcat.txt").read_bytes()
    bucket.put_object(
        Bucket=BUCKET, Key="rapid/jid0001/diffimage_masked_psfcat.txt", Body=data + b"\n"
    )
    new, _ = plan_jobs("s3://cutouts/rapid", stage_dir=stage)
    assert new[0].remote != spec.remote and not is_staged(new[0].remote, spec.path)
    stage_job(new[0].remote, new[0].path)
    after = snapshot(spec.path)
    assert after["bkg_subbed_science_image.fits"][1] == before["bkg_subbed_science_image.fits"][1]
    assert (spec.path / "diffimage_masked_psfcat.txt").read_bytes() == data + b"\n"
    assert (spec.path / MANIFEST).exists()
    assert sorted(p.name for p in stage.iterdir()) == ["jid0001"]

    # (e) selection: field lists relative to the remote prefix, and remote headers
    lists = pd.read_csv(local_jobs / "H158_fields.txt", sep=r"\s+", dtype=str)
    field = lists.FIELD.iloc[0]
    chosen, missing = plan_jobs(
        "s3://cutouts/rapid", selection=Selection(("H158_fields.txt",), (field,)), stage_dir=stage
    )
    assert ids(chosen) == sorted(lists[lists.FIELD == field].JOB) and not missing
    assert dict(chosen[0].meta)["field"] == field and chosen[0].remote is not None
    by_header, _ = plan_jobs(
        "s3://cutouts/rapid", selection=Selection((), (field,), None), stage_dir=stage
    )
    assert ids(by_header) == ids(chosen)
    with pytest.raises(ValueError, match=r"field list nope\.txt does not exist"):
        plan_jobs("s3://cutouts/rapid", selection=Selection(("nope.txt",)), stage_dir=stage)


def summary(capsys) -> tuple[int, ...]:
    out = capsys.readouterr().out.strip().splitlines()
    match = SUMMARY.match(out[-1])
    assert match, out
    return tuple(int(g) for g in match.groups())


@pytest.mark.flow
def test_cli_remote_matches_local_caches_and_rejects(bucket, local_jobs, tmp_path, capsys):
    local_out, remote_out = tmp_path / "local", tmp_path / "remote"
    assert main(["create", "-i", str(local_jobs), "-o", str(local_out)]) == 0
    capsys.readouterr()

    # (b) the same dataset, byte for byte, from the object store
    assert main(["create", "-i", "s3://cutouts/rapid", "-o", str(remote_out)]) == 0
    jobs, cached, rejected, cutouts = summary(capsys)
    assert (jobs, cached, rejected) == (2, 0, 0) and cutouts > 0
    index = (remote_out / "master_index.csv").read_bytes()
    assert index == (local_out / "master_index.csv").read_bytes()
    files = pd.read_csv(remote_out / "master_index.csv")["cutout_filename"]
    assert len(files) == cutouts
    for rel in files:
        assert (remote_out / rel).read_bytes() == (local_out / rel).read_bytes()
    staged = remote_out / ".cutouts" / "inputs"
    before = {job: snapshot(staged / job) for job in ("jid0001", "jid0002")}

    # (c) a second run comes whole from the cache and downloads nothing
    assert main(["create", "-i", "s3://cutouts/rapid", "-o", str(remote_out)]) == 0
    assert summary(capsys)[:3] == (2, 2, 0)
    assert {job: snapshot(staged / job) for job in before} == before
    assert (remote_out / "master_index.csv").read_bytes() == index

    # a removed staging folder is restored (the cached load points into it)
    shutil.rmtree(staged)
    assert main(["create", "-i", "s3://cutouts/rapid", "-o", str(remote_out)]) == 0
    assert summary(capsys)[:3] == (2, 2, 0)
    assert (remote_out / "master_index.csv").read_bytes() == index

    # (d) a job lacking an image object is rejected with a reason; the other is unharmed
    bucket.delete_object(Bucket=BUCKET, Key="rapid/jid0002/diffimage_masked.fits")
    assert main(["create", "-i", "s3://cutouts/rapid", "-o", str(remote_out)]) == 0
    jobs, cached, rejected, cutouts = summary(capsys)
    assert (jobs, rejected) == (2, 1) and cutouts > 0
    rejects = pd.read_csv(remote_out / "rejects.csv")
    reason = rejects.loc[rejects.job_id == "jid0002", "reason"].iloc[0]
    assert "difference image missing" in reason and "diffimage_masked.fits" in reason
    assert (rejects.job_id == "jid0002").sum() > 1  # its catalog rows counted, as locally
    result = pd.read_csv(remote_out / "master_index.csv")
    assert set(result.job_id) == {"jid0001"}
    assert (result.job_id == "jid0001").sum() == (
        pd.read_csv(local_out / "master_index.csv").job_id == "jid0001"
    ).sum()
