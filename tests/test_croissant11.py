"""croissant.json is Croissant 1.1: context, required/recommended properties, RAI, splits, arrays.

mlcroissant only warns about a few missing properties, so these tests read the written JSON
itself. The index is written by hand (every column of INDEX_SCHEMA), with a few .npy files.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlcroissant as mlc
import numpy as np
import pandas as pd
import pytest

from croissant_cutouts.tasks.config import CroissantParams
from croissant_cutouts.tasks.contract import CHANNELS, CUTOUT_DTYPE, CUTOUT_SHAPE, INDEX_SCHEMA
from croissant_cutouts.tasks.dataset.croissant import (
    CONFORMS_TO,
    CROISSANT_1_1,
    RAI_1_0,
    SYNTHETIC_COLLECTION_TYPE,
    CroissantError,
    validate,
    write_croissant,
)

NPY_DTYPE = CUTOUT_DTYPE.str

#: The JSON-LD context of the Croissant 1.1 specification, Appendix 1.
SPEC_CONTEXT_1_1 = {
    "@language": "en",
    "@vocab": "http://schema.org/",
    "sc": "http://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "annotation": "cr:annotation",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "excludes": "cr:excludes",
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "readLines": "cr:readLines",
    "sdVersion": "cr:sdVersion",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
    "unArchive": "cr:unArchive",
    "value": "cr:value",
}
#: Where mlcroissant 1.1.1 must differ from Appendix 1 to load the file: it knows schema.org
#: by its https IRI, and reads a field's constant value as schema.org ``value``.
MLCROISSANT_DIFFERS = {"@vocab", "sc", "value"}
#: Dataset-level properties the 1.1 spec lists as required, and as recommended.
REQUIRED = ("@context", "@type", "conformsTo", "description", "license", "name", "url",
            "creator", "datePublished")
RECOMMENDED = ("keywords", "publisher", "version", "dateCreated", "dateModified", "sameAs",
               "sdLicense", "inLanguage")
RAI_TEXTS = ("rai:dataCollection", "rai:dataCollectionType", "rai:dataCollectionRawData",
             "rai:dataCollectionMissingData", "rai:dataPreprocessingProtocol",
             "rai:dataAnnotationProtocol", "rai:machineAnnotationTools", "rai:dataLimitations",
             "rai:dataBiases", "rai:dataUseCases", "rai:personalSensitiveInformation",
             "rai:dataSocialImpact")
SPLITS = ["train", "validation", "test", "train", "train", "test", "validation", "train", "test"]
LABELS = [1, 0, 0, None, 0, 1, 1, 0, None]


def _write_index(root: Path, sharded: bool) -> pd.DataFrame:
    """A dataset of len(SPLITS) cutouts: .npy files (or two shards) and master_index.csv."""
    n = len(SPLITS)
    rows = pd.DataFrame({c.name: [None] * n for c in INDEX_SCHEMA})  # empty cells
    rows["cutout_id"] = range(n)
    rows["job_id"] = [f"jid{k % 2:04d}" for k in range(n)]
    rows["x"] = rows["y"] = 32.0
    rows["label"] = pd.array(LABELS, dtype="Int64")
    rows["labelled"] = rows["label"].notna()
    rows["catalog_row"] = range(n)
    rows["split"] = SPLITS
    cube = np.random.default_rng(0).random((n, *CUTOUT_SHAPE), dtype=np.float32)
    if sharded:
        (root / "shards").mkdir(parents=True)
        rows["shard"] = [f"shards/{job}.npy" for job in rows["job_id"]]
        rows["row"] = rows.groupby("job_id").cumcount()
        for job, part in rows.groupby("job_id"):
            np.save(root / f"shards/{job}.npy", cube[part.index.to_numpy()])
        rows["cutout_filename"] = rows["shard"]
    else:
        (root / "cutouts").mkdir(parents=True)
        rows["cutout_filename"] = [f"cutouts/{k:06d}.npy" for k in range(n)]
        for k, name in enumerate(rows["cutout_filename"]):
            np.save(root / name, cube[k])
    rows.to_csv(root / "master_index.csv", index=False)
    return rows


@pytest.fixture
def files_ds(tmp_path: Path) -> Path:
    _write_index(tmp_path / "ds", sharded=False)
    return tmp_path / "ds"


@pytest.fixture
def shards_ds(tmp_path: Path) -> Path:
    _write_index(tmp_path / "ds", sharded=True)
    return tmp_path / "ds"


def _doc(ds: Path, params: CroissantParams | None = None) -> dict:
    return json.loads(write_croissant(ds / "master_index.csv", ds / "croissant.json",
                                      params).read_text())


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def _record_set(doc: dict, rs_id: str) -> dict:
    return next(r for r in doc["recordSet"] if r["@id"] == rs_id)


def _field(doc: dict, field_id: str) -> dict:
    rs_id = field_id.split("/")[0]
    return next(f for f in _record_set(doc, rs_id)["field"] if f["@id"] == field_id)


def test_conforms_to_and_context(files_ds):
    from mlcroissant._src.core.rdf import make_context

    doc = _doc(files_ds)
    assert _as_list(doc["conformsTo"]) == list(CONFORMS_TO)
    assert _as_list(doc["conformsTo"])[0] == CROISSANT_1_1 == "http://mlcommons.org/croissant/1.1"
    assert RAI_1_0 == "http://mlcommons.org/croissant/RAI/1.0"
    context = doc["@context"]
    # everything mlcroissant emits for 1.1 (else it logs a non-standard context) ...
    expected = make_context(mlc.Context(conforms_to=CROISSANT_1_1))
    assert {"arrayShape", "isArray", "containedIn"} <= expected.keys()
    assert {k: context.get(k) for k in expected} == expected
    # ... and every term of the spec's Appendix 1, with the spec's meaning
    for key, value in SPEC_CONTEXT_1_1.items():
        if key not in MLCROISSANT_DIFFERS:
            assert context.get(key) == value, key
    assert context["@vocab"] == context["sc"] == "https://schema.org/"


def test_required_and_recommended_properties(files_ds):
    doc = _doc(files_ds)
    for key in (*REQUIRED, *RECOMMENDED, "citeAs"):
        assert doc.get(key) not in (None, "", [], {}), key
    assert doc["@type"] == "sc:Dataset"
    defaults = CroissantParams()
    assert _as_list(doc["keywords"]) == list(defaults.keywords)
    assert doc["publisher"]["name"] == defaults.publisher
    assert doc["creator"]["name"] == defaults.creator
    assert _as_list(doc["inLanguage"]) == ["en"]
    assert _as_list(doc["sdLicense"]) == [defaults.sd_license]
    assert _as_list(doc["sameAs"]) == list(defaults.same_as)
    assert doc["dateCreated"] == doc["datePublished"] <= doc["dateModified"]


def test_params_fill_the_properties(files_ds):
    params = CroissantParams(
        keywords=("a", "b"), publisher="Pub", same_as=("https://example.org/card",),
        sd_license="https://example.org/l", in_language=("en", "fr"),
        date_published="2026-02-03", date_created="2026-01-01", date_modified="2026-02-01",
        data_limitations=("only one",), synthetic=False,
    )
    doc = _doc(files_ds, params)
    assert doc["keywords"] == ["a", "b"] and doc["publisher"]["name"] == "Pub"
    assert doc["sameAs"] == "https://example.org/card" and doc["inLanguage"] == ["en", "fr"]
    assert doc["sdLicense"] == "https://example.org/l"
    assert (doc["dateCreated"], doc["datePublished"], doc["dateModified"]) == (
        "2026-01-01", "2026-02-03", "2026-02-01")
    assert doc["rai:dataLimitations"] == "only one"
    assert doc["rai:hasSyntheticData"] is False
    assert SYNTHETIC_COLLECTION_TYPE not in _as_list(doc["rai:dataCollectionType"])
    with pytest.raises(ValueError):
        CroissantParams(keywords=())


def test_responsible_ai_fields(files_ds):
    doc = _doc(files_ds)
    for key in RAI_TEXTS:
        values = _as_list(doc.get(key))
        assert values and all(isinstance(v, str) and v.strip() for v in values), key
    assert doc["rai:hasSyntheticData"] is True
    assert SYNTHETIC_COLLECTION_TYPE in _as_list(doc["rai:dataCollectionType"])
    text = json.dumps({k: v for k, v in doc.items() if k.startswith("rai:")})
    for fact in ("simulate", "OpenUniverse", "injected", "cosmic rays", "match_radius_px",
                 "mag_limit", "3-15 %", "64x64", "ZScale", "photometry", "field"):
        assert fact in text, fact


def test_splits_record_set_and_counts(files_ds):
    doc = _doc(files_ds)
    splits = _record_set(doc, "splits")
    assert splits["dataType"] == "cr:Split"
    assert splits["key"] == {"@id": "splits/name"}
    assert _field(doc, "splits/url")["dataType"] == ["sc:URL", "cr:Split"]
    index = pd.read_csv(files_ds / "master_index.csv")
    urls = {"train": "cr:TrainingSplit", "validation": "cr:ValidationSplit",
            "test": "cr:TestSplit"}
    assert [(r["splits/name"], r["splits/url"]) for r in splits["data"]] == list(urls.items())
    for record in splits["data"]:
        part = index[index["split"] == record["splits/name"]]
        assert record["splits/cutouts"] == len(part) > 0
        assert record["splits/real"] == (part["label"] == 1).sum()
        assert record["splits/bogus"] == (part["label"] == 0).sum()
        assert record["splits/unlabelled"] == part["label"].isna().sum()
    split_field = _field(doc, "transient_candidates/split")
    assert split_field["references"] == {"field": {"@id": "splits/name"}}
    assert split_field["source"]["extract"] == {"column": "split"}
    assert split_field["dataType"] == "sc:Text"
    records = list(mlc.Dataset(jsonld=str(files_ds / "croissant.json")).records("splits"))
    assert [r["splits/name"] for r in records] == list(urls)
    assert sum(r["splits/cutouts"] for r in records) == len(index)


def test_array_shape_dtype_and_channels_files(files_ds):
    doc = _doc(files_ds)
    (array,) = _as_list(_field(doc, "transient_candidates/cutout_path")["annotation"])
    assert array["@id"] == "transient_candidates/cutout_path/array"
    assert (array["isArray"], array["arrayShape"]) == (True, "64,64,4")
    assert array["dataType"][0] == "cr:Float32"
    files = {d["@id"]: d for d in doc["distribution"]}["cutout-files"]
    assert "application/x-npy" in _as_list(files["encodingFormat"])
    for statement in (array["description"], files["description"]):
        assert "(64, 64, 4)" in statement and f"'{NPY_DTYPE}'" in statement
        assert ", ".join(CHANNELS) in statement and "[0, 1]" in statement
    channels = _record_set(doc, "channels")
    assert [r["channels/name"] for r in channels["data"]] == list(CHANNELS)
    assert [r["channels/index"] for r in channels["data"]] == [0, 1, 2, 3]
    stored = np.load(files_ds / "cutouts/000000.npy", mmap_mode="r")
    assert (stored.shape, stored.dtype.str) == (CUTOUT_SHAPE, NPY_DTYPE)


def test_array_shape_shards(shards_ds):
    doc = _doc(shards_ds)
    (array,) = _as_list(_field(doc, "transient_candidates/cutout_path")["annotation"])
    assert array["arrayShape"] == "-1,64,64,4"
    shards = [d for d in doc["distribution"] if d["@id"].startswith("shard-")]
    assert len(shards) == 2
    for shard in shards:
        assert "(-1, 64, 64, 4)" in shard["description"]
        stored = np.load(shards_ds / shard["contentUrl"], mmap_mode="r")
        assert stored.shape[1:] == CUTOUT_SHAPE and stored.dtype.str == NPY_DTYPE
    validate(shards_ds / "croissant.json")


def test_loads_without_warnings_and_records_match_index(files_ds):
    from croissant_cutouts.tasks.evaluate.data import read_records

    doc = _doc(files_ds)
    assert len(_record_set(doc, "transient_candidates")["field"]) == len(INDEX_SCHEMA)
    dataset = validate(files_ds / "croissant.json")  # raises on any error or warning
    assert dataset.metadata.ctx.is_v1_1()
    records = list(dataset.records("transient_candidates"))
    index = pd.read_csv(files_ds / "master_index.csv")
    assert [r["transient_candidates/cutout_id"] for r in records] == index["cutout_id"].tolist()
    assert [r["transient_candidates/split"].decode() for r in records] == SPLITS
    fast = read_records(files_ds / "croissant.json")
    slow = read_records(files_ds / "croissant.json", engine="mlcroissant")
    assert fast["split"].tolist() == slow["split"].tolist() == SPLITS
    assert fast["label"].tolist() == slow["label"].tolist()


def test_unknown_split_fails(files_ds):
    index = pd.read_csv(files_ds / "master_index.csv")
    index.loc[0, "split"] = "dev"
    index.to_csv(files_ds / "master_index.csv", index=False)
    with pytest.raises(CroissantError, match="unknown split name"):
        write_croissant(files_ds / "master_index.csv", files_ds / "croissant.json")
