"""Split step: assign every cutout to train, validation or test, by sky field or by job.

Real/bogus classifiers are judged on sky they have never seen (ZTF, ATLAS, GOTO, MeerLICHT
and ALeRCE split by object or field): cutouts of one field share stars, galaxies, artefacts
and transients across epochs, so a split by cutout leaks the answer into the test set.

Rules, in order:

1. Rows are grouped by sky **field** (``field`` column) when every row has one and there are
   at least as many fields as non-empty splits; else by **job** (``by: auto``). ``by: field``
   insists on fields and ``by: job`` always groups by job.
2. Groups that share a truth source are merged (connected components of the graph of
   groups and the ``truth_id`` of matched non-injected truth objects), so one source never
   straddles two splits. Injected fakes are per job (their ``truth_id`` is a row of the
   job's injection list) and never link jobs.
3. The merged groups, in sorted order, are shuffled with ``numpy.random.default_rng(seed)``
   and dealt out: ``round(f * n)`` groups to validation and to test (at least 1 each when the
   fraction is above 0), the rest to train (at least 1). Up to :data:`SPLIT_TRIES` shuffles of
   that generator are tried; the first whose test, validation and train sides all hold both
   classes is kept (else the best found). A cutout is never split from its group.

The result depends only on the set of rows (not their order), the fractions and the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.config import SplitParams

__all__ = [
    "SPLITS",
    "SPLIT_TRIES",
    "SplitAssignment",
    "SplitError",
    "assign_splits",
    "by_value",
    "deal_counts",
    "group_keys",
    "split_counts",
    "split_groups",
    "split_keys",
    "truth_links",
]

#: Split names, in the order they are declared in croissant.json.
SPLITS = ("train", "validation", "test")
#: Shuffles tried to find a split with both classes on every side.
SPLIT_TRIES = 100


class SplitError(ValueError):
    """The rows cannot be split as asked (too few fields or jobs)."""


@dataclass
class SplitAssignment:
    """Split of every row and how it was made."""

    split: np.ndarray  # object array of SPLITS names, one per row
    by: str  # "field" or "job"
    groups: int  # groups before merging by truth source
    components: int  # groups after merging
    notes: list[str] = field(default_factory=list)


def by_value(values: pd.Series, fn) -> np.ndarray:
    """``fn`` of each distinct value of ``values``, spread to every row (object array).

    One call and one result object per distinct value, not per row: an index has millions of
    rows and few jobs, fields or flags. Missing values are passed to ``fn`` as they are.
    With ``fn=str``, a column as Python ``str`` objects that equal values share.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    out = np.empty(len(uniques), object)
    out[:] = [fn(v) for v in uniques]
    return out[codes]


def _nonempty(values: pd.Series) -> np.ndarray:
    """Rows whose value is not missing and not blank text."""
    return by_value(values, lambda v: not pd.isna(v) and str(v).strip() != "").astype(bool)


def split_groups(
    frame: pd.DataFrame, by: str = "auto", n_splits: int = 3
) -> tuple[np.ndarray, str]:
    """Group key of every row (``field:<field>`` or ``job:<job_id>``) and the rule used.

    Raises
    ------
    SplitError
        ``by='field'`` while some job has no field (the message names up to five jobs).
    """
    jobs = by_value(frame["job_id"], str)
    if by in ("auto", "field") and "field" in frame:
        has = _nonempty(frame["field"])
        keys = group_keys(frame, "field")
        if has.all() and (by == "field" or len(set(keys)) >= n_splits):
            return keys, "field"
        if by == "field":
            missing = sorted(set(jobs[~has]))
            if missing:
                raise SplitError(
                    f"splits.by is 'field' but {len(missing)} job(s) carry no field, e.g. "
                    f"{', '.join(missing[:5])}"
                )
    elif by == "field":
        raise SplitError("splits.by is 'field' but the index has no field column")
    return group_keys(frame, "job"), "job"


def group_keys(frame: pd.DataFrame, by: str) -> np.ndarray:
    """The group of every row under rule ``by``: ``field:<field>`` or ``job:<job_id>``."""
    if by == "field":
        return by_value(frame["field"], lambda f: f"field:{f}")
    return by_value(frame["job_id"], lambda j: f"job:{j}")


