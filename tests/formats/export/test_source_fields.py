"""What evaluation needs survives conversion (format version 2) and `export coco` writes it back: the
source's image and category ids, crowd / ignore regions, own areas, LVIS frequency, coco_url,
neg / not_exhaustive category ids. The export of an unmodified conversion loads in pycocotools / the LVIS
API with the original ids and scores a fixed results file exactly as the original file does. Crowd regions
are never trained on; datasets of format version 1 still read."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from coco_reference import jitter_detections, pycocotools_reference
from conftest import run_cli

from detector.data import load_examples
from detector.eval_coco import coco_metrics
from detector.eval_gold import dataset_to_coco
from formats import schema as S
from formats.converters.coco import CocoConvertConfig, convert_coco
from formats.dataset import MANIFEST, Dataset, DatasetWriter, Manifest, derived_manifest
from formats.export.coco import export_coco
from formats.export.odvg import export_odvg
from formats.export.yolo_world import export_yolo_world
from formats.query import stats


def coco_file() -> dict:
    """COCO 2017 ids (chair 62, toilet 70: not 1..N), image ids not 1..N, a crowd, an ignore annotation,
    own areas that differ from the box's (one moves a box from the medium to the small bucket)."""
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480,
               "coco_url": f"http://images.cocodataset.org/val2017/{i:012d}.jpg"} for i in (391895, 42, 7)]
    ann = [  # image, category, xywh, area, iscrowd
        (391895, 1, [10, 10, 20, 20], 380.5, 0),
        (391895, 62, [100, 100, 60, 60], 3400.0, 0),
        (391895, 1, [300, 300, 200, 150], 25000.0, 1),  # crowd
        (42, 70, [5, 5, 40, 40], 900.0, 0),  # box 1600 px² (medium), own area 900 (small)
        (42, 62, [50, 60, 100, 90], 8000.0, 0),
        (7, 1, [20, 30, 50, 70], 3300.0, 0),
        (7, 70, [400, 200, 120, 100], 11000.0, 0),
    ]
    anns = [{"id": 1000 + k, "image_id": im, "category_id": c, "bbox": [float(v) for v in b], "area": a,
             "iscrowd": cr} for k, (im, c, b, a, cr) in enumerate(ann)]
    anns.append({"id": 2000, "image_id": 7, "category_id": 1, "bbox": [500.0, 10.0, 30.0, 30.0], "area": 850.0,
                 "iscrowd": 0, "ignore": 1})
    cats = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 62, "name": "chair", "supercategory": "furniture"},
            {"id": 70, "name": "toilet", "supercategory": "furniture"}]
    return {"info": {"year": 2017}, "images": images, "annotations": anns, "categories": cats}


def lvis_file() -> dict:
    """LVIS v1 style: images named by coco_url only, neg / not_exhaustive category ids, categories with
    frequency, synonyms, def, synset and counts; no iscrowd."""
    rng = np.random.default_rng(11)
    cats = [{"id": i, "name": f"thing_{i}", "synonyms": [f"thing_{i}", f"item_{i}"], "def": f"a thing {i}",
             "synset": f"thing.n.0{i}", "frequency": "rcf"[i % 3], "image_count": i, "instance_count": 2 * i}
            for i in range(1, 7)]
    images, anns = [], []
    for k, i in enumerate((139, 285, 632, 724, 776)):
        neg = [(k + 4) % 6 + 1]
        images.append({"id": i, "width": 640, "height": 480, "coco_url": f"http://images.cocodataset.org/val2017/{i:012d}.jpg",
                       "neg_category_ids": neg, "not_exhaustive_category_ids": [(k + 3) % 6 + 1] if k % 2 else []})
        for j in range(4):
            c = (k + j) % 6 + 1
            if c in neg:
                continue
            w = [12.0, 50.0, 160.0, 25.0][j]
            x, y = float(rng.uniform(0, 400)), float(rng.uniform(0, 300))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, 0.8 * w],
                         "area": 0.75 * w * w})
    return {"images": images, "annotations": anns, "categories": cats}


