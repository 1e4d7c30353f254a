"""Gold sets and detection files for evaluation, in the shape the reference tools read.

A gold set is either the original COCO / LVIS annotation JSON (used as is: the reference tools score against
that file) or an ovlabel dataset directory, rebuilt into a COCO dict that keeps what evaluation needs when
the dataset carries it: the source's image and category ids, crowd / ignore regions, the annotation's own
area, LVIS's category `frequency` and per-image `neg_category_ids` / `not_exhaustive_category_ids`
(region fields, extra columns or manifest fields that older datasets lack: then ids are parsed from
``image_id`` = ``<source>/<id>`` or numbered 1..N, areas come from the box, nothing is a crowd).

Detections are COCO results: ``[{"image_id", "category_id", "bbox": [x, y, w, h] pixels, "score"}]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from formats.dataset import Dataset

CROWD_ORIGINS = ("crowd", "ignore")  # region origins of ignore regions (issue 15 item 1 may add them)
GOLD_ORIGINS = ("gold", "review")


class EvaluationError(ValueError):
    """Gold and predictions that cannot be scored together (the message names both)."""


def is_lvis(gt: dict) -> bool:
    """True when the gold is federated (LVIS): images list verified-absent categories."""
    return bool(gt.get("images")) and all("neg_category_ids" in im for im in gt["images"])


def load_gold(path: str | os.PathLike) -> dict:
    """A COCO dict from a COCO/LVIS JSON file (as is) or an ovlabel OD dataset directory.

    Raises `EvaluationError` when `path` is neither, or the dataset is not a detection (OD) set.
    """
    p = Path(path)
    if p.is_file():
        try:
            gt = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise EvaluationError(f"{p}: not a COCO annotation file: {e}") from None
        if not isinstance(gt, dict) or not {"images", "annotations", "categories"} <= set(gt):
            raise EvaluationError(f"{p}: not a COCO annotation file (needs images, annotations, categories)")
        return gt
    if not p.is_dir():
        raise EvaluationError(f"{p}: no such gold file or dataset directory")
    return dataset_to_coco(p)


def _source_image_id(row: dict, k: int, taken: set[int]) -> int:
    """The source's integer image id: an extra column when present, else the `<source>/<id>` suffix, else k."""
    for key in ("source_image_id", "source_id", "coco_id"):
        v = row.get(key)
        if isinstance(v, int) and v not in taken:
            return v
    tail = str(row["image_id"]).rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() and int(tail) not in taken else k


def dataset_to_coco(dataset_dir: str | os.PathLike) -> dict:
    """A COCO dict of a gold OD dataset directory (see the module docstring for the fields kept).

    Image entries also carry ``ovlabel_id`` (the dataset's `image_id`) so detections can be keyed back.
    """
    ds = Dataset(dataset_dir).require_complete()
    m = ds.manifest
    if m.kind != "od":
        raise EvaluationError(f"{dataset_dir}: detection AP needs a detection (OD) dataset, not {m.kind!r}")
    cat_id = {c["label"]: int(c.get("id", c["label"] + 1)) for c in m.categories}
    if len(set(cat_id.values())) != len(cat_id):  # source ids missing or clashing: number by label
        cat_id = {c["label"]: c["label"] + 1 for c in m.categories}
    cats = []
    for c in m.categories:
        entry = {"id": cat_id[c["label"]], "name": c["name"]}
        for k in ("frequency", "synonyms", "image_count", "instance_count"):
            if k in c:
                entry[k] = c[k]
        cats.append(entry)
    gt: dict = {"images": [], "annotations": [], "categories": cats}
    taken: set[int] = set()
    for path in ds.part_paths:
        for row in pq.read_table(path).to_pylist():
            k = _source_image_id(row, len(gt["images"]) + 1, taken)
            taken.add(k)
            im = {"id": k, "width": row["width"], "height": row["height"], "file_name": row["file_name"],
                  "ovlabel_id": row["image_id"]}
            for key in ("coco_url", "neg_category_ids", "not_exhaustive_category_ids"):
                if row.get(key) is not None:
                    im[key] = list(row[key]) if isinstance(row[key], list) else row[key]
            gt["images"].append(im)
            for g in row["regions"] or []:
                ann = _region_annotation(g, k, cat_id)
                if ann is not None:
                    ann["id"] = len(gt["annotations"]) + 1
                    gt["annotations"].append(ann)
    return gt


def _region_annotation(g: dict, image_id: int, cat_id: dict[int, int]) -> dict | None:
    crowd = g.get("origin") in CROWD_ORIGINS or bool(g.get("iscrowd"))
    if (g.get("origin") not in GOLD_ORIGINS and not crowd) or g.get("label") is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in g["bbox"])
    area = g.get("area")
    return {"image_id": image_id, "category_id": cat_id[int(g["label"])], "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": float(area) if area is not None else (x2 - x1) * (y2 - y1), "iscrowd": int(crowd)}


def load_detections(path: str | os.PathLike) -> list[dict]:
    """A COCO results JSON file: a list of ``{image_id, category_id, bbox [x, y, w, h], score}``."""
    p = Path(path)
    try:
        dets = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EvaluationError(f"{p}: not a COCO results file: {e}") from None
    if not isinstance(dets, list) or any(not {"image_id", "category_id", "bbox", "score"} <= set(d) for d in dets):
        raise EvaluationError(f"{p}: a COCO results file is a list of {{image_id, category_id, bbox, score}}")
    return dets


def check_shared_images(gt: dict, dets: list[dict], gold_name: str, pred_name: str) -> None:
    """Raises `EvaluationError` naming both sides when no detection is on a gold image (never a zero AP)."""
    gold_ids = {im["id"] for im in gt["images"]}
    if dets and not gold_ids & {d["image_id"] for d in dets}:
        raise EvaluationError(f"{pred_name} shares no image with the gold set {gold_name} "
                              f"({len(gold_ids)} gold images, {len(dets)} detections on other image ids)")
    unknown = {d["image_id"] for d in dets} - gold_ids
    if unknown:
        raise EvaluationError(f"{pred_name} has detections on {len(unknown)} images not in {gold_name} "
                              f"(e.g. image_id {sorted(unknown, key=str)[0]!r})")
