"""The documentation site builds without a warning, and its generated pages are complete.

The site is built once per module (``sphinx-build -W --keep-going -n``: any warning, broken
internal link or unresolved reference fails it), at the same time as a small site with the
same configuration and extensions whose only faults are some broken links, which must fail.
Nothing is fetched from the network: the HTML builder never follows external links, and the
configuration uses no intersphinx inventory.
"""

from __future__ import annotations

import argparse
import html
import importlib
import pkgutil
import re
import runpy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")
pytest.importorskip("myst_parser")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: What the copy of the site gets appended to one page, and the words each must produce.
BROKEN = {
    "[a page that does not exist](no-such-page.md)": "no-such-page",
    "[a heading that does not exist](output.md#no-such-heading)": "no-such-heading",
    "{ref}`a label that does not exist <no-such-label>`": "no-such-label",
    "{py:func}`croissant_cutouts.tasks.contract.no_such_function`": "no_such_function",
}


@dataclass
class Build:
    returncode: int
    output: str
    html: Path

    def page(self, name: str) -> str:
        return (self.html / name).read_text(encoding="utf-8")


def _sphinx(src: Path, out: Path, builder: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", builder,
        "-d", str(out / "doctrees"), str(src), str(out / builder),
    ]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(proc: subprocess.Popen, out: Path, builder: str) -> Build:
    output, _ = proc.communicate(timeout=600)
    return Build(proc.returncode, output, out / builder)


#: The small site: a page of good links beside the broken ones, and the page they point into.
SMALL_SITE = {
    "index.md": "# Index\n\n```{toctree}\ngetting-started\noutput\n```\n",
    "output.md": "# Output\n\n(a-label)=\n## Checking a dataset\n\nText.\n",
    "getting-started.md": (
        "# Getting started\n\n[a page](output.md), [a heading](output.md#checking-a-dataset)"
        " and {ref}`a label <a-label>` that exist.\n"
    ),
}


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Build]:
    """The real site (HTML) and the broken small site (dummy builder), built side by side.

    The small site has ``docs/``'s ``conf.py``, extensions and static files but only the
    pages of ``SMALL_SITE`` (the whole site's second build took ~17 s of a test run).
    """
    tmp = tmp_path_factory.mktemp("docs")
    copy = tmp / "src"
    copy.mkdir()
    shutil.copy2(DOCS / "conf.py", copy / "conf.py")
    for folder in ("_ext", "_static"):
        shutil.copytree(DOCS / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in SMALL_SITE.items():
        (copy / name).write_text(text, encoding="utf-8")
    page = copy / "getting-started.md"
    page.write_text(
        page.read_text(encoding="utf-8") + "\n## Broken\n\n" + "\n\n".join(BROKEN) + "\n",
        encoding="utf-8",
    )
    real = _sphinx(DOCS, tmp / "real", "html")
    broken = _sphinx(copy, tmp / "broken", "dummy")
    return {
        "real": _finish(real, tmp / "real", "html"),
        "broken": _finish(broken, tmp / "broken", "dummy"),
    }


@pytest.fixture(scope="module")
def site(builds) -> Build:
    build = builds["real"]
    assert build.returncode == 0, f"the documentation does not build cleanly:\n{build.output}"
    return build


def _plain(chunk: str) -> str:
    """Text of an HTML fragment on one line: tags removed, entities decoded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", chunk)).split())


def _literals(page_html: str) -> set[str]:
    """Every inline literal (``code``) on a page."""
    spans = re.findall(r'<code class="[^"]*literal[^"]*">(.*?)</code>', page_html, re.S)
    return {html.unescape(re.sub(r"<[^>]+>", "", s)) for s in spans}


def _section(page_html: str, ident: str) -> str:
    start = page_html.index(f'id="{ident}"')
    end = page_html.find("<section", start + 1)
    return page_html[start : end if end > 0 else len(page_html)]


def test_site_builds_without_a_warning(site):
    assert (site.html / "index.html").is_file()
    assert "WARNING" not in site.output and "ERROR" not in site.output, site.output


def test_a_broken_internal_link_fails_the_build(builds):
    broken = builds["broken"]
    assert broken.returncode != 0, "a copy of the docs with broken links built cleanly"
    for words in BROKEN.values():
        assert words in broken.output, f"no warning names {words!r}:\n{broken.output}"
    # the broken links, and nothing else in the small site, made it fail
    warnings = [line for line in broken.output.splitlines() if "WARNING" in line]
    assert len(warnings) == len(BROKEN), broken.output
    for line in warnings:
        assert any(words in line for words in BROKEN.values()), line


def test_configuration_fetches_nothing():
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert not [e for e in conf["extensions"] if "intersphinx" in e or "linkcheck" in e]


def test_cli_page_lists_every_subcommand_and_option(site):
    from croissant_cutouts.flows.cli import build_parser

    page = site.page("cli.html")
    literals = _literals(page)
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"--help", "--version"} <= literals
    for name, subparser in sub.choices.items():
        section = _section(page, f"cutouts-{name}")
        found = _literals(section)
        for action in subparser._actions:
            for option in action.option_strings:
                assert option in found, f"cutouts {name}: {option} missing from cli.html"
            if action.help:
                words = " ".join(action.help.replace("%(prog)s", "cutouts").split()[:4])
                assert words in _plain(section), f"cutouts {name}: help of {action.dest}"


def test_params_page_lists_every_field_of_every_section(site):
    from croissant_cutouts.tasks.config import Params

    page = site.page("parameters.html")
    for section_name, field in Params.model_fields.items():
        section = _section(page, f"params-{section_name}")
        found = _literals(section)
        for key, info in field.annotation.model_fields.items():
            assert key in found, f"{section_name}.{key} missing from parameters.html"
            if info.description:
                words = " ".join(info.description.replace("``", "").split()[:3])
                assert words in _plain(section), f"{section_name}.{key}: description missing"


def test_output_page_lists_every_index_column(site):
    from croissant_cutouts.tasks.contract import INDEX_SCHEMA

    page = site.page("output.html")
    start = page.index('class="cutouts-generated')
    table = page[start : page.index("</table>", start)]
    found = _literals(table)
    for column in INDEX_SCHEMA:
        assert column.name in found, f"{column.name} missing from the index table"
        assert html.escape(column.description.split()[0]) in table
    rows = re.findall(r"<tr", table)
    assert len(rows) == len(INDEX_SCHEMA) + 1  # a header row, then one row per column


def test_api_reference_documents_every_module(site):
    pages = "".join(p.read_text(encoding="utf-8") for p in (site.html / "api").glob("*.html"))
    for top in ("tasks", "flows", "simulate"):
        package = importlib.import_module(f"croissant_cutouts.{top}")
        names = [package.__name__] + [
            info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
        ]
        for name in names:
            assert f'id="module-{name}"' in pages, f"{name} is not in the API reference"


def test_no_page_points_outside_the_repository():
    for path in [*DOCS.rglob("*.md"), *DOCS.rglob("*.py")]:
        if "_build" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text, f"{path} links outside the repository"
        assert "this machine" not in text.lower(), f"{path}: name the hardware instead"
