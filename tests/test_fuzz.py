"""Fuzzing: bad catalogs, any geometry and malformed FITS never crash a run.

1. Catalog parsing (hypothesis, plain functions): random ``psfcat.csv`` files (seed layout)
   and RAPID PSF-fit + finder catalogs, with random columns, values, encodings and damage.
   Property: the parser returns a table in which every catalog row is accounted for once
   (kept, or rejected with a reason), or raises ``CatalogError``/``JobError`` naming the file
   (and the row when one row is to blame). Any other exception is a bug.
2. Cutout geometry (hypothesis): random image shapes and positions, checked byte for byte
   against a slow per-pixel reference of ``cutout-contract.md`` written here.
3. Malformed FITS: random header damage (hypothesis) gives a ``JobError`` or a usable image;
   and a corpus of broken files run through the real Prefect flow: every bad job is a row of
   ``rejects.csv`` with a reason, NaN/inf images give all-zero channels, and the good
   cutouts equal the reference.

Example counts keep the module at about 30 s on two cores (the Prefect test server included).
"""

from __future__ import annotations

import csv
import io
import math
import re
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.visualization import ZScaleInterval
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from croissant_cutouts.tasks.contract import CHANNELS, CUTOUT_SIZE
from croissant_cutouts.tasks.dataset.cutout import (
    candidate_pixels,
    extract_stamps,
    make_tensors,
    position_rejects,
)
from croissant_cutouts.tasks.dataset.normalize import (
    CONSTANT,
    NO_FINITE,
    OK,
    ChannelLimits,
    apply_limits,
    zscale_limits,
)
from croissant_cutouts.tasks.errors import CatalogError, JobError
from croissant_cutouts.tasks.inputs.load import open_image, read_image_info
from croissant_cutouts.tasks.inputs.rapid import RapidLayout
from croissant_cutouts.tasks.inputs.seed import SeedLayout

# Hypothesis warns when Python's global `random` state moves while a strategy draws. Here it
# moves in other threads of the process (the Prefect test server's client picks ports and
# retry jitter with `random`), not in our strategies, which draw only from hypothesis and
# seeded numpy generators; the warning would make these tests fail by timing alone.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

