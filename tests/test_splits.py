"""Split assignment: by field, else by job; never by cutout; no truth source on two sides."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from croissant_cutouts.tasks.config import Params, SplitParams
from croissant_cutouts.tasks.dataset.splits import (
    SPLITS,
    SplitError,
    assign_splits,
    group_keys,
    split_counts,
    split_groups,
    split_keys,
)


def _index(
    n_fields: int = 6,
    epochs: int = 2,
    per_job: int = 20,
    seed: int = 0,
    with_fields: bool = True,
) -> pd.DataFrame:
    """Jobs k = 0.. of fields k % n_fields; every 5th row real; static-sky truth ids per field
    (shared by the epochs of a field) and injected ids per job (row numbers, reused)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_fields * epochs):
        field = 5333116 + k % n_fields
        for i in range(per_job):
            real = i % 5 == 0
            injected = real and i % 10 == 0
            truth = (
                str(i) if injected else f"{field}{i:03d}" if real else pd.NA
            )  # injected: the row of the job's list; else an object of the field's sky
            rows.append(
                {
                    "job_id": f"jid{k + 1:04d}",
                    "field": str(field) if with_fields else pd.NA,
                    "label": int(real),
                    "truth_id": truth,
                    "injected": injected if real else pd.NA,
                }
            )
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=int(rng.integers(1000))).reset_index(drop=True)


def _sides_of(frame: pd.DataFrame, split: np.ndarray, column: str) -> pd.Series:
    return pd.Series(split, index=frame.index).groupby(frame[column]).nunique()


@pytest.mark.parametrize("seed", range(6))
def test_no_field_job_or_truth_source_straddles_splits(seed):
    frame = _index(seed=seed)
    result = assign_splits(frame, SplitParams(seed=seed))
    assert result.by == "field"
    assert set(result.split) == set(SPLITS)
    for column in ("field", "job_id"):
        assert (_sides_of(frame, result.split, column) == 1).all()
    sources = frame[frame["injected"].eq(False).fillna(False)]
    assert (_sides_of(sources, result.split[sources.index], "truth_id") == 1).all()
    # 6 fields at 0.6 / 0.2 / 0.2: 4 / 1 / 1 fields
    per_split = pd.Series(result.split).groupby(result.split).size()
    fields_per_split = frame.groupby(result.split)["field"].nunique()
    assert fields_per_split.to_dict() == {"test": 1, "train": 4, "validation": 1}
    assert per_split.sum() == len(frame)


def test_same_params_same_splits_regardless_of_row_order():
    frame = _index()
    first = assign_splits(frame, SplitParams(seed=3)).split
    shuffled = frame.sample(frac=1.0, random_state=7)
    again = assign_splits(shuffled, SplitParams(seed=3)).split
    assert (pd.Series(again, index=shuffled.index).sort_index().to_numpy() == first).all()
    other = assign_splits(frame, SplitParams(seed=4)).split
    seeds = {tuple(assign_splits(frame, SplitParams(seed=s)).split) for s in range(8)}
    assert len(seeds) > 1 and (other is not None)


def test_jobs_without_fields_are_split_by_job_and_linked_by_truth():
    frame = _index(n_fields=3, epochs=3, with_fields=False)
    result = assign_splits(frame, SplitParams())
    assert result.by == "job"
    # the three epochs of a field share static-sky truth ids: they must move together
    assert result.groups == 9 and result.components == 3
    assert any("merged" in note for note in result.notes)
    jobs_by_field = {k: [f"jid{j + 1:04d}" for j in range(9) if j % 3 == k] for k in range(3)}
    side = pd.Series(result.split, index=frame.index).groupby(frame["job_id"]).first()
    for jobs in jobs_by_field.values():
        assert side[jobs].nunique() == 1


def test_injected_ids_do_not_link_jobs():
    frame = _index(n_fields=1, epochs=5)
    frame["field"] = pd.NA
    frame.loc[frame["injected"].eq(False).fillna(False), ["truth_id", "label"]] = (pd.NA, 0)
    result = assign_splits(frame, SplitParams())
    assert result.by == "job" and result.components == 5  # "0", "10" reused by every job


def test_too_few_fields_falls_back_to_jobs_and_too_few_jobs_fails():
    frame = _index(n_fields=2, epochs=3)  # 2 fields: cannot make 3 splits by field
    frame["truth_id"] = pd.NA
    assert assign_splits(frame, SplitParams()).by == "job"
    with pytest.raises(SplitError, match="need at least 3 groups, got 2"):
        assign_splits(frame, SplitParams(by="field"))
    with pytest.raises(SplitError, match="jid0001"):
        assign_splits(frame.assign(field=pd.NA), SplitParams(by="field"))
    two_jobs = frame[frame["job_id"].isin(["jid0001", "jid0002"])]
    with pytest.raises(SplitError, match=r"\(2 jobs, 2 after merging .*\); add jobs or fields, "
                       "or set splits.test to 0"):
        assign_splits(two_jobs, SplitParams(by="job"))
    # the advice works: without a test split, two jobs make train and validation
    no_test = assign_splits(two_jobs, SplitParams(train=0.8, validation=0.2, test=0, by="job"))
    assert sorted(set(no_test.split)) == ["train", "validation"]


