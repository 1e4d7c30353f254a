"""The published detection protocols against their reference tools: COCO (pycocotools COCOeval) and LVIS
(the LVIS API, federated and Fixed AP) on small hand-made gold sets with crowds, size buckets and frequency
groups; the (query, class) top-k rule; errors for gold and predictions that share nothing."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
from coco_reference import jitter_detections, pycocotools_reference
from conftest import run_cli

from detector.eval_coco import coco_metrics, topk_query_class
from detector.eval_gold import EvaluationError, dataset_to_coco
from detector.eval_lvis import lvis_metrics, top_per_class
from detector.evaluate import default_protocol, evaluate_detections, score_detections


def coco_gold() -> dict:
    """3 images; small (< 32²), medium and large boxes; a crowd region; an annotation whose own area puts
    it in another bucket than its box would."""
    ann = [
        (1, 1, [10, 10, 20, 20], 400, 0),        # small
        (1, 1, [100, 100, 60, 60], 3600, 0),     # medium
        (1, 2, [200, 50, 150, 120], 18000, 0),   # large
        (1, 1, [300, 300, 200, 150], 30000, 1),  # crowd: a detection on it is ignored, not a false positive
        (2, 2, [5, 5, 40, 40], 900, 0),          # box 1600 (medium) but own area 900 (small)
        (2, 3, [50, 60, 100, 90], 9000, 0),
        (3, 1, [20, 30, 50, 70], 3500, 0),
        (3, 3, [400, 200, 120, 100], 12000, 0),
    ]
    return {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in (1, 2, 3)],
            "annotations": [{"id": k + 1, "image_id": im, "category_id": c, "bbox": [float(v) for v in b],
                             "area": float(a), "iscrowd": cr} for k, (im, c, b, a, cr) in enumerate(ann)],
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}, {"id": 3, "name": "dog"}]}


def test_coco_small_case_crowd_and_source_area():
    """The issue's case: a detection on a crowd region is ignored (AP 1.0, not 0.75)."""
    gt = coco_gold()
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in gt["annotations"]]
    m = coco_metrics(gt, dets)
    assert m["AP"] == pytest.approx(1.0) and m["APs"] == pytest.approx(1.0)
    # image 2's car (box 40x40, own area 900) is small: missing it, the small bucket's car AP is 0 (person
    # 1.0, dog has no small box); were the area the box's (1600, medium), APs would stay 1.0 and APm fall
    m = coco_metrics(gt, [d for d in dets if not (d["image_id"] == 2 and d["category_id"] == 2)])
    assert m["APs"] == pytest.approx(0.5, abs=1e-6) and m["APm"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_equals_pycocotools(seed, tmp_path):
    gt = coco_gold()
    dets = jitter_detections(gt, seed, [1, 2, 3])
    ref = pycocotools_reference(gt, dets)
    gold, res = tmp_path / "gold.json", tmp_path / "dets.json"
    gold.write_text(json.dumps(gt))
    res.write_text(json.dumps(dets))
    mine = evaluate_detections(gold, res)
    assert mine["protocol"] == "coco"
    for k, name in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"]):
        assert (mine[name] if mine[name] is not None else -1.0) == pytest.approx(ref[k], abs=1e-6), name
    assert 0.0 < mine["AP"] < 1.0


def lvis_gold() -> dict:
    """5 images, 6 categories in the three frequency groups, verified-absent (neg) categories, categories
    not exhaustively annotated, all three size buckets."""
    rng = np.random.default_rng(7)
    cats = [{"id": i, "name": f"thing_{i}", "frequency": "rcf"[i % 3]} for i in range(1, 7)]
    images, anns = [], []
    for i in range(1, 6):
        neg = [(i + 4) % 6 + 1]
        images.append({"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg", "neg_category_ids": neg,
                       "not_exhaustive_category_ids": [(i + 3) % 6 + 1] if i % 2 else []})
        for k in range(4):
            c = (i + k) % 6 + 1
            if c in neg:
                continue
            w = [12.0, 50.0, 160.0, 25.0][k]
            x, y = float(rng.uniform(0, 400)), float(rng.uniform(0, 300))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, 0.8 * w],
                         "area": 0.8 * w * w})
    return {"images": images, "annotations": anns, "categories": cats}


