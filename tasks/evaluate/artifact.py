"""The smoke-trained model as a file: ``model.pt``, what it holds and how it is read back.

``model.pt`` is a :func:`torch.save` of plain values only (str, int, float, bool, None,
lists, dicts and tensors), so :func:`torch.load` reads it with ``weights_only=True``: no
pickled code runs when a model from someone else is opened. It holds:

- ``format`` (:data:`FORMAT`) and ``format_version`` (:data:`FORMAT_VERSION`);
- ``architecture`` (a name of :data:`ARCHITECTURES`), ``architecture_version`` and
  ``architecture_kwargs`` (the constructor's arguments), and ``state_dict`` (the weights);
- ``contract_version``: the cutout contract the inputs followed
  (:data:`tasks.contract.CONTRACT_VERSION`), with ``input`` (shape ``[4, 64, 64]``
  channel-first, dtype, channel names);
- ``threshold``: the decision threshold on the logit, chosen on ``threshold_on``
  (``validation``, else ``train``) as the lowest with a false-positive rate at most
  ``threshold_target_fpr`` (0.01);
- ``dataset``: ``name``, ``version``, ``index_sha256`` and ``croissant_sha256`` of the
  dataset it was trained on; ``package_version`` and ``torch_version``.
"""

from __future__ import annotations

import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from croissant_cutouts.tasks.contract import CHANNELS, CONTRACT_VERSION, CUTOUT_SIZE
from croissant_cutouts.tasks.evaluate.model import CNNEnsemble, SmallCNN
from croissant_cutouts.tasks.infra.atomic import atomic_output

__all__ = [
    "ARCHITECTURES",
    "FORMAT",
    "FORMAT_VERSION",
    "ModelError",
    "load_model",
    "model_record",
    "save_model",
]

#: The ``format`` value of every model file of this tool.
FORMAT = "croissant-cutouts model"
#: Version of the model file's layout (the keys above); another version is refused.
FORMAT_VERSION = 1
#: Architectures a model file may name: constructor and the version this tool writes.
#: Earlier versions are read too: their arguments build the same network (``SmallCNN`` 1:
#: before ``scaling`` and ``crop``, no scaling and the whole cutout; ``SmallCNN`` 2 and
#: ``CNNEnsemble`` 1: before ``catalog``, pixels only; ``SmallCNN`` 3 and ``CNNEnsemble`` 2:
#: before ``orientations``, one orientation).
ARCHITECTURES: dict[str, tuple[type[nn.Module], int]] = {
    "SmallCNN": (SmallCNN, 4),
    "CNNEnsemble": (CNNEnsemble, 3),
}
_READS = {"SmallCNN": (1, 2, 3, 4), "CNNEnsemble": (1, 2, 3)}
_REQUIRED = ("format", "format_version", "architecture", "architecture_version",
             "architecture_kwargs", "state_dict", "contract_version", "threshold")


class ModelError(ValueError):
    """A model file that cannot be used: unreadable, of another format or contract."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {reason}")


def _package_version() -> str:
    try:
        return version("croissant-cutouts")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def model_record(
    model: nn.Module,
    threshold: float,
    threshold_on: str,
    dataset: dict[str, Any],
    target_fpr: float = 0.01,
) -> dict[str, Any]:
    """What :func:`save_model` writes: the weights (on the CPU) and what they expect."""
    name = type(model).__name__
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": name,
        "architecture_version": ARCHITECTURES[name][1],
        "architecture_kwargs": dict(model.kwargs),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "contract_version": CONTRACT_VERSION,
        "input": {"shape": [len(CHANNELS), CUTOUT_SIZE, CUTOUT_SIZE], "dtype": "float32",
                  "channels": list(CHANNELS), "layout": "channel-first (C, H, W)"},
        "threshold": float(threshold),
        "threshold_on": threshold_on,
        "threshold_target_fpr": float(target_fpr),
        "dataset": {k: dataset.get(k) for k in
                    ("name", "version", "index_sha256", "croissant_sha256")},
        "package_version": _package_version(),
        "torch_version": str(torch.__version__),
    }


def save_model(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` (:func:`model_record`) to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_output(path) as fh:
        torch.save(record, fh)
    return path


def _read(path: Path, device: torch.device | str) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``; any refusal becomes a :class:`ModelError`."""
    try:
        record = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated, not a torch file, or pickled objects in it
        raise ModelError(path, f"not a model file that loads safely ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ModelError(path, f"not a {FORMAT} file")
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise ModelError(path, f"lacks {', '.join(missing)}")
    return record


def _check(path: Path, record: dict[str, Any]) -> type[nn.Module]:
    """The architecture's class, once the format, contract and threshold are acceptable."""
    if record["format_version"] != FORMAT_VERSION:
        raise ModelError(path, f"format version {record['format_version']!r}; this tool "
                         f"reads {FORMAT_VERSION}")
    if record["contract_version"] != CONTRACT_VERSION:
        raise ModelError(path, f"its inputs follow cutout contract version "
                         f"{record['contract_version']!r}, this tool writes version "
                         f"{CONTRACT_VERSION}: its scores would not mean anything here")
    known = ARCHITECTURES.get(record["architecture"])
    if known is None or record["architecture_version"] not in _READS[record["architecture"]]:
        raise ModelError(path, f"architecture {record['architecture']!r} version "
                         f"{record['architecture_version']!r} is not one this tool builds")
    threshold = record["threshold"]
    if not isinstance(threshold, float) or not math.isfinite(threshold):
        raise ModelError(path, f"threshold {threshold!r} is not a finite number")
    return known[0]


def load_model(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Read ``model.pt``: the model in eval mode on ``device``, and its record without weights.

    Raises
    ------
    ModelError
        The file does not load with ``weights_only=True`` (damaged, or holds pickled
        objects), is of another format, follows another contract version, names an
        unknown architecture, or its weights do not fit that architecture.
    FileNotFoundError
        No file at ``path``.
    """
    path = Path(path)
    record = _read(path, device)
    cls = _check(path, record)
    try:
        model = cls(**record["architecture_kwargs"])
        model.load_state_dict(record["state_dict"], strict=True)
    except (TypeError, RuntimeError) as exc:
        raise ModelError(path, f"weights do not fit {record['architecture']}: "
                         f"{str(exc).splitlines()[0]}") from exc
    meta = {k: v for k, v in record.items() if k != "state_dict"}
    return model.to(device).eval(), meta
