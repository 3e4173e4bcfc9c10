"""The steps of croissant-cutouts, grouped by role: plain functions first, a thin Prefect task each.

- :mod:`.inputs`: reading RAPID job folders (select, layouts, load, truth, remote).
- :mod:`.dataset`: making the dataset (normalize, cutout, splits, index, croissant).
- :mod:`.evaluate`: proving it by training (data, model, metrics, baselines, report,
  smoke_train).
- :mod:`.verify`: checking a dataset against its contract and its inputs.
- :mod:`.infra`: plumbing (atomic writes, lock, output folder, caching, code versions).
- :mod:`.contract`: the dataset's on-disk format, declared once.
- :mod:`.config`: every parameter (``params.yaml``), validated, with units.
- :mod:`.errors`: how bad input is reported (a job rejected, a catalog row refused).

Subpackages are imported when used: ``import croissant_cutouts.tasks`` loads none of them.
See ``docs/architecture.md`` for what each may import.
"""

__all__ = [
    "config", "contract", "dataset", "errors", "evaluate", "infra", "inputs", "verify",
]