def lvis_reference(gt: dict, dets: list[dict], *, fixed: bool, max_dets: int, per_class: int) -> dict:
    np.float = float  # the LVIS API (unmaintained) still uses np.float
    from lvis import LVIS, LVISEval, LVISResults

    ref = LVIS.__new__(LVIS)  # the API reads files only; give it the dict
    ref.logger, ref.dataset = logging.getLogger("lvis"), copy.deepcopy(gt)
    ref._create_index()
    if fixed:
        res = LVISResults(ref, copy.deepcopy(top_per_class(dets, per_class)), max_dets=-1)
    else:
        res = LVISResults(ref, copy.deepcopy(dets), max_dets=max_dets)
    ev = LVISEval(ref, res, "bbox")
    if fixed:
        ev.params.max_dets = -1
    ev.run()
    return dict(ev.results)


@pytest.mark.parametrize(("fixed", "max_dets", "per_class"), [(False, 300, 10_000), (False, 9, 10_000),
                                                              (True, 300, 10_000), (True, 300, 6)])
@pytest.mark.parametrize("seed", [0, 3])
def test_lvis_equals_lvis_api(fixed, max_dets, per_class, seed):
    gt = lvis_gold()
    dets = jitter_detections(gt, seed, list(range(1, 7)), extra=6)
    ref = lvis_reference(gt, dets, fixed=fixed, max_dets=max_dets, per_class=per_class)
    mine = lvis_metrics(gt, dets, fixed=fixed, max_dets=max_dets, per_class=per_class)
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"):
        assert (mine[name] if mine[name] is not None else -1.0) == pytest.approx(float(ref[name]), abs=1e-6), name
    assert mine["AR"] == pytest.approx(float(next(v for k, v in ref.items() if k.startswith("AR@"))), abs=1e-6)
    assert all(mine[k] is not None for k in ("APs", "APm", "APl", "APr", "APc", "APf"))


def test_lvis_federated_differs_from_plain_coco():
    """Boxes of categories neither present nor verified absent do not count under LVIS; they do under COCO."""
    gt = lvis_gold()
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5}
            for a in gt["annotations"]]
    unverified = next(c for c in range(1, 7) if c not in {a["category_id"] for a in gt["annotations"] if a["image_id"] == 1}
                      and c not in gt["images"][0]["neg_category_ids"])
    a0 = next(a for a in gt["annotations"] if a["category_id"] == unverified)
    dets.append({"image_id": 1, "category_id": unverified, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.9})
    dets.append({"image_id": a0["image_id"], "category_id": unverified, "bbox": a0["bbox"], "score": 0.1})
    assert lvis_metrics(gt, dets)["AP"] == pytest.approx(1.0)
    assert score_detections(gt, dets, "coco")["AP"] < 1.0


def test_lvis_frequency_from_image_count_or_unknown():
    gt = lvis_gold()
    dets = jitter_detections(gt, 0, list(range(1, 7)))
    counts = {"r": 3, "c": 30, "f": 300}
    by_count = {**gt, "categories": [{"id": c["id"], "name": c["name"], "image_count": counts[c["frequency"]]}
                                     for c in gt["categories"]]}
    assert lvis_metrics(by_count, dets) == lvis_metrics(gt, dets)
    bare = {**gt, "categories": [{"id": c["id"], "name": c["name"]} for c in gt["categories"]]}
    m = lvis_metrics(bare, dets)
    assert m["AP"] == pytest.approx(lvis_metrics(gt, dets)["AP"]) and m["APr"] is m["APc"] is m["APf"] is None


