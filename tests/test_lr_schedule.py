"""The learning-rate schedule of CNN training (``train.lr_schedule``)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from croissant_cutouts.tasks.config import TrainParams
from croissant_cutouts.tasks.evaluate import model as model_module
from croissant_cutouts.tasks.evaluate.metrics import roc_auc
from croissant_cutouts.tasks.evaluate.model import lr_schedule, train_member
from croissant_cutouts.tasks.evaluate.prepare import prepare_rows


def _optimizer(lr: float = 0.01) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=lr)


def test_constant_has_no_schedule_and_unknown_kinds_are_refused():
    assert lr_schedule(_optimizer(), "constant", 10) is None
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        lr_schedule(_optimizer(), "linear", 10)
    with pytest.raises(ValidationError, match="lr_schedule"):
        TrainParams(lr_schedule="linear")
    assert TrainParams().lr_schedule == "constant"


def test_cosine_falls_from_lr_to_zero_along_half_a_cosine():
    optimizer, steps = _optimizer(0.01), 20
    schedule = lr_schedule(optimizer, "cosine", steps)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [0.01 * (1 + math.cos(math.pi * k / steps)) / 2 for k in range(steps)]
    np.testing.assert_allclose(seen, expected, rtol=1e-9, atol=1e-12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert seen[0] == 0.01 and all(a > b for a, b in itertools.pairwise(seen))


def test_training_steps_the_cosine_once_per_batch_and_still_learns(monkeypatch, tmp_path):
    """Every optimizer step of every epoch moves the schedule; at the end the rate is 0, and
    the network still tells the learnable dataset's real candidates from its bogus ones."""
    from test_train import FAST, _write_dataset

    root = _write_dataset(tmp_path / "d")
    made = []

    def spy(optimizer, kind, steps):
        made.append((lr_schedule(optimizer, kind, steps), optimizer, steps))
        return made[-1][0]

    monkeypatch.setattr(model_module, "lr_schedule", spy)
    params = FAST.model_copy(update={"epochs": 4, "lr_schedule": "cosine"})
    prep = prepare_rows(root / "croissant.json", params, root=root)
    run = train_member(prep.data, prep.y, prep.sides, params, torch.device("cpu"))
    (schedule, optimizer, steps), = made
    batches = math.ceil(prep.sides["train"].sum() / params.batch_size)
    assert steps == params.epochs * batches
    assert schedule.last_epoch == steps  # stepped after each of them
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert roc_auc(prep.y[prep.sides["validation"]], run.logits["validation"]) > 0.9

    monkeypatch.setattr(model_module, "lr_schedule", lr_schedule)
    flat = train_member(prep.data, prep.y, prep.sides,
                        params.model_copy(update={"lr_schedule": "constant"}),
                        torch.device("cpu"))
    assert not np.array_equal(flat.logits["test"], run.logits["test"])
