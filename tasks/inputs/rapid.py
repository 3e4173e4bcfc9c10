"""The RAPID input layout: 2025 and 2026 file names, photutils 2 and 3 columns, text or
parquet catalogs, truth from injection lists and the simulation index."""

from __future__ import annotations

import io
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.contract import CANDIDATE_COLUMNS
from croissant_cutouts.tasks.errors import CatalogError, JobError
from croissant_cutouts.tasks.errors import short_repr as _short
from croissant_cutouts.tasks.inputs.catalogs import (
    BOGUS_KINDS,
    SIMULATED_KINDS_FILE,
    SIMULATED_REAL,
    LabelOptions,
    Layout,
    ParsedCatalog,
    _decode,
    _whole,
    bogus_kind_column,
)
from croissant_cutouts.tasks.inputs.truth import (
    label_detections,
    read_injections,
    read_simulation_truth,
)

__all__ = [
    "RapidLayout",
]

_REFERENCES = (
    "awaicgen_output_mosaic_image_resampled_gainmatched.fits",
    "awaicgen_output_mosaic_image_resampled.fits",
)
_FINDER = tuple(
    f"{p}diffimage_masked_psfcat_finder.{e}" for p in ("", "zogy_") for e in ("txt", "parquet")
)
_PSFCAT = tuple(
    f"{p}diffimage_masked_psfcat.{e}" for p in ("", "zogy_") for e in ("txt", "parquet")
)
#: Column of the id join key (:func:`_id_key`) while the two catalogs are joined.
_KEY = "__id_key__"
#: Column telling joined rows from unjoined ones (pandas' default ``_merge`` may be taken).
_MERGE = "__merge__"
#: photutils 3 (April 2026) names of catalog columns -> the photutils 2 names the index keeps.
#: RAPID installs photutils unpinned, so its catalogs carry either set
#: (``docs/input-formats.md``); this is the one place the two are reconciled.
PHOTUTILS_RENAMES: dict[str, str] = {
    "x_centroid": "xcentroid",
    "y_centroid": "ycentroid",
    "n_pixels": "npix",
    "n_pixels_fit": "npixfit",
}
_FINDER_FEATURES = ("sharpness", "roundness1", "roundness2", "npix", "peak", "mag", "daofind_mag")
_PSF_FEATURES = (
    "flux_err",
    "x_err",
    "y_err",
    "qfit",
    "cfit",
    "flags",
    "local_bkg",
    "npixfit",
    "reduced_chi2",
    "ra",
    "dec",
)


def _check_fields(job_id: str, path: Path, comment: str = "") -> str:
    """Check a whitespace table's text: every non-blank line has as many fields as the header.

    pandas would otherwise pad a short row with NaN, or, when every row has one field more
    than the header, take the first as the index and shift every column by one.

    Parameters
    ----------
    job_id : str
    path : Path
        A whitespace-separated text table, header on its first non-blank line.
    comment : str
        Characters stripped from the start of the header line (``#`` for a commented
        header such as the truth index's ``# object_id ra dec ...``).

    Returns
    -------
    str
        The decoded text (UTF-8, BOM dropped).

    Raises
    ------
    CatalogError
        Not UTF-8, NUL bytes, empty, or a row (0-based data row) of another width.
    """
    text = _decode(job_id, path, path.read_bytes())
    fields = [f for f in (line.split() for line in io.StringIO(text, newline="")) if f]
    if not fields:
        raise CatalogError(job_id, "catalog is empty (no header, no rows)", path)
    width = len(" ".join(fields[0]).lstrip(comment).split()) if comment else len(fields[0])
    for i, row in enumerate(fields[1:]):
        if len(row) != width:
            raise CatalogError(
                job_id, f"has {len(row)} fields, the header has {width}", path, row=i
            )
    return text


def _photutils2_names(job_id: str, path: Path, table: pd.DataFrame) -> pd.DataFrame:
    """Rename photutils 3 columns to their photutils 2 names (:data:`PHOTUTILS_RENAMES`).

    Raises
    ------
    CatalogError
        The catalog has both names of one column.
    """
    both = [f"{new}/{old}" for new, old in PHOTUTILS_RENAMES.items() if {new, old} <= set(table)]
    if both:
        raise CatalogError(job_id, f"has both photutils names of {', '.join(both)}", path)
    return table.rename(columns=PHOTUTILS_RENAMES)


