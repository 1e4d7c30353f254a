"""Evaluation entry points: a detector or a COCO results file scored with a published protocol, and the
quality of pseudo labels against hidden gold boxes.

Protocols (`PROTOCOLS`; each result records its ``protocol``; ``AP`` stays the headline key for detection):
``coco`` (pycocotools COCOeval, `detector.eval_coco`), ``lvis`` / ``lvis-fixed`` (federated AP with
APr/APc/APf, and Fixed AP: `detector.eval_lvis`), ``odinw`` (a suite of COCO-format sets, `detector.eval_odinw`),
``flickr30k`` and ``refcoco`` (phrase grounding recall@k and REC accuracy@0.5: `detector.eval_grounding`).
The default follows the gold: LVIS annotations (images carry ``neg_category_ids``) -> ``lvis``, other
detection gold -> ``coco``, grounding (VG) datasets -> ``flickr30k``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from detector.eval_coco import coco_metrics, to_results
from detector.eval_gold import EvaluationError, check_shared_images, is_lvis, load_gold
from detector.eval_lvis import LVIS_MAX_DETS, lvis_metrics
from formats.boxes import iou_matrix, xyxy_to_xywh
from formats.dataset import Dataset
from formats.images import ImageError, decode_image, read_image_bytes
from formats.schema import GOLD_ORIGINS, IGNORE_ORIGINS

log = logging.getLogger("ovlabel.evaluate")

PROTOCOLS = ("coco", "lvis", "lvis-fixed", "odinw", "flickr30k", "refcoco")
DETECTION_PROTOCOLS = ("coco", "lvis", "lvis-fixed")
HEADLINE = {"coco": "AP", "lvis": "AP", "lvis-fixed": "AP", "odinw": "AP", "flickr30k": "R@1", "refcoco": "accuracy"}
MAX_DETS = {"coco": 100, "lvis": LVIS_MAX_DETS, "lvis-fixed": LVIS_MAX_DETS}  # per image, from the detector


def default_protocol(gold: str | os.PathLike) -> str:
    """The protocol of a gold set's source: ``lvis`` for LVIS annotations, ``coco`` for other detection
    gold (a COCO JSON file or an OD dataset), ``flickr30k`` for a grounding (VG) dataset, ``odinw`` for a
    suite (a folder that is no dataset, or a JSON file listing ``datasets``)."""
    from detector.eval_odinw import is_suite

    p = Path(gold)
    if is_suite(p):
        return "odinw"
    if p.is_dir():
        m = Dataset(p).manifest
        if m.kind != "od":
            return "flickr30k"
        return "lvis" if m.source.lower().startswith("lvis") else "coco"
    return "lvis" if is_lvis(load_gold(p)) else "coco"


def score_detections(gt: dict, dets: list[dict], protocol: str, *, gold_name: str = "gold",
                     pred_name: str = "detections") -> dict:
    """COCO results `dets` scored against the COCO dict `gt` with a detection protocol (coco, lvis,
    lvis-fixed). Raises `EvaluationError` naming both when the detections share no image with the gold."""
    if protocol not in DETECTION_PROTOCOLS:
        raise EvaluationError(f"{protocol!r} is not a detection protocol ({', '.join(DETECTION_PROTOCOLS)})")
    check_shared_images(gt, dets, gold_name, pred_name)
    if protocol == "coco":
        out = coco_metrics(gt, dets)
    else:
        out = lvis_metrics(gt, dets, fixed=protocol == "lvis-fixed")
    return {"protocol": protocol, **out}


def _prompt_name(name: str) -> str:
    return name.replace("_", " ").strip()


def _subset(gt: dict, max_images: int | None) -> dict:
    if max_images is None or max_images >= len(gt["images"]):
        return gt
    images = gt["images"][:max_images]
    keep = {im["id"] for im in images}
    return {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}


def _decoded(image_root, images: list[dict]):
    for im in images:
        try:
            yield im, decode_image(read_image_bytes(image_root, im["file_name"]), str(im["id"]))
        except ImageError as e:
            log.warning("%s: left out of the evaluation: %s", im["file_name"], e)


def detect_gold(detector, gt: dict, image_root: str | os.PathLike | None, *, max_dets: int = 100,
                batch_size: int = 4) -> list[dict]:
    """COCO results of `detector` on the images of `gt`, prompted with every category name; per image the
    `max_dets` best (query, class) pairs (MMDetection's rule, `eval_queries.detect_query_class`) for a
    GroundingDetector (has ``propose``); for any other ``detect(images, phrases) -> list[Detections]``
    detector, the `max_dets` best of its detections. Images that fail to decode are logged and left out.
    """
    cats = gt["categories"]
    names = [_prompt_name(c["name"]) for c in cats]
    ids = np.array([c["id"] for c in cats], np.int64)
    dets: list[dict] = []
    todo = list(_decoded(image_root, gt["images"]))
    if hasattr(detector, "propose"):
        from detector.eval_queries import detect_query_class

        for im, pil in todo:
            boxes, scores, label = detect_query_class(detector, pil, names, max_dets)
            dets += to_results(im["id"], boxes, scores, ids[label])
        return dets
    for b in range(0, len(todo), batch_size):
        chunk = todo[b:b + batch_size]
        for (im, _), det in zip(chunk, detector.detect([pil for _, pil in chunk], [names] * len(chunk))):
            order = np.argsort(-det.scores, kind="stable")[:max_dets]
            dets += to_results(im["id"], det.boxes[order], det.scores[order], ids[det.phrase[order]])
    return dets


def evaluate_detections(gold: str | os.PathLike, detections: str | os.PathLike, *,
                        protocol: str | None = None) -> dict:
    """A COCO results file scored against a gold file or dataset (no detector run).

    Raises `EvaluationError` when the results file holds no detections (or, from the loaders, is invalid)."""
    from detector.eval_gold import load_detections

    protocol = protocol or default_protocol(gold)
    dets = load_detections(detections)
    if not dets:
        raise EvaluationError(f"{detections} holds no detections: nothing to score against {gold}")
    return score_detections(load_gold(gold), dets, protocol, gold_name=str(gold), pred_name=str(detections))


def evaluate_detector(detector, gold: str | os.PathLike, *, protocol: str | None = None,
                      image_root: str | os.PathLike | None = None, max_images: int | None = None,
                      batch_size: int = 4) -> dict:
    """`detector` on a detection gold (COCO/LVIS JSON with `image_root`, or an OD dataset) with `protocol`
    (default: `default_protocol`). With `max_images`, only the first images (and their gold) count."""
    protocol = protocol or default_protocol(gold)
    gt = _subset(load_gold(gold), max_images)
    if Path(gold).is_dir() and image_root is None:
        image_root = Dataset(gold).manifest.image_root
    dets = detect_gold(detector, gt, image_root, max_dets=MAX_DETS[protocol], batch_size=batch_size)
    return score_detections(gt, dets, protocol, gold_name=str(gold), pred_name=f"{getattr(detector, 'name', 'the detector')}")


def coco_ap(detector, dataset_dir: str | os.PathLike, *, max_images: int | None = None, batch_size: int = 4,
            protocol: str = "coco") -> dict:
    """COCO-protocol AP of `detector` on a gold OD dataset (see `evaluate_detector`)."""
    return evaluate_detector(detector, dataset_dir, protocol=protocol, max_images=max_images, batch_size=batch_size)


def evaluate(gold: str | os.PathLike, *, model: str | None = None, detections: str | os.PathLike | None = None,
             protocol: str | None = None, image_root: str | os.PathLike | None = None,
             max_images: int | None = None, device: str | None = None, detector=None) -> dict:
    """`ovlabel evaluate`: a COCO results file (`detections`) or a model (`model` hub id / folder, or a
    ready `detector`) scored on `gold` with `protocol` (default `default_protocol`). The result records the
    protocol. Raises `EvaluationError` for gold and predictions that cannot be scored together."""
    protocol = protocol or default_protocol(gold)
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if detections is not None:
        if protocol not in DETECTION_PROTOCOLS:
            raise EvaluationError(f"--detections takes a COCO results file: protocols {', '.join(DETECTION_PROTOCOLS)}")
        return evaluate_detections(gold, detections, protocol=protocol)
    if detector is None:
        from detector.backends import load_detector

        detector = load_detector(model, device=device, box_threshold=0.0)
    if protocol == "odinw":
        from detector.eval_odinw import odinw_ap

        return odinw_ap(detector, gold, max_images=max_images)
    if protocol in ("flickr30k", "refcoco"):
        from detector.eval_grounding import flickr30k_recall, refcoco_accuracy

        run = flickr30k_recall if protocol == "flickr30k" else refcoco_accuracy
        return run(detector, gold, image_root=image_root, max_items=max_images)
    return evaluate_detector(detector, gold, protocol=protocol, image_root=image_root, max_images=max_images)


def _records(ds: Dataset, limit: int | None = None) -> list[dict]:
    out = []
    for p in ds.part_paths:
        out += pq.read_table(p, columns=["image_id", "file_name", "width", "height", "caption", "regions"]).to_pylist()
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def _xywh(b) -> list[float]:
    return xyxy_to_xywh(b)[0].tolist()


def _covered(boxes: np.ndarray, crowds: np.ndarray) -> np.ndarray:
    """Per xyxy box (px), the largest share of its area inside one crowd region (COCO's crowd IoU); 0 without."""
    if len(boxes) == 0 or len(crowds) == 0:
        return np.zeros(len(boxes))
    lt = np.maximum(boxes[:, None, :2], crowds[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], crowds[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(axis=1)
    return (inter / np.maximum(area, 1e-12)[:, None]).max(axis=1)


def pseudo_quality(pseudo_dir: str | os.PathLike, gold_dir: str | os.PathLike, *, iou: float = 0.5) -> dict:
    """Pseudo boxes against hidden gold boxes of the same images (class-agnostic): AP, precision, recall.

    The gold's crowd / ignore regions are ignored as COCO ignores crowds: a pseudo box matching no gold box
    but lying on one (>= `iou` of its area inside) counts neither in AP nor in precision.

    Raises `EvaluationError` naming both directories when the pseudo set has no pseudo region or shares no
    image with the gold set (never a zero AP).
    """
    pseudo, gold = Dataset(pseudo_dir).require_complete(), Dataset(gold_dir).require_complete()
    gold_recs = {r["image_id"]: r for r in _records(gold)}
    pseudo_recs = {r["image_id"]: r for r in _records(pseudo)}
    if not any(x["origin"] == "pseudo" for r in pseudo_recs.values() for x in r["regions"] or []):
        raise EvaluationError(f"{pseudo_dir} has no pseudo regions to judge against {gold_dir}")
    if not set(gold_recs) & set(pseudo_recs):
        raise EvaluationError(f"{pseudo_dir} shares no image with the gold set {gold_dir} "
                              f"({len(pseudo_recs)} pseudo images, {len(gold_recs)} gold images)")
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    dets, tp, n_pred = [], 0, 0
    for image_id, g in gold_recs.items():
        k = len(gt["images"]) + 1
        gt["images"].append({"id": k, "width": g["width"], "height": g["height"]})
        gboxes = np.array([x["bbox"] for x in g["regions"] or [] if x["origin"] in GOLD_ORIGINS],
                          dtype=np.float64).reshape(-1, 4)
        crowds = np.array([x["bbox"] for x in g["regions"] or [] if x["origin"] in IGNORE_ORIGINS],
                          dtype=np.float64).reshape(-1, 4)
        for box, crowd in [(b, 0) for b in gboxes] + [(b, 1) for b in crowds]:
            b = _xywh(box)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": k, "bbox": b, "category_id": 1,
                                      "area": b[2] * b[3], "iscrowd": crowd})
        preds = [x for x in (pseudo_recs.get(image_id, {}).get("regions") or []) if x["origin"] == "pseudo"]
        preds.sort(key=lambda x: -(x["score"] or 0.0))
        pboxes = np.array([x["bbox"] for x in preds], dtype=np.float64).reshape(-1, 4)
        for x in preds:
            dets.append({"image_id": k, "category_id": 1, "bbox": _xywh(x["bbox"]), "score": float(x["score"] or 0.0)})
        taken = np.zeros(len(gboxes), bool)
        m = iou_matrix(pboxes, gboxes)
        on_crowd = _covered(pboxes, crowds) >= iou  # an unmatched box on a crowd region is not counted
        for i in range(len(pboxes)):  # greedy, by score
            cand = np.where(~taken & (m[i] >= iou))[0]
            if len(cand):
                taken[cand[np.argmax(m[i, cand])]] = True
                tp += 1
            elif on_crowd[i]:
                continue
            n_pred += 1
    ap = coco_metrics(gt, dets, agnostic=True)
    n_gold = sum(1 for a in gt["annotations"] if not a["iscrowd"])
    return {"AP": ap["AP"], "AP50": ap["AP50"], "precision@0.5": round(tp / n_pred, 5) if n_pred else None,
            "recall@0.5": round(tp / n_gold, 5) if n_gold else None, "pseudo_boxes": n_pred, "gold_boxes": n_gold,
            "images": len(gt["images"])}