def test_topk_over_query_class_pairs():
    """One query may yield several detections (one per class); the k best pairs of the image win."""
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]], np.float32)
    scores = np.array([[0.9, 0.8, 0.1], [0.3, 0.2, 0.7], [0.05, 0.01, 0.02]], np.float32)
    b, s, c = topk_query_class(boxes, scores, 3)
    assert s.tolist() == pytest.approx([0.9, 0.8, 0.7]) and c.tolist() == [0, 1, 2]
    assert b.tolist() == [[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 20, 20]]
    assert len(topk_query_class(boxes, scores, 100)[1]) == 9


def test_default_protocol_follows_the_gold(tmp_path):
    (tmp_path / "lvis.json").write_text(json.dumps(lvis_gold()))
    (tmp_path / "coco.json").write_text(json.dumps(coco_gold()))
    assert default_protocol(tmp_path / "lvis.json") == "lvis" and default_protocol(tmp_path / "coco.json") == "coco"


def test_no_shared_image_is_an_error_naming_both(tmp_path):
    gold, res = tmp_path / "gold.json", tmp_path / "elsewhere.json"
    gold.write_text(json.dumps(coco_gold()))
    res.write_text(json.dumps([{"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    with pytest.raises(EvaluationError, match="elsewhere.json shares no image with the gold set .*gold.json"):
        evaluate_detections(gold, res)
    proc = run_cli("evaluate", gold, "--detections", res, check=False)
    assert proc.returncode != 0 and "elsewhere.json" in proc.stderr and "gold.json" in proc.stderr
    assert proc.stdout == ""


def test_cli_scores_a_results_file_with_each_protocol(tmp_path):
    gold, res = tmp_path / "gold.json", tmp_path / "dets.json"
    gt = lvis_gold()
    dets = jitter_detections(gt, 0, list(range(1, 7)))
    gold.write_text(json.dumps(gt))
    res.write_text(json.dumps(dets))
    out = json.loads(run_cli("evaluate", gold, "--detections", res).stdout)
    assert out["protocol"] == "lvis" and out["AP"] == pytest.approx(lvis_metrics(gt, dets)["AP"], abs=1e-9)
    fixed = json.loads(run_cli("evaluate", gold, "--detections", res, "--protocol", "lvis-fixed").stdout)
    assert fixed["protocol"] == "lvis-fixed" and fixed["AP"] == pytest.approx(lvis_metrics(gt, dets, fixed=True)["AP"])
    coco = json.loads(run_cli("evaluate", gold, "--detections", res, "--protocol", "coco").stdout)
    assert coco["protocol"] == "coco" and coco["AP"] == pytest.approx(coco_metrics(gt, dets)["AP"])


def test_dataset_gold_keeps_source_ids(sample_gold):
    """A converted COCO file scores like the original file: same image and category ids."""
    from conftest import EXAMPLES

    original = json.loads((EXAMPLES / "sample" / "gold.json").read_text())
    rebuilt = dataset_to_coco(sample_gold)
    assert sorted(im["id"] for im in rebuilt["images"]) == sorted(im["id"] for im in original["images"])
    assert sorted(c["id"] for c in rebuilt["categories"]) == sorted(c["id"] for c in original["categories"])
    dets = jitter_detections(original, 5, [c["id"] for c in original["categories"]])
    assert coco_metrics(rebuilt, dets)["AP"] == pytest.approx(coco_metrics(original, dets)["AP"], abs=1e-9)


def _renamed(gt: dict, dets: list[dict], new_id: dict) -> tuple[dict, list[dict]]:
    images = [{**im, "id": new_id[im["id"]]} for im in gt["images"]]
    anns = [{**a, "image_id": new_id[a["image_id"]]} for a in gt["annotations"]]
    return {**gt, "images": images, "annotations": anns}, [{**d, "image_id": new_id[d["image_id"]]} for d in dets]


@pytest.mark.parametrize("new_id", [{1: 1, 2: "02", 3: "3"}, {1: "03", 2: "3", 3: "x_7"}])
def test_string_and_mixed_image_ids_score_like_integer_ids(new_id):
    """A custom file may keep string ids ("03", "3") beside integers (docs/format.md, "Ids"): scores equal
    the same gold with integer ids in the same order (pycocotools sorts ids and cannot sort int with str)."""
    gt, dets = coco_gold(), jitter_detections(coco_gold(), 1, [1, 2, 3])
    ref = pycocotools_reference(gt, dets)
    renamed_gt, renamed_dets = _renamed(gt, dets, new_id)
    mine = score_detections(renamed_gt, renamed_dets, "coco")
    for k, name in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"]):
        assert (mine[name] if mine[name] is not None else -1.0) == pytest.approx(ref[k], abs=1e-6), name
    lgt = lvis_gold()
    ldets = jitter_detections(lgt, 0, list(range(1, 7)))
    lnew = {**new_id, 4: "4", 5: "5"} if isinstance(new_id[1], int) else {**new_id, 4: "y", 5: "z"}
    renamed_lgt, renamed_ldets = _renamed(lgt, ldets, lnew)
    for protocol in ("lvis", "lvis-fixed"):
        want = score_detections(lgt, ldets, protocol)
        assert score_detections(renamed_lgt, renamed_ldets, protocol) == want


@pytest.mark.parametrize(("entry", "reason"), [
    ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}, "results[1]: bbox is not 4 finite numbers: [1, 2, 3]"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": "0.5"}, "results[1]: score is not a finite number: '0.5'"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": float("nan")}, "results[1]: score is not a finite number: nan"),
    ({"image_id": 1, "category_id": "1", "bbox": [1, 2, 3, 4], "score": 0.5}, "results[1]: category_id is not an integer: '1'"),
    ({"image_id": [1], "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}, "results[1]: image_id is not an integer or a string: [1]"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 2, "3", 4], "score": 0.5}, "results[1]: bbox is not 4 finite numbers: [1, 2, '3', 4]"),
])
def test_malformed_result_entry_is_an_error_naming_the_entry(tmp_path, entry, reason):
    gold, res = tmp_path / "gold.json", tmp_path / "dets.json"
    gold.write_text(json.dumps(coco_gold()))
    good = {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}
    res.write_text(json.dumps([good, entry]))
    for protocol in ("coco", "lvis"):
        proc = run_cli("evaluate", gold, "--detections", res, "--protocol", protocol, check=False)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.strip() == f"ovlabel: error: {res}: {reason}"


def test_empty_results_file_is_an_error_naming_both(tmp_path):
    gold, res = tmp_path / "gold.json", tmp_path / "empty.json"
    gold.write_text(json.dumps(coco_gold()))
    res.write_text("[]")
    with pytest.raises(EvaluationError, match=r"empty.json holds no detections: nothing to score against .*gold.json"):
        evaluate_detections(gold, res)


def test_dataset_without_source_ids_never_gives_two_images_one_id(tmp_path):
    """Without `source_image_id` (Open Images, version 1) an `<source>/<integer>` id may be an image id; an
    image whose id is no integer must not take a number another image's id already is (here 2)."""
    from formats.converters.openimages import OpenImagesConvertConfig, convert_openimages

    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "class-descriptions-boxable.csv").write_text("/m/01,Cat\n")
    (ann / "train-annotations-bbox.csv").write_text(
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
        "abc,x,/m/01,1,0.1,0.5,0.1,0.5,0,0,0,0,0\n2,x,/m/01,1,0.5,0.9,0.5,0.9,0,0,0,0,0\n")
    (tmp_path / "sizes.csv").write_text("ImageID,width,height\nabc,100,100\n2,100,100\n")
    convert_openimages(ann, tmp_path / "ds", OpenImagesConvertConfig(sizes=str(tmp_path / "sizes.csv")))
    gt = dataset_to_coco(tmp_path / "ds")
    ids = {im["ovlabel_id"]: im["id"] for im in gt["images"]}
    assert ids == {"openimages_v6/2": 1, "openimages_v6/abc": 2}  # not every id an integer: 1..N for all
    assert sorted((a["image_id"], a["bbox"][0]) for a in gt["annotations"]) == [(1, 50.0), (2, 10.0)]
