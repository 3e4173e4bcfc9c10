"""Sphinx directives that render reference tables from the code, at build time.

- ``cutouts-cli``: every subcommand of ``croissant_cutouts.flows.cli.build_parser()``, its
  usage and a table of its options (all spellings, default, choices, help);
- ``cutouts-params``: every section model of ``croissant_cutouts.tasks.config.Params``, a
  table of its fields (type, default, bounds, description);
- ``cutouts-index-schema``: the columns of ``master_index.csv`` from
  ``croissant_cutouts.tasks.contract.INDEX_SCHEMA``;
- ``cutouts-verify-kinds``: the problem kinds of ``cutouts verify``
  (``croissant_cutouts.tasks.verify.KINDS``).

The pages hold no copy of these tables, so they cannot drift from the code. The directives
build docutils nodes directly, so they work the same in Markdown (MyST) and reST pages.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from collections.abc import Iterable, Sequence

from docutils import nodes
from docutils.parsers.rst import Directive

_CODE = re.compile(r"`([^`]+)`")
_PACKAGE = "croissant_cutouts"
#: The package's three parts (``croissant_cutouts`` itself is a namespace package).
_TOP_PACKAGES = (f"{_PACKAGE}.tasks", f"{_PACKAGE}.flows", f"{_PACKAGE}.simulate")


# --------------------------------------------------------------------------- node helpers


def _inline(text: str) -> list[nodes.Node]:
    """Plain text with ``code`` spans (single backticks) as literals."""
    out: list[nodes.Node] = []
    pos = 0
    for match in _CODE.finditer(text):
        if match.start() > pos:
            out.append(nodes.Text(text[pos : match.start()]))
        out.append(nodes.literal(match.group(1), match.group(1)))
        pos = match.end()
    if pos < len(text):
        out.append(nodes.Text(text[pos:]))
    return out


def _para(text: str) -> nodes.paragraph:
    return nodes.paragraph("", "", *_inline(text))


def _cell(content: str | nodes.Node | Sequence[nodes.Node]) -> nodes.entry:
    entry = nodes.entry()
    if isinstance(content, str):
        if content:
            entry += _para(content)
    elif isinstance(content, nodes.Node):
        entry += content
    else:
        entry += list(content)
    return entry


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], widths: Sequence[int]
) -> nodes.table:
    table = nodes.table(classes=["cutouts-generated"])
    group = nodes.tgroup(cols=len(headers))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    row = nodes.row()
    for header in headers:
        row += _cell(header)
    head += row
    body = nodes.tbody()
    group += body
    for cells in rows:
        row = nodes.row()
        for content in cells:
            row += _cell(content)  # type: ignore[arg-type]
        body += row
    return table


def _literals(names: Sequence[str], sep: str = ", ") -> nodes.paragraph:
    para = nodes.paragraph()
    for k, name in enumerate(names):
        if k:
            para += nodes.Text(sep)
        para += nodes.literal(name, name)
    return para


def _section(document: nodes.document, title: str, ident: str) -> nodes.section:
    """A section whose title may hold ``code`` spans, labelled ``ident`` for ``{ref}``."""
    section = nodes.section(ids=[nodes.make_id(ident)], names=[nodes.fully_normalize_name(ident)])
    section += nodes.title("", "", *_inline(title))
    document.note_explicit_target(section, section)  # a label: {ref}`params-simulate`
    return section


# --------------------------------------------------------------------------- the CLI


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name, ""), p) for name, p in action.choices.items()]
    return []


def option_rows(parser: argparse.ArgumentParser) -> list[tuple[list[str], str, str]]:
    """(every option string, default, help) of each option of ``parser``, ``-h`` included."""
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or not action.option_strings:
            continue
        default = action.default
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            shown = ""
        elif isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            shown = "off"
        elif default is None or default is argparse.SUPPRESS:
            shown = "from the params file" if _mentions_params(action.help or "") else "none"
        else:
            shown = f"`{default}`"
        help_text = (action.help or "").replace("%(prog)s", parser.prog).replace("%%", "%")
        if action.choices:
            help_text += "; one of " + ", ".join(f"`{c}`" for c in action.choices)
        if action.nargs in ("+", "*"):
            help_text += " (one or more values)"
        rows.append((list(action.option_strings), shown, help_text))
    return rows


def _mentions_params(help_text: str) -> bool:
    return bool(re.search(r"\b(cutouts|select|simulate|train|run|labels|splits)\.\w+", help_text))


def _usage(parser: argparse.ArgumentParser) -> nodes.literal_block:
    text = parser.format_usage().strip()
    return nodes.literal_block(text, text, language="text")


def _options_table(parser: argparse.ArgumentParser) -> nodes.table:
    rows = [
        (_literals(opts), default, help_text) for opts, default, help_text in option_rows(parser)
    ]
    return _table(["option", "default", "meaning"], rows, [24, 14, 62])


class CliDirective(Directive):
    """``cutouts-cli``: the whole command line, from ``build_parser()``."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from croissant_cutouts.flows.cli import build_parser

        parser = build_parser()
        document = self.state.document
        out: list[nodes.Node] = [_para(parser.description or ""), _usage(parser)]
        out.append(_options_table(parser))
        for name, summary, sub in _subparsers(parser):
            section = _section(document, f"`cutouts {name}`", f"cutouts-{name}")
            section += _para(summary[:1].upper() + summary[1:] + ".")
            if sub.description:
                section += _para(sub.description)
            section += _usage(sub)
            section += _options_table(sub)
            out.append(section)
        return out


