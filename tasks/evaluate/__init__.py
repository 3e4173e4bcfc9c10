"""Proving a dataset: read it through Croissant, train a small CNN, judge it, report.

- :mod:`.data`: records through the Croissant metadata, cutouts from disk, batch loaders.
- :mod:`.limits`: the ZScale limits of each job, read through Croissant, per index row.
- :mod:`.model`: the CNN, its training loop and augmentation.
- :mod:`.metrics`: what scikit-learn lacks (threshold at a false-positive rate,
  completeness by magnitude, false-positive rate per bogus kind), and the metric set.
- :mod:`.bootstrap`: class-stratified percentile-bootstrap intervals of ROC AUC and FNR.
- :mod:`.features`: the catalog features of the index (finder and PSF fit), as a matrix and
  scaled for the network.
- :mod:`.baselines`: majority class, score-image peak, gradient boosting on catalog columns.
- :mod:`.plots`: the PNG plots and the cutout gallery.
- :mod:`.report`: ``report.md``.
- :mod:`.artifact`: ``model.pt``, the trained model and what it expects, read back safely.
- :mod:`.prepare`: the rows a run trains on, its split masks, where it judges.
- :mod:`.train`: the step itself (:func:`smoke_train`): prepare, fit, judge, leakage check, write.
- :mod:`.loader`: a released dataset as a PyTorch ``Dataset`` (``croissant_cutouts.load_dataset``),
  without Prefect.
- :mod:`.score`: scoring new jobs' cutouts with ``model.pt`` (``cutouts predict``).

May import: ``contract``, ``errors``, ``config``, ``infra`` and ``dataset.splits``; never
the input side (training reads only what the dataset holds).
"""

from croissant_cutouts.tasks.infra.exports import lazy_exports

# Names resolve on first use (see infra.exports): importing this package imports none of
# its modules.
__all__, __getattr__, __dir__ = lazy_exports(__name__, [
    "artifact",
    "baselines",
    "bootstrap",
    "data",
    "features",
    "loader",
    "metrics",
    "model",
    "plots",
    "prepare",
    "report",
    "score",
    "train",
])