def _read_table(job_id: str, path: Path) -> pd.DataFrame:
    """A RAPID catalog: whitespace text with one header line, or parquet.

    Text is checked first (:func:`_check_fields`): UTF-8 (BOM allowed), no NUL bytes, and
    every non-blank line has as many whitespace-separated fields as the header. Columns
    come out with photutils 2 names whatever photutils wrote them (:func:`_photutils2_names`).

    Raises
    ------
    CatalogError
        The file does not parse; a row's field count differs from the header's (the row
        is the 0-based data row, as ``catalog_row``).
    OSError
        A transient read error.
    """
    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(
                io.StringIO(_check_fields(job_id, path), newline=""),
                sep=r"\s+",
                engine="python",
                index_col=False,
                dtype={"id": str},  # ids join as text (:func:`_id_key`): no float rounding
            )
        return _photutils2_names(job_id, path, table)
    except CatalogError:
        raise
    except Exception as exc:  # whatever pandas or pyarrow make of a bad file
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise CatalogError(job_id, f"does not parse ({exc})", path) from exc


def _id_key(value: object) -> str | None:
    """Join key of one catalog ``id``: equal numbers give equal keys, whatever their type.

    A whole number (``7``, ``7.0``, ``"7"``, ``"7.0"``) becomes its decimal text (``"7"``),
    another number its ``repr``, any other text itself (stripped). A missing or non-finite id
    (NaN, empty, ``inf``) has no key (``None``) and never joins.
    """
    if value is None or value is pd.NA:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return str(int(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text or None
    if not np.isfinite(number):
        return None
    if number.is_integer():
        try:
            return str(int(text))  # exact for integers beyond float precision
        except ValueError:
            return str(int(number))
    return repr(number)


def _id_keys(ids: pd.Series) -> pd.Series:
    """:func:`_id_key` of every id (object dtype, ``None`` where there is no key)."""
    return pd.Series([_id_key(v) for v in ids], index=ids.index, dtype=object)


def _zero_point(job_id: str, value: object) -> float:
    """The ``ZPTMAG`` card as a finite float (JobError when absent or not a number)."""
    if value is None:
        raise JobError(job_id, "science header has no ZPTMAG: truth magnitudes unknown")
    try:
        zpt = float(value)
    except (TypeError, ValueError):
        zpt = float("nan")
    if not np.isfinite(zpt):
        raise JobError(
            job_id,
            f"science header ZPTMAG = {value!r} is not a finite number: truth magnitudes unknown",
        )
    return zpt


def _band_zeropoint(job_id: str, value: object, options: LabelOptions) -> float:
    """The galsim bandpass zero point of the science ``FILTER`` card (JobError if unknown)."""
    table = dict(options.band_zeropoints)
    if value is None:
        raise JobError(job_id, "science header has no FILTER: injection magnitudes unknown")
    name = str(value).strip()
    if name not in table:
        raise JobError(
            job_id,
            f"filter {name!r} has no band zero point in labels.band_zeropoints (known: "
            f"{', '.join(sorted(table))}): injection magnitudes unknown",
        )
    return table[name]


def _read_truth(
    job_id: str,
    inject: list[Path],
    index: list[Path],
    options: LabelOptions,
    headers: dict[str, object],
) -> pd.DataFrame:
    """Truth rows of a job's injection lists and simulation truth indexes (0-based, AB).

    Injected fakes take the zero point ``ZPTMAG + zp_band`` (:func:`_band_zeropoint`); the
    truth index ``ZPTMAG``, or ``options.truth_index_zeropoint`` when set.

    Raises
    ------
    CatalogError
        A truth file with ragged rows or that does not parse.
    JobError
        ``ZPTMAG`` or ``FILTER`` needed but absent or not usable.
    """
    for path, comment in (*((p, "") for p in inject), *((p, "#") for p in index)):
        try:  # truth files are read by pandas too: no ragged rows there either
            _check_fields(job_id, path, comment)
        except CatalogError as exc:
            why = f"truth file does not parse ({exc.reason})"
            raise CatalogError(job_id, why, path) from exc
    frames = []
    if inject:
        zpt = _zero_point(job_id, headers.get("ZPTMAG"))
        zpt += _band_zeropoint(job_id, headers.get("FILTER"), options)
        frames += [read_injections(job_id, p, zpt, options.truth_origin) for p in inject]
    if index:
        zpt = options.truth_index_zeropoint
        if zpt is None:
            zpt = _zero_point(job_id, headers.get("ZPTMAG"))
        frames += [read_simulation_truth(job_id, p, zpt, options.truth_origin) for p in index]
    return pd.concat(frames, ignore_index=True)


#: Pixels from the origin beyond which a position is in no image (its cutout is rejected).
_FAR = 2.0**53


def _near(values: pd.Series) -> np.ndarray:
    """Positions as float64, NaN where not a number or absurdly far (``abs >= 2**53``).

    Such positions never match truth: scipy's KD-tree raises on the overflow of squared
    distances between coordinates near ``1e308``.
    """
    values = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.abs(values) < _FAR, values, np.nan)


def _simulated_kinds(job_id: str, path: Path, keys: pd.Series, catalog: str) -> np.ndarray:
    """The simulator's ``kind`` of every PSF-fit catalog row, joined on ``id``.

    Parameters
    ----------
    job_id : str
    path : Path
        The job's :data:`SIMULATED_KINDS_FILE` (whitespace table, header ``id kind``).
    keys : Series
        :func:`_id_key` of each PSF-fit catalog row, in catalog order (``None``: no valid
        id; such a row is rejected anyway and needs no kind).
    catalog : str
        Name of the PSF-fit catalog file (for messages).

    Returns
    -------
    ndarray of object
        One kind per catalog row (``None`` where the row has no valid id).

    Raises
    ------
    CatalogError
        Naming the sidecar (and its 0-based data row where one is at fault): unparsable,
        lacks ``id`` or ``kind``, an id missing or not valid, an id twice, an unknown kind,
        an id that is not in the PSF-fit catalog, or a catalog id with no row in the file.
    """
    text = _check_fields(job_id, path)
    try:
        table = pd.read_csv(
            io.StringIO(text, newline=""),
            sep=r"\s+",
            engine="python",
            index_col=False,
            dtype=str,
            keep_default_na=False,
        )
    except Exception as exc:  # whatever pandas makes of a bad file
        raise CatalogError(job_id, f"does not parse ({exc})", path) from exc
    missing = [c for c in ("id", "kind") if c not in table.columns]
    if missing:
        raise CatalogError(
            job_id, f"lacks column(s) {', '.join(missing)}; has {list(table.columns)}", path
        )
    known = (SIMULATED_REAL, *BOGUS_KINDS)
    ids = _id_keys(table["id"])
    rows: dict[str, int] = {}
    for i, (key, kind) in enumerate(zip(ids, table["kind"], strict=True)):
        if key is None:
            raise CatalogError(
                job_id, f"id {_short(table['id'].iloc[i])} is missing or not a valid id", path, i
            )
        if key in rows:
            raise CatalogError(
                job_id,
                f"id {_short(key)} appears more than once (first in row {rows[key]})",
                path,
                i,
            )
        if kind not in known:
            raise CatalogError(
                job_id,
                f"kind {_short(kind)} of id {_short(key)} is not one of {', '.join(known)}",
                path,
                i,
            )
        rows[key] = i
    wanted = {k for k in keys if k is not None}
    unknown = next((i for k, i in rows.items() if k not in wanted), None)
    if unknown is not None:
        raise CatalogError(
            job_id, f"id {_short(table['id'].iloc[unknown])} is not in {catalog}", path, unknown
        )
    lacking = next((i for i, k in enumerate(keys) if k is not None and k not in rows), None)
    if lacking is not None:
        raise CatalogError(
            job_id,
            f"has no row for id {_short(keys.iloc[lacking])} (row {lacking} of "
            f"{catalog}): the simulator writes one per detection",
            path,
        )
    kinds = table["kind"].to_numpy(dtype=object)
    return np.array([None if k is None else kinds[rows[k]] for k in keys], dtype=object)


def _first(job_dir: Path, names: tuple[str, ...]) -> Path | None:
    return next((job_dir / n for n in names if (job_dir / n).is_file()), None)


class RapidLayout(Layout):
    """The full RAPID layout, 2025 and 2026 (``zogy_``) names, text or parquet catalogs.

    Candidates are the rows of the PSF-fit catalog (``diffimage_masked_psfcat``) at their
    fitted positions ``x_fit``, ``y_fit`` (0-based), joined **on ``id``** to the finder catalog
    (``diffimage_masked_psfcat_finder``) for its centroids and shape features. Labels come
    from the injection list and the simulation truth index (:mod:`tasks.inputs.truth`); a job
    without either is unlabelled (label empty, ``labelled`` false).
    """

    name = "rapid"
    images: ClassVar[dict[str, tuple[str, ...]]] = {
        "science": ("bkg_subbed_science_image.fits",),
        "reference": _REFERENCES,
        "difference": ("diffimage_masked.fits", "zogy_diffimage_masked.fits"),
        "score": ("scorrimage_masked.fits", "zogy_scorrimage_masked.fits"),
    }

    @staticmethod
    def truth_files(job_dir: Path) -> tuple[list[Path], list[Path]]:
        """Injection lists and simulation truth indexes of a job (either may be empty)."""
        inject = sorted(job_dir.glob("Roman_TDS_simple_model_*_lite_inject.txt"))
        index = sorted(job_dir.glob("Roman_TDS_index_*.txt"))
        return inject, index

    @staticmethod
    def header_files(job_dir: Path) -> list[Path]:
        """RAPID's reformatted science images, whose headers back up the science image's.

        ``Roman_TDS_simple_model_<FILTER>_<OBSID>_<SCA>_lite[_inject]_reformatted.fits``
        (``pipeline/differenceImageSubs.py``): the raw image's header with ``BUNIT``,
        in the primary HDU. Sorted by name; may be empty.
        """
        return sorted(job_dir.glob("Roman_TDS_simple_model_*_reformatted.fits"))

    def catalog_files(self, job_dir: Path) -> list[Path]:
        """The PSF-fit catalog, the finder catalog when there is one, the truth files and
        the simulator's sidecar when present (raises JobError without a PSF-fit catalog)."""
        finder, psfcat = _first(job_dir, _FINDER), _first(job_dir, _PSFCAT)
        if psfcat is None:
            raise JobError(
                job_dir.name, f"PSF-fit catalog missing (looked for {', '.join(_PSFCAT)})"
            )
        inject, index = self.truth_files(job_dir)
        kinds = job_dir / SIMULATED_KINDS_FILE
        files = [psfcat, *([finder] if finder else []), *inject, *index]
        return [*files, kinds] if kinds.is_file() else files

    def count_rows(self, job_id: str, job_dir: Path) -> int:
        """Rows of the PSF-fit catalog only (never the finder's, the truth's or the sidecar's)."""
        psfcat = _first(job_dir, _PSFCAT)
        if psfcat is None:
            raise JobError(job_id, "PSF-fit catalog missing")
        return len(_read_table(job_id, psfcat))

    def parse_catalog(
        self,
        job_id: str,
        job_dir: Path,
        options: LabelOptions | None = None,
        headers: dict[str, object] | None = None,
    ) -> ParsedCatalog:
        """Read the candidates (``_candidates``) and label them from the truth files.

        When the job has the simulator's :data:`SIMULATED_KINDS_FILE`, ``bogus_kind`` of
        every row labelled 0 is its ``kind`` joined on ``id`` (:data:`UNMATCHED_REAL` where
        the simulator says ``real``); it stays empty on rows labelled 1, in unlabelled jobs
        and in jobs without the file.

        Raises
        ------
        CatalogError
            Missing required columns, duplicate ids, no id joining, unparsable files; a
            sidecar of kinds that does not cover the PSF-fit catalog's ids one-to-one.
        JobError
            Truth files present but ``ZPTMAG`` (or, with injections, a known ``FILTER``)
            missing from the headers.
        """
        options = options or LabelOptions()
        headers = headers or {}
        psf_path = _first(job_dir, _PSFCAT)
        if psf_path is None:
            raise JobError(job_id, f"PSF-fit catalog missing (looked for {', '.join(_PSFCAT)})")
        joined, rejects, notes = _candidates(job_id, psf_path, _first(job_dir, _FINDER))
        out = _candidate_table(joined)
        kinds_path = job_dir / SIMULATED_KINDS_FILE  # checked even when it goes unused
        kinds = (
            _simulated_kinds(job_id, kinds_path, joined[_KEY], psf_path.name)
            if kinds_path.is_file()
            else None
        )
        inject, index = self.truth_files(job_dir)
        out["labelled"] = bool(inject or index)
        if inject or index:
            truth = _read_truth(job_id, inject, index, options, headers)
            truth["x"], truth["y"] = _near(truth["x"]), _near(truth["y"])
            labels = label_detections(
                _near(out["x"]), _near(out["y"]), truth, options.mag_limit, options.match_radius_px
            )
            for col in labels.columns:
                out[col] = labels[col].to_numpy()
            if kinds is not None:
                out["bogus_kind"] = bogus_kind_column(kinds, out["label"])
        table = out.reindex(columns=list(CANDIDATE_COLUMNS)).astype(CANDIDATE_COLUMNS)
        return ParsedCatalog(table, sorted(rejects.items()), notes)


def _keyed(job_id: str, table: pd.DataFrame, path: Path, required: tuple[str, ...]) -> None:
    """Check ``required`` columns and unique ids of a catalog; add its join key column.

    Raises
    ------
    CatalogError
        A required column is missing, or an id appears twice.
    """
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise CatalogError(
            job_id, f"lacks column(s) {', '.join(missing)}; has {list(table.columns)}", path
        )
    keys = _id_keys(table["id"])
    dup = keys.notna() & keys.duplicated()
    if dup.any():
        first = table["id"][dup].iloc[0]
        raise CatalogError(job_id, f"id {_short(str(first))} appears more than once", path)
    table[_KEY] = keys


def _candidates(
    job_id: str, psf_path: Path, finder_path: Path | None
) -> tuple[pd.DataFrame, dict[int, str], list[str]]:
    """The PSF-fit catalog's rows with the finder's columns, in PSF-fit catalog order.

    Three RAPID variants (``docs/input-formats.md``):

    - a finder catalog beside the PSF-fit catalog (July 2025 on): joined **on ``id``**; a
      PSF-fit row whose id is not in the finder catalog is rejected;
    - a PSF-fit catalog that already holds the finder's columns (the 2026 parquet product,
      an inner join on ``id``): read as it is;
    - a PSF-fit catalog alone (runs before July 2025): finder columns empty, with a note.

    Returns
    -------
    joined : DataFrame
        PSF-fit columns, finder columns where known, the join key column ``_KEY``.
    rejects : dict of int to str
        0-based PSF-fit catalog rows that cannot be used, with the reason.
    notes : list of str
    """
    psf = _read_table(job_id, psf_path)
    _keyed(job_id, psf, psf_path, ("id", "x_fit", "y_fit", "flux_fit"))
    if len(psf) == 0:
        raise CatalogError(job_id, "catalog has a header but no rows", psf_path)
    if finder_path is None:
        psf[_MERGE] = "both"
        if "xcentroid" in psf.columns:  # the parquet product: already joined
            return psf, {}, []
        note = (
            f"no finder catalog beside {psf_path.name} (RAPID before July 2025): candidates "
            "from the PSF-fit catalog alone, finder columns empty"
        )
        return psf, {}, [note]
    finder = _read_table(job_id, finder_path)
    _keyed(job_id, finder, finder_path, ("id", "xcentroid", "ycentroid"))
    finder = finder[finder[_KEY].notna()].drop(columns="id")
    joined = psf.merge(finder, on=_KEY, how="left", suffixes=("", "_finder"), indicator=_MERGE)
    unmatched = (joined[_MERGE] == "left_only").to_numpy()
    if unmatched.all():
        raise CatalogError(
            job_id,
            f"no id of {psf_path.name} is in {finder_path.name}: the catalogs do not join",
            psf_path,
        )
    no_key = joined[_KEY].isna().to_numpy()
    rejects = {
        int(i): (
            f"id {_short(str(joined['id'].iloc[i]))} of {psf_path.name} is missing or not "
            "a valid id"
            if no_key[i]
            else f"id {_short(str(joined['id'].iloc[i]))} of {psf_path.name} is not in "
            f"{finder_path.name}"
        )
        for i in np.flatnonzero(unmatched)
    }
    return joined, rejects, []


def _candidate_table(joined: pd.DataFrame) -> pd.DataFrame:
    """Index columns of the joined catalogs: positions ``x_fit``, ``y_fit``, features.

    Columns the catalogs lack (finder columns of a finder-less job, ``reduced_chi2`` before
    photutils 2.3) stay absent here and come out empty in the index.
    """
    num = lambda col: pd.to_numeric(joined[col], errors="coerce").to_numpy(np.float64)  # noqa: E731
    out = pd.DataFrame({"catalog_row": np.arange(len(joined), dtype=np.int64)})
    out["x"], out["y"] = num("x_fit"), num("y_fit")
    out["flux"] = out["flux_fit"] = num("flux_fit")
    if "flux" in joined.columns:
        out["finder_flux"] = num("flux")
    for col in ("xcentroid", "ycentroid", *_FINDER_FEATURES, *_PSF_FEATURES):
        source = col if col in joined.columns else f"{col}_finder"
        if source in joined.columns:
            values = num(source)
            out[col] = _whole(values) if CANDIDATE_COLUMNS.get(col) == "Int64" else values
    return out