@pytest.fixture
def coco_pair(write_json, tmp_path):
    """(original file, its conversion as --source coco2017, the conversion's export)."""
    src = write_json(coco_file(), "instances.json")
    convert_coco(src, tmp_path / "ds", CocoConvertConfig(source="coco2017"))
    export_coco(tmp_path / "ds", tmp_path / "export.json")
    return src, tmp_path / "ds", tmp_path / "export.json"


def test_coco_export_loads_in_pycocotools_with_the_original_ids_and_fields(coco_pair):
    from pycocotools.coco import COCO

    src, _, exported = coco_pair
    orig, back = COCO(str(src)), COCO(str(exported))
    assert sorted(back.imgs) == sorted(orig.imgs) == [7, 42, 391895]
    for i, im in orig.imgs.items():
        assert {k: back.imgs[i][k] for k in ("width", "height", "file_name", "coco_url")} == \
            {k: im[k] for k in ("width", "height", "file_name", "coco_url")}
    # --source coco2017 keeps the 80-class label map; the file's categories keep their ids and fields
    assert len(back.cats) == 80
    for cid, c in orig.cats.items():
        assert back.cats[cid] == c  # chair stays 62, toilet 70
    key = lambda a: (a["image_id"], a["category_id"], tuple(round(v, 6) for v in a["bbox"]))  # noqa: E731
    got = sorted((key(a), a["area"], a["iscrowd"], a.get("ignore", 0)) for a in back.anns.values())
    want = sorted((key(a), a["area"], a["iscrowd"], a.get("ignore", 0)) for a in orig.anns.values())
    assert got == want
    assert [(a["image_id"], a["area"]) for a in back.anns.values() if a["iscrowd"]] == [(391895, 25000.0)]
    assert sorted(back.anns) == sorted(orig.anns) == [*range(1000, 1007), 2000]  # the annotations' own ids
    assert {i: key(a) for i, a in back.anns.items()} == {i: key(a) for i, a in orig.anns.items()}
    assert [(a["image_id"], a["iscrowd"]) for a in back.anns.values() if a.get("ignore")] == [(7, 0)]


@pytest.mark.parametrize("seed", [0, 1])
def test_results_scored_against_the_coco_export_equal_the_original(coco_pair, seed):
    src, ds, exported = coco_pair
    original = json.loads(src.read_text())
    dets = jitter_detections(original, seed, [1, 62, 70])
    ref = pycocotools_reference(original, dets)
    assert 0.0 < ref[0] < 1.0
    np.testing.assert_allclose(pycocotools_reference(json.loads(exported.read_text()), dets), ref, atol=1e-6)
    # the dataset as evaluation's gold (crowd and ignore regions ignored) with the same ids
    rebuilt = dataset_to_coco(ds)
    assert sorted(im["id"] for im in rebuilt["images"]) == [7, 42, 391895]
    assert sorted((a["image_id"], a["area"]) for a in rebuilt["annotations"] if a["iscrowd"]) == \
        [(7, 850.0), (391895, 25000.0)]
    no_ignore = copy.deepcopy(original)  # the original with its ignore box scored as a crowd, as ovlabel does
    for a in no_ignore["annotations"]:
        a["iscrowd"] = int(a["iscrowd"] or a.get("ignore", 0))
    assert coco_metrics(rebuilt, dets)["AP"] == pytest.approx(coco_metrics(no_ignore, dets)["AP"], abs=1e-9)


def test_string_image_ids_are_written_back_as_strings(write_json, tmp_path):
    doc = coco_file()
    doc["images"][1]["id"] = "000042"
    for a in doc["annotations"]:
        if a["image_id"] == 42:
            a["image_id"] = "000042"
    convert_coco(write_json(doc), tmp_path / "ds", CocoConvertConfig(source="custom"))
    (r,) = [r for r in Dataset(tmp_path / "ds").read().to_pylist() if r["image_id"] == "custom/000042"]
    assert r["source_image_id"] == '"000042"'
    export_coco(tmp_path / "ds", tmp_path / "e.json")
    out = json.loads((tmp_path / "e.json").read_text())
    assert [im["id"] for im in out["images"]] == [391895, "000042", 7]
    assert sorted({a["image_id"] for a in out["annotations"]}, key=str) == ["000042", 391895, 7]
    # custom labels are 0..2 in id order; the export still writes the file's category ids
    assert [c["id"] for c in out["categories"]] == [1, 62, 70]
    assert sorted({a["category_id"] for a in out["annotations"]}) == [1, 62, 70]


