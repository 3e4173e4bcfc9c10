"""Reading RAPID job folders: which jobs, what each holds, and its labels.

- :mod:`.select`: which job folders a run takes (filters, ``--jobs-list``, object stores).
- :mod:`.layouts`: the registry of input layouts, and which one a folder has.
- :mod:`.catalogs`: what a layout is (:class:`Layout`), labelling options, text-table readers.
- :mod:`.rapid`: RAPID's layout, older and newer, its catalogs and truth files.
- :mod:`.seed`: the seed's layout.
- :mod:`.load`: one job loaded: image headers, candidates, labels (small values only; the
  images stay on disk, memory-mapped by the steps that read pixels).
- :mod:`.truth`: injection lists and simulation truth, magnitudes, one-to-one matching.
- :mod:`.remote`: jobs in an object store, staged to a local folder.

May import: ``contract``, ``errors``, ``config`` and ``infra``; nothing else of the package.
"""

from croissant_cutouts.tasks.inputs import (
    catalogs,
    layouts,
    load,
    rapid,
    remote,
    seed,
    select,
    truth,
)
from croissant_cutouts.tasks.inputs.catalogs import *  # noqa: F403
from croissant_cutouts.tasks.inputs.layouts import *  # noqa: F403
from croissant_cutouts.tasks.inputs.load import *  # noqa: F403
from croissant_cutouts.tasks.inputs.rapid import *  # noqa: F403
from croissant_cutouts.tasks.inputs.remote import *  # noqa: F403
from croissant_cutouts.tasks.inputs.seed import *  # noqa: F403
from croissant_cutouts.tasks.inputs.select import *  # noqa: F403
from croissant_cutouts.tasks.inputs.truth import *  # noqa: F403

__all__ = [
    *catalogs.__all__, *layouts.__all__, *load.__all__, *rapid.__all__, *remote.__all__,
    *seed.__all__, *select.__all__, *truth.__all__,
]
