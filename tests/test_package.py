"""The package's shape: one namespace, steps grouped by role, one contract, code versions.

Static checks on the source (``ast``), and one on what ``pip install`` would put into
site-packages (a wheel built without dependencies).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

import croissant_cutouts.tasks.contract as contract
from croissant_cutouts.tasks.infra.versions import (
    DVC_STAGES,
    STEP_CODE,
    step_modules,
    step_paths,
)

ROOT = Path(__file__).resolve().parent.parent
TOP = ("tasks", "flows", "simulate")
PREFIX = "croissant_cutouts"


def _sources() -> dict[str, Path]:
    """Module name (croissant_cutouts....) -> file, for every module of the package."""
    out = {PREFIX: ROOT / PREFIX / "__init__.py"}  # the package itself: its __init__ only
    for top in TOP:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((PREFIX, *parts))] = path
    return out


SOURCES = _sources()


def _imports(name: str) -> set[str]:
    """Modules of the package that ``name`` imports (module-level or inside functions)."""
    tree = ast.parse(SOURCES[name].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            for alias in node.names:  # `from pkg import module` names a module too
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in SOURCES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PREFIX))
    return found


def _closure(start: str) -> set[str]:
    """``start`` and every package module it reaches by imports, packages' ``__init__`` aside.

    An ``__init__`` only re-exports (checked below), so it adds no code of its own.
    """
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(m for m in _imports(name) if Path(SOURCES[m]).name != "__init__.py")
    return seen


# --------------------------------------------------------------------------- namespace


def test_packages_listed_in_pyproject_are_the_folders():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {n for n, p in SOURCES.items() if p.name == "__init__.py"}
    assert set(config["packages"]) == folders
    assert config["package-dir"] == {f"{PREFIX}.{t}": t for t in TOP}


def test_no_module_imports_the_bare_folder_names():
    for name, path in SOURCES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            modules = (
                [node.module or ""] if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            )
            for module in modules:
                assert module.split(".")[0] not in TOP, f"{name}: import {module}"


def test_wheel_installs_one_namespace_only(tmp_path):
    """``pip install .`` puts croissant_cutouts into site-packages, and no tasks or flows."""
    src = tmp_path / "src"  # a copy: building in place would leave build/ in the checkout
    for top in (*TOP, PREFIX):
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path), str(src)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {n.split("/")[0] for n in zf.namelist()}
        names = set(zf.namelist())
    assert {t for t in tops if not t.endswith(".dist-info")} == {PREFIX}
    assert f"{PREFIX}/tasks/dataset/cutout.py" in names
    assert f"{PREFIX}/flows/build.py" in names
    assert f"{PREFIX}/__init__.py" in names


def test_bare_names_do_not_import_outside_the_repository(tmp_path):
    code = (
        "import importlib.util as u, croissant_cutouts.flows.build\n"
        "print([n for n in ('tasks', 'flows', 'simulate') if u.find_spec(n)])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=True,
    )
    assert done.stdout.strip() == "[]"


def test_package_inits_hold_a_docstring_and_reexports_only():
    for name, path in SOURCES.items():
        if path.name != "__init__.py" or name == PREFIX:
            continue
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{name}: no docstring"
        kinds = {type(n).__name__ for n in tree.body[1:]}
        assert kinds <= {"ImportFrom", "Assign"}, f"{name}: {kinds}"
        exported = [n for n in tree.body if isinstance(n, ast.Assign) and "__all__" in {
            e.id for t in n.targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])}]
        assert exported, f"{name}: no __all__"


# --------------------------------------------------------------------------- the contract

#: File names of a dataset: written as literals anywhere but the contract, they would
#: be a second definition.
NAMES = {
    contract.INDEX_FILE, contract.REJECTS_FILE, contract.LIMITS_FILE, contract.JOBS_FILE,
    contract.CROISSANT_FILE, contract.METRICS_FILE, contract.REPORT_FILE, contract.STATE_DIR,
    contract.RECORD_SET, "sha256.json", "<f4",
}
_PATHS = tuple(f"/{n}" for n in NAMES)


def _definitions(tree: ast.Module) -> set[str]:
    out = set()
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign)
            else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        out.update(t.id for t in targets if isinstance(t, ast.Name))
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.add(node.name)
    return out


def _literals(tree: ast.Module) -> set[str]:
    """String constants that are not docstrings."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    return {
        n.value for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    }


