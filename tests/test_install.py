"""The lean install: a core without the heavy extras, and a clear refusal when one is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from croissant_cutouts.simulate import simulate_jobs
from croissant_cutouts.tasks.infra.extras import EXTRAS, MissingExtra, require_extra

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
HEAVY = {"torch", "dvc", "dvc-s3", "dask", "distributed", "prefect-dask", "s3fs", "photutils",
         "matplotlib", "scikit-learn"}

# Imported by a subprocess before anything else (sitecustomize): every import system finder
# answers "no such module" for the extras' modules, as in an environment that lacks them.
HIDE = textwrap.dedent("""
    import sys
    HIDDEN = set({hidden!r})

    class _Hiding:
        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in HIDDEN:
                return None
            return self.inner.find_spec(name, path, target)

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

    sys.meta_path[:] = [_Hiding(f) for f in sys.meta_path]
""")


def _name(requirement: str) -> str:
    return requirement.split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()


def test_core_requirements_name_no_heavy_package_and_all_names_every_extra():
    assert not {_name(r) for r in PYPROJECT["dependencies"]} & HEAVY
    extras = PYPROJECT["optional-dependencies"]
    assert {"train", "dask", "s3", "dvc", "sim", "all"} <= set(extras)
    assert extras["all"] == ["croissant-cutouts[train,dask,s3,dvc,sim]"]
    torch = next(r for r in extras["train"] if _name(r) == "torch")
    assert "==" not in torch and "<" in torch and ">=" in torch  # a range, not a pin
    # every module an extra promises is installed by that extra here (the dev venv has all)
    for extra, modules in EXTRAS.items():
        require_extra(extra, f"test of {extra}")
        assert modules


def test_a_fresh_core_install_resolves_without_torch_dvc_or_dask(tmp_path):
    """What ``pip install .`` would install into an empty environment (pip's own resolver)."""
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--no-build-isolation", "--report", str(report), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert {"croissant-cutouts", "prefect", "mlcroissant", "numpy", "astropy"} <= names
    assert not names & HEAVY, sorted(names & HEAVY)


def test_missing_extra_names_the_extra_and_the_install_command(monkeypatch):
    monkeypatch.setitem(EXTRAS, "train", ("torch", "no_such_module_for_this_test"))
    with pytest.raises(MissingExtra) as err:
        require_extra("train", "cutouts train")
    assert err.value.extra == "train" and err.value.module == "no_such_module_for_this_test"
    assert "pip install 'croissant-cutouts[train]'" in str(err.value)
    assert str(err.value).startswith("cutouts train needs the 'train' extra")


SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys
    from croissant_cutouts.flows.cli import main

    jobs, ds = sys.argv[1], sys.argv[2]
    codes = {}
    for name, argv in [
        ("create", ["create", "-i", jobs, "-o", ds]),
        ("croissant", ["croissant", "-c", ds + "/master_index.csv", "-o", ds + "/croissant.json"]),
        ("verify", ["verify", "-d", ds, "-i", jobs]),
        ("train", ["train", "-d", ds]),
        ("run", ["run", "-i", jobs, "-o", ds]),
        ("simulate", ["simulate", "-o", ds + "/../sim", "--jobs", "1"]),
        ("dask", ["create", "-i", jobs, "-o", ds, "--task-runner", "dask"]),
        ("s3", ["create", "-i", "s3://bucket/jobs", "-o", ds]),
    ]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            codes[name] = [main(argv), err.getvalue()]
    try:
        import torch  # noqa: F401
        codes["torch importable"] = True
    except ImportError:
        codes["torch importable"] = False
    print("RESULT " + json.dumps(codes))
""")


def test_core_commands_work_and_extra_commands_exit_2_without_the_extras(tmp_path):
    jobs = tmp_path / "jobs"
    simulate_jobs(jobs, n_jobs=2, size=256, seed=1, fields=2)
    hide = tmp_path / "hide"
    hide.mkdir()
    hidden = sorted({m for modules in EXTRAS.values() for m in modules} | {"galsim"})
    (hide / "sitecustomize.py").write_text(HIDE.format(hidden=hidden))
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONPATH": str(hide)}
    if PREFECT_API_URL.value():  # the session's server: no temporary one to start
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(jobs), str(tmp_path / "ds")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    codes = json.loads(line.removeprefix("RESULT "))
    assert codes.pop("torch importable") is False  # the extras really were missing
    for core in ("create", "croissant", "verify"):
        assert codes[core][0] == 0, (core, codes[core][1][-2000:])
    for command, extra in [("train", "train"), ("run", "train"), ("simulate", "sim"),
                           ("dask", "dask"), ("s3", "s3")]:
        code, err = codes[command]
        assert code == 2, (command, err[-2000:])
        assert f"pip install 'croissant-cutouts[{extra}]'" in err, (command, err)
        assert "Traceback" not in err
