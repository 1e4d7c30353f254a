"""`convert coco`: MMDetection's label conventions, drops counted, bad records rejected, structure errors stop."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import coco_doc

from formats.converters.coco import (
    COCO80,
    CocoConvertConfig,
    ConversionError,
    build_categories,
    convert_coco,
)
from formats.dataset import Dataset, DatasetError


def convert(path, out, **kw):
    window = kw.pop("window_bytes", 128 << 20)
    return convert_coco(path, out, CocoConvertConfig(**kw), overwrite=True, window_bytes=window)


def records(out):
    return Dataset(out).read().to_pylist()


def rejects(out):
    return Dataset(out).read_rejects().to_pylist()


def test_boxes_labels_and_order(write_json, tmp_path):
    doc = coco_doc(n_images=3)
    m = convert(write_json(doc), tmp_path / "ds", source="o365v1")
    recs = records(tmp_path / "ds")
    assert [r["image_id"] for r in recs] == ["o365v1/1", "o365v1/2", "o365v1/3"]
    by_img = {}
    for a in doc["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    for r in recs:
        anns = by_img[int(r["image_id"].split("/")[1])]
        assert [g["label"] for g in r["regions"]] == [a["category_id"] - 1 for a in anns]
        for g, a in zip(r["regions"], anns):
            x, y, w, h = a["bbox"]
            assert g["bbox"] == pytest.approx([x, y, x + w, y + h])
            assert g["origin"] == "gold" and g["score"] is None
    assert m.counts["boxes"] == len(doc["annotations"]) and m.complete
    assert m.label_map() == {"0": "person", "1": "car", "2": "Cabinet/shelf"}
    assert m.provenance["inputs"][0]["sha256"] and len(m.provenance["inputs"][0]["sha256"]) == 64


def test_coco2017_uses_the_80_class_order():
    cats = [{"id": i, "name": n} for i, n in COCO80.items()]
    out = build_categories(cats, "coco2017", "x.json")
    assert [c["label"] for c in out] == list(range(80))
    assert {c["id"]: c["label"] for c in out}[13] == 11 and {c["id"]: c["label"] for c in out}[90] == 79


def test_coco2017_subset_keeps_the_80_class_label_map(write_json, tmp_path):
    doc = coco_doc(n_images=1, cats=((90, "toothbrush"), (13, "Stop Sign")), boxes={1: [(90, [1, 1, 10, 10]),
                                                                                      (13, [2, 2, 10, 10])]})
    m = convert(write_json(doc), tmp_path / "ds", source="coco2017")
    assert len(m.categories) == 80 and m.label_map()["0"] == "person" and m.label_map()["11"] == "Stop Sign"
    assert m.label_map()["79"] == "toothbrush"
    assert [(g["label"], g["category"]) for g in records(tmp_path / "ds")[0]["regions"]] == [(79, "toothbrush"),
                                                                                          (11, "Stop Sign")]


def test_coco2017_mismatched_name_or_id_is_an_error_naming_it():
    with pytest.raises(ConversionError, match=r"x.json: category id 3 is named 'automobile'; COCO 2017 names it 'car'"):
        build_categories([{"id": 1, "name": "person"}, {"id": 3, "name": "automobile"}], "coco2017", "x.json")
    with pytest.raises(ConversionError, match=r"category id 12 \('thing'\) is not one of the 80"):
        build_categories([{"id": 12, "name": "thing"}], "coco2017", "x.json")


def roboflow_doc(extra_cats=()):
    """A Roboflow-style export: root category 0 'fishes' (no boxes) named as the classes' supercategory."""
    cats = [{"id": 0, "name": "fishes", "supercategory": "none"},
            {"id": 1, "name": "fish", "supercategory": "fishes"},
            {"id": 2, "name": "shark", "supercategory": "fishes"}, *extra_cats]
    doc = coco_doc(n_images=1, boxes={1: [(1, [1, 1, 10, 10]), (2, [5, 5, 10, 10])]})
    doc["categories"] = cats
    return doc