@pytest.mark.parametrize("name", [n for n in SOURCES if not n.endswith(".contract")])
def test_only_the_contract_defines_the_format(name):
    tree = ast.parse(SOURCES[name].read_text())
    assert not _definitions(tree) & set(contract.__all__), name
    assert not {s for s in _literals(tree) if s in NAMES or s.endswith(_PATHS)}, name


def test_contract_tensor_and_npy_bytes():
    import numpy as np

    tensor = np.random.default_rng(0).random(contract.CUTOUT_SHAPE, np.float32)
    raw = contract.npy_bytes(tensor)
    assert len(raw) == len(contract.NPY_HEADER) + contract.CUTOUT_BYTES == 65536 + 128
    import io

    assert (np.load(io.BytesIO(raw)) == tensor).all()
    buf = io.BytesIO()
    np.save(buf, tensor)
    assert buf.getvalue() == raw  # the bytes numpy.save writes


# --------------------------------------------------------------------------- code versions


def _task_module(step: str) -> list[str]:
    tasks = f"{PREFIX}.tasks"
    return {
        "load": [f"{tasks}.inputs.load"],
        "normalize": [f"{tasks}.dataset.normalize"],
        "cutout": [f"{tasks}.dataset.cutout"],
        "dataset": [f"{tasks}.dataset.{m}" for m in ("cutout", "index", "croissant")]
        + [f"{tasks}.inputs.select"],
        "croissant": [f"{tasks}.dataset.croissant"],
        "train": [f"{tasks}.evaluate.train"],
        "score": [f"{tasks}.evaluate.score"],
    }[step]


@pytest.mark.parametrize("step", sorted(STEP_CODE))
def test_every_module_a_step_runs_is_in_its_code_version(step):
    """A module the step imports (infra aside: it never decides bytes) must be keyed."""
    covered = set(step_modules(step))
    for start in _task_module(step):
        reached = {m for m in _closure(start) if ".tasks.infra." not in m}
        assert reached <= covered, f"{step}: not in its code version: {reached - covered}"


def test_infra_decides_no_bytes():
    """Plumbing imports nothing that computes data, so leaving it out of keys is safe."""
    for name in SOURCES:
        if ".tasks.infra." in name:
            assert {m for m in _imports(name) if ".tasks.infra." not in m} <= {
                f"{PREFIX}.tasks.contract", f"{PREFIX}.tasks.errors"
            }, name


def test_dvc_stage_deps_are_the_code_versions():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, step in DVC_STAGES.items():
        code = sorted(d for d in stages[stage]["deps"] if d.startswith(("tasks", "flows")))
        flows = ["flows/build.py"] + (["flows/steps.py"] if stage != "cutouts" else [])
        assert code == sorted([*step_paths(step), *flows]), stage


def test_a_new_module_in_a_step_folder_is_covered(tmp_path, monkeypatch):
    import croissant_cutouts.tasks.infra.versions as versions

    fake = tmp_path / "tasks"
    (fake / "inputs").mkdir(parents=True)
    for name in ("load.py", "brand_new.py"):
        (fake / "inputs" / name).write_text("")
    monkeypatch.setattr(versions, "TASKS_DIR", fake)
    assert f"{PREFIX}.tasks.inputs.brand_new" in versions.step_modules("load")


# --------------------------------------------------------------------------- layering

