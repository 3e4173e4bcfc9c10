"""croissant.json: valid for mlcroissant, complete, and readable by a seed-style client."""

from __future__ import annotations

import json
import os

import mlcroissant as mlc
import numpy as np
import pandas as pd
import pytest

from croissant_cutouts.tasks.config import CroissantParams
from croissant_cutouts.tasks.contract import INDEX_SCHEMA
from croissant_cutouts.tasks.dataset.croissant import (
    CroissantError,
    validate,
    write_croissant,
)
from croissant_cutouts.tasks.dataset.cutout import cut_job
from croissant_cutouts.tasks.dataset.index import write_index
from croissant_cutouts.tasks.dataset.normalize import job_limits
from croissant_cutouts.tasks.infra.digests import sha256_file
from croissant_cutouts.tasks.inputs.load import discover_jobs, load_job


@pytest.fixture
def dataset(tmp_path, make_job):
    make_job("jid0001", seed=1)
    make_job("jid0002", seed=2, catalog="x,y,match\n3,4,-1\n5,6,2\n100,100,-1\n")
    out = tmp_path / "ds"
    results = []
    for spec in discover_jobs(tmp_path / "jobs"):
        job = load_job(spec)
        results.append(cut_job(job, job_limits(job), out))
    write_index(results, out)
    return out


def test_metadata_fields_and_validation(dataset):
    path = write_croissant(dataset / "master_index.csv", dataset / "croissant.json")
    doc = json.loads(path.read_text())
    for key in ("name", "description", "url", "license", "creator", "datePublished", "version",
                "citeAs"):
        assert doc.get(key), key
    files = {d["@id"]: d for d in doc["distribution"]}
    assert files["master_index.csv"]["sha256"] == sha256_file(dataset / "master_index.csv")
    assert files["cutout-files"]["includes"] == "cutouts/*.npy"
    record_set = next(r for r in doc["recordSet"] if r["@id"] == "transient_candidates")
    assert record_set["@id"] == "transient_candidates"
    ids = {f["@id"] for f in record_set["field"]}
    for name in ("cutout_id", "job_id", "label", "x", "y", "cutout_path", "flux", "fwhm",
                 "elongation"):
        assert f"transient_candidates/{name}" in ids
    path_field = next(f for f in record_set["field"] if f["@id"].endswith("/cutout_path"))
    assert path_field["source"]["extract"]["column"] == "cutout_filename"
    assert len(record_set["field"]) == len(INDEX_SCHEMA)
    validate(path)  # no error, no warning


def test_records_iterate_to_index_row_count(dataset):
    write_croissant(dataset / "master_index.csv", dataset / "croissant.json")
    records = list(mlc.Dataset(jsonld=str(dataset / "croissant.json")).records(
        "transient_candidates"))
    index = pd.read_csv(dataset / "master_index.csv")
    assert len(records) == len(index) == 14
    assert [r["transient_candidates/cutout_id"] for r in records] == index["cutout_id"].tolist()
    digests = [r["transient_candidates/sha256"] for r in records]  # generated from the schema
    assert [d.decode() for d in digests] == index["sha256"].tolist()


def test_output_elsewhere_uses_relative_paths(dataset, tmp_path):
    out = tmp_path / "meta" / "croissant.json"
    write_croissant(dataset / "master_index.csv", out)
    records = list(mlc.Dataset(jsonld=str(out)).records("transient_candidates"))
    assert len(records) == 14


def test_params_are_written(dataset):
    params = CroissantParams(name="my-set", version="2.0.1", date_published="2026-01-02")
    doc = json.loads(write_croissant(dataset / "master_index.csv", dataset / "c.json",
                                     params).read_text())
    assert (doc["name"], doc["version"]) == ("my-set", "2.0.1")
    assert doc["datePublished"].startswith("2026-01-02")


def test_bad_metadata_fails(dataset):
    with pytest.raises(CroissantError, match="lacks column"):
        pd.read_csv(dataset / "master_index.csv").drop(columns="label").to_csv(
            dataset / "bad.csv", index=False)
        write_croissant(dataset / "bad.csv", dataset / "c.json")
    with pytest.raises(ValueError):
        CroissantParams(license="")
    # bypass the config's own check: a warning from mlcroissant also fails the step
    no_license = CroissantParams.model_construct(**{**CroissantParams().model_dump(),
                                                    "license": ""})
    with pytest.raises(CroissantError, match="license"):
        write_croissant(dataset / "master_index.csv", dataset / "c.json", no_license)


def test_seed_style_client_trains_unchanged(dataset):
    """A client written the way the seed's trainer is: records, label, cutout_path, np.load."""
    import torch
    from torch import nn

    write_croissant(dataset / "master_index.csv", dataset / "croissant.json")
    ds = mlc.Dataset(jsonld=str(dataset / "croissant.json"))
    images, labels = [], []
    for record in ds.records(record_set="transient_candidates"):
        label = record["transient_candidates/label"]
        path = record["transient_candidates/cutout_path"]
        if isinstance(path, bytes):
            path = path.decode("utf-8")
        images.append(np.load(os.path.join(dataset, path)))
        labels.append(label)
    x = torch.tensor(np.stack(images)).permute(0, 3, 1, 2)
    y = torch.tensor(labels, dtype=torch.float32)
    model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert x.shape == (14, 4, 64, 64) and np.isfinite(losses).all()
