"""Making the dataset: normalised images, cutouts, the index, the splits, ``croissant.json``.

- :mod:`.normalize`: ZScale limits per channel and their application, vectorised.
- :mod:`.cutout`: every 64x64x4 cutout of a job in one pass, written atomically.
- :mod:`.splits`: train / validation / test by sky field, never by cutout.
- :mod:`.index`: ``master_index.csv``, ``rejects.csv``, ``jobs.csv``, ``zscale_limits.csv``.
- :mod:`.croissant`: the Croissant 1.1 + RAI metadata, validated by mlcroissant.
- :mod:`.record_sets`: its small record sets: ``splits``, ``channels``, ``zscale_limits``.

May import: ``contract``, ``errors``, ``config``, ``infra`` and ``inputs``.
"""

from croissant_cutouts.tasks.infra.exports import lazy_exports

# Names resolve on first use (see infra.exports): importing this package imports none of
# its modules.
__all__, __getattr__, __dir__ = lazy_exports(__name__, [
    "croissant",
    "cutout",
    "index",
    "normalize",
    "record_sets",
    "splits",
])