FUZZ = settings(
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAN, INF = float("nan"), float("inf")
FIELD_LIMIT = csv.field_size_limit()
HALF = CUTOUT_SIZE // 2


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """One folder per module; each hypothesis example makes its own job folder in it."""
    return tmp_path_factory.mktemp("fuzz")


def short(value: object, limit: int = 300) -> str:
    """``repr`` cut to ``limit`` characters: failure reports stay readable with 128 KiB fields."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...<{len(text)} characters>"


def new_job(root: Path, name: str = "jid0001") -> Path:
    job = Path(tempfile.mkdtemp(dir=root)) / name
    job.mkdir()
    return job


# ------------------------------------------------------------------ catalog cells


@dataclass(frozen=True)
class Cell:
    """One catalog field: its text, and what it means (a float, NaN, or None: not a number)."""

    text: str
    value: float | None

    def _repr_pretty_(self, p, cycle) -> None:  # hypothesis prints failing examples with it
        p.text(f"Cell({short(self.text, 60)}, {self.value!r})")


SPECIAL_NUMBERS = (
    "1e308", "-1e308", "1e400", "-1e400", "4.9e-324", "1e-400", "inf", "-inf", "+inf",
    "Infinity", "-Infinity", "nan", "NaN", "-nan", "+nan", ".5", "5.", "+1.5", "1E5", "-0",
    "-0.0", "-1", "-1.0", "-1e0", "0", "3",
)  # fmt: skip
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: Cell(repr(v), v)),
    st.floats(-200.0, 200.0).map(lambda v: Cell(repr(v), v)),
    st.integers(-(10**30), 10**30).map(lambda v: Cell(str(v), float(v))),
    st.sampled_from(SPECIAL_NUMBERS).map(lambda t: Cell(t, float(t))),
)
#: Texts that are no number for pandas (some are for Python's ``float``: ``1_000``).
NOT_NUMBERS = (
    "abc", "1.2.3", "--1", "0x10", "1_000", "x1", "1,5", 'say "hi"', "a\nb", "q\x85q",
    "q\u2028q", "q\rq", "NA", "null", "None", "N/A", "#N/A", "é", "ß∂ƒ",
)  # fmt: skip
_TEXT = st.characters(codec="utf-8", exclude_characters="\x00\ufeff")
words = st.one_of(
    st.sampled_from(NOT_NUMBERS), st.text(_TEXT, max_size=12).map(lambda s: "q" + s)
).map(lambda t: Cell(t, None))
empties = st.sampled_from(["", " ", "\t "]).map(lambda t: Cell(t, NAN))
longs = st.tuples(st.sampled_from("q "), st.sampled_from([2000, FIELD_LIMIT, FIELD_LIMIT + 1])).map(
    lambda t: Cell(t[0] * t[1], None if t[0] == "q" else NAN)
)
padded = st.tuples(st.sampled_from(["", " ", "\t"]), numbers, st.sampled_from(["", " "])).map(
    lambda t: Cell(t[0] + t[1].text + t[2], t[1].value)
)


def rarely(one_in: int, rare, common):
    """``rare`` about once in ``one_in`` draws, else ``common`` (shrinks towards ``common``).

    The rare branch is 1, not 0: hypothesis draws 0 (its simplest value) far more often.
    """
    return st.integers(0, one_in - 1).flatmap(lambda k: rare if k == 1 else common)


def chance(draw, one_in: int) -> bool:
    """True about once in ``one_in`` draws (False when shrunk)."""
    return draw(st.integers(0, one_in - 1)) == 1


any_cell = rarely(60, longs, st.one_of(numbers, numbers, padded, words, empties))


def csv_field(text: str, force: bool) -> str:
    """A field as a CSV writer writes it: quoted when it must be (or when ``force``)."""
    if force or any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_line(fields: list[str], quotes: list[bool]) -> str:
    if len(fields) == 1 and fields[0] == "":
        return '""'  # else it would be a blank line
    return ",".join(csv_field(f, q) for f, q in zip(fields, quotes, strict=True))


# ------------------------------------------------------------------ 1a. seed layout


@dataclass
class SeedCase:
    header: list[str]
    rows: list[list[Cell]]
    data: bytes

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(f"SeedCase(data={short(self.data, 3000)})")

    @property
    def names(self) -> list[str]:
        return [h.strip() for h in self.header]


@st.composite
def seed_catalogs(draw) -> SeedCase:
    """A psfcat.csv: some required columns maybe missing, optional and odd extra columns."""
    columns = [c for c in ("x", "y", "match") if not chance(draw, 25)]
    columns += draw(st.lists(st.sampled_from(["flux", "fwhm", "elongation", "flags"]), unique=True))
    extras = rarely(
        4,
        st.sampled_from(["id", "X", "x ", " match", "_merge", "", "a,b", 'q"q', "q\nq", "flux"]),
        st.text(_TEXT, max_size=8).map(lambda s: "q" + s),
    )
    columns += draw(st.lists(extras, max_size=3))
    columns = draw(st.permutations(columns))
    header = [draw(st.sampled_from(["", " "])) + c for c in columns]
    cells = {
        "x": st.one_of(numbers, padded, any_cell),
        "y": st.one_of(numbers, padded, any_cell),
        "match": st.one_of(
            st.sampled_from(["-1", "0", "7", "-1.0"]).map(lambda t: Cell(t, float(t))), any_cell
        ),
    }
    n = draw(rarely(12, st.just(0), st.integers(1, 6)))
    rows = [[draw(cells.get(c.strip(), any_cell)) for c in columns] for _ in range(n)]
    if rows and chance(draw, 15):  # a ragged row
        row = draw(st.sampled_from(rows))
        if row and draw(st.booleans()):
            row.pop()
        else:
            row.append(draw(any_cell))
    lines = [csv_line(header, [draw(st.booleans()) for _ in header])] if header else []
    for row in rows:
        texts = [c.text for c in row]
        lines.append(csv_line(texts, [draw(st.integers(0, 4)) == 0 for _ in texts]))
    for _ in range(draw(st.integers(0, 2))):  # blank lines anywhere
        lines.insert(draw(st.integers(0, len(lines))), "")
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = eol.join(lines) + (eol if draw(st.booleans()) else "")
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return SeedCase(header, rows, bom + text.encode("utf-8"))


def seed_errors(case: SeedCase) -> list[str]:
    """Why the contract refuses this catalog as a whole (empty: it is readable)."""
    names, width = case.names, len(case.header)
    why = []
    if not case.header and not any(case.rows):
        why.append("empty")
    if any(len(f) > FIELD_LIMIT for f in case.header) or any(
        len(c.text) > FIELD_LIMIT for row in case.rows for c in row
    ):
        why.append("field too long")
    ragged = [i for i, row in enumerate(case.rows) if len(row) != width]
    if ragged:
        why.append(f"row {ragged[0]}")
    if len(set(names)) != len(names):
        why.append("duplicate names")
    if any(c not in names for c in ("x", "y", "match")):
        why.append("missing column")
    if not case.rows:
        why.append("no rows")
    return why


def is_finite(cell: Cell) -> bool:
    return cell.value is not None and math.isfinite(cell.value)


def expected_seed_rejects(case: SeedCase) -> set[int]:
    col = {n: k for k, n in enumerate(case.names)}
    bad = set()
    for i, row in enumerate(case.rows):
        x, y, match = (row[col[c]] for c in ("x", "y", "match"))
        features = [row[col[c]] for c in ("flux", "fwhm", "elongation", "flags") if c in col]
        if (
            not is_finite(x)
            or not is_finite(y)
            or match.value is None
            or math.isnan(match.value)
            or any(f.value is None for f in features)
        ):
            bad.add(i)
    return bad


def whole_or_na(value: float | None) -> int | None:
    """What an ``Int64`` column (flags, npix) holds for a value: a whole number in range."""
    if value is None or not math.isfinite(value) or value != round(value):
        return None
    return int(value) if -(2.0**63) < value < 2.0**63 else None


def assert_names_file(exc: JobError, *names: str) -> None:
    assert isinstance(exc, JobError)
    assert any(n in str(exc) for n in names), str(exc)
    assert exc.reason.strip()


def assert_accounted(table: pd.DataFrame, rejects: list[tuple[int, str]], n_rows: int) -> None:
    """Every catalog row is once in the table; rejected rows are a subset, each with a reason."""
    assert len(table) == n_rows
    assert table["catalog_row"].tolist() == list(range(n_rows))
    rows = [k for k, _ in rejects]
    assert len(rows) == len(set(rows)) and set(rows) <= set(range(n_rows))
    assert all(isinstance(why, str) and why.strip() for _, why in rejects)


@settings(FUZZ, max_examples=300)
@given(case=seed_catalogs())
def test_seed_catalog_parses_or_names_the_file(scratch, case):
    job = new_job(scratch)
    (job / "psfcat.csv").write_bytes(case.data)
    errors = seed_errors(case)
    note(f"expected errors: {errors}")
    event("refused" if errors else "accepted")
    try:
        table, rejects, _ = SeedLayout().parse_catalog(job.name, job)
    except CatalogError as exc:
        assert errors, f"refused a readable catalog: {exc}"
        assert_names_file(exc, "psfcat.csv")
        if errors[0].startswith("row ") and len(errors) == 1:
            assert re.search(rf"\b{errors[0]}\b", str(exc)), str(exc)
        return
    assert not errors, f"accepted a catalog the contract refuses ({errors})"
    n = len(case.rows)
    assert_accounted(table, rejects, n)
    assert SeedLayout().count_rows(job.name, job) == n
    assert {k for k, _ in rejects} == expected_seed_rejects(case)
    col = {name: k for k, name in enumerate(case.names)}
    kept = sorted(set(range(n)) - {k for k, _ in rejects})
    for i in kept:
        row = case.rows[i]
        assert table.loc[i, "x"] == row[col["x"]].value
        assert table.loc[i, "y"] == row[col["y"]].value
        assert table.loc[i, "label"] == (0 if row[col["match"]].value == -1 else 1)
        for name in ("flux", "fwhm", "elongation"):
            want = row[col[name]].value if name in col else NAN
            assert table.loc[i, name] == want or (math.isnan(want) and np.isnan(table.loc[i, name]))
        flags = whole_or_na(row[col["flags"]].value) if "flags" in col else None
        got = table.loc[i, "flags"]
        assert (got is pd.NA and flags is None) or got == flags, (got, flags)


def csv_rows(text: str) -> list[list[str]] | None:
    """Non-blank rows of a CSV text, header first (None when the csv module refuses it)."""
    try:
        return [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    except csv.Error:
        return None


#: UTF-8 snippets inserted into catalogs: separators, quotes, line ends, odd values.
TEXT_DAMAGE = (
    b",", b'"', b"\n", b"\r", b"\r\n", b"\n\n", b" ", b"\t", b"nan", b"1e999", b"-1", b"abc",
    b"\xc2\x85", b"\xc2\xa0", b"\xe2\x80\xa8", b"\x0c", b"#", b"\xef\xbb\xbf", b"\xc3\xa9",
)  # fmt: skip


@st.composite
def damaged_bytes(draw) -> bytes:
    """Bytes that may be anything: random, another encoding, or a catalog with damage."""
    kind = draw(st.sampled_from(["binary", "encoded", "damaged", "text", "text", "text"]))
    if kind == "binary":
        return draw(st.binary(max_size=2000))
    if kind == "encoded":
        text = draw(st.sampled_from(["x,y,match\n", "x,y,match\n1,2,-1\n", ""])) + draw(
            st.text(st.characters(codec="utf-8"), max_size=200)
        )
        codec = draw(
            st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "utf-32", "cp1252"])
        )
        return text.encode(codec, errors="replace")
    data = bytearray(draw(seed_catalogs()).data)
    for _ in range(draw(st.integers(1, 3))):
        if kind == "text":  # still UTF-8: a snippet that may or may not break the table
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.sampled_from(TEXT_DAMAGE))
            continue
        op = draw(st.sampled_from(["cut", "insert", "flip", "nul", "repeat"]))
        at = draw(st.integers(0, len(data)))
        if op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif op == "nul":
            data[at:at] = b"\x00"
        else:
            data[at:at] = bytes(data[at : at + draw(st.integers(1, 40))])
    return bytes(data)


@settings(FUZZ, max_examples=200)
@given(data=damaged_bytes())
def test_seed_catalog_any_bytes(scratch, data):
    job = new_job(scratch)
    (job / "psfcat.csv").write_bytes(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    rows = csv_rows(text) if text is not None and "\x00" not in text else None
    try:
        table, rejects, _ = SeedLayout().parse_catalog(job.name, job)
    except CatalogError as exc:
        event("refused")
        assert_names_file(exc, "psfcat.csv")
        return
    event("accepted")
    assert rows is not None, "parsed a file that is no UTF-8 CSV text"
    assert_accounted(table, rejects, len(rows) - 1)
    assert SeedLayout().count_rows(job.name, job) == len(rows) - 1
    kept = table.drop(index=[k for k, _ in rejects])
    assert np.isfinite(kept[["x", "y"]].to_numpy()).all()
    assert set(kept["label"]) <= {0, 1}


# ------------------------------------------------------------------ 1b. RAPID layout

PSF_REQUIRED = ("id", "x_fit", "y_fit", "flux_fit")
FINDER_REQUIRED = ("id", "xcentroid", "ycentroid")
#: id texts and what they mean as ids: equal numbers are the same id, None is no id.
ID_TOKENS = {
    **{str(k): k for k in range(1, 9)},
    **{f"{k}.0": k for k in (1, 2, 3)},
    "+4": 4, "04": 4, "-3": -3, "2.5": 2.5, "q7": "q7", "qa": "qa", "nan": None,
    "99999999999999999999999": 99999999999999999999999,
    "99999999999999999999998": 99999999999999999999998,
}  # fmt: skip
_ALNUM = st.characters(min_codepoint=48, max_codepoint=122, categories=["Ll", "Lu", "Nd"])
tokens = st.one_of(
    numbers,
    st.sampled_from(["abc", "x1", "0x10", "NA", "null", "N/A", "q_1"]).map(lambda t: Cell(t, None)),
    st.text(_ALNUM, max_size=6).map(lambda s: Cell("q" + s, None)),
)


@dataclass
class RapidCase:
    psf_cols: list[str]
    psf_rows: list[list[str]]
    finder_cols: list[str]
    finder_rows: list[list[str]]
    psf: bytes
    finder: bytes

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(f"RapidCase(psf={short(self.psf, 2000)}, finder={short(self.finder, 2000)})")


def whitespace_table(draw, columns: list[str], rows: list[list[str]]) -> bytes:
    seps = st.sampled_from([" ", "  ", "\t", " \t "])
    lines = [
        draw(st.sampled_from(["", " "])) + "".join(t + draw(seps) for t in line[:-1]) + line[-1]
        for line in [columns, *rows]
        if line
    ]
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", "  "])))
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return bom + (eol.join(lines) + eol).encode("utf-8")


@st.composite
def rapid_catalogs(draw) -> RapidCase:
    """PSF-fit and finder catalogs: ids mostly unique and partly shared, rarely broken."""

    def columns(required, extras):
        cols = [c for c in required if not chance(draw, 40)]
        cols += draw(st.lists(st.sampled_from(extras), unique=True, max_size=3))
        cols += draw(
            st.lists(st.text(_ALNUM, min_size=1, max_size=5).map(lambda s: "q" + s), max_size=2)
        )
        return draw(st.permutations(list(dict.fromkeys(cols))))

    psf_cols = columns(PSF_REQUIRED, ["flags", "npixfit", "qfit", "ra", "_merge"])
    finder_cols = columns(FINDER_REQUIRED, ["npix", "sharpness", "peak", "flux", "mag"])
    meanings = sorted({str(v) for v in ID_TOKENS.values()})
    spelled = {m: sorted(t for t, v in ID_TOKENS.items() if str(v) == m) for m in meanings}

    def ids(n: int, shared: list[str] = ()) -> list[str]:
        """``n`` ids, unique as numbers (but rarely), each in one of its spellings."""
        pool = draw(st.permutations(meanings))
        first = [str(ID_TOKENS[t]) for t in shared]
        chosen = (first + [m for m in pool if m not in first])[:n]
        if len(chosen) > 1 and chance(draw, 10):
            chosen[-1] = chosen[0]  # a duplicate id
        return [draw(st.sampled_from(spelled[m])) for m in chosen]

    def table(cols, id_column):
        return [[key if c == "id" else draw(tokens).text for c in cols] for key in id_column]

    psf_ids = ids(draw(rarely(12, st.just(0), st.integers(1, 6))))
    some = st.lists(st.sampled_from(psf_ids), unique=True, min_size=1) if psf_ids else st.just([])
    shared = draw(rarely(6, st.just([]), some))
    finder_ids = draw(st.permutations(ids(len(shared) + draw(st.integers(0, 3)), shared)))
    psf_rows = table(psf_cols, psf_ids)
    finder_rows = table(finder_cols, finder_ids)
    if psf_rows and chance(draw, 15):  # a ragged row
        row = draw(st.sampled_from(psf_rows))
        row.append(draw(tokens).text) if draw(st.booleans()) or len(row) < 2 else row.pop()
    return RapidCase(
        psf_cols,
        psf_rows,
        finder_cols,
        finder_rows,
        whitespace_table(draw, psf_cols, psf_rows),
        whitespace_table(draw, finder_cols, finder_rows),
    )


def value_of(token: str) -> float:
    """What a RAPID catalog's numeric column holds for a token (NaN: not a number)."""
    try:
        return float(token)
    except ValueError:
        return NAN


def rapid_errors(case: RapidCase) -> list[str]:
    why = []
    for name, cols, rows, required in (
        ("psfcat", case.psf_cols, case.psf_rows, PSF_REQUIRED),
        ("finder", case.finder_cols, case.finder_rows, FINDER_REQUIRED),
    ):
        if not cols:
            why.append(f"{name} empty")
            continue
        ragged = [i for i, r in enumerate(rows) if len(r) != len(cols)]
        if ragged:
            why.append(f"{name} row {ragged[0]}")
            continue
        if any(c not in cols for c in required):
            why.append(f"{name} lacks a column")
            continue
        keys = [ID_TOKENS[r[cols.index("id")]] for r in rows]
        keys = [k for k in keys if k is not None]
        if len(set(keys)) != len(keys):
            why.append(f"{name} duplicate id")
    if not why and not case.psf_rows:
        why.append("no rows")
    if not why:
        finder_ids = {ID_TOKENS[r[case.finder_cols.index("id")]] for r in case.finder_rows}
        psf_ids = [ID_TOKENS[r[case.psf_cols.index("id")]] for r in case.psf_rows]
        if not any(k is not None and k in finder_ids for k in psf_ids):
            why.append("no join")
    return why


def write_rapid(job: Path, case: RapidCase) -> None:
    (job / "diffimage_masked_psfcat.txt").write_bytes(case.psf)
    (job / "diffimage_masked_psfcat_finder.txt").write_bytes(case.finder)


@settings(FUZZ, max_examples=300)
@given(case=rapid_catalogs())
def test_rapid_catalog_joins_on_id_or_names_the_file(scratch, case):
    job = new_job(scratch)
    write_rapid(job, case)
    errors = rapid_errors(case)
    note(f"expected errors: {errors}")
    event("refused" if errors else "accepted")
    try:
        table, rejects, _ = RapidLayout().parse_catalog(job.name, job)
    except CatalogError as exc:
        assert errors, f"refused a readable catalog: {exc}"
        assert_names_file(exc, "diffimage_masked_psfcat.txt", "diffimage_masked_psfcat_finder.txt")
        if len(errors) == 1 and " row " in errors[0]:
            assert re.search(rf"\brow {errors[0].split()[-1]}\b", str(exc)), str(exc)
        return
    assert not errors, f"accepted catalogs the contract refuses ({errors})"
    n = len(case.psf_rows)
    assert_accounted(table, rejects, n)
    assert RapidLayout().count_rows(job.name, job) == n
    pcol = {c: k for k, c in enumerate(case.psf_cols)}
    fcol = {c: k for k, c in enumerate(case.finder_cols)}
    finder = {ID_TOKENS[r[fcol["id"]]]: r for r in case.finder_rows}
    finder.pop(None, None)
    rejected = {k for k, _ in rejects}
    for i, row in enumerate(case.psf_rows):
        key = ID_TOKENS[row[pcol["id"]]]
        assert (i in rejected) == (key is None or key not in finder), (i, key)
        for out, src in (("x", "x_fit"), ("y", "y_fit"), ("flux_fit", "flux_fit")):
            want = value_of(row[pcol[src]])
            got = table.loc[i, out]
            assert got == want or (math.isnan(want) and np.isnan(got)), (out, got, want)
        for name in ("flags", "npixfit"):
            if name in pcol:
                want = whole_or_na(value_of(row[pcol[name]]))
                got = table.loc[i, name]
                assert (got is pd.NA and want is None) or got == want, (name, got, want)
        if i in rejected:
            continue
        match = finder[key]
        for name in ("xcentroid", "ycentroid"):
            want = value_of(match[fcol[name]])
            got = table.loc[i, name]
            assert got == want or (math.isnan(want) and np.isnan(got)), (name, got, want)
        if "npix" in fcol:
            want = whole_or_na(value_of(match[fcol["npix"]]))
            got = table.loc[i, "npix"]
            assert (got is pd.NA and want is None) or got == want, ("npix", got, want)


@st.composite
def rapid_damage(draw):
    """RAPID catalogs as damaged text, random bytes or parquet of odd types; maybe truth."""
    kind = draw(st.sampled_from(["text", "text", "bytes", "parquet", "parquet"]))
    case = draw(rapid_catalogs())
    if kind == "parquet":
        n = draw(rarely(10, st.just(0), st.integers(1, 5)))
        kinds = st.sampled_from(["int", "float", "str", "bool", "bytes", "huge"])

        def column(k, values):
            return {
                "int": pd.array(values, dtype="int64"),
                "float": pd.array([v if v else NAN for v in values], dtype="float64"),
                "str": pd.array([str(v) for v in values], dtype=object),
                "bool": pd.array([v > 2 for v in values], dtype=bool),
                "bytes": pd.array([str(v).encode() for v in values], dtype=object),
                "huge": pd.array([2**64 - 10 + v for v in values], dtype="uint64"),
            }[k]

        def frame(required, n):
            cols = [c for c in required if not chance(draw, 30)] + ["flags", "npix"]
            ids = draw(st.permutations(range(-1, 7)))[:n]  # unique ids, mostly shared
            return pd.DataFrame(
                {
                    c: column(
                        draw(kinds),
                        ids
                        if c == "id"
                        else draw(st.lists(st.integers(-3, 8), min_size=n, max_size=n)),
                    )
                    for c in cols
                }
            )

        psf = frame(PSF_REQUIRED, n)
        finder = frame(FINDER_REQUIRED, draw(st.integers(0, 7)))
        files = {
            "diffimage_masked_psfcat.parquet": psf,
            "diffimage_masked_psfcat_finder.parquet": finder,
        }
        data = {}
        for name, df in files.items():
            buf = io.BytesIO()
            df.to_parquet(buf)
            data[name] = buf.getvalue()
        rows = n
    else:
        psf, finder = case.psf, case.finder
        if kind == "bytes":
            psf = draw(st.one_of(st.just(psf), st.binary(max_size=500)))
            finder = draw(st.one_of(st.just(finder), st.binary(max_size=500)))
        else:
            psf, finder = bytearray(psf), bytearray(finder)
            for target in draw(st.lists(st.sampled_from([psf, finder]), min_size=1, max_size=3)):
                at = draw(st.integers(0, len(target)))
                target[at:at] = draw(st.sampled_from([b" 7", b"\n1 2", *TEXT_DAMAGE]))
        data = {
            "diffimage_masked_psfcat.txt": bytes(psf),
            "diffimage_masked_psfcat_finder.txt": bytes(finder),
        }
        rows = None
    truth = draw(rarely(2, st.sampled_from(sorted(TRUTH_FILES)), st.none()))
    zpt = draw(rarely(3, st.sampled_from(["17.5", "abc", NAN, None, True]), st.just(20.0)))
    return data, rows, truth, zpt


INJECT = "Roman_TDS_simple_model_H158_1_1_lite_inject.txt"
INDEX = "Roman_TDS_index_H158_1_1.txt"
#: Truth files (name, bytes), good or not; a ragged one (``short``, ``long``) must be refused:
#: pandas would pad a short row with NaN, or shift every column when all rows have one more.
TRUTH_FILES = {
    "good": (INJECT, b"xpix ypix flux\n3.0 4.0 100.0\n5 6 nan\n"),
    "index": (
        INDEX,
        b"# object_id ra dec x y realized_flux flux mag obj_type\n7 0 0 3 4 1 1 -5 transient\n",
    ),
    "garbage": (INJECT, b"\xff\xfe\x00\x01garbage\n"),
    "short": (INJECT, b"xpix ypix flux\n1 2\n3 4 5\n"),
    "long": (INJECT, b"xpix ypix flux\n0 3.0 4.0 100.0\n1 5 6 7\n"),
    "index_short": (
        INDEX,
        b"# object_id ra dec x y realized_flux flux mag obj_type\n7 0 0 3 4 1 1 -5\n",
    ),
}


@settings(FUZZ, max_examples=200)
@given(damage=rapid_damage())
def test_rapid_catalog_any_damage(scratch, damage):
    data, n_rows, truth, zpt = damage
    job = new_job(scratch)
    for name, content in data.items():
        (job / name).write_bytes(content)
    if truth is not None:
        name, content = TRUTH_FILES[truth]
        (job / name).write_bytes(content)
    headers = {"FILTER": "H158", **({} if zpt is None else {"ZPTMAG": zpt})}
    try:
        table, rejects, _ = RapidLayout().parse_catalog(job.name, job, None, headers)
    except CatalogError as exc:
        event("refused")
        assert_names_file(exc, *data, INJECT, INDEX)
        return
    except JobError as exc:
        event("refused: ZPTMAG")
        assert "ZPTMAG" in str(exc), str(exc)
        assert truth is not None
        return
    event("accepted")
    if n_rows is None:  # text: rows are the non-blank lines after the header
        text = data["diffimage_masked_psfcat.txt"].decode("utf-8-sig")
        n_rows = sum(1 for line in io.StringIO(text, newline="") if line.split()) - 1
    assert_accounted(table, rejects, n_rows)
    assert RapidLayout().count_rows(job.name, job) == n_rows
    assert truth in (None, "good", "index"), f"accepted the {truth} truth file"
    if truth is not None:
        assert table["labelled"].all() and set(table["label"]) <= {0, 1}


# ------------------------------------------------------------------ 2. geometry


def ref_pixel(x: float, y: float) -> tuple[int, int] | None:
    """The contract's candidate pixel (row, column), or None when x or y is not finite."""
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    return math.floor(y + 0.5), math.floor(x + 0.5)


def ref_stamp(pixels: list[list[float]], r: int, c: int) -> list[list[float | None]]:
    """The 64x64 neighbourhood, pixel (r, c) at [32, 32]; None where it is off the image."""
    ny, nx = len(pixels), len(pixels[0])
    stamp = []
    for i in range(CUTOUT_SIZE):
        row = []
        for j in range(CUTOUT_SIZE):
            rr, cc = r - HALF + i, c - HALF + j
            row.append(pixels[rr][cc] if 0 <= rr < ny and 0 <= cc < nx else None)
        stamp.append(row)
    return stamp


def ref_norm(value: float | None, vmin: float, vmax: float, usable: bool) -> np.float32:
    """Contract steps 2-4 for one pixel: float64 arithmetic, rounded once to float32."""
    if not usable or value is None:
        return np.float32(0.0)
    t = (value - vmin) / (vmax - vmin)
    if math.isnan(t):
        return np.float32(0.0)
    return np.float32(min(max(t, 0.0), 1.0) + 0.0)  # + 0.0: a zero is +0.0, never -0.0


def ref_tensor(
    channels: list[list[list[float]]], limits: list[tuple[float, float, bool]], r: int, c: int
) -> np.ndarray:
    out = np.zeros((CUTOUT_SIZE, CUTOUT_SIZE, len(channels)), np.float32)
    for k, (pixels, (vmin, vmax, usable)) in enumerate(zip(channels, limits, strict=True)):
        for i, row in enumerate(ref_stamp(pixels, r, c)):
            for j, v in enumerate(row):
                out[i, j, k] = ref_norm(v, vmin, vmax, usable)
    return out


def coordinate(n: int):
    """Positions along an axis of ``n`` pixels: mostly inside or at an edge, some far off."""
    k = st.one_of(
        st.integers(0, n - 1),
        st.integers(-2, 2),
        st.integers(n - 2, n + 1),
        st.integers(-70, n + 70),
    )
    halves = st.tuples(k, st.sampled_from([-0.5, 0.5])).map(lambda t: t[0] + t[1])
    return st.one_of(
        k.map(float),
        halves,
        halves,
        st.tuples(halves, st.sampled_from([-INF, INF])).map(lambda t: math.nextafter(*t)),
        st.floats(-1.0, n + 1.0),
        st.floats(-100.0, n + 100.0),
        st.sampled_from([NAN, INF, -INF, 1e300, -1e300, 2.0**63, -(2.0**63), 1e20, -0.0]),
    )


def make_image(
    rng: np.random.Generator, shape, dtype: str, bad: float, huge: float = 0.0
) -> np.ndarray:
    """Random pixels; ``bad``: fraction NaN/+inf/-inf; ``huge``: fraction at +-the dtype's max."""
    if np.dtype(dtype).kind == "f":
        image = rng.normal(0.0, 50.0, shape)
        image[rng.random(shape) < 0.02] = -0.0  # signed zeros must not reach a tensor
        top = float(np.finfo(dtype).max)
        mask = rng.random(shape) < huge
        image[mask] = rng.choice([top, -top], int(mask.sum()))
        mask = rng.random(shape) < bad
        image[mask] = rng.choice([NAN, INF, -INF], int(mask.sum()))
    else:
        info = np.iinfo(dtype)
        image = rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True)
    return image.astype(dtype)


