"""Checking a dataset against its contract, and against its input jobs.

:func:`verify_dataset` runs every check and returns a :class:`VerifyReport` of
:class:`Problem` records (kinds: :data:`KINDS`); ``cutouts verify`` prints it. One module per
checker:

- :mod:`.reading`: the tables read; ``master_index.csv`` in chunks, each parsed at once.
- :mod:`.streaming`: the index read twice (rules over all rows, then groups of whole jobs),
  so memory does not grow with the dataset.
- :mod:`.tables`: the index contract, the splits, as the index is read.
- :mod:`.tensors`: every cutout file and shard: valid ``.npy``, shape, dtype, values, digests;
  no unlisted ``.npy``. Reading one file: :mod:`.scans`.
- :mod:`.metadata`: ``croissant.json``'s FileObjects exist and their sha256 match.
- :mod:`.accounting`: every catalog row in the index or in rejects, exactly once; recounts.
- :mod:`.recut`: ``--deep``, every candidate cut again from its input job and compared.
- :mod:`.report`: the problem kinds, :class:`Problem`, :class:`VerifyReport`.
- :mod:`.dataset`: :func:`verify_dataset` and its Prefect task, running the checkers.

May import everything below it: ``contract``, ``errors``, ``infra``, ``inputs``, ``dataset``.
"""

from croissant_cutouts.tasks.infra.exports import lazy_exports

# Names resolve on first use (see infra.exports): importing this package imports none of
# its modules.
__all__, __getattr__, __dir__ = lazy_exports(__name__, [
    "report",
    "dataset",
])
