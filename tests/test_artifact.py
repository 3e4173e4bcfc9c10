"""``model.pt``: written whole, read back safely, refused when it cannot be trusted."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from croissant_cutouts.tasks.contract import CONTRACT_VERSION
from croissant_cutouts.tasks.evaluate.artifact import (
    FORMAT,
    ModelError,
    load_model,
    model_record,
    save_model,
)
from croissant_cutouts.tasks.evaluate.model import SmallCNN

DATASET = {"name": "d", "version": "1.0.0", "index_sha256": "ab" * 32, "croissant_sha256": None}


def _record(width: int = 8) -> dict:
    torch.manual_seed(0)
    return model_record(SmallCNN(width=width).eval(), 0.25, "validation", DATASET)


def test_a_saved_model_loads_with_its_weights_and_threshold(tmp_path):
    record = _record()
    path = save_model(tmp_path / "model.pt", record)
    model, meta = load_model(path)
    x = torch.rand(3, 4, 64, 64)
    original = SmallCNN(width=8)
    original.load_state_dict(record["state_dict"])
    with torch.no_grad():
        assert torch.equal(model(x), original.eval()(x))
    assert not model.training
    assert meta["threshold"] == 0.25 and meta["threshold_on"] == "validation"
    assert meta["contract_version"] == CONTRACT_VERSION and meta["format"] == FORMAT
    assert meta["architecture_kwargs"] == {"channels": 4, "width": 8}
    assert meta["input"]["shape"] == [4, 64, 64] and meta["dataset"] == DATASET
    assert "state_dict" not in meta
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left


def test_the_same_weights_give_the_same_bytes(tmp_path):
    a = save_model(tmp_path / "a" / "model.pt", _record())
    b = save_model(tmp_path / "b" / "model.pt", _record())
    assert a.read_bytes() == b.read_bytes()


class _Payload:
    """Runs code when unpickled: what a malicious model file would hold."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_model_file_holding_a_pickled_object_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    record = {**_record(), "extra": _Payload(str(marker))}
    path = tmp_path / "model.pt"
    torch.save(record, path)
    with pytest.raises(ModelError, match="not a model file that loads safely"):
        load_model(path)
    assert not marker.exists()  # the payload never ran


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "loads safely"),  # truncated
        (lambda b: b"not a zip file at all", "loads safely"),
    ],
)
def test_a_damaged_model_file_is_refused(tmp_path, damage, message):
    path = save_model(tmp_path / "model.pt", _record())
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelError, match=message) as err:
        load_model(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"contract_version": CONTRACT_VERSION + 1}, "cutout contract version"),
        ({"format": "something else"}, "not a croissant-cutouts model file"),
        ({"format_version": 99}, "format version 99"),
        ({"architecture": "ResNet50"}, "architecture 'ResNet50'"),
        ({"architecture_version": 7}, "version 7 is not one"),
        ({"threshold": float("nan")}, "threshold nan"),
        ({"architecture_kwargs": {"channels": 4, "width": 16}}, "weights do not fit"),
    ],
)
def test_a_mismatched_model_is_refused(tmp_path, change, message):
    path = tmp_path / "model.pt"
    save_model(path, {**_record(), **change})
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_a_model_without_weights_is_refused(tmp_path):
    record = _record()
    del record["state_dict"]
    buffer = io.BytesIO()
    torch.save(record, buffer)
    (tmp_path / "model.pt").write_bytes(buffer.getvalue())
    with pytest.raises(ModelError, match="lacks state_dict"):
        load_model(tmp_path / "model.pt")


def test_no_model_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(Path(tmp_path / "missing.pt"))


def test_an_ensemble_with_scaling_and_crop_loads_and_scores_as_saved(tmp_path):
    from croissant_cutouts.tasks.evaluate.model import CNNEnsemble

    torch.manual_seed(1)
    ensemble = CNNEnsemble(3, width=8, scaling="limits", crop=32).eval()
    path = save_model(tmp_path / "model.pt",
                      model_record(ensemble, -1.5, "validation", DATASET))
    model, meta = load_model(path)
    assert meta["architecture"] == "CNNEnsemble" and meta["architecture_version"] == 3
    assert meta["architecture_kwargs"] == {"members": 3, "width": 8, "scaling": "limits",
                                           "crop": 32}
    x, limits = torch.rand(5, 4, 64, 64), torch.rand(5, 4, 2).cumsum(dim=2)
    with torch.no_grad():
        expected = torch.stack([m(x, limits) for m in ensemble.members]).mean(dim=0)
        assert torch.equal(model(x, limits), ensemble(x, limits))
        torch.testing.assert_close(model(x, limits), expected)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_earlier_small_cnn_file_still_loads_as_the_same_network(tmp_path, version):
    record = _record()
    record["architecture_version"] = version  # before scaling and crop, catalog, orientations
    path = save_model(tmp_path / "model.pt", record)
    model, _ = load_model(path)
    x = torch.rand(2, 4, 64, 64)
    original = SmallCNN(width=8)
    original.load_state_dict(record["state_dict"])
    with torch.no_grad():
        assert torch.equal(model(x), original.eval()(x))
    assert model.kwargs == {"channels": 4, "width": 8}  # no scaling, the whole cutout
    record["architecture"], record["architecture_version"] = "CNNEnsemble", 4
    with pytest.raises(ModelError, match="'CNNEnsemble' version 4 is not one"):
        load_model(save_model(tmp_path / "e.pt", record))
