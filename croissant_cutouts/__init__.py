"""croissant-cutouts: RAPID job folders to a versioned, Croissant-described cutout dataset.

What a user of a released dataset imports:

>>> from croissant_cutouts import load_dataset
>>> train = load_dataset("demo/dataset", split="train")  # doctest: +SKIP

``load_dataset`` (and the ``CandidateDataset`` it returns,
:mod:`croissant_cutouts.tasks.evaluate.loader`) needs torch (the
``train`` extra) and imports no Prefect. Everything else lives in three subpackages, each a
folder of the repository:

- :mod:`croissant_cutouts.tasks` (``tasks/``): the steps, plain functions with a thin Prefect
  task each;
- :mod:`croissant_cutouts.flows` (``flows/``): the Prefect flows and the ``cutouts`` command;
- :mod:`croissant_cutouts.simulate` (``simulate/``): simulated RAPID job folders.

Importing this package imports none of them; a name resolves on first use.
"""

from importlib.metadata import PackageNotFoundError, version

from croissant_cutouts.tasks.infra.exports import lazy_exports

try:
    __version__ = version("croissant-cutouts")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "unknown"

__all__, __getattr__, __dir__ = lazy_exports(__name__, ["tasks.evaluate.loader"])
