"""Proving a dataset: read it through Croissant, train a small CNN, judge it, report.

- :mod:`.data`: records through the Croissant metadata, cutouts from disk, batch loaders.
- :mod:`.model`: the CNN, its training loop and augmentation.
- :mod:`.metrics`: what scikit-learn lacks (threshold at a false-positive rate,
  completeness by magnitude, false-positive rate per bogus kind), and the metric set.
- :mod:`.bootstrap`: class-stratified percentile-bootstrap intervals of ROC AUC and FNR.
- :mod:`.baselines`: majority class, score-image peak, gradient boosting on catalog columns.
- :mod:`.plots`: the PNG plots and the cutout gallery.
- :mod:`.report`: ``report.md``.
- :mod:`.artifact`: ``model.pt``, the trained model and what it expects, read back safely.
- :mod:`.prepare`: the rows a run trains on, its split masks, where it judges.
- :mod:`.train`: the step itself (:func:`smoke_train`): prepare, fit, judge, leakage check, write.

May import: ``contract``, ``errors``, ``config``, ``infra`` and ``dataset.splits``; never
the input side (training reads only what the dataset holds).
"""

from croissant_cutouts.tasks.evaluate import (
    artifact,
    baselines,
    bootstrap,
    data,
    metrics,
    model,
    plots,
    prepare,
    report,
    train,
)
from croissant_cutouts.tasks.evaluate.artifact import *  # noqa: F403
from croissant_cutouts.tasks.evaluate.baselines import *  # noqa: F403
from croissant_cutouts.tasks.evaluate.bootstrap import *  # noqa: F403
from croissant_cutouts.tasks.evaluate.data import *  # noqa: F403
from croissant_cutouts.tasks.evaluate.metrics import *  # noqa: F403
from croissant_cutouts.tasks.evaluate.model import *  # noqa: F403
from croissant_cutouts.tasks.evaluate.plots import *  # noqa: F403
from croissant_cutouts.tasks.evaluate.prepare import *  # noqa: F403
from croissant_cutouts.tasks.evaluate.report import *  # noqa: F403
from croissant_cutouts.tasks.evaluate.train import *  # noqa: F403

__all__ = [
    *artifact.__all__, *baselines.__all__, *bootstrap.__all__, *data.__all__,
    *metrics.__all__, *model.__all__, *plots.__all__, *prepare.__all__,
    *report.__all__, *train.__all__,
]