def load_lvis(path):
    np.float = float  # the LVIS API (unmaintained) still uses np.float
    from lvis import LVIS

    logging.getLogger("lvis").setLevel(logging.WARNING)
    return LVIS(str(path))


def lvis_scores(gt_path, dets: list[dict]) -> dict:
    from lvis import LVISEval, LVISResults

    gt = load_lvis(gt_path)
    ev = LVISEval(gt, LVISResults(gt, copy.deepcopy(dets), max_dets=300), "bbox")
    ev.run()
    return dict(ev.results)


def test_lvis_export_loads_in_the_lvis_api_and_scores_like_the_original(write_json, tmp_path):
    src = write_json(lvis_file(), "lvis_v1_val.json")
    m = convert_coco(src, tmp_path / "ds", CocoConvertConfig(source="lvis_v1"))
    assert m.extra_columns == ["source_image_id", "coco_url", "neg_labels", "not_exhaustive_labels"]
    export_coco(tmp_path / "ds", tmp_path / "export.json")
    orig, back = load_lvis(src), load_lvis(tmp_path / "export.json")
    assert sorted(back.imgs) == sorted(orig.imgs) == [139, 285, 632, 724, 776]
    assert sorted(back.cats) == sorted(orig.cats) == [1, 2, 3, 4, 5, 6]
    for cid, c in orig.cats.items():
        assert back.cats[cid] == c  # frequency, synonyms, def, synset, counts
    for i, im in orig.imgs.items():
        for k in ("coco_url", "neg_category_ids", "not_exhaustive_category_ids", "width", "height"):
            assert back.imgs[i][k] == im[k], (i, k)
        assert back.imgs[i]["file_name"] == f"val2017/{i:012d}.jpg"
    assert sorted((a["image_id"], a["category_id"], a["area"]) for a in back.anns.values()) == \
        sorted((a["image_id"], a["category_id"], a["area"]) for a in orig.anns.values())
    dets = jitter_detections(lvis_file(), 4, list(range(1, 7)), extra=6)
    ref = lvis_scores(src, dets)
    got = lvis_scores(tmp_path / "export.json", dets)
    assert 0.0 < ref["AP"] < 1.0
    assert set(got) == set(ref) and {"APr", "APc", "APf"} <= set(ref)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k


