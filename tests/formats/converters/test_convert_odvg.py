"""`ovlabel convert odvg`: ODVG JSON lines (as MMDetection's ODVGDataset reads them) -> OD or VG dataset."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from converter_inputs import od, vg, write_lines

from formats.converters.coco import ConversionError
from formats.converters.odvg import OdvgConvertConfig, convert_odvg
from formats.dataset import Dataset
from formats.export.odvg import export_odvg


def convert(tmp_path, records, name="ds", **cfg):
    src = write_lines(tmp_path / f"{name}.jsonl", records)
    m = convert_odvg(src, tmp_path / name, OdvgConvertConfig(image_root=str(tmp_path), **cfg))
    ds = Dataset(tmp_path / name).require_complete()
    return m, ds.read().to_pylist(), {r["record"]: r for r in ds.read_rejects().to_pylist()}


def test_od_with_a_label_map(tmp_path):
    lm = tmp_path / "lm.json"
    lm.write_text(json.dumps({"0": "dog", "1": "cat", "2": "unused"}))
    m, recs, rej = convert(tmp_path, [
        od(instances=[{"bbox": [10, 10, 50, 60], "label": 0, "category": "dog"},
                      {"bbox": [-5, 0, 30, 30], "label": "1"},  # label as text: MMDetection int()s it; clipped
                      {"bbox": [0, 0, 1, 1], "label": 0, "category": "dog"},  # placeholder: no box in OD
                      {"bbox": [10, 10, 10.5, 60], "label": 0},  # side < 1 px
                      {"bbox": [250, 0, 300, 50], "label": 0},  # outside the 200x100 image
                      {"bbox": [50, 10, 10, 60], "label": 0},  # inverted
                      {"bbox": [1, 2, 3], "label": 0},
                      {"bbox": [1, 2, 30, 40], "label": 7},
                      {"bbox": [1, 2, 30, 40], "label": 1, "category": "dog"},
                      {"bbox": [1, 2, 30, 40], "label": 1, "score": 0.5}]),
        '{"filename": "b.jpg", "height": 10',  # cut line
        od(filename="/etc/passwd"),
        {"filename": "c.jpg", "height": 0, "width": 5, "detection": {"instances": []}},
        {"filename": "d.jpg", "height": 5, "width": 5, "grounding": {"caption": "x", "regions": []}},
        od(filename="e.jpg", w=64.0, h=48),
    ], label_map=str(lm))
    assert m.kind == "od" and m.label_map() == {"0": "dog", "1": "cat", "2": "unused"}
    assert [(r["image_id"], r["file_name"], r["width"], r["height"]) for r in recs] == [
        ("odvg/1", "a.jpg", 200, 100), ("odvg/6", "e.jpg", 64, 48)]
    regions = [(g["bbox"], g["label"], g["category"], g["origin"], g["score"]) for g in recs[0]["regions"]]
    assert regions == [([10.0, 10.0, 50.0, 60.0], 0, "dog", "gold", None), ([0.0, 0.0, 30.0, 30.0], 1, "cat", "gold", None),
                       ([1.0, 2.0, 30.0, 40.0], 1, "cat", "pseudo", 0.5)]
    assert m.counts == {"lines": 6, "images_in": 6, "images": 2, "boxes_in": 10, "boxes": 3, "boxes_clipped": 1,
                        "dropped": {"no overlap with image": 1, "placeholder box": 1, "side < 1 px": 1},
                        "rejected": {"category does not match the label map": 1, "invalid bbox": 2,
                                     "invalid json": 1, "invalid width/height": 1, "no detection": 1,
                                     "unknown label": 1, "unsafe file_name": 1}}
    assert {k: v["reason"] for k, v in rej.items()} == {
        "line 1: detection.instances[2]": "dropped: placeholder box",
        "line 1: detection.instances[3]": "dropped: side < 1 px",
        "line 1: detection.instances[4]": "dropped: no overlap with image",
        "line 1: detection.instances[5]": "invalid bbox",
        "line 1: detection.instances[6]": "invalid bbox",
        "line 1: detection.instances[7]": "unknown label",
        "line 1: detection.instances[8]": "category does not match the label map",
        "line 2": "invalid json", "line 3": "unsafe file_name", "line 4": "invalid width/height", "line 5": "no detection"}
    assert rej["line 1: detection.instances[8]"]["detail"] == "label 1 is 'cat' in the label map, 'dog' here"


def test_od_without_a_label_map_takes_the_names_of_the_instances(tmp_path):
    m, recs, rej = convert(tmp_path, [
        od(instances=[{"bbox": [1, 1, 9, 9], "label": 3, "category": "cat"}]),
        od(instances=[{"bbox": [1, 1, 9, 9], "label": 0, "category": "dog"},
                      {"bbox": [1, 1, 9, 9], "label": 3, "category": "kitten"},
                      {"bbox": [1, 1, 9, 9], "label": 1}]),
    ])
    assert m.label_map() == {"0": "dog", "3": "cat"} and [len(r["regions"]) for r in recs] == [1, 1]
    assert rej["line 2: detection.instances[1]"]["detail"] == "label 3 is 'cat' on line 1, 'kitten' here"
    assert rej["line 2: detection.instances[2]"]["reason"] == "no category"


def test_vg_regions_placeholders_and_given_phrases(tmp_path):
    m, recs, rej = convert(tmp_path, [
        vg([{"bbox": [10, 10, 50, 60], "phrase": "dog", "tokens_positive": [[2, 5]]},
            {"bbox": [0, 0, 1, 1], "phrase": "cat", "tokens_positive": [[12, 15]]},  # no box yet
            {"bbox": [[-5, 0, 30, 30], [300, 0, 400, 50], [0, 0, 1, 1]], "phrase": "zq", "tokens_positive": [[21, 23]]},
            {"bbox": [5, 5, 20, 20], "phrase": "a dog", "tokens_positive": [[0, 6]], "score": 0.25},  # span trimmed
            {"bbox": [5, 5, 20, 20], "phrase": "far", "tokens_positive": [[20, 40]]},
            {"bbox": [5, 5, 20, 20], "phrase": "x"}]),
        vg([{"bbox": [0, 0, 1, 1], "phrase": "cat", "tokens_positive": [[12, 15]]}]),
        {"filename": "z.jpg", "height": 5, "width": 5, "grounding": {"regions": []}},
    ])
    assert m.kind == "vg" and m.categories == [] and m.extra_columns == ["phrases"]
    regions = [(g["bbox"], g["phrase"], g["tokens_positive"], g["origin"], g["score"]) for g in recs[0]["regions"]]
    assert regions == [([10.0, 10.0, 50.0, 60.0], "dog", [[2, 5]], "gold", None),
                       ([0.0, 0.0, 30.0, 30.0], "zq", [[21, 23]], "gold", None),
                       ([5.0, 5.0, 20.0, 20.0], "a dog", [[0, 5]], "pseudo", 0.25)]
    assert recs[0]["phrases"] == [{"phrase": "a dog", "tokens_positive": [[0, 5]]},
                                  {"phrase": "dog", "tokens_positive": [[2, 5]]},
                                  {"phrase": "cat", "tokens_positive": [[12, 15]]},
                                  {"phrase": "zq", "tokens_positive": [[21, 23]]}]
    assert recs[1]["regions"] == [] and recs[1]["phrases"] == [{"phrase": "cat", "tokens_positive": [[12, 15]]}]
    assert m.counts["placeholder_boxes"] == 3 and m.counts["boxes_in"] == 9 and m.counts["boxes"] == 3
    assert {k: v["reason"] for k, v in rej.items()} == {
        "line 1: grounding.regions[2].bbox[1]": "dropped: no overlap with image",
        "line 1: grounding.regions[4]": "span outside the caption",
        "line 1: grounding.regions[5]": "invalid tokens_positive",
        "line 3": "missing grounding.caption"}


def test_a_file_of_nothing_convertible_is_an_error(tmp_path):
    src = write_lines(tmp_path / "x.jsonl", ["nope", "[1]"])
    with pytest.raises(ConversionError, match="no record with 'detection' or 'grounding'"):
        convert_odvg(src, tmp_path / "ds", OdvgConvertConfig(image_root=str(tmp_path)))


def test_od_round_trip_through_export_is_byte_identical(sample_gold, tmp_path):
    first = export_odvg(sample_gold, tmp_path / "one.jsonl")
    run_cli("convert", "odvg", first["records"], "--label-map", first["label_map"], "--image-root", tmp_path,
            "--out", tmp_path / "back")
    second = export_odvg(tmp_path / "back", tmp_path / "two.jsonl")
    text = (tmp_path / "one.jsonl").read_bytes()
    assert text.count(b"\n") == 7 and b'"instances":[{' in text
    assert (tmp_path / "two.jsonl").read_bytes() == text
    assert (tmp_path / "two.label_map.json").read_bytes() == (tmp_path / "one.label_map.json").read_bytes()
    assert second["lines"] == first["lines"]


def test_vg_round_trip_through_export_is_byte_identical(tmp_path):
    cap = "Zwei Hunde – a café au lait and two dogs"
    lines = [vg([{"bbox": [1.5, 2.25, 30, 40], "phrase": "café au lait", "tokens_positive": [[15, 27]], "score": 0.8125},
                 {"bbox": [10, 10, 20, 20], "phrase": "Hunde two dogs", "tokens_positive": [[5, 10], [32, 40]],
                  "score": 0.3}], caption=cap),
             vg([{"bbox": [[0, 0, 5, 5], [6, 6, 9, 9]], "phrase": "dog", "tokens_positive": [[2, 5]], "score": 1}])]
    assert cap[15:27] == "café au lait" and cap[32:40] == "two dogs"
    convert(tmp_path, lines, name="v")
    export_odvg(tmp_path / "v", tmp_path / "one.jsonl")
    convert_odvg(tmp_path / "one.jsonl", tmp_path / "back", OdvgConvertConfig(image_root=str(tmp_path)))
    export_odvg(tmp_path / "back", tmp_path / "two.jsonl")
    one = (tmp_path / "one.jsonl").read_bytes()
    assert (tmp_path / "two.jsonl").read_bytes() == one
    got = [json.loads(x) for x in one.decode().splitlines()]
    assert got[0]["grounding"]["regions"][0] == {"bbox": [1.5, 2.25, 30.0, 40.0], "phrase": "café au lait",
                                                 "tokens_positive": [[15, 27]], "score": 0.8125}
    assert [r["bbox"] for r in got[1]["grounding"]["regions"]] == [[0.0, 0.0, 5.0, 5.0], [6.0, 6.0, 9.0, 9.0]]


def test_a_superscript_label_is_rejected_alone(tmp_path):
    # "¹".isdigit() is True but int("¹") raises: the conversion stopped on an uncaught ValueError
    m, rows, rejects = convert(tmp_path, [od(instances=[{"bbox": [1, 1, 9, 9], "label": "\u00b9", "category": "dog"}]),
                                          od(instances=[{"bbox": [1, 1, 9, 9], "label": 0, "category": "dog"}])])
    assert m.counts["rejected"] == {"invalid label": 1} and len(rows[1]["regions"]) == 1
    assert "line 1: detection.instances[0]" in rejects
    lm = tmp_path / "lm.json"
    lm.write_text(json.dumps({"\u00b9": "dog"}))
    with pytest.raises(ConversionError, match="keys are labels"):
        convert(tmp_path, [od()], name="lm", label_map=str(lm))
    lm.write_bytes(json.dumps({"0": "dog"}).encode("utf-8-sig"))  # a byte-order mark is read past
    assert convert(tmp_path, [od()], name="bom", label_map=str(lm))[0].categories == [{"label": 0, "name": "dog"}]


def test_a_byte_order_mark_and_crlf_lose_no_line(tmp_path):
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(vg([])).encode() + b"\r\n" for _ in range(2)))
    m = convert_odvg(src, tmp_path / "ds", OdvgConvertConfig(image_root=str(tmp_path)))
    assert m.counts["images"] == 2 and m.counts["rejected"] == {}