def test_custom_unused_supercategory_and_background_are_left_out_and_counted(write_json, tmp_path):
    doc = roboflow_doc([{"id": 3, "name": "Background"}, {"id": 4, "name": "eel", "supercategory": "fishes"}])
    m = convert(write_json(doc), tmp_path / "ds", source="custom")
    assert m.label_map() == {"0": "fish", "1": "shark", "2": "eel"}
    assert m.counts["categories"] == 3
    assert m.counts["categories_left_out"] == {"unused background category": 1,
                                               "unused supercategory of other categories": 1}
    assert m.counts["dropped"] == {}  # boxes only: the categories are counted in categories_left_out alone
    assert [(g["label"], g["category"]) for g in records(tmp_path / "ds")[0]["regions"]] == [(0, "fish"), (1, "shark")]
    assert [(r["record"], r["reason"]) for r in rejects(tmp_path / "ds")] == [
        ("categories[0] id=0 name='fishes'", "dropped: unused supercategory of other categories"),
        ("categories[3] id=3 name='Background'", "dropped: unused background category")]


def test_keep_unused_categories_keeps_them(write_json, tmp_path):
    doc = roboflow_doc([{"id": 3, "name": "background"}])
    m = convert(write_json(doc), tmp_path / "ds", source="custom", keep_unused_categories=True)
    assert m.label_map() == {"0": "fishes", "1": "fish", "2": "shark", "3": "background"}
    assert "categories_left_out" not in m.counts


def test_used_supercategory_named_category_and_plain_unused_category_are_kept(write_json, tmp_path):
    doc = roboflow_doc([{"id": 5, "name": "ray", "supercategory": "fishes"}])  # unused, but not a supercategory
    doc["annotations"].append({**doc["annotations"][0], "id": 99, "category_id": 0})  # 'fishes' now has a box
    m = convert(write_json(doc), tmp_path / "ds", source="custom")
    assert m.label_map() == {"0": "fishes", "1": "fish", "2": "shark", "3": "ray"}


def test_custom_labels_are_dense_in_id_order_and_keep_every_category():
    out = build_categories([{"id": 7, "name": "b"}, {"id": 3, "name": "a"}, {"id": 100, "name": "c"}], "custom", "x")
    assert [(c["id"], c["label"]) for c in out] == [(3, 0), (7, 1), (100, 2)]


def test_drops_are_counted_by_reason_and_written(write_json, tmp_path):
    doc = coco_doc(n_images=1, boxes={1: [(1, [1, 1, 10, 10])]})
    base = doc["annotations"][0]
    doc["annotations"] += [
        {**base, "id": 2, "iscrowd": 1},
        {**base, "id": 3, "ignore": 1},
        {**base, "id": 4, "bbox": [700, 10, 5, 5]},  # outside the 640 px wide image
        {**base, "id": 5, "area": 0},
        {**base, "id": 6, "bbox": [1, 1, 0.5, 10]},
    ]
    m = convert(write_json(doc), tmp_path / "ds", source="custom")
    assert m.counts["boxes"] == 3  # the box, the crowd and the ignore region (kept for evaluation)
    assert m.counts["ignore_regions"] == {"crowd": 1, "ignore": 1}
    assert m.counts["dropped"] == {"no overlap with image": 1, "area <= 0": 1, "width or height < 1": 1}
    reasons = sorted(r["reason"] for r in rejects(tmp_path / "ds"))
    assert reasons == sorted("dropped: " + k for k in m.counts["dropped"])
    (r,) = records(tmp_path / "ds")
    assert [(g["origin"], g["area"]) for g in r["regions"]] == [("gold", 100.0), ("crowd", 100.0), ("ignore", 100.0)]


