"""The smoke-train model: a small CNN, its training loop and its augmentation.

Conventions
-----------
- Input (B, 4, 64, 64) float32 in [0, 1], channel-first (science, reference, difference,
  score); with ``scaling="limits"`` also each job's ZScale limits (B, 4, 2), and with catalog
  features their raw values (B, k), NaN where missing. Labels: 1 real, 0 bogus. Scores are
  logits (float32, unbounded); probabilities are ``sigmoid(logit)``.
- The real class is rare (typically 3-15 %), so the loss weighs real candidates by
  ``n_bogus / n_real`` of the training split.
"""


import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from croissant_cutouts.tasks.config import TrainParams
from croissant_cutouts.tasks.contract import CHANNELS, CUTOUT_SIZE
from croissant_cutouts.tasks.evaluate.data import CutoutDataset, make_loader
from croissant_cutouts.tasks.evaluate.features import CatalogScale
from croissant_cutouts.tasks.evaluate.metrics import (  # some re-exported
    roc_auc,
)
from croissant_cutouts.tasks.infra.progress import progress_bar

__all__ = [
    "ORIENTATIONS",
    "SCALINGS",
    "CNNEnsemble",
    "LimitScale",
    "SmallCNN",
    "TrainedCNN",
    "build_cnn",
    "catalog_names",
    "dihedral",
    "dihedral_views",
    "lr_schedule",
    "predict_logits",
    "reads_limits",
    "resolve_device",
    "set_orientations",
    "train_cnn",
    "train_member",
]

log = logging.getLogger(__name__)


#: Batch size used for inference (no gradients, so larger than training batches).
EVAL_BATCH = 256
#: Width of the catalog branch of :class:`SmallCNN` (its two hidden layers).
CATALOG_WIDTH = 32


# --------------------------------------------------------------------------- model


#: Input scalings :class:`SmallCNN` may apply to a batch before its first convolution.
SCALINGS = ("none", "limits")
#: Orientations :class:`SmallCNN` may average its logit over in eval mode: 1 (the cutout as
#: stored) or 8 (the dihedral group, :func:`dihedral_views`).
ORIENTATIONS = (1, 8)


