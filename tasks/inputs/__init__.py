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

from croissant_cutouts.tasks.infra.exports import lazy_exports

# Names resolve on first use (see infra.exports): importing this package imports none of
# its modules.
__all__, __getattr__, __dir__ = lazy_exports(__name__, [
    "catalogs",
    "layouts",
    "load",
    "rapid",
    "remote",
    "seed",
    "select",
    "truth",
])
