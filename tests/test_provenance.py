"""Real jobs are not published with the simulator's Responsible-AI texts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from croissant_cutouts.flows.cli import main
from croissant_cutouts.simulate import simulate_jobs
from croissant_cutouts.tasks.config import SIMULATOR_RAI_TEXTS, CroissantParams, load_params
from croissant_cutouts.tasks.dataset.croissant import CroissantError, write_croissant
from croissant_cutouts.tasks.dataset.cutout import cut_job
from croissant_cutouts.tasks.dataset.index import write_index
from croissant_cutouts.tasks.dataset.normalize import job_limits
from croissant_cutouts.tasks.errors import CatalogError
from croissant_cutouts.tasks.inputs.load import discover_jobs, load_job

ROOT = Path(__file__).resolve().parents[1]
OWN_TEXTS = {
    "data_collection": "RAPID jobs of the 2026 Roman campaign, pipeline build 1.4.",
    "data_limitations": ("Three SCAs only.",),
    "data_biases": ("Bright fields over-represented.",),
    "data_social_impact": "None beyond astronomy.",
}


def _index(jobs: Path, out: Path) -> Path:
    """Cut and index every job of ``jobs`` with the plain functions (no flow)."""
    results = []
    for spec in discover_jobs(jobs):
        job = load_job(spec)
        results.append(cut_job(job, job_limits(job), out))
    write_index(results, out)
    return out / "master_index.csv"


@pytest.fixture(scope="module")
def real_like(tmp_path_factory) -> Path:
    """Seed-layout jobs as the seed's own folders are: no simulator record."""
    from conftest import SEED_FILES, ramp_image, write_fits

    root = tmp_path_factory.mktemp("real")
    for k in range(2):
        job = root / "jobs" / f"jid{k + 1:04d}"
        job.mkdir(parents=True)
        for c, name in enumerate(SEED_FILES.values()):
            write_fits(job / name, ramp_image((40, 50), seed=k + c) * (c + 1))
        pd.DataFrame({"x": [5.0, 20.0, 30.0], "y": [5.0, 20.0, 10.0], "match": [-1, 0, -1]}
                     ).to_csv(job / "psfcat.csv", index=False)
    return _index(root / "jobs", root / "dataset")


def test_null_in_params_yaml_means_the_built_in_text():
    params = load_params(ROOT / "params.yaml").croissant
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["croissant"]
    assert {"url", *SIMULATOR_RAI_TEXTS} <= set(section)
    assert all(section[name] is None for name in SIMULATOR_RAI_TEXTS)
    assert params == CroissantParams(url=section["url"])
    assert params.simulator_texts() == list(SIMULATOR_RAI_TEXTS)
    assert CroissantParams(**OWN_TEXTS).simulator_texts() == []


def test_real_jobs_refuse_the_simulators_texts(real_like, provenance, tmp_path):
    with pytest.raises(CroissantError) as err:
        write_croissant(real_like, tmp_path / "croissant.json", CroissantParams())
    message = str(err.value)
    assert "real jobs" in message and "params.yaml" in message
    for name in SIMULATOR_RAI_TEXTS:
        assert f"croissant.{name}" in message
    assert not (tmp_path / "croissant.json").exists()
    # one text of our own is not enough: the others still describe the simulator
    with pytest.raises(CroissantError, match=r"croissant\.data_biases"):
        write_croissant(real_like, tmp_path / "croissant.json",
                        CroissantParams(data_collection=OWN_TEXTS["data_collection"]))


def test_real_jobs_publish_texts_of_their_own(real_like, provenance, tmp_path):
    out = write_croissant(real_like, tmp_path / "croissant.json", CroissantParams(**OWN_TEXTS))
    meta = json.loads(out.read_text())
    assert meta["rai:dataCollection"] == OWN_TEXTS["data_collection"]
    assert OWN_TEXTS["data_biases"][0] in json.dumps(meta["rai:dataBiases"])


def test_the_croissant_command_says_what_to_set(real_like, provenance, tmp_path, capsys):
    code = main(["croissant", "-c", str(real_like), "-o", str(real_like.parent / "c.json")])
    assert code == 1
    assert "describe your data in the croissant section of params.yaml" in capsys.readouterr().err
    own = tmp_path / "params.yaml"
    own.write_text(yaml.safe_dump({"croissant": {k: v if isinstance(v, str) else list(v)
                                                 for k, v in OWN_TEXTS.items()}}))
    code = main(["croissant", "-c", str(real_like), "-o", str(real_like.parent / "c.json"),
                 "--params", str(own)])
    assert code == 0


@pytest.mark.parametrize("layout", ["seed", "rapid"])
def test_simulated_jobs_keep_the_built_in_texts(layout, provenance, tmp_path):
    simulate_jobs(tmp_path / "jobs", n_jobs=2, size=256, seed=3, fields=2, layout=layout)
    index = _index(tmp_path / "jobs", tmp_path / "dataset")
    assert pd.read_csv(index)["bogus_kind"].notna().any()
    write_croissant(index, tmp_path / "dataset" / "croissant.json", CroissantParams())
    if layout == "rapid":  # without the simulator's sidecar, RAPID jobs are real ones
        for job in (tmp_path / "jobs").glob("jid*"):
            (job / "simulated_candidate_kinds.txt").unlink()
        index = _index(tmp_path / "jobs", tmp_path / "again")
        with pytest.raises(CroissantError, match="real jobs"):
            write_croissant(index, tmp_path / "again" / "croissant.json", CroissantParams())


def test_a_simulated_kind_the_simulator_never_writes_is_refused(make_job):
    catalog = pd.DataFrame({"x": [5.0, 9.0], "y": [5.0, 9.0], "match": [-1, -1],
                            "simulated_kind": ["noise", "gremlin"]})
    job = make_job(catalog=catalog)
    spec = discover_jobs(job.parent)[0]
    with pytest.raises(CatalogError) as err:
        load_job(spec)
    assert err.value.job_id == "jid0001" and "'gremlin'" in str(err.value)
    assert "psfcat.csv" in str(err.value) and "row 1" in str(err.value)


def test_simulated_kinds_become_bogus_kinds_of_bogus_rows(make_job):
    catalog = pd.DataFrame({"x": [5.0, 9.0, 12.0], "y": [5.0, 9.0, 12.0], "match": [-1, 3, -1],
                            "simulated_kind": ["cosmic_ray", "real", "real"]})
    table = load_job(discover_jobs(make_job(catalog=catalog).parent)[0]).table
    assert list(table["label"]) == [0, 1, 0]
    kinds = table["bogus_kind"].astype(object).where(table["bogus_kind"].notna(), None)
    assert list(kinds) == ["cosmic_ray", None, "unmatched_real"]
    assert np.all(table["labelled"])