class LimitScale(nn.Module):
    """Stored cutouts back in their job's units: signed, and in one noise unit per job.

    A stored channel is ``clip((image - vmin) / (vmax - vmin), 0, 1)`` with the job's ZScale
    limits of that channel (``zscale_limits.csv``). This layer undoes the scaling,
    ``value = x * (vmax - vmin) + vmin`` (exact inside [vmin, vmax]), and divides science,
    reference and difference by the difference image's ZScale width ``vmax - vmin`` (a few
    noise sigmas of D; the same for the three, so their fluxes compare), the score by its
    own width (the score is in sigmas already).

    Why: after the per-job ZScale, the difference image's zero (no change) lands at a
    different value in every job, and one unit of [0, 1] means a different flux in each
    channel and job. After this layer a negative lobe is negative, a source has the same
    value in every job at the same significance, and science and reference are on one scale,
    so a residual (reference flux left over) can be told from new flux.

    A channel whose limits are not finite, or whose width is not positive (stored as all
    zeros, :mod:`tasks.dataset.normalize`), reads 0; without usable difference limits the
    three image channels keep the job's units (width 1).
    """

    def forward(self, x: torch.Tensor, limits: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) stored cutouts and (B, C, 2) limits ``[vmin, vmax]`` -> (B, C, H, W)."""
        vmin, width = limits[..., 0], limits[..., 1] - limits[..., 0]
        usable = torch.isfinite(vmin) & torch.isfinite(width) & (width > 0)
        vmin = torch.where(usable, vmin, torch.zeros_like(vmin))
        width = torch.where(usable, width, torch.zeros_like(width))
        value = x * width[..., None, None] + vmin[..., None, None]
        unit = torch.where(usable[:, 2], width[:, 2], torch.ones_like(width[:, 2]))
        per_channel = unit[:, None].expand(-1, x.shape[1]).clone()
        per_channel[:, 3] = torch.where(usable[:, 3], width[:, 3], torch.ones_like(unit))
        return value / per_channel[..., None, None]


class SmallCNN(nn.Module):
    """Three conv blocks, global and central average pooling, one logit.

    Each block is 3x3 convolution (padding 1, no bias), batch norm, ReLU and 2x2 max
    pooling: (B, 4, 64, 64) -> (B, w, 32, 32) -> (B, 2w, 16, 16) -> (B, 4w, 8, 8). The
    head sees the mean of that map over all (8, 8) cells (global average pooling) beside
    its mean over the central (2, 2) cells, which cover the central 16 x 16 pixels of the
    cutout, and maps these 8w numbers to one logit: (B,). With ``width=16``: about 24 k
    parameters, roughly 1 ms per cutout per training step on one CPU core (a quarter of
    that with ``crop=32``, where the maps are (4, 4) and the central cells the same 16 x 16
    pixels).

    Notes
    -----
    Candidates sit at pixel [32, 32] of every cutout by construction, and what decides
    real or bogus is what lies there; global pooling alone cannot tell a centred source
    from a neighbour elsewhere in the stamp. On the simulated demo dataset the central
    pooling lifts validation AUC after 8 epochs from about 0.7 to about 1.0.

    Parameters
    ----------
    channels : int
        Input channels (4: science, reference, difference, score).
    width : int
        Channels of the first block; doubled at each further block.
    scaling : {"none", "limits"}
        ``"limits"``: a :class:`LimitScale` layer first, so :meth:`forward` needs each
        cutout's ZScale limits; ``"none"``: the stored [0, 1] values as they are.
    crop : int
        Side of the central square the network reads, pixels (a multiple of 16, from 16 to
        64): 32 reads rows and columns 16 .. 47, the candidate still at the centre, and
        costs a quarter of the full cutout's arithmetic. The input is always the whole
        (B, 4, 64, 64).
    catalog : sequence of str
        Catalog features the head reads beside the pixels (index column names,
        :data:`~croissant_cutouts.tasks.evaluate.features.CATALOG_FEATURES`); empty: pixels
        only. They pass through :class:`CatalogScale` (fitted on the training rows) and two
        layers of 32 ReLU units (``CATALOG_WIDTH``), whose output joins the pooled maps
        before the last layer.
    orientations : {1, 8}
        In eval mode, the logit is the mean over this many orientations of each cutout: 8,
        every quarter turn with and without a left-right flip (:func:`dihedral_views`, the
        orientations the training augmentation draws from); 1, the cutout as stored. In
        training mode always 1. Costs that many times the inference arithmetic.
    """

    def __init__(self, channels: int = len(CHANNELS), width: int = 16,
                 scaling: str = "none", crop: int = CUTOUT_SIZE,
                 catalog: Sequence[str] = (), orientations: int = 1) -> None:
        super().__init__()
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r}; expected one of {SCALINGS}")
        if crop % 16 or not 16 <= crop <= CUTOUT_SIZE:
            raise ValueError(f"crop must be a multiple of 16 from 16 to {CUTOUT_SIZE}, got {crop}")
        # to build it again (model.pt); a model of the defaults keeps the kwargs it always had
        self.kwargs: dict[str, object] = {"channels": channels, "width": width}
        if scaling != "none":
            self.kwargs["scaling"] = scaling
        if crop != CUTOUT_SIZE:
            self.kwargs["crop"] = crop
        if catalog:
            self.kwargs["catalog"] = list(catalog)
        set_orientations(self, orientations)
        self.margin = (CUTOUT_SIZE - crop) // 2
        self.scale = LimitScale() if scaling == "limits" else None

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(
            block(channels, width), block(width, 2 * width), block(2 * width, 4 * width)
        )
        self.catalog_scale = CatalogScale(len(catalog)) if catalog else None
        self.catalog_layers = nn.Sequential(
            nn.Linear(2 * len(catalog), CATALOG_WIDTH), nn.ReLU(inplace=True),
            nn.Linear(CATALOG_WIDTH, CATALOG_WIDTH), nn.ReLU(inplace=True),
        ) if catalog else None
        self.head = nn.Linear(8 * width + (CATALOG_WIDTH if catalog else 0), 1)

    def forward(self, x: torch.Tensor, limits: torch.Tensor | None = None,
                catalog: torch.Tensor | None = None) -> torch.Tensor:
        """Logits, shape (B,), of a batch of shape (B, 4, 64, 64) (channel-first).

        ``limits``: (B, 4, 2) float32, each cutout's job's ``[vmin, vmax]`` per channel
        (``zscale_limits.csv``); needed by a model with ``scaling="limits"``, else ignored.
        ``catalog``: (B, k) float32, the raw catalog features named by the ``catalog``
        argument, in that order, NaN where missing; needed by a model that reads them.
        """
        if self.margin:  # the crop is centred: it commutes with turns and flips
            x = x[..., self.margin : -self.margin, self.margin : -self.margin]
        if self.orientations == 1 or self.training:
            return self._logits(x, limits, catalog)
        n, k = x.shape[0], self.orientations
        extra = [None if t is None else t.repeat(k, *[1] * (t.dim() - 1))
                 for t in (limits, catalog)]
        return self._logits(dihedral_views(x), *extra).view(k, n).mean(dim=0)

    def _logits(self, x: torch.Tensor, limits: torch.Tensor | None,
                catalog: torch.Tensor | None) -> torch.Tensor:
        """Logits (B,) of the cropped batch ``x`` as it lies (no orientations averaged)."""
        if self.scale is not None:
            if limits is None:
                raise ValueError(
                    "this model reads each cutout's ZScale limits: call model(x, limits) with "
                    "limits of shape (B, 4, 2), [vmin, vmax] per channel (zscale_limits.csv)"
                )
            x = self.scale(x, limits)
        maps = self.features(x)
        mid = maps.shape[-1] // 2
        centre = maps[:, :, mid - 1 : mid + 1, mid - 1 : mid + 1]
        parts = [maps.mean(dim=(2, 3)), centre.mean(dim=(2, 3))]
        if self.catalog_scale is not None:
            if catalog is None or catalog.shape[-1] != self.catalog_scale.centre.numel():
                raise ValueError(
                    f"this model reads {self.catalog_scale.centre.numel()} catalog features "
                    f"({', '.join(self.kwargs['catalog'])}): call model(x, limits, catalog) "
                    "with catalog of shape (B, k), NaN where missing"
                )
            parts.append(self.catalog_layers(self.catalog_scale(catalog)))
        return self.head(torch.cat(parts, dim=1)).squeeze(1)


class CNNEnsemble(nn.Module):
    """The mean logit of ``members`` :class:`SmallCNN` trained apart (other seeds).

    Members differ in their initial weights, batch order and augmentation draws; averaging
    their logits smooths out how much any one run's score depends on its seed.

    Parameters
    ----------
    members : int
        Number of networks.
    **cnn_kwargs
        Arguments of every member's :class:`SmallCNN`.
    """

    def __init__(self, members: int = 2, **cnn_kwargs: object) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, got {members}")
        self.kwargs = {"members": members, **cnn_kwargs}
        self.members = nn.ModuleList(SmallCNN(**cnn_kwargs) for _ in range(members))

    def forward(self, x: torch.Tensor, limits: torch.Tensor | None = None,
                catalog: torch.Tensor | None = None) -> torch.Tensor:
        """Mean logit of the members, shape (B,); arguments as for :meth:`SmallCNN.forward`."""
        return torch.stack([member(x, limits, catalog) for member in self.members]).mean(dim=0)


def set_orientations(model: nn.Module, orientations: int) -> nn.Module:
    """Make every :class:`SmallCNN` of ``model`` average its eval-mode logit over
    ``orientations`` (1 or 8) orientations of each cutout, and record it in its ``kwargs``
    (so ``model.pt`` builds it again the same way); returns ``model``.

    An ensemble's ``kwargs`` follow too. The weights do not change: a network trained with
    :func:`dihedral` augmentation may be scored either way.
    """
    if orientations not in ORIENTATIONS:
        raise ValueError(f"orientations must be one of {ORIENTATIONS}, got {orientations!r}")
    for part in model.modules():
        if isinstance(part, SmallCNN):
            part.orientations = orientations
        if isinstance(part, SmallCNN | CNNEnsemble):
            part.kwargs.pop("orientations", None)
            if orientations != 1:  # a model of the default keeps the kwargs it always had
                part.kwargs["orientations"] = orientations
    return model


def reads_limits(model: nn.Module) -> bool:
    """Whether ``model`` (a :class:`SmallCNN` or an ensemble of them) needs each cutout's
    ZScale limits: ``model(x, limits)``."""
    return any(isinstance(m, LimitScale) for m in model.modules())


def catalog_names(model: nn.Module) -> list[str]:
    """The catalog features ``model`` reads, in the order of its input; [] for pixels only."""
    for member in model.modules():
        if isinstance(member, SmallCNN):
            return list(member.kwargs.get("catalog", []))
    return []


def resolve_device(name: str = "auto") -> torch.device:
    """``'auto'``: CUDA when ``torch.cuda.is_available()``, else CPU; or ``'cpu'``, ``'cuda'``.

    Raises
    ------
    RuntimeError
        ``'cuda'`` asked for while CUDA is not available.
    ValueError
        Any other name.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch.cuda.is_available() is False")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; expected 'auto', 'cpu' or 'cuda'")
    return torch.device(name)