def ann_ids_doc(ids: list) -> dict:
    """Three images, one box each, annotation ids as given (not 1..N); image 3 has no coco_url."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 100} for i in (1, 2, 3)]
    for im in images[:2]:
        im["coco_url"] = f"http://example.org/{im['file_name']}"
    boxes = [(1, 1, [10.0, 10.0, 30.0, 20.0]), (2, 2, [5.0, 5.0, 50.0, 40.0]), (3, 1, [60.0, 20.0, 25.0, 25.0])]
    anns = [{"id": a, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for a, (im, c, b) in zip(ids, boxes)]
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}


def ids_by_box(coco) -> dict:
    """annotation id -> (image id, category id, xywh box to 1e-6 px) of a loaded pycocotools COCO / LVIS object."""
    return {i: (a["image_id"], a["category_id"], tuple(round(v, 6) for v in a["bbox"])) for i, a in coco.anns.items()}


@pytest.mark.parametrize("ids", [[5678, 12, 9000001], ["a-17", "0012", 12]])
def test_annotation_ids_are_written_back_with_their_type(write_json, tmp_path, ids):
    from pycocotools.coco import COCO

    src = write_json(ann_ids_doc(ids))
    convert_coco(src, tmp_path / "ds", CocoConvertConfig(source="custom"))
    regions = [g for r in Dataset(tmp_path / "ds").read().to_pylist() for g in r["regions"]]
    assert [g["source_id"] for g in regions] == [json.dumps(i) for i in ids]  # JSON text: the type kept
    export_coco(tmp_path / "ds", tmp_path / "e.json")
    out = json.loads((tmp_path / "e.json").read_text())
    assert [a["id"] for a in out["annotations"]] == ids
    assert ids_by_box(COCO(str(tmp_path / "e.json"))) == ids_by_box(COCO(str(src)))
    # an image without coco_url has no coco_url key (not null)
    assert [("coco_url" in im) for im in out["images"]] == [True, True, False]
    assert out["images"][0]["coco_url"] == "http://example.org/1.jpg"


def test_lvis_annotation_ids_are_kept_in_the_lvis_api(write_json, tmp_path):
    doc = lvis_file()
    for k, a in enumerate(doc["annotations"]):
        a["id"] = [5678, 12, 9000001][k] if k < 3 else 100_000 + 7 * k
    src = write_json(doc, "lvis.json")
    convert_coco(src, tmp_path / "ds", CocoConvertConfig(source="lvis_v1"))
    export_coco(tmp_path / "ds", tmp_path / "e.json")
    orig, back = load_lvis(src), load_lvis(tmp_path / "e.json")
    assert {5678, 12, 9000001} <= set(back.anns)
    assert ids_by_box(back) == ids_by_box(orig)


def with_pseudo_regions(src_ds, out, duplicate_first: bool = False) -> None:
    """`src_ds` with a pseudo box added to images 1 and 3 (after their gold box); `duplicate_first`: image 2
    also gets a copy of image 1's gold region, source id included."""
    src = Dataset(src_ds)
    table = src.read()
    rows = table.to_pylist()
    first = dict(rows[0]["regions"][0])
    for r, box in zip(rows, ([100.0, 50.0, 150.0, 90.0], None, [0.0, 0.0, 40.0, 40.0])):
        if box is not None:
            r["regions"].append({"bbox": box, "label": 0, "category": "cat", "phrase": "cat", "score": 0.8,
                                 "det_score": 0.7, "clip_score": 0.3, "origin": "pseudo", "round": 1})
    if duplicate_first:
        rows[1]["regions"].append(first)
    with DatasetWriter(out, derived_manifest(src, {"op": "test"})) as w:
        w.write_part("part-00000.parquet", pa.Table.from_pylist(rows, schema=table.schema))
        w.finish()


@pytest.mark.parametrize("ids,want", [
    ([5678, 12, 9000001], [5678, 9000002, 12, 9000001, 9000003]),
    (["a-17", "0012", 12], ["a-17", 13, "0012", 12, 14]),  # after the largest integer, "0012" counted
    (["a", "b", "c"], ["a", 1, "b", "c", 2]),
])
def test_regions_without_a_source_id_are_numbered_after_the_largest_id(write_json, tmp_path, ids, want):
    from pycocotools.coco import COCO

    convert_coco(write_json(ann_ids_doc(ids)), tmp_path / "ds", CocoConvertConfig(source="custom"))
    with_pseudo_regions(tmp_path / "ds", tmp_path / "mixed")
    export_coco(tmp_path / "mixed", tmp_path / "e.json")
    out = json.loads((tmp_path / "e.json").read_text())
    assert [a["id"] for a in out["annotations"]] == want
    assert [a["image_id"] for a in out["annotations"]] == [1, 1, 2, 3, 3]
    assert [("score" in a and a["score"] is not None) for a in out["annotations"]] == [False, True, False, False, True]
    assert len(COCO(str(tmp_path / "e.json")).anns) == 5


def test_duplicate_source_ids_are_numbered_1_to_n(write_json, tmp_path):
    convert_coco(write_json(ann_ids_doc([5678, 12, 9000001])), tmp_path / "ds", CocoConvertConfig(source="custom"))
    with_pseudo_regions(tmp_path / "ds", tmp_path / "dup", duplicate_first=True)
    export_coco(tmp_path / "dup", tmp_path / "e.json")
    out = json.loads((tmp_path / "e.json").read_text())
    assert [a["id"] for a in out["annotations"]] == [1, 2, 3, 4, 5, 6]
    assert [a["image_id"] for a in out["annotations"]] == [1, 1, 2, 2, 3, 3]


