"""Sphinx configuration of the croissant-cutouts documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -n -b html docs docs/_build/html``):
every warning, broken internal link or unresolved reference fails the build. Nothing is
fetched from the network (no intersphinx), so the build works offline.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "croissant-cutouts"
author = "The croissant-cutouts contributors"
copyright = "The croissant-cutouts contributors; BSD-3-Clause"
try:
    release = _version("croissant-cutouts")
except PackageNotFoundError:  # a checkout that is not installed
    release = "unknown"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
    "cutouts_docs",  # _ext/cutouts_docs.py: the CLI, parameter and index tables, generated
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
nitpicky = True
smartquotes = False  # keep `--workers` and 'quotes' as typed

# MyST: `:::` fences, definition lists, heading anchors for `[text](page.md#anchor)` links
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc and numpydoc. The API reference imports every module, so build the site from an
# install with every extra (`make docs` uses the dev install). Docstrings state types and
# units in words; signatures carry no type hints (they would be cross-references to numpy,
# pandas and the standard library, which this offline build cannot resolve).
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": True}
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_class_members_toctree = False

# References that point outside this project (no intersphinx: the build is offline).
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(numpy|np|pandas|pd|pathlib|torch|prefect|pydantic|astropy|mlcroissant|matplotlib)\..*",
    ),
]

html_theme = "furo"
html_title = f"croissant-cutouts {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
