"""Plumbing: atomic writes, the dataset lock, ownership of the output folder, caching.

- :mod:`.atomic`: write to a temporary name, then rename.
- :mod:`.lock`: one writing command per dataset folder.
- :mod:`.outdir`: the tool writes only into a dataset folder of its own.
- :mod:`.caching`: content-addressed cache keys and the retry rule of per-job tasks.
- :mod:`.digests`: sha256 and xxh3 file digests, remembered while a file is unchanged.
- :mod:`.versions`: which modules' source decides each step's output.
- :mod:`.extras`: which optional install extra a feature needs.
- :mod:`.progress`: a progress bar on a terminal, plain log lines elsewhere.

Infra decides where and when bytes are written, never what they are. May import only
``contract`` and ``errors``.
"""

from croissant_cutouts.tasks.infra import (
    atomic,
    caching,
    digests,
    extras,
    lock,
    outdir,
    progress,
    versions,
)
from croissant_cutouts.tasks.infra.atomic import *  # noqa: F403
from croissant_cutouts.tasks.infra.caching import *  # noqa: F403
from croissant_cutouts.tasks.infra.digests import *  # noqa: F403
from croissant_cutouts.tasks.infra.extras import *  # noqa: F403
from croissant_cutouts.tasks.infra.lock import *  # noqa: F403
from croissant_cutouts.tasks.infra.outdir import *  # noqa: F403
from croissant_cutouts.tasks.infra.progress import *  # noqa: F403
from croissant_cutouts.tasks.infra.versions import *  # noqa: F403

__all__ = [
    *atomic.__all__, *caching.__all__, *digests.__all__, *extras.__all__, *lock.__all__,
    *outdir.__all__, *progress.__all__, *versions.__all__,
]