def test_crowd_regions_are_not_trained_on_nor_exported_for_training_and_stats_count_them(coco_pair, tmp_path):
    _, ds, _ = coco_pair
    export_odvg(ds, tmp_path / "train.jsonl")
    lines = [json.loads(x) for x in open(tmp_path / "train.jsonl")]
    assert [len(x["detection"]["instances"]) for x in lines] == [2, 2, 2]  # crowd on 391895, ignore on 7 left out
    assert {"bbox": [300.0, 300.0, 500.0, 450.0], "label": 0, "category": "person"} not in lines[0]["detection"]["instances"]
    examples, _ = load_examples(ds)
    assert [len(e.boxes) for e in examples] == [2, 2, 2]
    assert [300.0, 300.0, 500.0, 450.0] not in examples[0].boxes.tolist()
    s = stats(str(ds))
    assert s["boxes"] == 8 and s["origins"] == {"crowd": 1, "gold": 6, "ignore": 1}
    assert s["ignore_regions"] == {"crowd": 1, "ignore": 1}
    assert Dataset(ds).manifest.counts["ignore_regions"] == {"crowd": 1, "ignore": 1}
    assert "crowd 1" in run_cli("stats", ds).stdout


def vg_dataset_with_a_crowd(root) -> None:
    """A grounding dataset of one image: a gold phrase box and a crowd region on the same phrase."""
    caption = "two dogs in a crowd of people"
    regions = S.regions_from_columns(np.array([0, 2]), np.array([[1.0, 1.0, 20.0, 20.0], [30.0, 30.0, 90.0, 60.0]]),
                                     phrase=pa.array(["two dogs", "people"]),
                                     tokens_positive=pa.array([[[0, 8]], [[23, 29]]], pa.list_(S.SPAN_TYPE)),
                                     origin=pa.array(["gold", "crowd"]))
    table = pa.Table.from_pydict({"image_id": ["vg/1"], "source": ["vg"], "file_name": ["1.jpg"], "width": [100],
                                  "height": [80], "caption": [caption], "regions": regions}, schema=S.CORE_SCHEMA)
    with DatasetWriter(root, Manifest(kind="vg", source="vg")) as w:
        w.write_part("part-00000.parquet", table)
        w.finish()


def test_vg_crowd_regions_stay_out_of_training_exports(tmp_path):
    vg_dataset_with_a_crowd(tmp_path / "vg")
    export_odvg(tmp_path / "vg", tmp_path / "vg.jsonl")
    (line,) = [json.loads(x) for x in open(tmp_path / "vg.jsonl")]
    assert [r["phrase"] for r in line["grounding"]["regions"]] == ["two dogs"]
    r = export_yolo_world(tmp_path / "vg", tmp_path / "yw")
    grounding = json.loads((tmp_path / "yw" / "grounding.json").read_text())
    assert [a["tokens"] for a in grounding["annotations"]] == ["two dogs"] and r["grounding_annotations"] == 1
    (ex,), _ = load_examples(tmp_path / "vg")
    assert ex.names == ["two dogs"] and ex.boxes.tolist() == [[1.0, 1.0, 20.0, 20.0]]


def to_version_1(ds) -> None:
    """Rewrites a dataset in the version-1 layout: regions without `area` / `source_id`, crowd/ignore regions
    dropped (as version 1 converters dropped them), no source_image_id / coco_url columns, manifest
    format_version 1."""
    new = ("area", "source_id")
    old_region = pa.struct([f for f in S.REGION_TYPE if f.name not in new])
    for part in sorted((ds / "records").glob("*.parquet")):
        rows = pq.read_table(part).to_pylist()
        for r in rows:
            r["regions"] = [{k: v for k, v in g.items() if k not in new} for g in r["regions"] if g["origin"] == "gold"]
        keep = [f for f in S.CORE_FIELDS if f.name != "regions"] + [pa.field("regions", pa.list_(old_region))]
        keep += [pa.field(n, pa.list_(pa.int32())) for n in ("neg_labels", "not_exhaustive_labels") if n in rows[0]]
        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(keep)), part)
    m = json.loads((ds / MANIFEST).read_text())
    m["format_version"] = 1
    m["extra_columns"] = [c for c in m["extra_columns"] if c in ("neg_labels", "not_exhaustive_labels")]
    (ds / MANIFEST).write_text(json.dumps(m))


