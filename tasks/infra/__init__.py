"""Plumbing: atomic writes, the dataset lock, ownership of the output folder, caching.

- :mod:`.atomic`: write to a temporary name, then rename.
- :mod:`.lock`: one writing command per dataset folder.
- :mod:`.outdir`: the tool writes only into a dataset folder of its own.
- :mod:`.caching`: content-addressed cache keys and the retry rule of per-job tasks.
- :mod:`.digests`: sha256 and xxh3 file digests, remembered while a file is unchanged.
- :mod:`.versions`: which modules' source decides each step's output.
- :mod:`.extras`: which optional install extra a feature needs.
- :mod:`.progress`: a progress bar on a terminal, plain log lines elsewhere.
- :mod:`.memory`: freed memory handed back to the system between steps.
- :mod:`.exports`: a package's public names, imported when first used.

Infra decides where and when bytes are written, never what they are. May import only
``contract`` and ``errors``.
"""

from croissant_cutouts.tasks.infra.exports import lazy_exports

# Names resolve on first use (see infra.exports): importing this package imports none of
# its modules.
__all__, __getattr__, __dir__ = lazy_exports(__name__, [
    "atomic",
    "caching",
    "digests",
    "exports",
    "extras",
    "lock",
    "memory",
    "outdir",
    "progress",
    "versions",
])