def split_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` that decide its splits, each once.

    A split depends on each row's group (``job_id``, ``field``), on the truth sources that
    link groups (:func:`truth_links`) and on which labels each group holds, not on how many
    rows share them: :func:`assign_splits` deals every group to the same split from these
    rows as from all of them. Columns: ``job_id``, ``field`` (when present), ``truth_id``
    where it links jobs ("" elsewhere; when present), ``label`` as a number (when present).
    A job's thousands of rows come down to a few.
    """
    out = pd.DataFrame({"job_id": frame["job_id"]})
    if "field" in frame:
        out["field"] = frame["field"]
    if "truth_id" in frame:
        out["truth_id"] = frame["truth_id"].astype(object).where(truth_links(frame), "")
    if "label" in frame:
        out["label"] = pd.to_numeric(frame["label"], errors="coerce")
    return out.drop_duplicates(ignore_index=True)


def truth_links(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose ``truth_id`` ties their job to others: matched and not injected.

    Injected fakes are per job (their id is a row of the job's injection list), so only
    simulation-truth objects link jobs. ``injected`` may be boolean or text (``True``).
    """
    if "truth_id" not in frame:
        return np.zeros(len(frame), bool)
    injected = (
        by_value(frame["injected"], lambda v: str(v).strip().lower() in ("true", "1"))
        .astype(bool)
        if "injected" in frame
        else np.zeros(len(frame), bool)
    )
    return _nonempty(frame["truth_id"]) & ~injected


def _components(keys: np.ndarray, frame: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Component of every row after merging groups that share a non-injected truth source."""
    group_codes, groups = pd.factorize(pd.Series(keys), sort=True)
    n_groups = len(groups)
    linked = truth_links(frame)
    if n_groups < 2 or not linked.any():
        return group_codes, n_groups
    # imported only here: scipy.sparse takes 0.25 s to import, a third of a small run's work
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    truth = frame["truth_id"].astype("string")
    truth_codes, _ = pd.factorize(truth[linked], sort=True)
    n_truth = int(truth_codes.max()) + 1
    edges = coo_matrix(
        (np.ones(int(linked.sum())), (group_codes[linked], n_groups + truth_codes)),
        shape=(n_groups + n_truth,) * 2,
    )
    _, labels = connected_components(edges, directed=False)
    # renumber components by their first (sorted) group, so the order is the groups' order
    _, first = np.unique(labels[:n_groups], return_index=True)
    rank = np.empty(labels.max() + 1, np.int64)
    rank[labels[np.sort(first)]] = np.arange(len(first))
    return rank[labels[group_codes]], n_groups


def deal_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """How many of ``n`` groups each split gets: ``round(f * n)`` (halves up) to validation
    and test, at least 1 each when ``f > 0``, the rest (at least 1) to train."""
    need = sum(1 for f in fractions.values() if f > 0)
    if n < need:
        raise SplitError(f"need at least {need} groups, got {n}")
    counts = {
        s: (max(1, int(np.floor(fractions[s] * n + 0.5))) if fractions[s] > 0 else 0)
        for s in ("validation", "test")
    }
    counts["train"] = n - counts["validation"] - counts["test"]
    while counts["train"] < 1:  # small n: take back from the larger held-out side
        larger = max(("validation", "test"), key=lambda s: (counts[s], s == "validation"))
        if counts[larger] <= 1:
            raise SplitError(f"need at least {need} groups, got {n}")
        counts[larger] -= 1
        counts["train"] += 1
    return counts


def assign_splits(frame: pd.DataFrame, params: SplitParams | None = None) -> SplitAssignment:
    """Assign every row of an index to a split (see the module docstring for the rules).

    Parameters
    ----------
    frame : pandas.DataFrame
        Index rows; uses ``job_id`` and, when present, ``field``, ``truth_id``,
        ``injected`` and ``label``.
    params : SplitParams, optional
        Fractions, seed and grouping rule (default ``SplitParams()``).

    Returns
    -------
    SplitAssignment
        Its ``notes`` (groups merged, a side without both classes) are not logged here: the
        caller reports them once (the flow logs each as a warning).

    Raises
    ------
    SplitError
        Fewer groups (fields or jobs, after merging by truth source) than non-empty splits;
        the message says how many of each there are.
    """
    params = params or SplitParams()
    fractions = {"train": params.train, "validation": params.validation, "test": params.test}
    need = sum(1 for f in fractions.values() if f > 0)
    if frame.empty:
        return SplitAssignment(np.empty(0, object), "job", 0, 0)
    keys, by = split_groups(frame, params.by, need)
    comp, n_groups = _components(keys, frame)
    n = int(comp.max()) + 1
    notes = []
    if n < n_groups:
        notes.append(f"{n_groups - n} {by} group(s) merged because they share truth sources")
    try:
        counts = deal_counts(n, fractions)
    except SplitError as exc:
        jobs = "" if by == "job" else f"; {frame['job_id'].nunique()} jobs"
        raise SplitError(
            f"cannot split by {by}: {exc} ({n_groups} {by}s, {n} after merging those that "
            f"share a truth source{jobs}); add jobs or fields, or set splits.test to 0"
        ) from exc
    labels = frame["label"] if "label" in frame else pd.Series(pd.NA, index=frame.index)
    labels = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=np.float64)
    rng = np.random.default_rng(params.seed)
    best, best_score = None, None
    for _ in range(SPLIT_TRIES):
        order = rng.permutation(n)
        side = np.empty(n, object)
        side[order[: counts["test"]]] = "test"
        side[order[counts["test"] : counts["test"] + counts["validation"]]] = "validation"
        side[order[counts["test"] + counts["validation"] :]] = "train"
        split = side[comp]
        score = tuple(
            bool(np.isin([0.0, 1.0], labels[split == s]).all()) or fractions[s] == 0
            for s in ("test", "validation", "train")
        )
        if best_score is None or score > best_score:
            best, best_score = split, score
        if all(score):
            break
    assert best is not None and best_score is not None
    for name, ok in zip(("test", "validation", "train"), best_score, strict=True):
        if not ok:
            notes.append(f"no split by {by} puts both classes in {name}")
    return SplitAssignment(best, by, n_groups, n, notes)  # notes: logged once, by the caller


def split_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per split of :data:`SPLITS`: cutouts, jobs, fields, real, bogus and unlabelled rows.

    Uses ``split``, ``label``, ``job_id`` and (when present) ``field``; a split absent from
    the index counts zeros.
    """
    out: dict[str, dict[str, int]] = {}
    for name in SPLITS:
        part = frame[(frame["split"] == name).fillna(False).to_numpy(dtype=bool)]
        label = pd.to_numeric(part["label"], errors="coerce")
        out[name] = {
            "cutouts": len(part),
            "jobs": int(part["job_id"].nunique()),
            "fields": int(part["field"].dropna().nunique()) if "field" in part else 0,
            "real": int((label == 1).sum()),
            "bogus": int((label == 0).sum()),
            "unlabelled": int(label.isna().sum()),
        }
    return out