def test_bad_records_are_rejected_and_the_rest_converts(write_json, tmp_path):
    doc = coco_doc(n_images=4)
    doc["images"].append({"id": 2, "file_name": "dup.jpg", "width": 1, "height": 1})  # duplicate id
    doc["images"].append({"id": 9, "file_name": "../../etc/passwd", "width": 5, "height": 5})
    doc["images"].append({"id": 10, "file_name": "/abs.jpg", "width": 5, "height": 5})
    doc["images"].append({"id": 11, "file_name": "ok.jpg", "width": -5, "height": 5})
    doc["images"].append({"id": 12, "width": 5, "height": 5})
    a = doc["annotations"][0]
    doc["annotations"] += [
        {**a, "id": 100, "category_id": 999},
        {**a, "id": 101, "image_id": 777},
        {**a, "id": 102, "bbox": [1, 2, 3]},
        {**a, "id": 103, "bbox": [1, 2, "x", 4]},
        {**a, "id": 1},  # duplicate annotation id
        {**a, "id": 104, "image_id": 9},
    ]
    m = convert(write_json(doc), tmp_path / "ds", source="custom")
    assert m.counts["images"] == 3  # both images with id 2 are rejected, and the two boxes naming id 2
    assert m.counts["boxes"] == 1 + 3 + 4
    rej = {(r["reason"], r["record"].split(" ")[0]) for r in rejects(tmp_path / "ds")}
    expected = {
        ("duplicate image id", "images[1]"), ("duplicate image id", "images[4]"),
        ("ambiguous image id", "annotations[1]"), ("ambiguous image id", "annotations[2]"), ("unsafe file_name", "images[5]"), ("unsafe file_name", "images[6]"),
        ("invalid width/height", "images[7]"), ("missing file_name", "images[8]"),
        ("unknown category id", f"annotations[{len(doc['annotations']) - 6}]"),
        ("unknown image id", f"annotations[{len(doc['annotations']) - 5}]"),
        ("invalid bbox", f"annotations[{len(doc['annotations']) - 4}]"),
        ("invalid bbox", f"annotations[{len(doc['annotations']) - 3}]"),
        ("duplicate annotation id", f"annotations[{len(doc['annotations']) - 2}]"),
        ("image rejected", f"annotations[{len(doc['annotations']) - 1}]"),
    }
    assert rej == expected
    details = {r["reason"]: r["detail"] for r in rejects(tmp_path / "ds")}
    assert "999" in details["unknown category id"] and "escapes the image root" in details["unsafe file_name"] or \
        "absolute" in details["unsafe file_name"]


def test_nan_and_string_sizes(write_json, tmp_path):
    doc = coco_doc(n_images=2)
    doc["images"][0]["width"] = "640"  # MDETR-style string sizes are cast
    doc["annotations"][0]["bbox"] = [float("nan"), 1, 2, 3]
    m = convert(write_json(doc), tmp_path / "ds", source="custom")
    assert m.counts["images"] == 2 and m.counts["boxes"] == 2
    assert [r["reason"] for r in rejects(tmp_path / "ds")] == ["invalid bbox"]


@pytest.mark.parametrize("doc, message", [
    ({"images": []}, "no 'categories'"),
    ({"images": [], "categories": []}, "the 'categories' list is empty"),
    ({"annotations": [], "categories": [{"id": 1, "name": "a"}]}, "no 'images'"),
    ({"images": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}, "duplicate category id 1"),
    ({"images": [], "categories": [{"id": "x", "name": "a"}]}, "integer 'id'"),
    ({"images": {}, "categories": [{"id": 1, "name": "a"}]}, "must be a list"),
])
def test_structural_problems_stop_before_anything_is_written(write_json, tmp_path, doc, message):
    out = tmp_path / "ds"
    with pytest.raises(ConversionError, match=message):
        convert(write_json(doc), out, source="custom")
    assert not out.exists()


def test_truncated_file_is_a_clear_error(tmp_path):
    p = tmp_path / "cut.json"
    p.write_text(json.dumps(coco_doc(n_images=5))[:-40])
    with pytest.raises(ConversionError, match=r"cut\.json: at byte \d+"):
        convert(p, tmp_path / "ds", source="custom", window_bytes=64)