def test_a_version_1_dataset_still_reads_evaluates_and_exports(coco_pair, tmp_path):
    _, ds, _ = coco_pair
    to_version_1(ds)
    d = Dataset(ds)
    assert d.manifest.format_version == 1
    names = pq.read_schema(d.part_paths[0]).field("regions").type.value_type.names
    assert "area" not in names and "source_id" not in names
    recs = d.read().to_pylist()
    assert [len(r["regions"]) for r in recs] == [2, 2, 2]
    # upgraded: the fields are there, null
    assert all(g["area"] is None and g["source_id"] is None for r in recs for g in r["regions"])
    export_coco(ds, tmp_path / "v1.json")
    out = json.loads((tmp_path / "v1.json").read_text())
    assert [im["id"] for im in out["images"]] == [1, 2, 3]  # no source ids: today's numbering
    assert [a["id"] for a in out["annotations"]] == [1, 2, 3, 4, 5, 6]
    assert sorted({a["category_id"] for a in out["annotations"]}) == [1, 62, 70]  # manifest ids were kept in v1
    a = next(a for a in out["annotations"] if a["image_id"] == 2 and a["category_id"] == 70)
    assert a["area"] == pytest.approx(1600.0) and a["iscrowd"] == 0  # the box's area
    export_odvg(ds, tmp_path / "v1.jsonl")
    assert len(open(tmp_path / "v1.jsonl").readlines()) == 3
    gt = dataset_to_coco(ds)  # image ids parsed from coco2017/<id>
    assert sorted(im["id"] for im in gt["images"]) == [7, 42, 391895] and len(gt["annotations"]) == 6
    assert stats(str(ds))["boxes"] == 6
    assert [len(e.boxes) for e in load_examples(ds)[0]] == [2, 2, 2]


def test_a_version_1_lvis_dataset_keeps_its_federated_fields(write_json, tmp_path):
    src = write_json(lvis_file(), "lvis.json")
    convert_coco(src, tmp_path / "ds", CocoConvertConfig(source="lvis_v1"))
    to_version_1(tmp_path / "ds")
    gt = dataset_to_coco(tmp_path / "ds")
    orig = {im["id"]: im for im in lvis_file()["images"]}
    assert sorted(orig) == sorted(im["id"] for im in gt["images"])
    for im in gt["images"]:
        assert im["neg_category_ids"] == orig[im["id"]]["neg_category_ids"]
        assert im["not_exhaustive_category_ids"] == orig[im["id"]]["not_exhaustive_category_ids"]


def test_a_reviewed_region_keeps_its_annotation_id_only_when_accepted(write_json, tmp_path):
    """Review: an accepted box is still the source's annotation (its id is written back); a box the reviewer
    moved is not, and `export coco` numbers it after the largest source id."""
    from formats.corrections import apply_corrections, write_corrections

    src = write_json(ann_ids_doc([5678, 12, 9000001]))
    convert_coco(src, tmp_path / "ds", CocoConvertConfig(source="custom"))
    recs = Dataset(tmp_path / "ds").read().to_pylist()
    key = {r["image_id"]: r["regions"][0]["region_id"] or f"{r['image_id']}#0" for r in recs}  # S.region_keys
    me = str((tmp_path / "ds").resolve())

    def row(action, image_id, bbox):
        return {"image_id": image_id, "region_id": key[image_id], "action": action, "field": "gold", "dataset": me,
                "bbox": bbox, "phrase": None, "category": None, "score": None, "tags": [],
                "when": "2026-11-30T00:00:00+00:00"}
    images = sorted(key)
    write_corrections([row("accept", images[0], [10.0, 10.0, 40.0, 30.0]),
                       row("fix", images[1], [6.0, 6.0, 50.0, 40.0])], tmp_path / "corr")
    apply_corrections(tmp_path / "ds", tmp_path / "corr", tmp_path / "out")
    got = {r["image_id"]: r["regions"][0]["source_id"] for r in Dataset(tmp_path / "out").read().to_pylist()}
    assert got == {images[0]: "5678", images[1]: None, images[2]: "9000001"}
    export_coco(tmp_path / "out", tmp_path / "e.json")
    out = json.loads((tmp_path / "e.json").read_text())
    assert [(a["id"], a["bbox"]) for a in out["annotations"]] == [
        (5678, [10.0, 10.0, 30.0, 20.0]), (9000002, [6.0, 6.0, 44.0, 34.0]), (9000001, [60.0, 20.0, 25.0, 25.0])]
