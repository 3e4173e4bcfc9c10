"""The Prefect flows and the ``cutouts`` command line that runs them.

- :mod:`.build`: the flows (``build_dataset``, ``describe_dataset``, ``train_dataset``): a
  few lines each, composing the steps of :mod:`croissant_cutouts.tasks`.
- :mod:`.cli`: the ``cutouts`` command (``create``, ``croissant``, ``train``, ``run``,
  ``verify``, ``simulate``, ``serve``).
- :mod:`.settings`: Prefect defaults for a local run (temporary server, result storage).
"""

__all__ = ["build", "cli", "settings"]