#: What each part of the package may import (docs/architecture.md). Lower layers never
#: import higher ones: the input side knows nothing of datasets, training reads only what a
#: dataset holds, and plumbing decides no bytes.
MAY_IMPORT = {
    "tasks.contract": set(),
    "tasks.errors": set(),
    "tasks.config": set(),
    "tasks.infra": {"tasks.contract", "tasks.errors"},
    "tasks.inputs": {"tasks.contract", "tasks.errors", "tasks.config", "tasks.infra"},
    "tasks.dataset": {"tasks.contract", "tasks.errors", "tasks.config", "tasks.infra",
                      "tasks.inputs"},
    "tasks.evaluate": {"tasks.contract", "tasks.errors", "tasks.config", "tasks.infra",
                       "tasks.dataset.splits"},
    "tasks.verify": {"tasks.contract", "tasks.errors", "tasks.config", "tasks.infra",
                     "tasks.inputs", "tasks.dataset"},
    "simulate": {"tasks.contract", "tasks.errors", "tasks.config", "tasks.infra",
                 "tasks.inputs"},
    "flows": {"tasks", "simulate"},
}


def _part(name: str) -> str:
    rel = name.removeprefix(f"{PREFIX}.")
    return next(p for p in sorted(MAY_IMPORT, key=len, reverse=True)
                if rel == p or rel.startswith(p + "."))


def test_the_package_itself_only_names_the_loader():
    """``import croissant_cutouts`` imports nothing heavy: its names resolve on first use."""
    assert {p.name for p in (ROOT / PREFIX).iterdir()} <= {"__init__.py", "__pycache__"}
    assert _imports(PREFIX) == {f"{PREFIX}.tasks.infra.exports"}
    code = (
        "import sys, croissant_cutouts as c\n"
        "print(c.__all__, sorted(m for m in ('torch', 'prefect', 'pandas', 'mlcroissant') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "['CandidateDataset', 'load_dataset'] []"


@pytest.mark.parametrize("name", [n for n in SOURCES if n not in (PREFIX, f"{PREFIX}.tasks")])
def test_each_part_imports_only_what_it_may(name):
    part = _part(name)
    allowed = MAY_IMPORT[part] | {part}
    for module in _imports(name):
        rel = module.removeprefix(f"{PREFIX}.")
        assert any(rel == a or rel.startswith(a + ".") for a in allowed), (
            f"{name} imports {module}; {part} may import only {sorted(allowed)}"
        )


def test_prefect_yaml_entrypoints_load_their_flows(monkeypatch):
    """The deployments' ``entrypoint`` (a file path in the repository) still names the flow."""
    from prefect.flows import load_flow_from_entrypoint

    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    monkeypatch.chdir(ROOT)
    flows = {}
    for deployment in deployments:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        flows[deployment["name"]] = flow.name
        assert set(deployment["parameters"]) <= set(flow.parameters.properties)
    assert flows == {"nightly": "build_dataset", "nightly-predict": "predict_jobs"}
    # the scoring runs after the build, with the model the build writes
    cron = {d["name"]: d["schedules"][0]["cron"].split() for d in deployments}
    assert int(cron["nightly-predict"][1]) > int(cron["nightly"][1])
    params = {d["name"]: d["parameters"] for d in deployments}
    assert params["nightly-predict"]["model_path"] == f"{params['nightly']['output_dir']}/model.pt"


def test_one_version_number_everywhere():
    """pyproject.toml, ``cutouts --version``, CITATION.cff and the changelog agree."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = subprocess.run(
        [str(Path(sys.executable).with_name("cutouts")), "--version"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert done.stdout.strip() == f"cutouts {version}"
    assert yaml.safe_load((ROOT / "CITATION.cff").read_text())["version"] == version
    headings = [line for line in (ROOT / "CHANGELOG.md").read_text().splitlines()
                if line.startswith("## ")]
    if headings[0] == "## Unreleased":  # changes since the version below (Keep a Changelog)
        headings = headings[1:]
    assert headings[0].startswith(f"## {version} ")
    assert "BSD 3-Clause" in (ROOT / "LICENSE").read_text()
