"""Concurrency and ownership: one writer per dataset folder, and only folders of ours."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from croissant_cutouts.flows.cli import main
from croissant_cutouts.tasks.contract import MARKER
from croissant_cutouts.tasks.infra.lock import DatasetLocked, dataset_lock, read_holder
from croissant_cutouts.tasks.infra.outdir import NotOurFolder, claim_output_dir, is_dataset_dir

CUTOUTS = str(Path(sys.executable).with_name("cutouts"))
ROOT = Path(__file__).resolve().parent.parent

HOLD = textwrap.dedent(
    """
    import sys, time
    from croissant_cutouts.tasks.infra.lock import dataset_lock
    with dataset_lock(sys.argv[1], command="holder for a test"):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def _holder(folder: Path, seconds: float = 60.0) -> subprocess.Popen:
    """Another process that takes the folder's lock and keeps it ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    ds = claim_output_dir(tmp_path / "ds")
    proc = _holder(ds)
    try:
        with pytest.raises(DatasetLocked) as err, dataset_lock(ds):
            pass
        message = str(err.value)
        assert f"pid {proc.pid}" in message and "holder for a test" in message
        assert err.value.holder.pid == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    ds = claim_output_dir(tmp_path / "ds")
    proc = _holder(ds)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_holder(ds / ".cutouts" / "lock").pid == proc.pid  # its record is left behind
    logger = "croissant_cutouts.tasks.infra.lock"
    with caplog.at_level(logging.WARNING, logger=logger), dataset_lock(ds) as me:
        assert me.pid == os.getpid()
        assert read_holder(ds / ".cutouts" / "lock").pid == os.getpid()
    assert f"pid {proc.pid}" in caplog.text and "taking over" in caplog.text
    assert read_holder(ds / ".cutouts" / "lock") is None  # a clean release leaves no holder


def test_lock_is_reentrant_in_one_process(tmp_path):
    with dataset_lock(tmp_path) as outer, dataset_lock(tmp_path) as inner:
        assert inner == outer
    with dataset_lock(tmp_path):  # released, and free again
        pass


def test_cli_refuses_a_locked_dataset_at_once(tmp_path, make_job, capsys):
    make_job("jid0001")
    ds = claim_output_dir(tmp_path / "ds")
    proc = _holder(ds)
    try:
        t0 = time.perf_counter()
        code = main(["create", "-i", str(tmp_path / "jobs"), "-o", str(ds)])
        assert code == 1
        assert time.perf_counter() - t0 < 3  # before Prefect starts
        err = capsys.readouterr().err
        assert "being written by another run" in err and f"pid {proc.pid}" in err
    finally:
        proc.kill()
        proc.wait()
    assert not (ds / "master_index.csv").exists()


@pytest.mark.flow
def test_same_inputs_into_two_folders_in_parallel(tmp_path, make_job):
    for k in range(4):
        make_job(f"jid000{k + 1}", shape=(120, 130), seed=k)
    runs = [
        subprocess.Popen(
            [CUTOUTS, "create", "-i", str(tmp_path / "jobs"), "-o", str(tmp_path / name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outs = [r.communicate(timeout=180) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [e[-2000:] for _, e in outs]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    files = [f for f in files if ".cutouts" not in f.parts]
    assert len(files) > 40
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_claim_new_empty_and_own_folders(tmp_path):
    assert is_dataset_dir(claim_output_dir(tmp_path / "new" / "ds"))
    (tmp_path / "empty").mkdir()
    claim_output_dir(tmp_path / "empty")
    assert (tmp_path / "empty" / MARKER).is_file()
    # a released version fetched with `dvc pull`: only names the tool writes, no marker
    pulled = tmp_path / "pulled"
    (pulled / "cutouts").mkdir(parents=True)
    (pulled / "master_index.csv").write_text("cutout_id\n")
    (pulled / ".gitignore").write_text("/cutouts\n")
    claim_output_dir(pulled)
    # a folder of ours keeps a user's own files, and stays ours
    (pulled / "my_notes.txt").write_text("mine")
    claim_output_dir(pulled)


def test_foreign_folder_is_refused_untouched(tmp_path, make_job, capsys):
    make_job("jid0001")
    foreign = tmp_path / "papers"
    foreign.mkdir()
    (foreign / "draft.tex").write_text("precious")
    (foreign / "cutouts").mkdir()
    before = sorted(p.name for p in foreign.rglob("*"))
    with pytest.raises(NotOurFolder, match=r"draft\.tex"):
        claim_output_dir(foreign)
    assert main(["create", "-i", str(tmp_path / "jobs"), "-o", str(foreign)]) == 1
    assert "not a dataset made by cutouts" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.rglob("*")) == before
    assert (foreign / "draft.tex").read_text() == "precious"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(NotOurFolder, match="is a file"):
        claim_output_dir(a_file)


def test_croissant_does_not_overwrite_outside_a_dataset(tmp_path, capsys):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "master_index.csv").write_text("cutout_id\n")
    (folder / "thesis.pdf").write_text("mine")
    (folder / "croissant.json").write_text("{}")  # not ours: must survive
    code = main(
        ["croissant", "-c", str(folder / "master_index.csv"), "-o", str(folder / "croissant.json")]
    )
    assert code == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (folder / "croissant.json").read_text() == "{}"


@pytest.mark.flow
def test_rerun_keeps_user_files_in_a_dataset(tmp_path, make_job):
    from croissant_cutouts.flows.build import build_dataset
    from croissant_cutouts.tasks.config import Params

    make_job("jid0001")
    ds = tmp_path / "ds"
    build_dataset(str(tmp_path / "jobs"), str(ds), Params(), ["create"])
    (ds / "README.txt").write_text("my notes")
    (ds / "cutouts" / "notes.txt").write_bytes(b"mine")
    build_dataset(str(tmp_path / "jobs"), str(ds), Params(), ["create"])
    assert (ds / "README.txt").read_text() == "my notes"
    assert (ds / "cutouts" / "notes.txt").read_bytes() == b"mine"