# --------------------------------------------------------------------------- the params


def type_name(annotation: object) -> str:
    """A reader's name for a field's type: ``int``, ``files | shards``, ``list of str``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" | `null`" if type(None) in args else "")
    if origin in (list, tuple, set, frozenset):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: object) -> str | nodes.Node:
    from pydantic_core import PydanticUndefined

    value = field.get_default(call_default_factory=True)  # type: ignore[attr-defined]
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict):
        items = nodes.bullet_list()
        for key, item in value.items():
            items += nodes.list_item("", _para(f"`{key}`: `{item}`"))
        return items
    if isinstance(value, list | tuple):
        if not value:
            return "`[]`"
        if all(isinstance(v, str) and len(v) < 40 for v in value):
            return _literals([str(v) for v in value])
        items = nodes.bullet_list()
        for item in value:
            items += nodes.list_item("", nodes.paragraph(str(item), str(item)))
        return items
    if isinstance(value, str) and len(value) > 60:
        return nodes.paragraph(value, value)
    return f"`{value}`"


_BOUNDS = (("ge", ">= {}"), ("gt", "> {}"), ("le", "<= {}"), ("lt", "< {}"))


def bounds_text(field: object) -> str:
    """The constraints pydantic enforces on a field, in words."""
    words = []
    for meta in field.metadata:  # type: ignore[attr-defined]
        for attr, fmt in _BOUNDS:
            if getattr(meta, attr, None) is not None:
                words.append(fmt.format(getattr(meta, attr)))
        if getattr(meta, "min_length", None):
            words.append(f"at least {meta.min_length} long")
        if getattr(meta, "max_length", None):
            words.append(f"at most {meta.max_length} long")
        if getattr(meta, "pattern", None):
            words.append(f"matches `{meta.pattern}`")
    return "; ".join(words)


def param_rows(model: type) -> list[tuple[str, str, object, str]]:
    """(key, type, default, description and bounds) of each field of a section model."""
    rows = []
    for key, field in model.model_fields.items():  # type: ignore[attr-defined]
        description = field.description or ""
        bounds = bounds_text(field)
        if bounds:
            description = f"{description} Bounds: {bounds}.".strip()
        rows.append((f"`{key}`", type_name(field.annotation), default_text(field), description))
    return rows


def _first_paragraph(doc: str | None) -> str:
    text = (doc or "").strip().split("\n\n")[0]
    text = " ".join(text.split())
    return text.replace("``", "`")


class ParamsDirective(Directive):
    """``cutouts-params``: every section of ``params.yaml``, from the pydantic models."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from croissant_cutouts.tasks.config import Params

        document = self.state.document
        out: list[nodes.Node] = []
        for name, field in Params.model_fields.items():
            model = field.annotation
            section = _section(document, f"`{name}:`", f"params-{name}")
            section += _para(f"{_first_paragraph(model.__doc__)} (`{model.__name__}`)")
            section += _table(
                ["key", "type", "default", "meaning"], param_rows(model), [16, 16, 20, 48]
            )
            out.append(section)
        return out


