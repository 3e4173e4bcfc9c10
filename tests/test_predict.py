"""``cutouts predict``: tonight's jobs scored by a dataset's model, as a Prefect flow."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from croissant_cutouts.flows.build import build_dataset  # noqa: E402
from croissant_cutouts.flows.cli import main  # noqa: E402
from croissant_cutouts.flows.predict import predict_jobs  # noqa: E402
from croissant_cutouts.simulate import simulate_jobs  # noqa: E402
from croissant_cutouts.tasks.config import Params  # noqa: E402
from croissant_cutouts.tasks.evaluate.artifact import ModelError  # noqa: E402

pytestmark = pytest.mark.flow

PARAMS = (
    Params()
    .override("cutouts", retry_delay_s=0.0, workers=2)
    .override("train", epochs=6, leakage_check=False)
)
#: Simulated skies with bright injections: a small, quick training still separates the
#: classes well, so the test split and unseen jobs give stable ROC AUCs.
SKY = dict(size=(512, 512), fields=4, injections_per_mpx=400, bogus_density=2.0,
           mag_limit=23.5, gallery=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A dataset trained on 8 jobs (4 fields), and 4 jobs of other skies it never saw."""
    root = tmp_path_factory.mktemp("predict")
    simulate_jobs(root / "jobs", n_jobs=8, seed=11, **SKY)
    simulate_jobs(root / "tonight", n_jobs=4, seed=12, **SKY)
    summary = build_dataset(str(root / "jobs"), str(root / "dataset"), PARAMS)
    assert (root / "dataset" / "model.pt").is_file(), summary
    return {"root": root, "model": root / "dataset" / "model.pt",
            "metrics": root / "dataset" / "metrics.json", "tonight": root / "tonight"}


@pytest.fixture(scope="module")
def scored(trained) -> dict:
    out = trained["root"] / "scored"
    summary = predict_jobs(str(trained["model"]), str(trained["tonight"]), str(out), PARAMS)
    return {"out": out, "summary": summary}


def test_unseen_jobs_score_as_well_as_the_test_split(trained, scored):
    test_auc = json.loads(trained["metrics"].read_text())["models"]["cnn"]["test"]["roc_auc"]
    truth = scored["summary"].predictions["truth"]
    assert truth["real"] > 100 and truth["bogus"] > 100
    assert abs(truth["roc_auc"] - test_auc) <= 0.02, (truth["roc_auc"], test_auc)
    assert truth["roc_auc_ci95"][0] <= truth["roc_auc"] <= truth["roc_auc_ci95"][1]
    assert json.loads((scored["out"] / "predictions.json").read_text())["truth"] == truth


def test_predictions_csv_rows_are_the_index_rows(trained, scored):
    out = scored["out"]
    pred = pd.read_csv(out / "predictions.csv")
    index = pd.read_csv(out / "master_index.csv")
    assert list(pred.columns) == ["cutout_id", "job_id", "x", "y", "score", "real", "label"]
    for column in ("cutout_id", "job_id", "x", "y", "label"):
        assert pred[column].equals(index[column]), column
    assert pred["score"].between(0, 1).all()
    record = torch.load(trained["model"], weights_only=True)
    assert record["threshold"] == scored["summary"].predictions["model"]["threshold"]
    # real is the logit above the stored threshold: the score above its sigmoid
    cut = 1 / (1 + math.exp(-record["threshold"]))
    decided = (pred["score"] - cut).abs() > 1e-8
    assert ((pred["score"] > cut) == pred["real"].astype(bool))[decided].all()
    assert pred["real"].sum() == scored["summary"].predictions["called_real"] > 0
    # and the cutouts are there, in the chosen layout, checked like any dataset's
    assert len(list((out / "cutouts").glob("*.npy"))) == len(index)


def test_a_rerun_is_served_from_cache_and_byte_identical(trained, scored):
    out = scored["out"]
    before = (out / "predictions.csv").read_bytes()
    stamp = (out / "predictions.csv").stat().st_mtime_ns
    again = predict_jobs(str(trained["model"]), str(trained["tonight"]), str(out), PARAMS)
    assert again.from_cache == again.jobs == 4
    assert (out / "predictions.csv").stat().st_mtime_ns == stamp  # the score task was cached
    assert again.predictions == scored["summary"].predictions
    (out / "predictions.csv").unlink()  # gone: scored again, to the same bytes
    predict_jobs(str(trained["model"]), str(trained["tonight"]), str(out), PARAMS)
    assert (out / "predictions.csv").read_bytes() == before


