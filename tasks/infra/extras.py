"""Optional parts of the install: which extra a feature needs, and a clear refusal without it.

The core (``pip install croissant-cutouts``) reads, normalizes, cuts, indexes, describes
(Croissant) and verifies. Everything else is an extra of ``pyproject.toml``:

========  ==========================================  ======================================
extra     brings                                      needed by
========  ==========================================  ======================================
train     torch, matplotlib, scikit-learn             ``cutouts run``, ``cutouts train``
dask      prefect-dask, dask.distributed              ``cutouts.task_runner: dask``
s3        s3fs                                        ``s3://`` inputs
dvc       dvc, dvc-s3                                 ``dvc repro``, ``dvc pull``
sim       photutils, matplotlib                       ``cutouts simulate``
========  ==========================================  ======================================

A feature calls :func:`require_extra` before its first import of an extra's module, so a
missing extra is reported by name instead of as an ``ImportError`` deep in a traceback.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtra", "require_extra"]

#: Import names each extra must make importable (module names, not distribution names).
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "matplotlib", "sklearn"),
    "dask": ("dask", "distributed", "prefect_dask"),
    "s3": ("s3fs",),
    "dvc": ("dvc",),
    "sim": ("photutils", "matplotlib"),
}

DISTRIBUTION = "croissant-cutouts"


class MissingExtra(ImportError):
    """A feature needs an extra that is not installed.

    Parameters
    ----------
    extra : str
        Name of the extra (a key of :data:`EXTRAS`).
    module : str
        The first of its modules that cannot be imported.
    feature : str
        What needs it, for a person (``"training"``, ``"cutouts simulate"``).
    """

    def __init__(self, extra: str, module: str, feature: str) -> None:
        self.extra = extra
        self.module = module
        self.feature = feature
        super().__init__(
            f"{feature} needs the '{extra}' extra, which is not installed (no module "
            f"{module!r}): pip install '{DISTRIBUTION}[{extra}]'",
            name=module,
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package, or __spec__ unset
        return False


def require_extra(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extra`` can be imported.

    Only looks the modules up (``importlib.util.find_spec``); nothing is imported, so the
    check costs microseconds.

    Raises
    ------
    MissingExtra
        Naming the extra, the missing module and the ``pip install`` that adds it.
    KeyError
        When ``extra`` is not a key of :data:`EXTRAS`.
    """
    for module in EXTRAS[extra]:
        if not _importable(module):
            raise MissingExtra(extra, module, feature)