def predict_logits(
    model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Logits of every item of ``loader``, shape (n,), float32, in order.

    Batches are ``(x, y)``, ``(x, y, limits)`` or ``(x, y, limits, catalog)`` as
    :class:`CutoutDataset` gives them.

    The model is put in eval mode and run without gradients; ``x`` is moved to ``device``.
    """
    model.eval()
    out = []
    with torch.no_grad():
        for x, _, *extra in loader:  # limits, catalog: with a CutoutDataset that has them
            out.append(model(*_on(device, x, *extra)).float())
    return torch.cat(out).cpu().numpy() if out else np.empty(0, np.float32)


def _on(device: torch.device | str, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """``tensors`` moved to ``device`` (non-blocking: pinned batches overlap the copy); a
    ``None`` (no limits beside catalog features) stays ``None``."""
    return [t if t is None else t.to(device, non_blocking=True) for t in tensors]


class _Rows(Dataset):
    """Items ``idx`` of a :class:`CutoutDataset`, without copying (whole batches too)."""

    def __init__(self, base: CutoutDataset, idx: np.ndarray) -> None:
        self.base, self.idx = base, np.asarray(idx, np.int64)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitems__(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor | None, ...]:
        return self.base.__getitems__(self.idx[np.asarray(indices, np.int64)])

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, ...]:
        return self.base[int(self.idx[i])]


@dataclass
class TrainedCNN:
    """What :func:`train_cnn` returns: logits per evaluated split and the loss history."""

    logits: dict[str, np.ndarray]
    history: dict[str, list[float]]
    train_seconds: float
    n_train: int
    best_epoch: int | list[int] = 0  # per member for an ensemble
    model: nn.Module | None = None  # the trained network (eval mode), for model.pt


def _side_loaders(
    data: CutoutDataset, sides: dict[str, np.ndarray], device: torch.device
) -> dict[str, DataLoader]:
    """In-order inference loaders of every side but ``train``."""
    return {
        name: make_loader(_Rows(data, np.flatnonzero(mask)), EVAL_BATCH, False, device=device)
        for name, mask in sides.items()
        if name != "train"
    }


def build_cnn(params: TrainParams, catalog: Sequence[str] = ()) -> SmallCNN:
    """The untrained :class:`SmallCNN` that ``params`` (width, scaling, crop) describe,
    reading the catalog features ``catalog`` (empty: pixels only)."""
    return SmallCNN(width=params.width, scaling=params.scaling, crop=params.crop,
                    catalog=catalog)


def train_cnn(
    data: CutoutDataset,
    labels: np.ndarray,
    sides: dict[str, np.ndarray],
    params: TrainParams,
    device: torch.device,
    what: str = "field split",
) -> TrainedCNN:
    """Train ``params.members`` CNNs (:func:`train_member`); one, or their :class:`CNNEnsemble`.

    Member ``k`` (0-based) is :func:`train_member` with seed ``params.seed + k``, so a
    one-member run is exactly the single CNN of that seed. For more members the logits of
    every side but ``train`` are the ensemble's (the mean of the members' logits, computed
    by the assembled :class:`CNNEnsemble` itself, as a saved model computes them, each
    member averaging ``params.orientations`` orientations; members are trained and
    validated in one orientation); the loss
    history is the members' mean per epoch, ``best_epoch`` a list per member and
    ``train_seconds`` their sum.
    """
    n = params.members
    if n == 1:
        return train_member(data, labels, sides, params, device, what)
    runs = [  # members score as stored; the ensemble then averages their orientations
        train_member(data, labels, sides,
                     params.model_copy(update={"seed": params.seed + k, "orientations": 1}),
                     device, f"{what}, member {k + 1}/{n}")
        for k in range(n)
    ]
    ensemble = CNNEnsemble(n, **{k: v for k, v in runs[0].model.kwargs.items()})
    for member, run in zip(ensemble.members, runs, strict=True):
        member.load_state_dict(run.model.state_dict())
    ensemble = set_orientations(ensemble, params.orientations).to(device).eval()
    logits = {name: predict_logits(ensemble, loader, device)
              for name, loader in _side_loaders(data, sides, device).items()}
    history = {key: np.mean([r.history[key] for r in runs], axis=0).tolist()
               for key in runs[0].history}
    return TrainedCNN(logits, history, sum(r.train_seconds for r in runs), runs[0].n_train,
                      [int(r.best_epoch) for r in runs], ensemble)


def train_member(
    data: CutoutDataset,
    labels: np.ndarray,
    sides: dict[str, np.ndarray],
    params: TrainParams,
    device: torch.device,
    what: str = "field split",
    on_epoch: Callable[[int, dict[str, np.ndarray]], None] | None = None,
) -> TrainedCNN:
    """Train one :class:`SmallCNN` (:func:`build_cnn`) on the ``train`` rows of ``data``.

    Returns the logits of the other sides.

    Adam (learning rate ``params.lr`` along ``params.lr_schedule``, :func:`lr_schedule`),
    ``BCEWithLogitsLoss(pos_weight=n_bogus / n_real)`` of the training rows (1 when a
    class is missing there), ``params.epochs`` passes in the order of a ``torch.Generator``
    seeded with ``params.seed`` (:class:`IndexBatches`), weights from
    ``torch.manual_seed(params.seed)``. After each epoch the mean loss on the
    ``validation`` rows is recorded (cutouts as stored); after the last, the logits of every
    side but ``train``, averaged over ``params.orientations`` orientations
    (:func:`set_orientations`).

    Parameters
    ----------
    data : CutoutDataset
        Every cutout that may be used; ``labels`` and the boolean masks of ``sides`` index it.
    sides : dict of str to numpy.ndarray of bool
        ``train``, ``validation`` and any further sides to predict (``test``).
    on_epoch : callable, optional
        Called after every epoch with the epoch (1-based) and the logits of every side but
        ``train`` at that epoch's weights, averaged over ``params.orientations`` as the
        returned ones are (learning curves; costs an inference pass of each side per
        orientation).
    """
    train_idx = np.flatnonzero(sides["train"])
    y_train = labels[train_idx]
    n_real, n_bogus = int((y_train == 1).sum()), int((y_train == 0).sum())
    if n_real and n_bogus:
        pos_weight = n_bogus / n_real
    else:
        pos_weight = 1.0
        log.warning("%s: training rows hold one class only; the model cannot learn", what)
    loaders = _side_loaders(data, sides, device)
    train_loader = make_loader(
        _Rows(data, train_idx), params.batch_size, True, params.seed, device
    )
    torch.manual_seed(params.seed)
    model = build_cnn(params, data.catalog_names)
    if model.catalog_scale is not None:  # its scaling: the training rows' medians and spreads
        model.catalog_scale.fit(data.catalog[train_idx])
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    schedule = lr_schedule(optimizer, params.lr_schedule, params.epochs * len(train_loader))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    y_val = torch.from_numpy(labels[sides["validation"]].astype(np.float32)).to(device)
    history: dict[str, list[float]] = {"train": [], "validation": []}
    seconds = 0.0
    turns = torch.Generator().manual_seed(params.seed + 1)  # augmentation draws, CPU
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    with progress_bar(f"{what} epochs", params.epochs) as advance:
        for epoch in range(1, params.epochs + 1):
            started = time.perf_counter()
            turned = turns if params.augment else None
            total = _train_epoch(model, train_loader, optimizer, loss_fn, turned, device,
                                 schedule)
            history["train"].append(total / max(len(train_idx), 1))
            seconds += time.perf_counter() - started
            val_logits = predict_logits(model, loaders["validation"], device)  # as stored
            val_loss = float(loss_fn(torch.from_numpy(val_logits).to(device), y_val).item())
            history["validation"].append(val_loss)
            val_auc = roc_auc(labels[sides["validation"]], val_logits)
            log.info(
                "%s epoch %d/%d: train loss %.4f, validation loss %.4f, validation AUC %.4f",
                what,
                epoch,
                params.epochs,
                history["train"][-1],
                val_loss,
                val_auc,
            )
            scored: dict[str, np.ndarray] = {}
            if on_epoch is not None:  # what the model would score with this epoch's weights
                scored = _score_sides(model, loaders, params.orientations, device, val_logits)
                on_epoch(epoch, scored)
            score = -math.inf if math.isnan(val_auc) else val_auc
            if params.keep_best and (best is None or score > best[0]):
                weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best = (score, epoch, weights)
            advance()
    best_epoch = params.epochs
    if best is not None and best[1] != params.epochs:
        best_epoch = best[1]
        model.load_state_dict(best[2])
        scored = {}  # scored at other weights
    logits = scored or _score_sides(model, loaders, params.orientations, device,
                                    val_logits if best_epoch == params.epochs else None)
    set_orientations(model, params.orientations)
    return TrainedCNN(logits, history, seconds, len(train_idx), best_epoch, model.eval())


def lr_schedule(
    optimizer: torch.optim.Optimizer, kind: str, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule ``kind`` over ``steps`` optimizer steps; None for constant.

    ``"cosine"``: :class:`torch.optim.lr_scheduler.CosineAnnealingLR` from the optimizer's
    learning rate at step 0 down to 0 after ``steps`` steps (half a cosine), stepped once per
    batch, so the last epochs take small steps.
    """
    if kind == "constant":
        return None
    if kind != "cosine":
        raise ValueError(f"unknown learning-rate schedule {kind!r}; expected constant or cosine")
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))


