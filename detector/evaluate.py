"""Evaluation: COCO AP on a gold OD dataset (pycocotools), phrase-grounding recall@k on a gold VG dataset
(Flickr30k protocol), and the quality of pseudo labels against hidden gold boxes.

The detector is prompted with the category names (packed into as many prompts as the text limit needs,
as for LVIS) or with each caption's phrases; every box keeps its best phrase and that phrase's score.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import numpy as np
import pyarrow.parquet as pq

from formats.boxes import iou_matrix
from formats.dataset import Dataset
from formats.images import ImageError, decode_image, read_image_bytes

log = logging.getLogger("ovlabel.evaluate")


def _records(ds: Dataset, limit: int | None = None) -> list[dict]:
    out = []
    for p in ds.part_paths:
        out += pq.read_table(p, columns=["image_id", "file_name", "width", "height", "caption", "regions"]).to_pylist()
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def _images(ds: Dataset, recs: list[dict]):
    for r in recs:
        try:
            yield r, decode_image(read_image_bytes(ds.manifest.image_root, r["file_name"]), r["image_id"])
        except ImageError as e:
            log.warning("%s: left out of the evaluation: %s", r["image_id"], e)


def _xywh(b) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in b)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_eval(gt: dict, dets: list[dict], *, agnostic: bool = False) -> dict:
    """pycocotools bbox evaluation of `dets` against the COCO dict `gt`; AP figures (None where undefined)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(sys.stderr):  # pycocotools prints; stdout is for data
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        if not dets or not gt["annotations"]:
            return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APs": None, "APm": None, "APl": None, "AR100": 0.0,
                    "images": len(gt["images"]), "gt_boxes": len(gt["annotations"]), "detections": len(dets)}
        res = coco.loadRes(dets)
        ev = COCOeval(coco, res, "bbox")
        if agnostic:
            ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"]
    stats = {n: (round(float(v), 5) if v >= 0 else None) for n, v in zip(names, ev.stats)}
    return {**stats, "images": len(gt["images"]), "gt_boxes": len(gt["annotations"]), "detections": len(dets)}


def coco_ap(detector, dataset_dir: str | os.PathLike, *, max_images: int | None = None, max_dets: int = 100,
            batch_size: int = 4) -> dict:
    """COCO-style AP of `detector` (a GroundingDetector) on a gold OD dataset, prompted with every category."""
    ds = Dataset(dataset_dir).require_complete()
    if ds.manifest.kind != "od":
        raise ValueError(f"{dataset_dir}: COCO AP needs a detection (OD) dataset; use grounding_recall for VG data")
    cats = ds.manifest.categories
    names = [c["name"] for c in cats]
    gt = {"images": [], "annotations": [], "categories": [{"id": c["label"] + 1, "name": c["name"]} for c in cats]}
    dets: list[dict] = []
    todo = list(_images(ds, _records(ds, max_images)))
    for b in range(0, len(todo), batch_size):
        chunk = todo[b:b + batch_size]
        found = detector.detect([im for _, im in chunk], [names] * len(chunk))
        for (r, _), det in zip(chunk, found):
            k = len(gt["images"]) + 1
            gt["images"].append({"id": k, "width": r["width"], "height": r["height"], "file_name": r["file_name"]})
            for g in r["regions"] or []:
                if g["origin"] in ("gold", "review") and g["label"] is not None:
                    box = _xywh(g["bbox"])
                    gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": k, "bbox": box,
                                              "category_id": int(g["label"]) + 1, "area": box[2] * box[3],
                                              "iscrowd": 0})
            order = np.argsort(-det.scores)[:max_dets]
            for i in order:
                dets.append({"image_id": k, "category_id": int(cats[int(det.phrase[i])]["label"]) + 1,
                             "bbox": _xywh(det.boxes[i]), "score": float(det.scores[i])})
    return coco_eval(gt, dets)


def grounding_recall(detector, dataset_dir: str | os.PathLike, *, ks=(1, 5, 10), iou: float = 0.5,
                     max_images: int | None = None, batch_size: int = 4) -> dict:
    """Recall@k of phrase grounding (Flickr30k protocol: a phrase is found when one of its k best boxes has
    IoU >= 0.5 with one of its gold boxes)."""
    ds = Dataset(dataset_dir).require_complete()
    hits = {k: 0 for k in ks}
    total = 0
    todo = list(_images(ds, _records(ds, max_images)))
    for b in range(0, len(todo), batch_size):
        chunk = todo[b:b + batch_size]
        phrases = [sorted({g["phrase"] for g in r["regions"] or [] if g["phrase"]}) for r, _ in chunk]
        found = detector.detect([im for _, im in chunk], phrases)
        for (r, _), ph, det in zip(chunk, phrases, found):
            for j, p in enumerate(ph):
                gold = np.array([g["bbox"] for g in r["regions"] if g["phrase"] == p], dtype=np.float64)
                mine = det[det.phrase == j]
                ranked = mine.boxes[np.argsort(-mine.scores)].astype(np.float64)
                ok = (iou_matrix(ranked, gold) >= iou).any(1) if len(ranked) else np.zeros(0, bool)
                total += 1
                for k in ks:
                    hits[k] += bool(ok[:k].any())
    return {**{f"R@{k}": round(hits[k] / total, 5) if total else None for k in ks}, "phrases": total}


def pseudo_quality(pseudo_dir: str | os.PathLike, gold_dir: str | os.PathLike, *, iou: float = 0.5) -> dict:
    """Pseudo boxes against hidden gold boxes of the same images (class-agnostic): AP, precision, recall."""
    pseudo, gold = Dataset(pseudo_dir).require_complete(), Dataset(gold_dir).require_complete()
    gold_recs = {r["image_id"]: r for r in _records(gold)}
    pseudo_recs = {r["image_id"]: r for r in _records(pseudo)}
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    dets, tp, n_pred = [], 0, 0
    for image_id, g in gold_recs.items():
        k = len(gt["images"]) + 1
        gt["images"].append({"id": k, "width": g["width"], "height": g["height"]})
        gboxes = np.array([x["bbox"] for x in g["regions"] or [] if x["origin"] in ("gold", "review")],
                          dtype=np.float64).reshape(-1, 4)
        for box in gboxes:
            b = _xywh(box)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": k, "bbox": b, "category_id": 1,
                                      "area": b[2] * b[3], "iscrowd": 0})
        preds = [x for x in (pseudo_recs.get(image_id, {}).get("regions") or []) if x["origin"] == "pseudo"]
        preds.sort(key=lambda x: -(x["score"] or 0.0))
        pboxes = np.array([x["bbox"] for x in preds], dtype=np.float64).reshape(-1, 4)
        for x in preds:
            dets.append({"image_id": k, "category_id": 1, "bbox": _xywh(x["bbox"]), "score": float(x["score"] or 0.0)})
        taken = np.zeros(len(gboxes), bool)
        m = iou_matrix(pboxes, gboxes)
        for i in range(len(pboxes)):  # greedy, by score
            cand = np.where(~taken & (m[i] >= iou))[0]
            if len(cand):
                taken[cand[np.argmax(m[i, cand])]] = True
                tp += 1
        n_pred += len(pboxes)
    ap = coco_eval(gt, dets, agnostic=True)
    n_gold = len(gt["annotations"])
    return {"AP": ap["AP"], "AP50": ap["AP50"], "precision@0.5": round(tp / n_pred, 5) if n_pred else None,
            "recall@0.5": round(tp / n_gold, 5) if n_gold else None, "pseudo_boxes": n_pred, "gold_boxes": n_gold,
            "images": len(gt["images"])}