def test_keys_and_fraction_rounding_by_hand():
    frame = pd.DataFrame({"job_id": ["a", "b"], "field": ["7", " "]})
    keys, by = split_groups(frame, "auto")
    assert by == "job" and list(keys) == ["job:a", "job:b"]  # a blank field is no field
    # 10 jobs at 0.5 / 0.25 / 0.25: round(2.5) = 3 (halves up) to validation and to test
    frame = pd.DataFrame({"job_id": [f"j{i}" for i in range(10)], "label": [0, 1] * 5})
    split = assign_splits(frame, SplitParams(train=0.5, validation=0.25, test=0.25)).split
    assert {s: int((split == s).sum()) for s in SPLITS} == {"train": 4, "validation": 3,
                                                              "test": 3}
    # 3 jobs: one each, whatever the fractions
    split = assign_splits(frame.iloc[:3], SplitParams(train=0.9, validation=0.05,
                                                        test=0.05)).split
    assert sorted(split) == sorted(SPLITS)


def test_both_classes_preferred_on_every_side():
    # real candidates only in jobs 0, 3, 6: a good split puts one of them on every side
    frame = pd.DataFrame(
        {"job_id": [f"j{j}" for j in range(9) for _ in range(4)],
         "label": [int(j % 3 == 0 and i == 0) for j in range(9) for i in range(4)]}
    )
    split = assign_splits(frame, SplitParams()).split
    for name in SPLITS:
        assert set(frame["label"][split == name]) == {0, 1}


def test_split_counts():
    frame = pd.DataFrame(
        {"job_id": ["a", "a", "b", "c"], "field": ["1", "1", "2", "3"],
         "label": [1, pd.NA, 0, 0], "split": ["train", "train", "validation", "test"]}
    )
    counts = split_counts(frame)
    assert counts["train"] == {"cutouts": 2, "jobs": 1, "fields": 1, "real": 1, "bogus": 0,
                               "unlabelled": 1}
    assert counts["test"]["bogus"] == 1


def test_split_params_are_checked():
    with pytest.raises(ValidationError, match="must be 1"):
        SplitParams(train=0.5, validation=0.2, test=0.2)
    with pytest.raises(ValueError, match="moved"):
        Params.model_validate({"train": {"val_fraction": 0.25}})
    assert SplitParams(train=0.8, validation=0.2, test=0.0).test == 0.0


def test_group_keys_and_truth_links_read_every_spelling_of_a_value():
    """Keys and flags are computed per distinct value: the same answer for every spelling."""
    from croissant_cutouts.tasks.dataset.splits import truth_links

    frame = pd.DataFrame({
        "job_id": ["jid1", "jid1", "jid2", "jid3", "jid4", "jid5", "jid6"],
        "field": pd.Series([7, 7, "8", "9", 7.5, "8", "10"], dtype=object),
        "truth_id": ["t1", " ", None, "t2", np.nan, "t3", "t4"],
        "injected": pd.Series([False, "True", " true ", "1", 1, "0", np.nan], dtype=object),
    })
    keys, by = split_groups(frame)
    assert by == "field"
    assert keys.tolist() == [
        "field:7", "field:7", "field:8", "field:9", "field:7.5", "field:8", "field:10"
    ]
    assert keys[0] is keys[1]  # one object per distinct value, not per row
    assert truth_links(frame).tolist() == [True, False, False, False, False, True, True]
    frame.loc[2, "field"] = "  "
    keys, by = split_groups(frame)
    assert by == "job" and keys.tolist()[:3] == ["job:jid1", "job:jid1", "job:jid2"]
    with pytest.raises(SplitError, match=r"1 job\(s\) carry no field, e\.g\. jid2"):
        split_groups(frame, by="field")


def _by_job(frame: pd.DataFrame) -> list[pd.DataFrame]:
    return [part for _, part in frame.groupby("job_id", sort=True)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("by", ["auto", "job", "field"])
def test_each_jobs_deciding_rows_split_as_all_its_rows(seed, by):
    """The index step keeps only :func:`split_keys` of each job: the same split per row."""
    frame = _index(n_fields=5, epochs=3, per_job=40, seed=seed)
    frame.loc[frame.index[:3], "truth_id"] = "shared"  # a source seen in up to three jobs
    frame.loc[frame.index[:3], "injected"] = False
    params = SplitParams(by=by, seed=seed)
    whole = assign_splits(frame, params)
    keys = pd.concat([split_keys(part) for part in _by_job(frame)], ignore_index=True)
    few = assign_splits(keys, params)
    assert len(keys) < len(frame) / 4
    assert (few.by, few.groups, few.components, few.notes) == (
        whole.by, whole.groups, whole.components, whole.notes
    )
    of_key = dict(zip(group_keys(keys, few.by), few.split, strict=True))
    assert [of_key[k] for k in group_keys(frame, whole.by)] == list(whole.split)


def test_split_keys_keep_only_truth_that_links_jobs():
    frame = pd.DataFrame({
        "job_id": ["j1"] * 6,
        "field": ["f"] * 6,
        "truth_id": ["7", "8", None, "", "s", "s"],
        "injected": [True, "True", None, False, False, "false"],
        "label": ["1", 1, 0, 0, 1, 1],
    })
    keys = split_keys(frame)
    assert keys["truth_id"].tolist() == ["", "", "s"]  # injected fakes link nothing
    assert keys["label"].tolist() == [1, 0, 1]
    bare = split_keys(frame[["job_id"]])
    assert list(bare.columns) == ["job_id"] and len(bare) == 1