def test_o365_specifics(write_json, tmp_path):
    doc = coco_doc(n_images=3, cats=[(38, "Moniter/TV"), (53, "Bakset"), (1, "Person")],
                   boxes={1: [(38, [1, 1, 5, 5])], 2: [], 3: [(53, [1, 1, 5, 5])]})
    doc["images"][0]["file_name"] = "images/v2/patch0/a.jpg"
    doc["images"][1]["file_name"] = "images/v1/patch1/b.jpg"
    doc["images"].append({"id": 908726, "file_name": "images/v2/broken.jpg", "width": 5, "height": 5})
    m = convert(write_json(doc), tmp_path / "ds", source="o365v2", fix_o365_names=True)
    recs = records(tmp_path / "ds")
    assert [r["file_name"] for r in recs] == ["patch0/a.jpg", "patch1/b.jpg", "img/0003.jpg"]
    assert recs[1]["regions"] == []  # images without boxes are kept
    assert m.label_map()["37"] == "Monitor/TV" and m.label_map()["52"] == "Basket"
    assert m.counts["rejected"] == {"known broken image": 1}
    m2 = convert(write_json(doc), tmp_path / "ds2", source="o365v2")
    assert m2.label_map()["37"] == "Moniter/TV"


def test_lvis_keeps_synonyms_and_negative_labels(write_json, tmp_path):
    doc = {
        "images": [{"id": 5, "coco_url": "http://images.cocodataset.org/val2017/000000000005.jpg", "width": 100,
                    "height": 80, "neg_category_ids": [2, 55], "not_exhaustive_category_ids": [1]}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4], "area": 12}],
        "categories": [{"id": 1, "name": "aerosol_can", "synonyms": ["aerosol_can", "spray_can"], "def": "a can",
                        "frequency": "c"}, {"id": 2, "name": "air_conditioner", "synonyms": ["air_conditioner"]}],
    }
    m = convert(write_json(doc), tmp_path / "ds", source="lvis_v1")
    (r,) = records(tmp_path / "ds")
    assert r["file_name"] == "val2017/000000000005.jpg"
    assert r["neg_labels"] == [1] and r["not_exhaustive_labels"] == [0]  # id 55 is unknown: left out
    assert m.categories[0]["synonyms"] == ["aerosol_can", "spray_can"] and m.categories[0]["def"] == "a can"
    assert m.extra_columns == ["source_image_id", "coco_url", "neg_labels", "not_exhaustive_labels"]
    assert r["source_image_id"] == "5" and r["coco_url"] == "http://images.cocodataset.org/val2017/000000000005.jpg"
    assert r["regions"][0]["area"] == 12.0 and m.categories[0]["frequency"] == "c"


def test_windows_do_not_change_the_result(write_json, tmp_path):
    p = write_json(coco_doc(n_images=40))
    convert(p, tmp_path / "a", source="custom")
    convert(p, tmp_path / "b", source="custom", window_bytes=97)
    assert records(tmp_path / "a") == records(tmp_path / "b")


def test_parts_and_rerun(write_json, tmp_path):
    p = write_json(coco_doc(n_images=10))
    out = tmp_path / "ds"
    convert_coco(p, out, CocoConvertConfig(source="custom", part_images=3))
    parts = sorted((out / "records").glob("*.parquet"))
    assert len(parts) == 4 and sum(pq.read_metadata(x).num_rows for x in parts) == 10
    mtime = [x.stat().st_mtime_ns for x in parts]
    convert_coco(p, out, CocoConvertConfig(source="custom", part_images=3))  # same input: nothing redone
    assert [x.stat().st_mtime_ns for x in parts] == mtime
    with pytest.raises(DatasetError, match="other inputs or settings"):
        convert_coco(p, out, CocoConvertConfig(source="o365v1", part_images=3))
    assert not list(out.rglob(".*tmp*"))


