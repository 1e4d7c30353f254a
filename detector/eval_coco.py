"""COCO box AP (pycocotools' COCOeval, the reference itself) and the (query, class) top-k rule of
MMDetection's grounding heads.

Sources: COCO detection evaluation (cocodataset.org/#detection-eval, pycocotools/cocoeval.py): crowd
annotations are ignore regions, size buckets (small < 32², medium < 96², large) use the annotation's own
`area`, at most 100 detections per (image, category). MMDetection `mmdet/models/dense_heads/
grounding_dino_head.py` (`_predict_by_feat_single`): scores of every (query, class) pair, flattened, top-k
(k = 100 for COCO, 300 for LVIS) per image, each kept pair a detection of that class.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from formats.boxes import xyxy_to_xywh

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def coco_metrics(gt: dict, dets: list[dict], *, agnostic: bool = False) -> dict:
    """COCOeval (bbox) of COCO results `dets` against the COCO dict `gt`, exactly as pycocotools computes it.

    Returns AP, AP50, AP75, APs/APm/APl, AR1/AR10/AR100 (None where COCOeval reports -1: no gold in that
    bucket), plus counts. `agnostic`: one class (``useCats = 0``). No detections: AP 0.0 (a real zero).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    counts = {"images": len(gt["images"]), "gt_boxes": len(gt["annotations"]), "detections": len(dets)}
    if not dets or not gt["annotations"]:
        return {**{n: 0.0 for n in COCO_STATS}, "APs": None, "APm": None, "APl": None, **counts}
    gt, dets = index_image_ids(gt, dets)
    with contextlib.redirect_stdout(sys.stderr):  # pycocotools prints; stdout is for data
        coco = COCO()
        anns = [{"iscrowd": 0, "area": a["bbox"][2] * a["bbox"][3], **a} for a in gt["annotations"]]  # LVIS has neither
        coco.dataset = {**gt, "annotations": anns}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes([dict(d) for d in dets]), "bbox")
        if agnostic:
            ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {n: (float(v) if v >= 0 else None) for n, v in zip(COCO_STATS, ev.stats)}
    return {**stats, **counts}


def index_image_ids(gt: dict, dets: list[dict]) -> tuple[dict, list[dict]]:
    """`gt` and `dets` with image ids replaced by 0..N-1 in the order pycocotools sorts them, integers first.

    Ids keep their type (docs/format.md, "Ids"): a custom file may hold strings (``"03"``, ``"2008_000123"``)
    beside integers, which pycocotools (``sorted(getImgIds())``) cannot order and faster-coco-eval cannot
    index. Integers, or strings, alone keep their relative order, so scores equal the reference tool's
    wherever it runs (ties between images are broken in that order). Unknown detection ids map past N.
    """
    order = sorted({im["id"] for im in gt["images"]}, key=lambda v: (isinstance(v, str), v))
    index = {v: k for k, v in enumerate(order)}
    for d in dets:
        index.setdefault(d["image_id"], len(index))
    images = [{**im, "id": index[im["id"]]} for im in gt["images"]]
    anns = [{**a, "image_id": index.get(a["image_id"], a["image_id"])} for a in gt["annotations"]]
    return {**gt, "images": images, "annotations": anns}, [{**d, "image_id": index[d["image_id"]]} for d in dets]


def topk_query_class(boxes: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MMDetection's grounding top-k: the `k` best (query, class) pairs of one image.

    `boxes` (Q, 4) any box convention, `scores` (Q, C) per query and class. Returns (boxes (n, 4), scores
    (n,), class index (n,)) with n = min(k, Q*C), best first; a query may appear under several classes.
    """
    q, c = scores.shape
    flat = scores.reshape(-1)
    n = min(k, q * c)
    idx = np.argsort(-flat, kind="stable")[:n]
    return boxes[idx // c], flat[idx], idx % c


def to_results(image_id, boxes_xyxy: np.ndarray, scores: np.ndarray, category_ids: np.ndarray) -> list[dict]:
    """COCO results entries for one image from xyxy pixel boxes."""
    return [{"image_id": image_id, "category_id": int(c), "score": float(s), "bbox": b}
            for b, s, c in zip(xyxy_to_xywh(boxes_xyxy).tolist(), scores, category_ids)]
