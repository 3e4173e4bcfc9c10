"""Catalog features: read from the index, scaled inside the network, learnt from, scored with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from astropy.stats import mad_std  # noqa: E402

from croissant_cutouts.tasks.config import TrainParams  # noqa: E402
from croissant_cutouts.tasks.evaluate.artifact import (  # noqa: E402
    load_model,
    model_record,
    save_model,
)
from croissant_cutouts.tasks.evaluate.data import CutoutDataset, make_loader  # noqa: E402
from croissant_cutouts.tasks.evaluate.features import (  # noqa: E402
    CATALOG_FEATURES,
    CatalogScale,
    catalog_features,
    feature_matrix,
)
from croissant_cutouts.tasks.evaluate.metrics import roc_auc  # noqa: E402
from croissant_cutouts.tasks.evaluate.model import (  # noqa: E402
    CNNEnsemble,
    SmallCNN,
    catalog_names,
    predict_logits,
    train_member,
)

DATASET = {"name": "d", "version": "1.0.0", "index_sha256": "ab" * 32, "croissant_sha256": None}


def test_feature_matrix_reads_numbers_and_makes_the_rest_nan():
    frame = pd.DataFrame({"qfit": [0.5, "bad", np.inf, None], "flux": [1, 2, 3, -np.inf],
                          "x": [1.0, 2.0, 3.0, 4.0]})
    out = feature_matrix(frame, ["flux", "qfit", "sharpness"])
    assert out.dtype == np.float64 and out.shape == (4, 3)
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3, np.nan])
    np.testing.assert_array_equal(out[:, 1], [0.5, np.nan, np.nan, np.nan])
    assert np.isnan(out[:, 2]).all()  # a column the index lacks


def test_catalog_features_are_the_known_columns_with_a_value_in_the_rows():
    frame = pd.DataFrame({"flux": [1.0, 2.0], "qfit": [np.nan, 0.3], "sharpness": [np.nan] * 2,
                          "x": [1.0, 2.0], "label": [0, 1]})
    assert catalog_features(frame) == ["flux", "qfit"]
    assert catalog_features(frame, np.array([True, False])) == ["flux"]
    assert set(catalog_features(frame)) <= set(CATALOG_FEATURES)


def test_catalog_scale_centres_on_the_median_in_robust_units():
    rng = np.random.default_rng(0)
    raw = np.column_stack([
        rng.lognormal(3, 2, 500),                    # a flux over decades
        np.r_[np.zeros(450), np.ones(50)],           # a flag, mostly 0: no MAD
        np.full(500, 7.0),                           # constant
        np.full(500, np.nan),                        # never measured
    ])
    raw[::10, 0] = np.nan
    scale = CatalogScale(4).fit(raw)
    assert scale.centre[0] == pytest.approx(np.nanmedian(raw[:, 0]), rel=1e-6)
    assert scale.scale[0] == pytest.approx(mad_std(raw[:, 0], ignore_nan=True), rel=1e-6)
    assert scale.scale[1] == pytest.approx(np.std(raw[:, 1]), rel=1e-6)  # std where MAD is 0
    assert scale.centre[2] == 7 and scale.scale[2] == 1
    assert scale.centre[3] == 0 and scale.scale[3] == 1
    out = scale(torch.as_tensor(raw[:3], dtype=torch.float32)).numpy()
    assert out.shape == (3, 8)
    expected = np.arcsinh((raw[:3, 0] - np.nanmedian(raw[:, 0]))
                          / mad_std(raw[:, 0], ignore_nan=True))
    np.testing.assert_allclose(out[1:, 0], expected[1:], rtol=1e-5)
    assert out[0, 0] == 0 and out[0, 4] == 1  # row 0 is missing its flux: 0 and flagged
    np.testing.assert_array_equal(out[:, 7], 1)  # the unmeasured column: always flagged
    np.testing.assert_array_equal(out[1:, 4:7], 0)
    # far values grow like a logarithm, not linearly
    far = scale(torch.tensor([[1e12, 0, 7, np.nan]], dtype=torch.float32))
    assert 20 < far[0, 0] < 40


def test_a_network_that_reads_the_catalog_needs_it():
    torch.manual_seed(0)
    net = SmallCNN(width=4, crop=16, catalog=["flux", "qfit"]).eval()
    assert net.kwargs["catalog"] == ["flux", "qfit"] and catalog_names(net) == ["flux", "qfit"]
    x = torch.rand(3, 4, 64, 64)
    with pytest.raises(ValueError, match="reads 2 catalog features \\(flux, qfit\\)"):
        net(x)
    with pytest.raises(ValueError, match="reads 2 catalog features"):
        net(x, None, torch.rand(3, 5))
    with torch.no_grad():
        assert net(x, None, torch.rand(3, 2)).shape == (3,)
        a = net(x, None, torch.tensor([[1.0, 2.0]] * 3))
        b = net(x, None, torch.tensor([[1.0, 9.0]] * 3))
    assert not torch.equal(a, b)  # the catalog reaches the logit
    assert catalog_names(SmallCNN(width=4)) == [] and "catalog" not in SmallCNN(width=4).kwargs
    assert catalog_names(CNNEnsemble(2, width=4, catalog=["flux"])) == ["flux"]


@pytest.fixture(scope="module")
def noise_with_a_telling_feature(tmp_path_factory):
    """Cutouts of pure noise, the label told only by a catalog feature (and a useless one)."""
    n = 600
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("catalog") / "shard.npy"
    np.save(path, rng.random((n, 64, 64, 4), dtype=np.float32))
    y = (rng.random(n) < 0.3).astype(np.int64)
    qfit = np.where(y == 1, rng.normal(0.1, 0.05, n), rng.normal(0.6, 0.2, n))
    qfit[rng.random(n) < 0.1] = np.nan  # some candidates lack the PSF fit
    catalog = pd.DataFrame({"qfit": qfit, "flux": rng.lognormal(3, 2, n)})
    sides = {"train": np.arange(n) < 400, "validation": np.arange(n) >= 400}
    return path, y, catalog, sides


@pytest.mark.parametrize("reads_catalog", [True, False])
def test_the_network_learns_from_catalog_features(noise_with_a_telling_feature, reads_catalog):
    path, y, catalog, sides = noise_with_a_telling_feature
    data = CutoutDataset([path] * len(y), y, rows=np.arange(len(y)),
                         catalog=catalog if reads_catalog else None)
    params = TrainParams(epochs=4, width=4, crop=16, augment=False, scaling="none")
    run = train_member(data, y, sides, params, torch.device("cpu"))
    auc = roc_auc(y[sides["validation"]], run.logits["validation"])
    if reads_catalog:  # pixels are noise; the catalog tells the classes apart
        assert auc > 0.9, auc  # a tenth lack the feature: no better than chance there
        train_qfit = catalog["qfit"].to_numpy()[sides["train"]]
        assert run.model.catalog_scale.centre[0] == pytest.approx(np.nanmedian(train_qfit))
    else:
        assert 0.35 < auc < 0.65, auc


def test_a_saved_catalog_model_scores_as_trained(noise_with_a_telling_feature, tmp_path):
    path, y, catalog, sides = noise_with_a_telling_feature
    data = CutoutDataset([path] * len(y), y, rows=np.arange(len(y)), catalog=catalog)
    params = TrainParams(epochs=1, width=4, crop=16, members=2, scaling="none")
    runs = [train_member(data, y, sides, params.model_copy(update={"seed": s}),
                         torch.device("cpu")) for s in (0, 1)]
    ensemble = CNNEnsemble(2, **runs[0].model.kwargs)
    for member, run in zip(ensemble.members, runs, strict=True):
        member.load_state_dict(run.model.state_dict())
    saved = save_model(tmp_path / "model.pt",
                       model_record(ensemble.eval(), 0.0, "validation", DATASET))
    model, meta = load_model(saved)
    assert meta["architecture_version"] == 3
    assert meta["architecture_kwargs"]["catalog"] == ["qfit", "flux"]
    assert torch.equal(model.members[1].catalog_scale.scale, runs[1].model.catalog_scale.scale)
    loader = make_loader(data, 128)
    np.testing.assert_array_equal(predict_logits(model, loader),
                                  predict_logits(ensemble, loader))


def test_a_network_that_reads_limits_still_asks_for_them_beside_a_catalog(
        noise_with_a_telling_feature):
    path, y, catalog, _ = noise_with_a_telling_feature
    data = CutoutDataset([path] * 3, y[:3], rows=np.arange(3), catalog=catalog[:3])
    *_, limits, features = data.__getitems__([0, 1, 2])
    assert limits is None and features.shape == (3, 2) and features.dtype == torch.float32
    assert data[1][2] is None and data[1][3].shape == (2,)
    net = SmallCNN(width=4, scaling="limits", crop=16, catalog=["qfit", "flux"])
    with pytest.raises(ValueError, match="reads each cutout's ZScale limits"):
        predict_logits(net, make_loader(data, 2))
