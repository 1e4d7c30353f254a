"""Phrase grounding (Flickr30k Entities recall@k) and referring expressions (RefCOCO/+/g accuracy@0.5).

Flickr30k Entities (Plummer et al., ICCV 2015; protocol as MDETR evaluates it, ``ashkamath/mdetr``
``datasets/flickr_eval.py``): each caption is the prompt, each of its phrases (a character span of the caption)
gets the detector's boxes for that span ranked by score; a phrase counts at k when one of its k best boxes has
IoU >= 0.5 with a gold box of the phrase. *Any-box*: any of the phrase's gold boxes; *merged-box*: the phrase's
gold boxes merged into their enclosing box first (``merge_boxes=True``). Phrases without gold boxes are not
counted. RefCOCO / RefCOCO+ / RefCOCOg (Yu et al., ECCV 2016; Mao et al., CVPR 2016; MDETR
``datasets/refexp.py``): the whole expression is the prompt, and it is correct when its top box has IoU >= 0.5
with the referred object's box.

Gold: a VG dataset directory (one record per caption or expression; regions carry ``phrase`` and
``tokens_positive``) or MDETR's JSON (``final_flickr_separateGT_*.json``, ``final_refcoco*_*.json``: images
carry ``caption``, annotations ``tokens_positive`` and ``bbox`` [x, y, w, h]). Boxes here are xyxy pixels.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from detector.eval_gold import EvaluationError
from formats.boxes import iou_matrix, xywh_to_xyxy
from formats.dataset import Dataset
from formats.images import ImageError, decode_image, read_image_bytes

log = logging.getLogger("ovlabel.evaluate")


@dataclass
class GroundingItem:
    """One caption (or referring expression) of one image: phrase spans and their gold boxes (xyxy)."""

    key: str
    file_name: str
    caption: str
    spans: list[tuple[int, int]]  # one character span per phrase
    boxes: list[np.ndarray]  # (n_p, 4) gold boxes per phrase


def _group(caption: str, regions: list[tuple[list, str | None, list[float]]]) -> tuple[list, list]:
    """Phrases of one caption from (tokens_positive, phrase, xyxy box) triples: one per first span (or text)."""
    order: dict = {}
    for spans, phrase, box in regions:
        if spans:
            span = (int(spans[0][0]), int(spans[0][1]))
        elif phrase and phrase in caption:
            span = (caption.index(phrase), caption.index(phrase) + len(phrase))
        else:
            continue
        order.setdefault(span, []).append(box)
    return list(order), [np.asarray(b, np.float64).reshape(-1, 4) for b in order.values()]


def load_grounding_gold(path: str | os.PathLike, max_items: int | None = None) -> tuple[list[GroundingItem], str | None]:
    """(items, image root) of a VG dataset directory or an MDETR-style JSON file (see the module docstring).

    Raises `EvaluationError` when the file is not JSON or lacks ``images`` (with captions) and
    ``annotations``."""
    p = Path(path)
    items: list[GroundingItem] = []
    if p.is_dir():
        ds = Dataset(p).require_complete()
        for part in ds.part_paths:
            for r in pq.read_table(part, columns=["image_id", "file_name", "caption", "regions"]).to_pylist():
                cap = r["caption"] or ""
                regs = [(g["tokens_positive"], g["phrase"], g["bbox"]) for g in r["regions"] or []
                        if g["origin"] in ("gold", "review")]
                spans, boxes = _group(cap, regs)
                items.append(GroundingItem(r["image_id"], r["file_name"], cap, spans, boxes))
        root = ds.manifest.image_root
    else:
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise EvaluationError(f"{p}: not a grounding gold file: {e}") from None
        if not isinstance(doc, dict) or any(k not in doc for k in ("images", "annotations")):
            raise EvaluationError(f"{p}: a grounding gold file has images (with caption) and annotations")
        by_image: dict = {}
        for a in doc["annotations"]:
            by_image.setdefault(a["image_id"], []).append(
                (a.get("tokens_positive"), a.get("phrase"), xywh_to_xyxy(a["bbox"])[0].tolist()))
        for im in doc["images"]:
            spans, boxes = _group(im.get("caption", ""), by_image.get(im["id"], []))
            items.append(GroundingItem(str(im["id"]), im["file_name"], im.get("caption", ""), spans, boxes))
        root = None
    items = [it for it in items if it.spans]
    return (items[:max_items] if max_items is not None else items), root


def phrase_hits(ranked: np.ndarray, gold: np.ndarray, ks=(1, 5, 10), iou: float = 0.5,
                merged: bool = False) -> dict[int, bool]:
    """Whether one phrase is found at each k: one of its `ranked` boxes (n, 4, best first) within the first k
    has IoU >= `iou` with a `gold` box (m, 4); `merged`: with the gold boxes' enclosing box."""
    if merged and len(gold) > 1:
        gold = np.concatenate([gold[:, :2].min(0), gold[:, 2:].max(0)])[None]
    ok = (iou_matrix(ranked.astype(np.float64), gold) >= iou).any(1) if len(ranked) and len(gold) else np.zeros(0, bool)
    return {k: bool(ok[:k].any()) for k in ks}


