"""ODinW: every set prompted with its own class names, scored with COCO's protocol, averaged as GLIP does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import EXAMPLES

from detector.eval_coco import coco_metrics
from detector.eval_gold import EvaluationError
from detector.eval_odinw import ODINW13, load_suite
from detector.evaluate import default_protocol, evaluate
from formats.detections import Detections

SIZES = {"astronaut.jpg": (512, 512), "chelsea.jpg": (451, 300), "coffee.jpg": (600, 400)}


def write_set(folder, names: list[str], boxes: dict[str, list[tuple[int, list[float]]]]):
    """A COCO-format set in ODinW's layout: valid/annotations_without_background.json and the images."""
    (folder / "valid").mkdir(parents=True)
    images, anns = [], []
    for i, (fname, lst) in enumerate(boxes.items(), 1):
        shutil.copy(EXAMPLES / "sample" / "images" / fname, folder / "valid" / fname)
        w, h = SIZES[fname]
        images.append({"id": i, "file_name": fname, "width": w, "height": h})
        anns += [{"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                 for c, b in lst]
    doc = {"images": images, "annotations": anns, "categories": [{"id": k, "name": n} for k, n in enumerate(names, 1)]}
    (folder / "valid" / "annotations_without_background.json").write_text(json.dumps(doc))
    return doc


class SizeOracle:
    """Answers by image size: the given (class name, xyxy box, score) triples; records the prompts."""

    def __init__(self, answers: dict[tuple[int, int], list[tuple[str, list[float], float]]]):
        self.answers, self.prompts = answers, []

    def detect(self, images, phrases):
        out = []
        for im, names in zip(images, phrases):
            self.prompts.append(list(names))
            ans = [a for a in self.answers.get(im.size, []) if a[0] in names]
            out.append(Detections(np.asarray([a[1] for a in ans], np.float32).reshape(-1, 4),
                                  np.asarray([a[2] for a in ans], np.float32),
                                  np.asarray([names.index(a[0]) for a in ans], np.int64)))
        return out


def test_suite_mean_of_per_set_coco_ap(tmp_path):
    a = write_set(tmp_path / "A", ["cat", "mug"], {"chelsea.jpg": [(1, [50.0, 20.0, 300.0, 250.0])],
                                                   "coffee.jpg": [(2, [150.0, 50.0, 300.0, 300.0])]})
    b = write_set(tmp_path / "B", ["person"], {"astronaut.jpg": [(1, [100.0, 20.0, 300.0, 480.0])]})
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"datasets": [{"name": "A", "ann_file": "A/valid/annotations_without_background.json",
                                               "image_root": "A/valid"},
                                              {"name": "B", "ann_file": "B/valid/annotations_without_background.json",
                                               "image_root": "B/valid"}]}))
    oracle = SizeOracle({(451, 300): [("cat", [50, 20, 350, 270], 0.9)],                # exact
                         (600, 400): [("mug", [0, 0, 40, 40], 0.8), ("mug", [150, 50, 450, 350], 0.3)],
                         (512, 512): [("person", [100, 20, 400, 260], 0.9)]})           # IoU 0.5: AP50 only
    assert default_protocol(suite) == "odinw"
    r = evaluate(suite, detector=oracle)
    assert r["protocol"] == "odinw" and r["sets"] == 2 and sorted(r["datasets"]) == ["A", "B"]
    assert sorted(map(tuple, oracle.prompts)) == [("cat", "mug"), ("cat", "mug"), ("person",)]  # own class names
    ap_a = coco_metrics(a, [{"image_id": 1, "category_id": 1, "bbox": [50, 20, 300, 250], "score": 0.9},
                            {"image_id": 2, "category_id": 2, "bbox": [0, 0, 40, 40], "score": 0.8},
                            {"image_id": 2, "category_id": 2, "bbox": [150, 50, 300, 300], "score": 0.3}])["AP"]
    ap_b = coco_metrics(b, [{"image_id": 1, "category_id": 1, "bbox": [100, 20, 300, 240], "score": 0.9}])["AP"]
    assert r["datasets"]["A"]["AP"] == pytest.approx(ap_a, abs=1e-9)
    assert ap_a == pytest.approx(0.75)  # cat 1.0; mug 0.5: a wrong box outranks the right one
    assert r["datasets"]["B"]["AP"] == pytest.approx(ap_b, abs=1e-9) and ap_b == pytest.approx(0.1, abs=1e-6)
    assert r["AP"] == pytest.approx((ap_a + ap_b) / 2, abs=1e-9)


def test_odinw13_preset_needs_every_set(tmp_path):
    write_set(tmp_path / "pothole", ["pothole"], {"coffee.jpg": [(1, [1.0, 1.0, 20.0, 20.0])]})
    assert default_protocol(tmp_path) == "odinw"
    with pytest.raises(EvaluationError, match="12 of the 13 odinw13 sets are missing"):
        load_suite(tmp_path)
    for name, (d, ann, _) in ODINW13.items():
        if name != "pothole":
            (tmp_path / d / ann).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / d / ann).write_text("{}")
    suite = load_suite(tmp_path)
    assert [s["name"] for s in suite] == list(ODINW13) and len(suite) == 13
    assert suite[7]["gold"].endswith("pistols/export/val_annotations_without_background.json")