def _score_sides(
    model: nn.Module,
    loaders: dict[str, DataLoader],
    orientations: int,
    device: torch.device,
    as_stored: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Logits of every side of ``loaders``, averaged over ``orientations`` orientations;
    ``model`` is left scoring in one. ``as_stored``: the validation logits in one orientation
    at the current weights, reused when one orientation is asked for."""
    set_orientations(model, orientations)
    try:
        return {name: as_stored if name == "validation" and orientations == 1
                and as_stored is not None else predict_logits(model, loader, device)
                for name, loader in loaders.items()}
    finally:
        set_orientations(model, 1)


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    turns: torch.Generator | None,
    device: torch.device,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    """One pass over ``loader``; the sum over cutouts of the training loss.

    ``turns``: the generator of :func:`dihedral` augmentation draws (None: no augmentation).
    ``schedule``: stepped after every optimizer step (None: the learning rate stays).
    """
    model.train()
    # float64 sum on the device: no host sync per step; same sums as Python floats
    total = torch.zeros((), dtype=torch.float64, device=device)
    for x, y, *extra in loader:  # limits, catalog: with a CutoutDataset that has them
        if turns is not None:
            x = dihedral(x, turns)
        x, y, *extra = _on(device, x, y, *extra)
        optimizer.zero_grad()
        loss = loss_fn(model(x, *extra), y)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        total += loss.detach().double() * len(y)
    return float(total.item())  # .item() syncs


def dihedral_views(x: torch.Tensor) -> torch.Tensor:
    """The 8 orientations of each cutout of a batch (B, C, H, W), stacked: (8 B, C, H, W).

    View ``v`` of cutout ``i`` is row ``v * B + i``: views 0..3 are quarter turns by 0..3
    (:func:`torch.rot90` on the last two axes), views 4..7 the same of the left-right
    flipped cutout; together the dihedral group that :func:`dihedral` draws from.
    """
    flipped = x.flip(-1)
    return torch.cat([torch.rot90(img, turn, dims=(-2, -1))
                      for img in (x, flipped) for turn in range(4)])


def dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each cutout of a batch (B, C, H, W) turned by a random element of the dihedral group.

    A quarter turn ``k`` in 0..3 and a left-right flip are drawn per cutout from
    ``generator``: 8 equally likely orientations. Real/bogus does not depend on the
    orientation of the sky, and the candidate stays at the centre pixel [32, 32] only for
    even sizes turned about the centre of the array, so a turn moves it by at most one pixel
    (the model pools the central cells, so this does not matter).
    """
    n = x.shape[0]
    k = torch.randint(0, 4, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    out = x.clone()
    for turn in (1, 2, 3):
        sel = k == turn
        if sel.any():
            out[sel] = torch.rot90(x[sel], turn, dims=(-2, -1))
    return out