def test_check_images(write_json, tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    (root / "img").mkdir(parents=True)
    Image.new("RGB", (640, 480)).save(root / "img/0001.jpg")
    Image.new("RGB", (10, 10)).save(root / "img/0002.jpg")
    m = convert(write_json(coco_doc(n_images=3)), tmp_path / "ds", source="custom", image_root=str(root),
                check_images=True)
    assert m.counts["images"] == 1
    assert m.counts["rejected"]["image size mismatch"] == 1 and m.counts["rejected"]["image file missing"] == 1
    assert m.image_root == str(root.resolve())


def test_validate_rejects_bad_tables():
    import pyarrow as pa

    from formats import schema as S

    regions = S.regions_from_columns(np.array([0, 1]), np.array([[5.0, 5, 1, 1]]))
    t = pa.table({"image_id": ["a"], "source": ["s"], "file_name": ["f"], "width": pa.array([3], pa.int32()),
                  "height": pa.array([3], pa.int32()), "caption": pa.nulls(1, pa.string()), "regions": regions})
    with pytest.raises(S.SchemaError, match="x1<=x2"):
        S.validate(S.conform(t))
    spans = pa.array([[[0, 9]]], type=pa.list_(S.SPAN_TYPE))
    regions = S.regions_from_columns(np.array([0, 1]), np.array([[0.0, 0, 1, 1]]), tokens_positive=spans, phrase=["x"])
    t = t.set_column(6, "regions", regions).set_column(5, "caption", pa.array(["short"]))
    with pytest.raises(S.SchemaError, match="outside its caption"):
        S.validate(S.conform(t))


def test_region_keys_are_explicit_ids_or_positions(write_json, tmp_path):
    import pyarrow as pa

    from formats import schema as S

    convert(write_json(coco_doc(n_images=3)), tmp_path / "ds", source="custom")
    t = Dataset(tmp_path / "ds").read()
    keys = S.region_keys(t.column("image_id"), t.column("regions")).to_pylist()
    assert keys == ["custom/1#0", "custom/2#0", "custom/2#1", "custom/3#0", "custom/3#1", "custom/3#2"]
    regions = S.regions_from_columns(np.array([0, 2]), np.zeros((2, 4)), region_id=pa.array(["p#r1c0", None]))
    assert S.region_keys(pa.array(["p"]), regions).to_pylist() == ["p#r1c0", "p#1"]


def test_a_resumed_writer_sweeps_temp_files_left_by_a_crash(tmp_path):
    import pyarrow as pa

    from formats import schema as S
    from formats.dataset import DatasetWriter, Manifest

    out = tmp_path / "ds"
    key = {"inputs": ["x"]}
    w = DatasetWriter(out, Manifest(kind="vg", source="t"), resume_key=key)
    table = pa.table({"image_id": ["t/1"], "source": ["t"], "file_name": ["a.jpg"], "width": pa.array([2], pa.int32()),
                      "height": pa.array([2], pa.int32()), "caption": ["a cat"], "regions": S.empty_regions(1)})
    w.write_part("part-0.parquet", S.conform(table))
    (out / "candidates").mkdir()
    stale = [out / "records" / ".part-1.parquet.tmp-1-2", out / "candidates" / ".part-1.parquet.tmp-1-2"]
    for f in stale:
        f.write_bytes(b"half a file")
    (out / "candidates" / "part-0.parquet").write_bytes(b"a finished file")
    w2 = DatasetWriter(out, Manifest(kind="vg", source="t"), resume_key=key)
    assert w2.is_done("part-0.parquet") and not any(f.exists() for f in stale)
    assert (out / "candidates" / "part-0.parquet").exists()


def test_a_superscript_size_is_an_invalid_size_not_a_crash(write_json, tmp_path):
    doc = coco_doc(n_images=2)
    doc["images"][0]["width"] = "\u00b2"  # isdigit() but not int()
    m = convert(write_json(doc), tmp_path / "ds", source="custom")
    assert m.counts["images"] == 1 and "invalid width/height" in [r["reason"] for r in rejects(tmp_path / "ds")]