@st.composite
def geometry_cases(draw):
    size = st.one_of(st.sampled_from([1, 2, 31, 32, 33, 63, 64, 65, 130]), st.integers(1, 200))
    ny, nx = draw(size), draw(size)
    dtype = draw(st.sampled_from(["<f4", ">f4", "<f8", ">i2", "u1"]))
    bad = draw(st.sampled_from([0.0, 0.0, 0.05, 1.0]))
    huge = draw(st.sampled_from([0.0, 0.0, 0.0, 0.3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    images = [make_image(rng, (ny, nx), dtype, bad, huge) for _ in CHANNELS]
    inside = st.tuples(st.floats(-0.5, nx - 0.5), st.floats(-0.5, ny - 0.5))
    anywhere = st.tuples(coordinate(nx), coordinate(ny))
    xy = draw(st.lists(st.one_of(inside, anywhere, anywhere), min_size=1, max_size=8))
    xs, ys = zip(*xy, strict=True)
    lo = draw(st.floats(-1e4, 1e4))
    span = draw(st.sampled_from([1e-30, 1e-6, 1.0, 100.0, 1e300]))
    return images, np.array(xs), np.array(ys), (lo, lo + span)


@settings(FUZZ, max_examples=150)
@given(case=geometry_cases())
def test_geometry_equals_slow_reference(case):
    images, xs, ys, (lo, hi) = case
    ny, nx = images[0].shape
    expected = {}
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        pixel = ref_pixel(x, y)
        if pixel is None or not (0 <= pixel[0] < ny and 0 <= pixel[1] < nx):
            expected[i] = pixel
    reasons = position_rejects(xs, ys, (ny, nx))
    assert set(reasons) == set(expected)
    for i, why in reasons.items():
        assert ("not finite" in why) == (expected[i] is None), why
        if expected[i] is not None:
            assert f"{ny}x{nx}" in why and f"row {expected[i][0]}," in why, why
    kept = [i for i in range(len(xs)) if i not in expected]
    event(f"candidates kept: {min(len(kept), 3)}")
    if not kept:
        return
    r, c = candidate_pixels(xs[kept], ys[kept])
    assert r.dtype == c.dtype == np.int64
    assert list(zip(r.tolist(), c.tolist(), strict=True)) == [ref_pixel(xs[i], ys[i]) for i in kept]

    pixels = [im.astype(np.float64).tolist() for im in images]
    stamps = extract_stamps(images[0], r, c)
    assert stamps.shape == (len(kept), CUTOUT_SIZE, CUTOUT_SIZE)
    for k in range(len(kept)):
        want = np.array(ref_stamp(pixels[0], int(r[k]), int(c[k])), dtype=np.float64)
        np.testing.assert_array_equal(stamps[k].astype(np.float64), want)  # off-image NaN

    limits = {
        "science": zscale_limits(images[0]),
        "reference": ChannelLimits(lo, hi, OK if hi > lo else CONSTANT),
        "difference": ChannelLimits(NAN, NAN, NO_FINITE),
        "score": zscale_limits(images[3]),
    }
    event(f"science limits: {limits['science'].status}")
    finite = images[0][np.isfinite(images[0])]
    if finite.size:  # contract step 1: astropy's ZScale of the whole image
        with np.errstate(all="ignore"):  # pixels near the float64 limits overflow astropy's fit
            vmin, vmax = (float(v) for v in ZScaleInterval().get_limits(finite))
        assert (limits["science"].vmin, limits["science"].vmax) == (vmin, vmax)
        assert limits["science"].usable == (vmax > vmin and math.isfinite(vmax - vmin))
    else:
        assert limits["science"].status == NO_FINITE
    channels = dict(zip(CHANNELS, images, strict=True))
    tensors = make_tensors(channels, limits, r, c)
    assert tensors.dtype == np.float32 and tensors.shape == (len(kept), 64, 64, 4)
    lims = [(limits[ch].vmin, limits[ch].vmax, limits[ch].usable) for ch in CHANNELS]
    for k in range(len(kept)):
        want = ref_tensor(pixels, lims, int(r[k]), int(c[k]))
        assert tensors[k].tobytes() == want.tobytes()


@settings(FUZZ, max_examples=200)
@given(
    values=st.lists(
        st.one_of(st.floats(width=32), st.floats(), st.sampled_from([1e308, -1e308, 0.0])),
        min_size=1,
        max_size=50,
    ),
    vmin=st.floats(-1e6, 1e6),
    span=st.one_of(st.sampled_from([0.0, -1.0, 1e-300, 1e300]), st.floats(1e-6, 1e6)),
    dtype=st.sampled_from(["<f8", ">f8", "<f4", ">f4"]),
)
def test_apply_limits_equals_the_contract_formula(values, vmin, span, dtype):
    vmax = vmin + span
    limits = ChannelLimits(vmin, vmax, OK if vmax > vmin else CONSTANT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float32 overflow of the test input
        pixels = np.array(values, dtype=np.float64).astype(dtype)
    got = apply_limits(pixels, limits)
    want = np.array(
        [ref_norm(float(v), vmin, vmax, limits.usable) for v in pixels.tolist()], np.float32
    )
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
    assert np.isfinite(got).all() and (got >= 0).all() and (got <= 1).all()


# ------------------------------------------------------------------ 3. malformed FITS


SEED_NAMES = {
    "science": "bkg_subbed_science_image.fits",
    "reference": "awaicgen_output_mosaic_image_resampled.fits",
    "difference": "diffimage_masked.fits",
    "score": "scorrimage_masked.fits",
}
SHAPE = (40, 50)


def fits_bytes(hdus) -> bytes:
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def patch_card(data: bytes, key: str, card: str) -> bytes:
    """Replace the 80-byte header card ``key`` of the primary header by ``card``."""
    at = next(i for i in range(0, 2880 * 4, 80) if data[i : i + 8].rstrip() == key.encode())
    return data[:at] + card.ljust(80).encode() + data[at + 80 :]


FITS_KEYS = (
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "BSCALE", "BZERO", "BLANK",
    "EXTEND", "END", "PCOUNT", "GCOUNT",
)  # fmt: skip
FITS_VALUES = (
    "0", "-1", "1", "2", "3", "1.5", "'abc'", "T", "F", "999999999999", "-32", "-64", "8", "16",
    "24", "", "NAN", "1e308", "' '", "2147483648",
)  # fmt: skip


def header_card(key: str, value: str) -> bytes:
    return f"{key:<8}= {value:>20}".ljust(80).encode()


@st.composite
def damaged_fits(draw) -> bytes:
    """A small valid FITS image (maybe scaled, maybe with BLANK) with one to three defects."""
    dtype = draw(st.sampled_from(["u1", ">i2", ">i4", ">i8", ">f4", ">f8"]))
    shape = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    data = np.abs(np.random.default_rng(draw(st.integers(0, 2**16))).normal(0, 50, shape))
    hdu = fits.PrimaryHDU(data.astype(dtype))
    if draw(st.booleans()):
        hdu.header["BSCALE"] = draw(st.sampled_from([2.0, 0.5, 1.0]))
    if dtype[-2] == "i" and draw(st.booleans()):
        hdu.header["BLANK"] = 5
    raw = bytearray(fits_bytes([hdu]))
    cards = {bytes(raw[i : i + 8]).rstrip().decode(): i for i in range(0, 2880, 80)}
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["card", "card", "card", "flip", "cut", "append", "no END"]))
        if op == "card":
            key, value = draw(st.sampled_from(FITS_KEYS)), draw(st.sampled_from(FITS_VALUES))
            if value.startswith("-") and key != "BITPIX":
                # a negative size made astropy read one HDU forever, eating all memory: that
                # case runs in a memory-limited subprocess (the test after this one)
                value = value[1:]
            at = cards.get(key, cards["END"])  # a card not there replaces END
            if at + 80 <= len(raw):
                raw[at : at + 80] = header_card(key, value)
        elif op == "flip" and raw:
            raw[draw(st.integers(0, min(len(raw), 2880) - 1))] = draw(st.integers(0, 255))
        elif op == "cut" and raw:
            del raw[draw(st.integers(0, len(raw) - 1)) :]
        elif op == "append":
            raw += draw(st.binary(min_size=1, max_size=3000))
        elif cards["END"] + 80 <= len(raw):
            raw[cards["END"] : cards["END"] + 80] = b" " * 80
    return bytes(raw)


@settings(FUZZ, max_examples=1000)
@given(data=damaged_fits())
def test_damaged_fits_header_is_a_job_error_or_an_image(scratch, data):
    path = new_job(scratch) / "bkg_subbed_science_image.fits"
    path.write_bytes(data)
    try:
        info = read_image_info("jid0001", path)
    except JobError as exc:
        event("refused")
        assert_names_file(exc, path.name)
        return
    event("accepted")
    image = open_image(info)
    assert image.shape == info.shape
    limits = zscale_limits(image)
    ny, nx = info.shape
    r, c = candidate_pixels(np.array([nx / 2]), np.array([ny / 2]))
    tensors = make_tensors(dict.fromkeys(CHANNELS, image), dict.fromkeys(CHANNELS, limits), r, c)
    assert np.isfinite(tensors).all() and tensors.min() >= 0 and tensors.max() <= 1


def test_negative_naxis_header_is_refused_without_exhausting_memory(tmp_path):
    """Regression: astropy's ``HDUList.fileinfo`` read this file's HDU again and again."""
    hdu = fits.PrimaryHDU(np.zeros((6, 9), np.float64))
    hdu.header["BSCALE"] = 2.0
    path = tmp_path / "bkg_subbed_science_image.fits"
    path.write_bytes(patch_card(fits_bytes([hdu]), "NAXIS2", "NAXIS2  = -64"))
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from croissant_cutouts.tasks.errors import JobError\n"
        "from croissant_cutouts.tasks.inputs.load import read_image_info\n"
        "try:\n"
        f"    print('accepted', read_image_info('jid0001', {str(path)!r}))\n"
        "except JobError as exc:\n"
        "    print('refused', exc)\n"
    )
    # before the fix: over a minute of reading the same HDU, then MemoryError or a bad shape
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("refused") and "no pixels" in done.stdout, done.stdout


def good_images(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    return {
        ch: (yy * 10.0 * (k + 1) + xx + rng.normal(0, 3, SHAPE)).astype(np.float32)
        for k, ch in enumerate(CHANNELS)
    }


def primary(data: np.ndarray, **cards) -> bytes:
    hdu = fits.PrimaryHDU(data)
    for key, value in cards.items():
        hdu.header[key] = value
    return fits_bytes([hdu])


def sprinkle(image: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = image.copy()
    mask = rng.random(image.shape) < fraction
    out[mask] = rng.choice(np.array([NAN, INF, -INF], np.float32), int(mask.sum()))
    return out


def defects(good: dict[str, np.ndarray]) -> dict[str, tuple[str, bytes, tuple[str, ...]]]:
    """Job name -> (channel, bytes of its image, what the reject reason must say).

    An empty tuple: the job is kept (NaN/inf images) and checked against the contract.
    """
    ok = {ch: primary(im) for ch, im in good.items()}
    sci = ok["science"]
    nan = np.full(SHAPE, NAN, np.float32)
    rng = np.random.default_rng(3)
    mixed = rng.choice(np.array([NAN, INF, -INF], np.float32), SHAPE)
    return {
        "jid01_truncated_data": ("science", sci[: 2880 + 1000], ("truncated",)),
        "jid02_truncated_header": (
            "reference",
            ok["reference"][:1000],
            ("not a readable FITS", "truncated"),
        ),
        "jid03_bitpix24": ("difference", patch_card(sci, "BITPIX", "BITPIX  = 24"), ("BITPIX=24",)),
        "jid04_no_data": ("score", fits_bytes([fits.PrimaryHDU()]), ("NAXIS=0",)),
        "jid05_cube": ("science", primary(np.zeros((2, *SHAPE), np.float32)), ("NAXIS=3",)),
        "jid06_compressed": (
            "reference",
            fits_bytes([fits.PrimaryHDU(), fits.CompImageHDU(good["reference"])]),
            ("tile-compressed in HDU 1", "primary HDU", "funpack"),
        ),
        "jid07_empty_file": ("difference", b"", ("0 bytes",)),
        "jid08_random_bytes": (
            "score",
            np.random.default_rng(8).bytes(6000),
            ("not a FITS file",),
        ),
        "jid09_other_shape": ("score", primary(good["score"][:-1]), ("differ in shape", "39x50")),
        "jid10_huge_naxis1": (
            "science",
            patch_card(sci, "NAXIS1", "NAXIS1  = 999999999999"),
            ("truncated", "needs 160000000002720"),
        ),
        "jid11_bscale_text": ("reference", primary(good["reference"], BSCALE="abc"), ("BSCALE",)),
        "jid12_extension_only": (
            "difference",
            fits_bytes([fits.PrimaryHDU(), fits.ImageHDU(good["difference"])]),
            ("extension HDU 1",),
        ),
        "jid13_no_pixels": ("score", primary(np.zeros((0, 50), np.float32)), ("no pixels",)),
        "jid14_mjd_text": (
            "science",
            primary(good["science"], **{"MJD-OBS": "soon"}),
            ("MJD-OBS",),
        ),
        "jid15_simple_false": (
            "reference",
            patch_card(ok["reference"], "SIMPLE", "SIMPLE  = F"),
            ("not a standard FITS", "SIMPLE = False"),
        ),
        "jid16_random_groups": ("difference", primary(good["difference"], GCOUNT=2), ("GCOUNT",)),
        "jid20_all_nan": ("difference", primary(nan), ()),
        "jid21_all_inf": ("score", primary(np.full(SHAPE, INF, np.float32)), ()),
        "jid22_nan_inf_mix": ("science", primary(mixed), ()),
        "jid23_some_nan_inf": ("reference", primary(sprinkle(good["reference"], 0.2, 4)), ()),
    }


def catalog(seed: int) -> pd.DataFrame:
    """Candidates near every edge and corner, inside, outside and without a position."""
    rng = np.random.default_rng(seed)
    ny, nx = SHAPE
    x = [0.0, nx - 1.0, -0.5, nx - 0.5, 10.5, 25.0, -0.6, NAN, 3.2, nx - 0.6]
    y = [0.0, ny - 1.0, -0.5, 20.0, ny - 0.51, 12.49, 5.0, 5.0, 38.6, 0.51]
    return pd.DataFrame(
        {
            "x": x,
            "y": y,
            "match": np.where(rng.random(len(x)) < 0.5, 1, -1),
            "flux": rng.uniform(1, 9, len(x)),
        }
    )


def write_job(root: Path, name: str, images: dict[str, bytes], cat: pd.DataFrame) -> Path:
    job = root / name
    job.mkdir(parents=True)
    for ch, data in images.items():
        (job / SEED_NAMES[ch]).write_bytes(data)
    cat.to_csv(job / "psfcat.csv", index=False)
    return job


def contract_tensor(job: Path, x: float, y: float) -> np.ndarray:
    """The cutout of (x, y) computed from the job's files by the contract, slowly."""
    channels, limits = [], []
    for ch in CHANNELS:
        image = fits.getdata(job / SEED_NAMES[ch])
        if np.isfinite(image).any():
            vmin, vmax = (float(v) for v in ZScaleInterval().get_limits(image))
            limits.append((vmin, vmax, vmax > vmin))
        else:
            limits.append((NAN, NAN, False))
        channels.append(image.astype(np.float64).tolist())
    r, c = ref_pixel(x, y)
    return ref_tensor(channels, limits, r, c)


@pytest.mark.flow
def test_malformed_fits_corpus_through_the_flow(tmp_path):
    from croissant_cutouts.flows.build import build_dataset
    from croissant_cutouts.tasks.config import Params

    root = tmp_path / "jobs"
    good = good_images(0)
    cat = catalog(0)
    write_job(root, "jid00_good", {ch: primary(im) for ch, im in good.items()}, cat)
    corpus = defects(good)
    for name, (channel, data, _) in corpus.items():
        images = {ch: primary(im) for ch, im in good.items()}
        images[channel] = data
        write_job(root, name, images, cat)

    out = tmp_path / "ds"
    params = Params().override("cutouts", retry_delay_s=0.0, workers=2)
    summary = build_dataset(str(root), str(out), params, ["create"])  # must not raise

    index = pd.read_csv(out / "master_index.csv")
    rejects = pd.read_csv(out / "rejects.csv", dtype={"catalog_row": "Int64"})
    n = len(cat)
    for job in sorted(p.name for p in root.iterdir()):
        mine = rejects[rejects.job_id == job]
        rows = mine[mine.catalog_row.notna()].catalog_row.astype(int).tolist()
        kept = index[index.job_id == job].catalog_row.tolist()
        assert sorted(rows + kept) == list(range(n)), job  # every row exactly once
        whole = mine[mine.catalog_row.isna()]
        wants = corpus.get(job, ("", b"", ()))[2]
        if wants:
            assert len(whole) == 1 and not kept, job
            reason = whole.reason.iloc[0]
            channel = corpus[job][0]
            assert SEED_NAMES[channel] in reason or "differ in shape" in reason, reason
            for want in wants:
                assert want in reason, (job, reason)
            assert (mine[mine.catalog_row.notna()].reason == f"job rejected: {reason}").all()
        else:
            assert whole.empty, (job, whole.reason.tolist())
            assert len(kept) == 7, job  # rows 3, 6 (outside) and 7 (no position) rejected

    assert summary.jobs == len(corpus) + 1
    assert summary.jobs_rejected == sum(1 for v in corpus.values() if v[2])
    notes = "\n".join(summary.notes)
    for job, channel in (
        ("jid20_all_nan", "difference"),
        ("jid21_all_inf", "score"),
        ("jid22_nan_inf_mix", "science"),
    ):
        assert f"{job}: {channel} channel no finite pixels" in notes, notes
    assert "jid23" not in notes and "jid00" not in notes

    files = sorted((out / "cutouts").iterdir())
    assert sorted(f"cutouts/{p.name}" for p in files) == sorted(index.cutout_filename)
    for path in files:
        tensor = np.load(path)
        assert tensor.shape == (64, 64, 4) and tensor.dtype == np.float32, path.name
        assert np.isfinite(tensor).all() and tensor.min() >= 0 and tensor.max() <= 1, path.name
    for job, channel in (("jid20_all_nan", 2), ("jid21_all_inf", 3), ("jid22_nan_inf_mix", 0)):
        for f in index[index.job_id == job].cutout_filename:
            assert not np.load(out / f)[..., channel].any()

    for job in ("jid00_good", "jid23_some_nan_inf", "jid20_all_nan"):
        rows = index[index.job_id == job]
        for k in (0, 2, 4):  # a corner, an edge at -0.5, an edge just inside H - 0.5
            row = rows[rows.catalog_row == k].iloc[0]
            want = contract_tensor(root / job, row.x, row.y)
            assert np.load(out / row.cutout_filename).tobytes() == want.tobytes(), (job, k)