def test_every_layout_scores_the_same_and_unlabelled_jobs_work(trained, make_job, tmp_path,
                                                               capsys):
    for k in range(3):
        rng = np.random.default_rng(k)
        make_job(f"jid{k + 1:04d}", shape=(60, 70), seed=k, catalog=pd.DataFrame({
            "x": rng.uniform(0, 69, 6), "y": rng.uniform(0, 59, 6),
            "match": [-1, 1, -1, -1, 2, -1]}))
    jobs = tmp_path / "jobs"
    tables = {}
    for layout in ("files", "shards", "parquet"):
        out = tmp_path / layout
        code = main(["predict", "-m", str(trained["model"]), "-i", str(jobs), "-o", str(out),
                     "--layout", layout, "--workers", "1"])
        assert code == 0
        tables[layout] = (out / "predictions.csv").read_bytes()
    assert tables["files"] == tables["shards"] == tables["parquet"]
    printed = capsys.readouterr().out
    assert f"predictions: {tmp_path / 'parquet' / 'predictions.csv'}" in printed
    assert "called real:" in printed
    # a RAPID job without truth files: empty labels, no AUC, and it says so
    import shutil

    unlabelled = tmp_path / "no-truth" / "jid0001"
    shutil.copytree(trained["tonight"] / "jid0001", unlabelled)
    for truth in [*unlabelled.glob("*_inject.txt"), *unlabelled.glob("Roman_TDS_index_*.txt")]:
        truth.unlink()
    jobs = unlabelled.parent
    summary = predict_jobs(str(trained["model"]), str(jobs), str(tmp_path / "unlabelled"),
                           PARAMS)
    pred = pd.read_csv(tmp_path / "unlabelled" / "predictions.csv")
    assert len(pred) == summary.cutouts > 0 and pred["label"].isna().all()
    assert summary.predictions["truth"]["labelled"] == 0
    assert "no ROC AUC" in summary.predictions["truth"]["note"]


def _record(trained) -> dict:
    return torch.load(trained["model"], weights_only=True)


class Payload:
    """A pickled object: loading it would run code of its class."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


@pytest.mark.parametrize("damage", ["truncated", "contract", "pickled", "not a model"])
def test_unusable_models_are_refused_before_any_job_is_read(trained, tmp_path, damage,
                                                            capsys):
    model = tmp_path / "model.pt"
    if damage == "truncated":
        model.write_bytes(trained["model"].read_bytes()[:5000])
    elif damage == "contract":
        torch.save({**_record(trained), "contract_version": 99}, model)
    elif damage == "pickled":
        torch.save({**_record(trained), "extra": Payload()}, model)
    else:
        model.write_text("hello")
    out = tmp_path / "out"
    with pytest.raises(ModelError, match=re.escape(str(model))):
        predict_jobs(str(model), str(trained["tonight"]), str(out), PARAMS)
    assert not out.exists()
    assert "this ran while loading" not in capsys.readouterr().out
    code = main(["predict", "-m", str(model), "-i", str(trained["tonight"]), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and f"cutouts: {model}:" in err and not out.exists()
    if damage == "contract":
        assert "cutout contract version 99" in err


def test_a_model_reading_catalog_features_scores_new_jobs_as_on_its_test_split(
        trained, scored, tmp_path, caplog):
    """``train.catalog``: trained on the index read through Croissant, scored from the CSV
    index of other jobs; the test split's ROC AUC is the same whichever way it is read."""
    import shutil

    from croissant_cutouts.tasks.evaluate.metrics import roc_auc
    from croissant_cutouts.tasks.evaluate.score import score_dataset
    from croissant_cutouts.tasks.evaluate.train import smoke_train

    dataset = trained["root"] / "dataset"
    params = PARAMS.train.model_copy(update={"catalog": True})
    metrics = smoke_train(dataset, params=params, output=tmp_path / "cat" / "metrics.json")
    cnn = metrics["models"]["cnn"]
    assert "catalog features (flux" in cnn["description"]
    model = tmp_path / "cat" / "model.pt"
    names = _record({"model": model})["architecture_kwargs"]["catalog"]
    assert {"qfit", "sharpness", "flux_fit"} <= set(names)
    # the training dataset scored as new jobs are: the same test-split figures
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy, ignore=shutil.ignore_patterns("model.pt", "metrics.json"))
    truth = score_dataset(copy, model)
    pred = pd.read_csv(copy / "predictions.csv")
    index = pd.read_csv(copy / "master_index.csv", usecols=["split", "label"])
    test = (index["split"] == "test").to_numpy()
    assert roc_auc(index["label"][test], pred["score"][test]) == pytest.approx(
        cnn["test"]["roc_auc"], abs=1e-6)
    assert truth["truth"]["roc_auc"] > 0.95
    assert set(truth["catalog_missing"]) == set(names)
    assert 0 <= min(truth["catalog_missing"].values()) < 0.5
    # tonight's jobs, one catalog column gone from their index: scored, as missing values
    out = scored["out"]
    tonight = tmp_path / "tonight"
    shutil.copytree(out, tonight)
    score_dataset(tonight, model)
    full = pd.read_csv(tonight / "predictions.csv")["score"]
    index = pd.read_csv(tonight / "master_index.csv", low_memory=False)
    index.drop(columns="qfit").to_csv(tonight / "master_index.csv", index=False)
    with caplog.at_level("WARNING"):
        summary = score_dataset(tonight, model)
    assert "has no column qfit, which the model reads" in caplog.text
    assert summary["catalog_missing"]["qfit"] == 1.0
    without = pd.read_csv(tonight / "predictions.csv")["score"]
    assert without.between(0, 1).all() and not np.allclose(without, full)
