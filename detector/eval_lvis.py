"""LVIS box AP: federated evaluation (APr/APc/APf, 300 detections per image) and Fixed AP, computed by
faster-coco-eval's LVIS mode (``lvis_style=True``), checked in the tests against the LVIS API.

Sources: Gupta et al., "LVIS: A Dataset for Large Vocabulary Instance Segmentation" (CVPR 2019) and the LVIS
API (lvis-dataset/lvis-api, ``lvis/eval.py``, ``lvis/results.py``): per image only categories verified present
(gold boxes) or absent (``neg_category_ids``) are scored; unmatched detections of ``not_exhaustive_category_ids``
are ignored; the top 300 detections per image are kept when results are loaded; APr/APc/APf average the
categories whose ``frequency`` is r/c/f. Fixed AP: Dave et al., "Evaluating Large-Vocabulary Object Detectors:
The Devil is in the Details" (2021), ``achalddave/large-vocab-devil/scripts/evaluate_ap_fixed.py``: the top
10,000 detections per category over the whole set, no per-image cap (as MM-Grounding-DINO and GLIP report
LVIS minival).
"""

from __future__ import annotations

import logging
from collections import defaultdict

from detector.eval_coco import index_image_ids

log = logging.getLogger("ovlabel.evaluate")

LVIS_MAX_DETS = 300
FIXED_PER_CLASS = 10_000


def top_per_image(dets: list[dict], k: int) -> list[dict]:
    """The `k` highest-scoring detections of every image (LVISResults' ``max_dets``; stable on ties)."""
    by_image: dict = defaultdict(list)
    for d in dets:
        by_image[d["image_id"]].append(d)
    return [d for lst in by_image.values() for d in sorted(lst, key=lambda d: -d["score"])[:k]]


def top_per_class(dets: list[dict], k: int) -> list[dict]:
    """The `k` highest-scoring detections of every category over all images (Fixed AP)."""
    by_cat: dict = defaultdict(list)
    for d in dets:
        by_cat[d["category_id"]].append(d)
    return [d for lst in by_cat.values() for d in sorted(lst, key=lambda d: -d["score"])[:k]]


def _with_lvis_fields(gt: dict) -> tuple[dict, bool]:
    """`gt` with the fields LVIS mode reads; missing ones get neutral values. Returns (gt, frequencies known).

    Images without ``neg_category_ids`` / ``not_exhaustive_category_ids`` get empty lists (then only
    categories with gold boxes in an image are scored there); categories without ``frequency`` take it from
    ``image_count`` (r < 10 <= c < 100 <= f, LVIS's bins) or, failing that, APr/APc/APf are not reported.
    """
    known = True
    cats = []
    for c in gt["categories"]:
        c = dict(c)
        if "frequency" not in c:
            n = c.get("image_count")
            known = known and n is not None
            c["frequency"] = "f" if n is None else ("r" if n < 10 else "c" if n < 100 else "f")
        cats.append(c)
    images = [{"neg_category_ids": [], "not_exhaustive_category_ids": [], **im} for im in gt["images"]]
    return {**gt, "images": images, "categories": cats}, known


def lvis_metrics(gt: dict, dets: list[dict], *, fixed: bool = False, max_dets: int = LVIS_MAX_DETS,
                 per_class: int = FIXED_PER_CLASS) -> dict:
    """LVIS box AP of COCO results `dets` on the LVIS-style COCO dict `gt`.

    ``fixed=False``: the LVIS API's protocol (top `max_dets` per image). ``fixed=True``: Fixed AP (top
    `per_class` per category, no image cap). Returns AP, AP50, AP75, APs/APm/APl, APr/APc/APf, AR (None where
    undefined, e.g. no rare category in the gold), plus counts. Equal to ``lvis.LVISEval`` to 1e-6.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    gt, freq_known = _with_lvis_fields(gt)
    gt, dets = index_image_ids(gt, dets)
    kept = top_per_class(dets, per_class) if fixed else top_per_image(dets, max_dets)
    counts = {"images": len(gt["images"]), "gt_boxes": len(gt["annotations"]), "detections": len(kept)}
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR")
    if not kept or not gt["annotations"]:
        return {**{n: 0.0 for n in names}, **counts}
    coco = COCO(gt, print_function=log.debug)
    res = coco.loadRes([dict(d) for d in kept])
    ev = COCOeval_faster(coco, res, "bbox", lvis_style=True, print_function=log.debug)
    ev.params.maxDets = [per_class if fixed else max_dets]  # per (image, category); the caps above are the rule
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    s = ev.stats_as_dict
    keys = {"AP": "AP_all", "AP50": "AP_50", "AP75": "AP_75", "APs": "AP_small", "APm": "AP_medium",
            "APl": "AP_large", "APr": "APr", "APc": "APc", "APf": "APf", "AR": "AR_all"}
    out = {n: (float(s[k]) if s[k] >= 0 else None) for n, k in keys.items()}
    if not freq_known:
        out["APr"] = out["APc"] = out["APf"] = None
    return {**out, **counts}
