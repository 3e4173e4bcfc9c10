"""README.md: short, its links resolve inside the repository, and its code examples run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The dataset folder the README's examples read (what `make demo` writes).
EXAMPLE_DATASET = "demo/dataset"

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HTML_LINK = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _text() -> str:
    return README.read_text(encoding="utf-8")


def _targets(text: str) -> list[str]:
    return _LINK.findall(text) + _HTML_LINK.findall(text)


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target))  # https:, mailto:, ...


def test_readme_is_at_most_200_lines():
    n = len(_text().splitlines())
    assert n <= 200, f"README.md has {n} lines; move reference material into docs/"


def test_readme_links_stay_inside_the_repository_and_exist():
    targets = [t for t in _targets(_text()) if not _is_external(t) and not t.startswith("#")]
    assert targets, "expected links to docs/ pages"
    for target in targets:
        path = target.split("#", 1)[0]
        assert not path.startswith(("/", "..")), f"{target}: link outside the repository tree"
        resolved = (ROOT / path).resolve()
        assert resolved.is_relative_to(ROOT), f"{target}: link outside the repository tree"
        assert resolved.exists(), f"{target}: no such file in the repository"


def test_readme_has_no_words_for_another_tree_or_machine():
    text = _text()
    assert "../" not in text
    assert "shared/" not in text
    assert "this machine" not in text.lower()


def test_readme_shows_the_gallery_image():
    images = [t for t in _LINK.findall(_text()) if t.endswith(".png")]
    assert images and all((ROOT / image).is_file() for image in images)


# --------------------------------------------------------------------------- the examples


def _examples() -> dict[str, str]:
    """The README's python blocks, keyed by what they load with."""
    blocks = _PYTHON_BLOCK.findall(_text())
    by_kind = {}
    for block in blocks:
        kind = "mlcroissant" if "mlcroissant" in block else "torch" if "torch" in block else None
        assert kind, f"a python block of README.md that loads neither way:\n{block}"
        by_kind[kind] = block
    assert set(by_kind) == {"torch", "mlcroissant"}, "expected one PyTorch, one mlcroissant example"
    for kind, block in by_kind.items():
        assert EXAMPLE_DATASET in block, f"the {kind} example should read {EXAMPLE_DATASET}"
        code_lines = [line for line in block.splitlines() if line.strip()]
        assert len(code_lines) <= 12, f"the {kind} example has {len(code_lines)} lines"
    return by_kind


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tiny dataset with croissant.json, made by the plain functions (no flow, no server)."""
    from conftest import build_plain_dataset, write_seed_jobs

    root = tmp_path_factory.mktemp("readme")
    write_seed_jobs(root / "jobs", n_jobs=3, shape=(40, 50), rows=8)
    return build_plain_dataset(root / "jobs", root / "dataset")


def _run(block: str, dataset: Path) -> dict:
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(block.replace(EXAMPLE_DATASET, str(dataset)), "README.md", "exec"), namespace)
    return namespace


def test_pytorch_example_runs(dataset):
    pytest.importorskip("torch")
    import torch

    torch.manual_seed(0)
    ns = _run(_examples()["torch"], dataset)  # one epoch, in two worker processes
    x, y, rows = next(iter(ns["loader"]))
    assert tuple(x.shape[1:]) == (4, 64, 64)
    assert str(x.dtype) == "torch.float32"
    assert set(y.tolist()) <= {0, 1}
    assert set(rows["split"]) == {"train"}
    n_train = pd.read_csv(dataset / "master_index.csv").query("split == 'train'").shape[0]
    assert len(ns["train"]) == n_train > 0
    assert torch.isfinite(ns["loss"]) and ns["optimizer"].state  # it took optimiser steps


def test_mlcroissant_example_runs(dataset, capsys):
    ns = _run(_examples()["mlcroissant"], dataset)
    assert ns["cutout"].shape == (64, 64, 4)
    assert ns["cutout"].dtype == np.float32
    assert ns["label"] in (0, 1)
    assert ns["split"] in ("train", "validation", "test")
    assert "train" in capsys.readouterr().out