# --------------------------------------------------------------------------- the index


class IndexSchemaDirective(Directive):
    """``cutouts-index-schema``: the columns of ``master_index.csv``, in order."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from croissant_cutouts.tasks.contract import INDEX_SCHEMA

        rows = []
        for k, column in enumerate(INDEX_SCHEMA):
            name = _literals([column.name])
            if column.field:
                name += nodes.Text(" (Croissant field ")
                name += nodes.literal(column.field, column.field)
                name += nodes.Text(")")
            rows.append(
                (str(k), name, f"`{column.dtype}`", f"`{column.data_type}`", column.description)
            )
        return [
            _table(["#", "column", "pandas dtype", "Croissant type", "meaning"], rows,
                   [4, 22, 10, 12, 52])
        ]


class VerifyKindsDirective(Directive):
    """``cutouts-verify-kinds``: the kinds of problem ``cutouts verify`` reports."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from croissant_cutouts.tasks.verify import KINDS

        rows = [(f"`{kind}`", what) for kind, what in KINDS.items()]
        return [_table(["kind", "what is wrong"], rows, [20, 80])]


# --------------------------------------------------------------------------- the API pages

#: autodoc options of particular modules: a pydantic model's fields are tabled on the
#: parameters page, so the config module lists only what has a docstring.
MODULE_OPTIONS: dict[str, tuple[str, ...]] = {
    "croissant_cutouts.tasks.config": (":no-undoc-members:",),
}


def package_modules(package: str) -> list[str]:
    """The plain modules (not subpackages) directly inside ``package``, sorted by name."""
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    return sorted(
        f"{package}.{info.name}"
        for info in pkgutil.iter_modules(pkg.__path__)
        if not info.ispkg and not info.name.startswith("_")
    )


class AutomodulesDirective(Directive):
    """``cutouts-automodules PACKAGE``: the package's docstring, then each of its modules.

    Every plain module of the package gets a section and an ``automodule`` with its members,
    so a module added to the package is documented without editing a page. Use it inside an
    ``{eval-rst}`` block (the generated directives are reST).
    """

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        from docutils.statemachine import StringList
        from sphinx.util.nodes import nested_parse_with_titles

        import_package()
        package = self.arguments[0]
        lines = [f".. automodule:: {package}", "   :no-members:", ""]
        for module in package_modules(package):
            title = f"``{module}``"
            lines += [title, "-" * len(title), "", f".. automodule:: {module}"]
            lines += [f"   {option}" for option in MODULE_OPTIONS.get(module, ())]
            lines.append("")
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source=package), container)
        return container.children


# --------------------------------------------------------------------------- short references

