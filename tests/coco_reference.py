"""Detection sets jittered around a COCO gold set, and pycocotools' COCOeval numbers for them: the reference the
evaluation tests (tests/detector/test_eval_protocols.py) and the export tests (test_source_fields.py) compare
with."""

from __future__ import annotations

import copy

import numpy as np


def jitter_detections(gt: dict, seed: int, cats: list[int], per_box: int = 3, extra: int = 4) -> list[dict]:
    """A fixed detection set: boxes near each gold box (some with the wrong class) plus background boxes."""
    rng = np.random.default_rng(seed)
    dets = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        for j in range(per_box):
            dets.append({"image_id": a["image_id"], "category_id": a["category_id"] if j < 2 else int(rng.choice(cats)),
                         "bbox": [x + rng.normal(0, 0.1 * w), y + rng.normal(0, 0.1 * h), w * rng.uniform(0.8, 1.2),
                                  h * rng.uniform(0.8, 1.2)], "score": float(rng.uniform())})
    for im in gt["images"]:
        for _ in range(extra):
            dets.append({"image_id": im["id"], "category_id": int(rng.choice(cats)),
                         "bbox": [float(rng.uniform(0, 500)), float(rng.uniform(0, 400)), 30.0, 25.0],
                         "score": float(rng.uniform())})
    return dets


def pycocotools_reference(gt: dict, dets: list[dict]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats
