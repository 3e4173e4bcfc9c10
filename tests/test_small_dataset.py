"""``cutouts run`` on too few jobs or sky fields to split: a dataset all the same, exit 0.

The dataset, ``croissant.json`` (valid for mlcroissant, the empty splits declared with zero
counts) and a smoke-train on every cutout, its metrics labelled as training-set figures in
``metrics.json``, ``report.md`` and the printed summary, with one warning for the whole run.
"""

from __future__ import annotations

import json
import logging
import warnings

import mlcroissant as mlc
import pandas as pd
import pytest

from croissant_cutouts.flows.cli import main
from croissant_cutouts.tasks.dataset.croissant import validate
from croissant_cutouts.tasks.verify import verify_dataset

pytestmark = pytest.mark.flow


@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory):
    """Two small simulated RAPID jobs of one sky field, both classes present."""
    from croissant_cutouts.simulate import simulate_jobs

    root = tmp_path_factory.mktemp("small") / "jobs"
    simulate_jobs(root, n_jobs=2, size=256, seed=4, fields=1, injections_per_mpx=400,
                  gallery=False)
    return root


def _warning_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "WARNING" in line or "Warning:" in line]


def test_run_on_two_jobs_trains_on_what_there_is(two_jobs, tmp_path, capsys, caplog):
    out = tmp_path / "ds"
    with warnings.catch_warnings(record=True) as python_warnings, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        status = main(["run", "-i", str(two_jobs), "-o", str(out), "--epochs", "1"])
    printed = capsys.readouterr()
    assert status == 0, printed.err[-3000:]

    # the dataset and its metadata: every cutout in train, the other splits declared empty
    index = pd.read_csv(out / "master_index.csv")
    assert index["job_id"].nunique() == 2 and set(index["split"]) == {"train"}
    validate(out / "croissant.json")  # mlcroissant: raises on any error or warning
    records = mlc.Dataset(jsonld=str(out / "croissant.json")).records("splits")
    counts = {_text(r["splits/name"]): r["splits/cutouts"] for r in records}
    assert counts == {"train": len(index), "validation": 0, "test": 0}
    assert verify_dataset(out, two_jobs).ok

    # metrics.json and report.md: training-set figures, and they say so
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["evaluated_on"], metrics["held_out"]) == ("train", False)
    labelled = int(index["label"].notna().sum())
    assert metrics["test"]["n"] == labelled and metrics["target"]["met"] is None
    caution = metrics["caution"]
    assert caution.startswith("TRAINING-SET FIGURES") and "2 job(s), 1 sky field(s)" in caution
    assert (out / "report.md").read_text().splitlines()[2] == f"> **{caution}.**"

    # the printed summary: the caution once, before the numbers it qualifies
    lines = printed.out.splitlines()
    assert lines.count(caution) == 1
    assert lines[lines.index(caution) + 1].startswith("train split: ")

    # one warning for the whole run (logged when the index is written), no other anywhere
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1, logged
    assert logged[0].startswith("every cutout is in the train split: cannot split by job: "
                                "need at least 3 groups, got 2")
    # (libraries' DeprecationWarnings, hidden outside __main__ by Python's default filters, aside)
    shown_to_users = [w for w in python_warnings if not issubclass(w.category, DeprecationWarning)]
    assert [str(w.message) for w in shown_to_users] == []
    shown = _warning_lines(printed.out + printed.err)
    assert len(shown) <= 1 and all("every cutout is in the train split" in s for s in shown)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
