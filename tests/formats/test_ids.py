"""Ids keep their JSON type and text (formats.ids): "03" is not "3", strings are ordinary ids, 3 vs "3" refused."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from formats.converters.coco import CocoConvertConfig, ConversionError, convert_coco
from formats.converters.goldg import GoldGConvertConfig, convert_goldg
from formats.dataset import Dataset
from formats.ids import MISSING, codes, ids_from_values, parse_json_ids


def coco(images, anns):
    return {"images": [{"id": i, "file_name": f"{n}.jpg", "width": 100, "height": 80} for i, n in images],
            "annotations": [{"id": k + 1, "image_id": ref, "category_id": 1, "bbox": [x, 5, 10, 10], "area": 100}
                            for k, (ref, x) in enumerate(anns)],
            "categories": [{"id": 1, "name": "fish"}]}


def convert(write_json, tmp_path, doc, window=128 << 20):
    out = tmp_path / "ds"
    m = convert_coco(write_json(doc), out, CocoConvertConfig(source="custom"), overwrite=True, window_bytes=window)
    ds = Dataset(out)
    return m, {r["image_id"]: (r["file_name"], [g["bbox"][0] for g in r["regions"]]) for r in ds.read().to_pylist()}, \
        ds.read_rejects().to_pylist()


def test_parse_keeps_type_and_text():
    ids = parse_json_ids(pa.array(["3", '"03"', '"2008_000123"', "3.0", "true", '""', None, "1.5", '"a\\"b"']))
    assert ids.text.to_pylist() == ["3", "03", "2008_000123", "3", None, None, None, None, 'a"b']
    assert ids.is_str.tolist() == [False, True, True, False, False, False, False, False, True]
    assert ids.display() == [3, "03", "2008_000123", 3, MISSING, MISSING, MISSING, MISSING, 'a"b']
    assert ids.why([4, 5, 6, 7]) == ["true is not an integer or a string", "an empty string is not an id", "missing",
                                     "1.5 is not an integer or a string"]


def test_codes_match_by_text_never_merge_distinct_texts():
    images = ids_from_values(["3", "03", 7])
    refs = ids_from_values([3, "03", "3", "7", "007", None])
    img, ref = codes(images, refs)
    assert len(set(img.tolist())) == 3
    assert ref[0] == img[0] and ref[2] == img[0] and ref[1] == img[1] and ref[3] == img[2]
    assert ref[4] not in img.tolist() and ref[5] == MISSING
    all_ints = codes(ids_from_values([5, 9]), ids_from_values([9]))  # the fast path: the integers themselves
    assert all_ints[0].tolist() == [5, 9] and all_ints[1].tolist() == [9]


@pytest.mark.parametrize("window", [64, 128 << 20])
def test_coco_string_ids_3_and_03_stay_two_images_with_their_own_boxes(write_json, tmp_path, window):
    doc = coco([("3", "three"), ("03", "oh-three"), ("2008_000123", "voc")], [("03", 1), ("3", 2), ("2008_000123", 3),
                                                                               ("03", 4)])
    m, recs, rej = convert(write_json, tmp_path, doc, window)
    assert recs == {"custom/3": ("three.jpg", [2.0]), "custom/03": ("oh-three.jpg", [1.0, 4.0]),
                    "custom/2008_000123": ("voc.jpg", [3.0])}
    assert rej == [] and m.counts["images"] == 3 and m.counts["boxes"] == 4


def test_coco_reference_matches_text_across_types_and_unknown_text_is_rejected(write_json, tmp_path):
    doc = coco([("5", "five"), (6, "six")], [(5, 1), ("6", 2), ("05", 3)])
    m, recs, rej = convert(write_json, tmp_path, doc)
    assert recs == {"custom/5": ("five.jpg", [1.0]), "custom/6": ("six.jpg", [2.0])}
    assert [(r["record"], r["reason"], r["detail"]) for r in rej] == [
        ("annotations[2] id=3", "unknown image id", "image_id='05' names no image in 'images'")]


def test_coco_number_and_string_with_the_same_text_is_an_error_naming_both(write_json, tmp_path):
    doc = coco([(3, "a"), ("4", "b"), ("3", "c")], [(3, 1)])
    with pytest.raises(ConversionError, match=r"images\[0\] id=3 and images\[2\] id='3' differ only in JSON type"):
        convert(write_json, tmp_path, doc)
    assert not (tmp_path / "ds").exists()


def test_coco_invalid_and_duplicate_string_ids_are_rejects_with_reasons(write_json, tmp_path):
    doc = coco([("a", "a"), ("", "empty"), (True, "bool"), ("a", "again"), (2.0, "two")], [("a", 1), (2, 2)])
    m, recs, rej = convert(write_json, tmp_path, doc)
    # two images with id 'a': neither is kept, and the box naming 'a' is attached to neither
    assert recs == {"custom/2": ("two.jpg", [2.0])}
    both = "images[0] id='a' file_name='a.jpg' and images[3] id='a' file_name='again.jpg'"
    assert [(r["record"], r["reason"], r["detail"]) for r in rej] == [
        ("images[1]", "invalid id", "an empty string is not an id"),
        ("images[2]", "invalid id", "true is not an integer or a string"),
        ("images[0] id='a'", "duplicate image id",
         f"{both} have the same id: which one its annotations belong to is ambiguous; none is kept"),
        ("images[3] id='a'", "duplicate image id",
         f"{both} have the same id: which one its annotations belong to is ambiguous; none is kept"),
        ("annotations[0] id=1", "ambiguous image id", f"image_id='a' names more than one image: {both}")]


def test_goldg_string_caption_ids_keep_their_text(write_json, tmp_path):
    cap = "a red fish"
    doc = {"images": [{"id": i, "file_name": "f.jpg", "width": 100, "height": 80, "caption": cap} for i in ("1", "01")],
           "annotations": [{"id": 1, "image_id": "01", "bbox": [1, 1, 10, 10], "area": 100, "tokens_positive": [[6, 10]]},
                           {"id": 2, "image_id": "1", "bbox": [2, 1, 10, 10], "area": 100, "tokens_positive": [[2, 5]]}],
           "categories": [{"id": 1, "name": "object"}]}
    out = tmp_path / "vg"
    convert_goldg(write_json(doc), out, GoldGConvertConfig(), overwrite=True)
    got = {r["image_id"]: [(g["bbox"][0], g["phrase"]) for g in r["regions"]] for r in Dataset(out).read().to_pylist()}
    assert got == {"goldg/1": [(2.0, "red")], "goldg/01": [(1.0, "fish")]}


def test_goldg_number_and_string_with_the_same_text_is_an_error(write_json, tmp_path):
    doc = {"images": [{"id": i, "file_name": "f.jpg", "width": 9, "height": 9, "caption": "x"} for i in (7, "7")],
           "annotations": [], "categories": []}
    with pytest.raises(ConversionError, match=r"images\[0\] id=7 and images\[1\] id='7'"):
        convert_goldg(write_json(doc), tmp_path / "vg", GoldGConvertConfig(), overwrite=True)


def test_display_of_positions():
    ids = ids_from_values([1, "x", None])
    assert ids.display(np.array([2, 1])) == [MISSING, "x"]


def test_coco_annotation_of_a_duplicated_string_id_is_attached_to_no_image(write_json, tmp_path):
    """voc2coco-style ids: "03" twice with different files; "3" is another image. The box of "03" goes nowhere."""
    doc = coco([("3", "three"), ("03", "a"), ("03", "b")], [("03", 1), ("3", 2)])
    m, recs, rej = convert(write_json, tmp_path, doc)
    assert recs == {"custom/3": ("three.jpg", [2.0])}
    assert [(r["record"], r["reason"]) for r in rej] == [
        ("images[1] id='03'", "duplicate image id"), ("images[2] id='03'", "duplicate image id"),
        ("annotations[0] id=1", "ambiguous image id")]
    assert rej[-1]["detail"] == ("image_id='03' names more than one image: images[1] id='03' file_name='a.jpg' and "
                                 "images[2] id='03' file_name='b.jpg'")
    assert m.counts["rejected"] == {"ambiguous image id": 1, "duplicate image id": 2}


def test_goldg_box_of_a_duplicated_caption_id_is_attached_to_no_caption(write_json, tmp_path):
    doc = {"images": [{"id": i, "file_name": f, "width": 100, "height": 80, "caption": "a red fish"}
                      for i, f in (("03", "a.jpg"), ("3", "b.jpg"), ("03", "c.jpg"))],
           "annotations": [{"id": 1, "image_id": "03", "bbox": [1, 1, 10, 10], "area": 100, "tokens_positive": [[6, 10]]},
                           {"id": 2, "image_id": "3", "bbox": [2, 1, 10, 10], "area": 100, "tokens_positive": [[2, 5]]}],
           "categories": [{"id": 1, "name": "object"}]}
    out = tmp_path / "vg"
    m = convert_goldg(write_json(doc), out, GoldGConvertConfig(), overwrite=True)
    got = {r["image_id"]: (r["file_name"], [g["bbox"][0] for g in r["regions"]]) for r in Dataset(out).read().to_pylist()}
    assert got == {"goldg/3": ("b.jpg", [2.0])}
    both = "images[0] id='03' file_name='a.jpg' and images[2] id='03' file_name='c.jpg'"
    assert [(r["record"], r["reason"], r["detail"]) for r in Dataset(out).read_rejects().to_pylist()] == [
        ("images[0] id='03'", "duplicate image id",
         f"{both} have the same id: which one its boxes belong to is ambiguous; none is kept"),
        ("images[2] id='03'", "duplicate image id",
         f"{both} have the same id: which one its boxes belong to is ambiguous; none is kept"),
        ("annotations[0] id=1", "ambiguous image id", f"image_id='03' names more than one caption: {both}")]
    assert m.counts["rejected"] == {"ambiguous image id": 1, "duplicate image id": 2}
