"""One box rule for every converter (`formats.boxes.clip_to_image`): boxes partly outside the image are clipped
and counted (``boxes_clipped``), boxes with no area inside it are dropped as ``no overlap with image``, written
to rejects and counted. COCO (pixels, xywh), GoldG (pixels, xywh), Open Images (0..1, xyxy) and GRIT (0..1,
xyxy) give the same boxes and the same counts for the same input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from formats.boxes import NO_OVERLAP, clip_to_image
from formats.dataset import Dataset

W, H = 400, 300
CASES = [  # xyxy pixels of a 400x300 image -> the kept box (None: dropped as no overlap with image)
    ([-40, 60, 200, 120], [0, 60, 200, 120]),  # past the left side
    ([40, -15, 80, 150], [40, 0, 80, 150]),  # past the top
    ([360, 30, 480, 60], [360, 30, 400, 60]),  # past the right side
    ([40, 270, 80, 450], [40, 270, 80, 300]),  # past the bottom
    ([-20, -30, 440, 330], [0, 0, 400, 300]),  # past all four
    ([100, 150, 200, 300], [100, 150, 200, 300]),  # inside, touching the bottom edge: not clipped
    ([440, 30, 520, 60], None),  # wholly outside, right
    ([-200, -100, -40, -20], None),  # wholly outside, top left
    ([-80, 30, 0, 60], None),  # outside, touching the left edge: no area inside
]
KEPT = [want for _, want in CASES if want is not None]
N_CLIPPED, N_OUTSIDE = 5, 3
OUTSIDE_AT = [k for k, (_, want) in enumerate(CASES) if want is None]  # 6, 7, 8


def test_clip_to_image_values():
    fit = clip_to_image(np.array([b for b, _ in CASES], dtype=np.float64), W, H)
    assert fit.empty.tolist() == [want is None for _, want in CASES]
    assert fit.clipped.tolist() == [True] * 5 + [False] * 4  # a dropped box is not counted as clipped
    assert fit.xyxy[~fit.empty].tolist() == KEPT
    # normalised coordinates with a 1 x 1 image, then scaled: the same boxes
    norm = np.array([b for b, _ in CASES], dtype=np.float64) / [W, H, W, H]
    fit_n = clip_to_image(norm, 1.0, 1.0)
    assert (fit_n.empty == fit.empty).all() and (fit_n.clipped == fit.clipped).all()
    assert fit_n.xyxy[~fit_n.empty] * [W, H, W, H] == pytest.approx(np.array(KEPT, dtype=np.float64))
    # a size per box; a non-finite coordinate is empty; in place clips the given array itself
    boxes = np.array([[-5.0, 0.0, 20.0, 5.0], [-5.0, 0.0, 20.0, 5.0], [np.nan, 0.0, 1.0, 1.0]])
    fit = clip_to_image(boxes, np.array([10, 30, 10]), np.array([10, 10, 10]), in_place=True)
    assert np.shares_memory(fit.xyxy, boxes) and boxes[:2].tolist() == [[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 20.0, 5.0]]
    assert fit.empty.tolist() == [False, False, True] and fit.clipped.tolist() == [True, True, False]


def assert_rule_applied(m, out, outside_records: list[str]) -> None:
    """The kept boxes, their counts and the rejects of the outside boxes: the same for every converter."""
    ds = Dataset(out)
    recs, rejects = ds.read().to_pylist(), ds.read_rejects().to_pylist()
    assert len(recs) == 1 and (recs[0]["width"], recs[0]["height"]) == (W, H)
    assert [g["bbox"] for g in recs[0]["regions"]] == [pytest.approx(b) for b in KEPT]
    assert m.counts["boxes"] == len(KEPT) and m.counts["boxes_clipped"] == N_CLIPPED
    assert m.counts["dropped"][NO_OVERLAP] == N_OUTSIDE
    assert sorted(r["record"] for r in rejects if r["reason"] == f"dropped: {NO_OVERLAP}") == sorted(outside_records)
    saved = json.loads((out / "manifest.json").read_text())["counts"]  # what `ovlabel stats` and users read
    assert saved["boxes_clipped"] == N_CLIPPED and saved["dropped"][NO_OVERLAP] == N_OUTSIDE


def test_coco_boxes_partly_outside_are_clipped_and_counted(write_json, tmp_path):
    from formats.converters.coco import CocoConvertConfig, convert_coco

    anns = [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
             "area": (x2 - x1) * (y2 - y1)} for k, ((x1, y1, x2, y2), _) in enumerate(CASES)]
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": W, "height": H}], "annotations": anns,
           "categories": [{"id": 1, "name": "thing"}]}
    out = tmp_path / "coco"
    m = convert_coco(write_json(doc), out, CocoConvertConfig(source="custom"))
    assert_rule_applied(m, out, [f"annotations[{k}] id={k + 1}" for k in OUTSIDE_AT])
    assert m.counts["dropped"] == {NO_OVERLAP: 3} and m.counts["rejected"] == {}


def test_openimages_coordinates_outside_0_1_are_clipped_and_counted_like_coco(tmp_path):
    from formats.converters.openimages import OpenImagesConvertConfig, convert_openimages

    ann = tmp_path / "ann"
    ann.mkdir()
    lines = ["ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,"
             "IsInside"]
    lines += [f"img1,xclick,/m/a,1,{x1 / W!r},{x2 / W!r},{y1 / H!r},{y2 / H!r},0,0,0,0,0" for (x1, y1, x2, y2), _ in CASES]
    (ann / "x-train-annotations-bbox.csv").write_text("\n".join(lines) + "\n")
    (ann / "class-descriptions-boxable.csv").write_text("/m/a,Thing\n")
    (tmp_path / "sizes.csv").write_text(f"ImageID,width,height\nimg1,{W},{H}\n")
    out = tmp_path / "oi"
    m = convert_openimages(ann, out, OpenImagesConvertConfig(sizes=str(tmp_path / "sizes.csv")))
    assert_rule_applied(m, out, [f"line {k + 2}" for k in OUTSIDE_AT])  # line 1 is the header
    assert m.counts["dropped"] == {NO_OVERLAP: 3} and m.counts["rejected"] == {}


def test_goldg_boxes_follow_the_same_rule(write_json, tmp_path):
    from formats.converters.goldg import GoldGConvertConfig, convert_goldg

    anns = [{"id": k + 1, "image_id": 0, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
             "iscrowd": 0, "tokens_positive": [[2, 7]]} for k, ((x1, y1, x2, y2), _) in enumerate(CASES)]
    doc = {"images": [{"id": 0, "file_name": "a.jpg", "width": W, "height": H, "caption": "a thing"}],
           "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
    out = tmp_path / "goldg"
    m = convert_goldg(write_json(doc), out, GoldGConvertConfig())
    assert_rule_applied(m, out, [f"annotations[{k}] id={k + 1}" for k in OUTSIDE_AT])


def test_grit_boxes_follow_the_same_rule(tmp_path):
    from converter_inputs import image_bytes, meta, write_tar

    from formats.converters.img2dataset import Img2DatasetConvertConfig, convert_img2dataset

    raw = tmp_path / "raw"
    raw.mkdir()
    refs = [[2, 7, x1 / W, y1 / H, x2 / W, y2 / H, 0.9] for (x1, y1, x2, y2), _ in CASES]
    write_tar(raw / "00000.tar", [("000000001.jpg", image_bytes(W, H)),
                                  ("000000001.json", meta("000000001", caption="a thing", ref_exps=refs))])
    out = tmp_path / "grit"
    m = convert_img2dataset(raw, out, Img2DatasetConvertConfig(source="grit", spans="ref_exps"))
    assert_rule_applied(m, out, [f"key=000000001 ref_exps[{k}]" for k in OUTSIDE_AT])
    assert m.counts["dropped"] == {NO_OVERLAP: 3} and m.counts["rejected"] == {}
