"""The Prefect flows and the ``cutouts`` command line that runs them.

- :mod:`.build`: the flow ``build_dataset`` (``cutouts create`` and ``run``): a few lines,
  composing the steps of :mod:`croissant_cutouts.tasks`.
- :mod:`.steps`: the single-step flows ``describe_dataset`` (``cutouts croissant``) and
  ``train_dataset`` (``cutouts train``) on an existing dataset.
- :mod:`.predict`: the flow ``predict_jobs``: new jobs cut as a build does, then scored with a
  saved model (``cutouts predict``).
- :mod:`.runner`: how per-job tasks run: the task runner (threads or Dask), read-ahead,
  and the bounded per-job scheduler.
- :mod:`.summary`: what a run did: the summary line and the Prefect artifacts.
- :mod:`.cli`: the ``cutouts`` command (``create``, ``croissant``, ``train``, ``run``,
  ``verify``, ``predict``, ``simulate``, ``serve``).
- :mod:`.settings`: Prefect defaults for a local run (temporary server, result storage).
"""

__all__ = ["build", "cli", "predict", "runner", "settings", "steps", "summary"]