def _candidates(objects: dict, target: str, module: str, cls: str) -> list[str]:
    """Full names a short Python reference can mean, best first.

    Docstrings name objects as a reader of the module would: ``tasks.contract.INDEX_SCHEMA``
    (the package prefix left out), ``Problem`` (a name of the same or a sibling module),
    ``JobSpec.remote``. The first scope that holds the name wins: the package prefix, the
    current class, the current module, its package, then any unique match.
    """
    exact = [f"{_PACKAGE}.{target}", f"{module}.{cls}.{target}" if cls else "",
             f"{module}.{target}" if module else ""]
    for name in exact:
        if name in objects:
            return [name]
    suffix = "." + target
    matches = sorted(n for n in objects if n.endswith(suffix) and n.startswith(_PACKAGE))
    parts = module.split(".")
    for depth in range(len(parts) - 1, 1, -1):  # the module's package, then the one above
        scope = ".".join(parts[:depth]) + "."
        inside = [n for n in matches if n.startswith(scope)]
        if len(inside) == 1:
            return inside
    return matches if len(matches) == 1 else []


def resolve_short_reference(app, env, node, contnode):
    """``missing-reference`` handler: resolve a short ``:func:``/``:class:``/... target."""
    from sphinx.util.nodes import make_refnode

    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    objects = env.get_domain("py").objects
    found = _candidates(objects, target, node.get("py:module") or "", node.get("py:class") or "")
    if not found:
        return None
    entry = objects[found[0]]
    return make_refnode(
        app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, found[0]
    )


# --------------------------------------------------------------------------- docstrings

_UNDERLINE = re.compile(r"^(-{3,}|={3,})$")


def module_headings_as_rubrics(app, what, name, obj, options, lines):
    """Turn a module docstring's section headings (``Conventions`` / ``---``) into rubrics.

    Several modules on one API page may each have a ``Conventions`` section; as real
    sections their ids would collide. A rubric reads the same and has no id.
    """
    if what != "module":
        return
    for k in range(len(lines) - 1):
        title, rule = lines[k].strip(), lines[k + 1].strip()
        if title and _UNDERLINE.match(rule) and len(rule) >= len(title):
            lines[k], lines[k + 1] = f".. rubric:: {title}", ""


def skip_reexports(app, what, name, obj, skip, options):
    """Document each object once, in the module that defines it, not where it is re-exported."""
    if what != "module":
        return None
    current = getattr(app.env, "current_document", None)  # Sphinx 8.2 and later
    documenting = (
        current.autodoc_module if current is not None
        else app.env.temp_data.get("autodoc:module")
    )
    home = getattr(getattr(obj, "fn", obj), "__module__", None)  # a Prefect task: its function
    if (
        documenting
        and isinstance(home, str)
        and home.startswith(_PACKAGE + ".")
        and home != documenting
    ):
        return True
    return None


def model_signature(app, what, name, obj, options, signature, return_annotation):
    """A pydantic model's signature is its fields: show ``(**fields)``, tabled elsewhere."""
    from pydantic import BaseModel

    if what == "class" and isinstance(obj, type) and issubclass(obj, BaseModel):
        return "(**fields)", None
    return None


_IMPORTED: list[bool] = []


def import_package() -> None:
    """Import every module of the package once, before autodoc documents any of them.

    Documenting a module that defines pydantic models, then importing Prefect for the first
    time, breaks Prefect's own pydantic models inside Sphinx; importing first avoids it.
    Called by the first ``cutouts-automodules``, so a build without API pages imports nothing.
    """
    import importlib
    import pkgutil

    if _IMPORTED:
        return
    for top in _TOP_PACKAGES:
        package = importlib.import_module(top)
        for info in pkgutil.walk_packages(package.__path__, top + "."):
            importlib.import_module(info.name)
    _IMPORTED.append(True)


def setup(app):
    app.connect("missing-reference", resolve_short_reference)
    app.connect("autodoc-process-docstring", module_headings_as_rubrics, priority=400)
    app.connect("autodoc-process-signature", model_signature)
    app.connect("autodoc-skip-member", skip_reexports)
    app.add_directive("cutouts-cli", CliDirective)
    app.add_directive("cutouts-params", ParamsDirective)
    app.add_directive("cutouts-index-schema", IndexSchemaDirective)
    app.add_directive("cutouts-verify-kinds", VerifyKindsDirective)
    app.add_directive("cutouts-automodules", AutomodulesDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
