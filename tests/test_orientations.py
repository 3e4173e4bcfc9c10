"""Scoring averaged over the eight orientations of each cutout (test-time augmentation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from croissant_cutouts.tasks.config import TrainParams
from croissant_cutouts.tasks.evaluate.artifact import load_model, model_record, save_model
from croissant_cutouts.tasks.evaluate.data import CutoutDataset, make_loader
from croissant_cutouts.tasks.evaluate.model import (
    CNNEnsemble,
    SmallCNN,
    dihedral_views,
    predict_logits,
    set_orientations,
    train_cnn,
)

DATASET = {"name": "d", "version": "1.0.0", "index_sha256": "ab" * 32, "croissant_sha256": None}


def _turned(x: torch.Tensor, turn: int, flip: bool) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if flip else x, turn, dims=(-2, -1))


def _inputs(n: int = 6, features: int = 2) -> tuple[torch.Tensor, ...]:
    """Cutouts, per-cutout limits (all different) and catalog features (some missing)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(n, 4, 64, 64, generator=gen)
    limits = torch.rand(n, 4, 2, generator=gen).cumsum(dim=2) * torch.arange(1, n + 1)[:, None,
                                                                                      None]
    catalog = torch.randn(n, features, generator=gen)
    catalog[0, 1] = float("nan")
    return x, limits, catalog


def test_dihedral_views_are_the_eight_orientations_view_major():
    x = torch.arange(3 * 2 * 4 * 4, dtype=torch.float32).reshape(3, 2, 4, 4)
    views = dihedral_views(x)
    assert views.shape == (24, 2, 4, 4)
    for v, (flip, turn) in enumerate((f, t) for f in (False, True) for t in range(4)):
        assert torch.equal(views[v * 3 : (v + 1) * 3], _turned(x, turn, flip))
    assert len({tuple(views[v * 3].flatten().tolist()) for v in range(8)}) == 8


def test_eight_orientations_give_the_mean_of_the_turned_logits_and_ignore_orientation():
    torch.manual_seed(0)
    net = SmallCNN(width=4, scaling="limits", crop=32, catalog=["a", "b"]).eval()
    x, limits, catalog = _inputs()
    with torch.no_grad():
        turned = torch.stack([net(_turned(x, t, f), limits, catalog)
                              for f in (False, True) for t in range(4)])
        set_orientations(net, 8)
        averaged = net(x, limits, catalog)
        torch.testing.assert_close(averaged, turned.mean(dim=0))
        for turn, flip in ((1, False), (2, True), (3, True)):  # any orientation scores alike
            torch.testing.assert_close(net(_turned(x, turn, flip), limits, catalog), averaged)
        assert not torch.allclose(turned[0], averaged)  # the network itself is not invariant
    net.train()
    torch.manual_seed(1)
    one = net(x, limits, catalog)
    assert one.shape == (6,)  # training mode: one orientation (batch norm sees B, not 8 B)


def test_orientations_are_recorded_and_a_saved_model_scores_as_it_did(tmp_path):
    torch.manual_seed(2)
    ensemble = set_orientations(CNNEnsemble(2, width=4, scaling="limits", crop=32), 8).eval()
    assert ensemble.kwargs["orientations"] == 8
    assert all(m.kwargs["orientations"] == 8 for m in ensemble.members)
    path = save_model(tmp_path / "model.pt", model_record(ensemble, 0.0, "validation", DATASET))
    model, meta = load_model(path)
    assert meta["architecture_version"] == 3
    assert meta["architecture_kwargs"]["orientations"] == 8
    x, limits, _ = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x, limits), ensemble(x, limits))
    set_orientations(model, 1)
    assert "orientations" not in model.kwargs and model.members[0].orientations == 1
    with pytest.raises(ValueError, match="orientations must be one of"):
        set_orientations(model, 4)


def test_eight_orientations_need_augmentation():
    assert TrainParams().orientations == 1
    assert TrainParams(orientations=8).orientations == 8
    assert TrainParams(augment=False, orientations=1).orientations == 1
    with pytest.raises(ValidationError, match="never saw"):
        TrainParams(augment=False, orientations=8)
    with pytest.raises(ValidationError):
        TrainParams(orientations=4)


def test_an_ensemble_is_trained_in_one_orientation_and_scores_in_eight(tmp_path):
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 40)
    stack = rng.normal(0.5, 0.05, (len(y), 64, 64, 4)).astype(np.float32)  # as stored
    stack[y == 1, 30:34, 28:34, 2] += 0.4  # an off-centre, oriented blob marks the reals
    path = tmp_path / "shard.npy"
    np.save(path, stack)
    data = CutoutDataset([str(path)] * len(y), y, rows=np.arange(len(y)))
    sides = {"train": np.arange(len(y)) < 48, "validation": (np.arange(len(y)) >= 48)
             & (np.arange(len(y)) < 64), "test": np.arange(len(y)) >= 64}
    params = TrainParams(epochs=1, width=4, crop=32, members=2, scaling="none", device="cpu",
                         orientations=8)
    run = train_cnn(data, y, sides, params, torch.device("cpu"))
    assert run.model.kwargs["orientations"] == 8
    loader = make_loader(CutoutDataset([str(path)] * 16, y[64:], rows=np.arange(64, 80)), 8)
    np.testing.assert_allclose(run.logits["test"], predict_logits(run.model, loader),
                               rtol=1e-5, atol=1e-6)
    one = predict_logits(set_orientations(run.model, 1), loader)
    assert not np.allclose(one, run.logits["test"])