def recall_at_k(ranked: list[list[np.ndarray]], items: list[GroundingItem], ks=(1, 5, 10), iou: float = 0.5) -> dict:
    """Flickr30k recall@k of per-phrase ranked boxes (``ranked[i][p]``: item i's phrase p, (n, 4) best
    first): ``R@k`` any-box and ``R@k_merged`` merged-box, over every phrase with gold boxes."""
    hits = {(k, m): 0 for k in ks for m in (False, True)}
    total = 0
    for boxes_of, it in zip(ranked, items):
        for mine, gold in zip(boxes_of, it.boxes):
            total += 1
            for m in (False, True):
                for k, ok in phrase_hits(mine, gold, ks, iou, merged=m).items():
                    hits[k, m] += ok
    out = {f"R@{k}{'_merged' if m else ''}": (hits[k, m] / total if total else None) for k, m in hits}
    return {**{k: out[k] for k in sorted(out, key=lambda s: ("merged" in s, len(s), s))}, "phrases": total}


def rec_accuracy(top_boxes: list[np.ndarray | None], gold: list[np.ndarray], iou: float = 0.5) -> dict:
    """RefCOCO accuracy: the share of expressions whose top box (4,) (None: no box) has IoU >= `iou` with
    their gold box (4,)."""
    ok = [b is not None and iou_matrix(np.asarray(b, np.float64)[None], np.asarray(g, np.float64).reshape(1, 4))[0, 0] >= iou
          for b, g in zip(top_boxes, gold)]
    return {"accuracy": (sum(ok) / len(ok)) if ok else None, "expressions": len(ok)}


def _ground(detector, image, item: GroundingItem):
    """Detections for an item's phrases: ``detector.ground(image, caption, spans)`` when the detector has it,
    the caption prompt with every query under every phrase for a GroundingDetector (has ``propose``:
    `eval_queries.phrase_detections`), else ``detect`` with the phrase texts."""
    if hasattr(detector, "ground"):
        return detector.ground(image, item.caption, item.spans)
    if hasattr(detector, "propose"):
        from detector.eval_queries import phrase_detections

        return phrase_detections(detector, image, item.caption, item.spans)
    return detector.detect([image], [[item.caption[s:e] for s, e in item.spans]])[0]


def _ranked(det, n_phrases: int) -> list[np.ndarray]:
    order = np.argsort(-det.scores, kind="stable")
    boxes, phrase = det.boxes[order], det.phrase[order]
    return [boxes[phrase == j] for j in range(n_phrases)]


def _run(detector, gold: str | os.PathLike, image_root, max_items: int | None):
    items, root = load_grounding_gold(gold, max_items)
    if not items:
        raise EvaluationError(f"{gold}: no caption with gold phrase boxes to evaluate")
    root = image_root or root
    for it in items:
        try:
            image = decode_image(read_image_bytes(root, it.file_name), it.key)
        except ImageError as e:
            log.warning("%s: left out of the evaluation: %s", it.key, e)
            continue
        yield it, _ground(detector, image, it)


def flickr30k_recall(detector, gold: str | os.PathLike, *, image_root: str | os.PathLike | None = None,
                     ks=(1, 5, 10), iou: float = 0.5, max_items: int | None = None) -> dict:
    """Flickr30k Entities recall@k (any-box and merged-box) of `detector` on a grounding gold."""
    done = list(_run(detector, gold, image_root, max_items))
    out = recall_at_k([_ranked(det, len(it.spans)) for it, det in done], [it for it, _ in done], ks, iou)
    return {"protocol": "flickr30k", **out, "captions": len(done)}


def refcoco_accuracy(detector, gold: str | os.PathLike, *, image_root: str | os.PathLike | None = None,
                     iou: float = 0.5, max_items: int | None = None) -> dict:
    """RefCOCO/+/g accuracy@0.5 of `detector`: each expression (the caption) is one phrase over the whole
    caption when the gold gives no span; its gold box is the first gold box."""
    tops, golds = [], []
    for it, det in _run(detector, gold, image_root, max_items):
        best = np.argsort(-det.scores, kind="stable")[:1]
        tops.append(det.boxes[best[0]] if len(best) else None)
        golds.append(it.boxes[0][0])
    return {"protocol": "refcoco", **rec_accuracy(tops, golds, iou)}
