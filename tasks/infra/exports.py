"""A package's public names, resolved when first used (PEP 562), not when it is imported.

Each package ``__init__`` re-exports the names its modules list in ``__all__``, so
``from croissant_cutouts.tasks.verify import verify_dataset`` works, without importing those
modules up front: importing ``croissant_cutouts.tasks.infra.digests`` must not import
Prefect (:mod:`.caching` does), and reading a dataset
(:func:`~croissant_cutouts.tasks.evaluate.loader.load_dataset`) must not import the training
step. The names are read from each module's source (its
``__all__`` literal, parsed, not run); a name is imported from its module on first access.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["lazy_exports"]


#: Start of a module's ``__all__ = [`` (or ``(``) at the start of a line.
_ALL = re.compile(r"^__all__\s*=\s*([\[(])", re.MULTILINE)


def _declared(path: Path) -> list[str]:
    """The ``__all__`` list literal of a module's source (empty when it has none).

    Only the literal is parsed (names hold no brackets, so it ends at the first closing
    one): parsing whole modules cost 0.15 s of every command's start.
    """
    source = path.read_text(encoding="utf-8")
    match = _ALL.search(source)
    if match is None:
        return []
    end = source.index("])"[match.group(1) == "("], match.end())
    return list(ast.literal_eval(source[match.start(1) : end + 1]))


def lazy_exports(
    package: str, modules: Sequence[str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for the ``__init__`` of ``package``.

    Parameters
    ----------
    package : str
        The package's name (``__name__`` in its ``__init__``).
    modules : sequence of str
        Its modules, by their dotted names under the package (``"jobs"``,
        ``"tasks.evaluate.loader"``), in the order their names are listed.

    Returns
    -------
    tuple
        ``__all__`` (every name the modules declare, in order), ``__getattr__`` (imports the
        module declaring a name on first access and keeps the value in the package) and
        ``__dir__``.

    Raises
    ------
    ValueError
        When two modules declare the same name.
    """
    owner: dict[str, str] = {}
    for module in modules:
        for name in _declared(Path(importlib.util.find_spec(f"{package}.{module}").origin)):
            if name in owner:
                raise ValueError(f"{package}: {name!r} is declared by both {owner[name]} "
                                 f"and {module}")
            owner[name] = module

    def __getattr__(name: str) -> Any:
        if name not in owner:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{owner[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *owner, *modules})

    return list(owner), __getattr__, __dir__
