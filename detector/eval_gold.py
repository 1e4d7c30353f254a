"""Gold sets and detection files for evaluation, in the shape the reference tools read.

A gold set is either the original COCO / LVIS annotation JSON (used as is: the reference tools score against
that file) or an ovlabel dataset directory, rebuilt into a COCO dict with what the converter kept (format
version 2, docs/format.md): the source's image ids (column ``source_image_id``) and category ids
(`Manifest.category_ids`), the category fields `export coco` writes too (LVIS ``frequency``, ...), crowd /
ignore regions (origins ``crowd`` / ``ignore``, both scored as ``iscrowd``: never a false negative, a
detection on one is no false positive), each annotation's own ``area``, ``coco_url`` and LVIS's per-image
``neg_category_ids`` / ``not_exhaustive_category_ids`` (stored as labels, mapped back to category ids).
Datasets without ``source_image_id`` (version 1, or not converted from a COCO-format file) take the image id
from ``image_id`` = ``<source>/<integer>`` when every record's is one and they are distinct, else 1..N in
record order (two images never share an id); version-1 areas come from the box.

Detections are COCO results: ``[{"image_id", "category_id", "bbox": [x, y, w, h] pixels, "score"}]``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from formats.boxes import xyxy_to_xywh
from formats.dataset import Dataset
from formats.export.coco import od_categories
from formats.schema import GOLD_ORIGINS, IGNORE_ORIGINS


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


def _image_ids(rows: list[dict], source_ids: bool) -> list:
    """The COCO image id of each record: the source's (``source_image_id``, type kept) when every record has
    one (as `export coco` writes them); else, when every ``image_id`` ends in ``/<integer>`` and those integers
    are distinct (a version-1 COCO conversion), those integers; else 1..N in record order. Two records never
    share an id."""
    if source_ids and all(r.get("source_image_id") is not None for r in rows):
        return [json.loads(r["source_image_id"]) for r in rows]
    tails = [str(r["image_id"]).rsplit("/", 1)[-1] for r in rows]
    if all(t.isdecimal() for t in tails):
        ints = [int(t) for t in tails]
        if len(set(ints)) == len(ints):
            return ints
    return list(range(1, len(rows) + 1))


def dataset_to_coco(dataset_dir: str | os.PathLike) -> dict:
    """A COCO dict of a gold OD dataset directory (see the module docstring for the fields kept).

    Image entries also carry ``ovlabel_id`` (the dataset's `image_id`) so detections can be keyed back.
    Raises `EvaluationError` for a VG (grounding) dataset: detection AP needs an OD dataset.
    """
    ds = Dataset(dataset_dir).require_complete()
    m = ds.manifest
    if m.kind != "od":
        raise EvaluationError(f"{dataset_dir}: detection AP needs a detection (OD) dataset, not {m.kind!r}")
    cat_id = m.category_ids()
    gt: dict = {"images": [], "annotations": [], "categories": od_categories(m)}
    rows = [row for table in ds.iter_tables() for row in table.to_pylist()]
    for row, k in zip(rows, _image_ids(rows, "source_image_id" in m.extra_columns)):
        im = {"id": k, "width": row["width"], "height": row["height"], "file_name": row["file_name"],
              "ovlabel_id": row["image_id"]}
        if row.get("coco_url") is not None:
            im["coco_url"] = row["coco_url"]
        for col, key in (("neg_labels", "neg_category_ids"), ("not_exhaustive_labels", "not_exhaustive_category_ids")):
            if row.get(col) is not None:
                im[key] = [cat_id[int(x)] for x in row[col]]
        gt["images"].append(im)
        for g in row["regions"] or []:
            ann = _region_annotation(g, k, cat_id)
            if ann is not None:
                ann["id"] = len(gt["annotations"]) + 1
                gt["annotations"].append(ann)
    return gt


def _region_annotation(g: dict, image_id, cat_id: dict[int, int]) -> dict | None:
    """A gold, reviewed, crowd or ignore region as a COCO annotation (the last two ``iscrowd: 1``); else None."""
    crowd = g.get("origin") in IGNORE_ORIGINS
    if (g.get("origin") not in GOLD_ORIGINS and not crowd) or g.get("label") is None:
        return None
    bbox = xyxy_to_xywh(g["bbox"])[0].tolist()
    area = g.get("area")
    return {"image_id": image_id, "category_id": cat_id[int(g["label"])], "bbox": bbox,
            "area": float(area) if area is not None else bbox[2] * bbox[3], "iscrowd": int(crowd)}


def load_detections(path: str | os.PathLike) -> list[dict]:
    """A COCO results JSON file: a list of ``{image_id, category_id, bbox [x, y, w, h], score}``.

    Raises `EvaluationError` when the file is unreadable or not JSON, not a list, or an entry lacks or
    mistypes a field."""
    p = Path(path)
    try:
        dets = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EvaluationError(f"{p}: not a COCO results file: {e}") from None
    if not isinstance(dets, list) or any(not isinstance(d, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(d)
                                         for d in dets):
        raise EvaluationError(f"{p}: a COCO results file is a list of {{image_id, category_id, bbox, score}}")
    for k, d in enumerate(dets):
        reason = _result_entry_error(d)
        if reason:
            raise EvaluationError(f"{p}: results[{k}]: {reason}")
    return dets


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integral(v) -> bool:
    return _number(v) and float(v).is_integer()


def _result_entry_error(d: dict) -> str | None:
    """Why a COCO results entry cannot be scored (the reference tools crash or mis-index on it), else None."""
    if not (_integral(d["image_id"]) or isinstance(d["image_id"], str)):
        return f"image_id is not an integer or a string: {d['image_id']!r}"
    if not _integral(d["category_id"]):
        return f"category_id is not an integer: {d['category_id']!r}"
    if not (isinstance(d["bbox"], list) and len(d["bbox"]) == 4 and all(_number(v) for v in d["bbox"])):
        return f"bbox is not 4 finite numbers: {d['bbox']!r}"
    if not _number(d["score"]):
        return f"score is not a finite number: {d['score']!r}"
    return None


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
