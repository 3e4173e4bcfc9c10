"""Making the dataset: normalised images, cutouts, the index, the splits, ``croissant.json``.

- :mod:`.normalize`: ZScale limits per channel and their application, vectorised.
- :mod:`.cutout`: every 64x64x4 cutout of a job in one pass, written atomically.
- :mod:`.splits`: train / validation / test by sky field, never by cutout.
- :mod:`.index`: ``master_index.csv``, ``rejects.csv``, ``jobs.csv``, ``zscale_limits.csv``.
- :mod:`.croissant`: the Croissant 1.1 + RAI metadata, validated by mlcroissant.

May import: ``contract``, ``errors``, ``config``, ``infra`` and ``inputs``.
"""

from croissant_cutouts.tasks.dataset import croissant, cutout, index, normalize, splits
from croissant_cutouts.tasks.dataset.croissant import *  # noqa: F403
from croissant_cutouts.tasks.dataset.cutout import *  # noqa: F403
from croissant_cutouts.tasks.dataset.index import *  # noqa: F403
from croissant_cutouts.tasks.dataset.normalize import *  # noqa: F403
from croissant_cutouts.tasks.dataset.splits import *  # noqa: F403

__all__ = [*croissant.__all__, *cutout.__all__, *index.__all__, *normalize.__all__, *splits.__all__]
