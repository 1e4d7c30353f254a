"""ODVG JSON lines + label map, as MMDetection's ``ODVGDataset`` (and Open-GroundingDino) read them.

OD:  {"filename", "height", "width", "detection": {"instances": [{"bbox", "label", "category"}]}}
VG:  {"filename", "height", "width", "grounding": {"caption", "regions": [{"bbox", "phrase", "tokens_positive"}]}}
Pseudo regions add "score". Boxes are absolute xyxy pixels. Written by duckdb, streaming, in record order.
Crowd and ignore regions (`formats.schema.IGNORE_ORIGINS`) are never written: ODVG is read for training.
The dataset and the output files may be local or on an object store (`formats.storage`: ``s3://``, ``gs://``).
"""

from __future__ import annotations

import os
from pathlib import Path

from formats import schema as S
from formats.dataset import Dataset, atomic_path, atomic_write_json
from formats.export.images import register_export_records
from formats.query import connect
from formats.storage import shown, sibling, split_location


def _beside(out: str | os.PathLike, suffix: str) -> Path | str:
    """``train.jsonl`` -> ``train<suffix>`` beside it (a URL beside a URL)."""
    name = split_location(out)[1]
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else Path(name).stem
    return sibling(out, f"{stem}{suffix}")


def default_label_map_path(out: str | os.PathLike) -> Path | str:
    """``train.jsonl`` -> ``train.label_map.json`` beside it."""
    return _beside(out, ".label_map.json")


def default_od_path(out: str | os.PathLike) -> Path | str:
    """``train.jsonl`` -> ``train.od.jsonl`` beside it: the OD view of a VG dataset with a label map."""
    return _beside(out, ".od.jsonl")


def export_odvg(dataset_dir: str | os.PathLike, out: str | os.PathLike, label_map: str | os.PathLike | None = None,
                *, images_dir: str | os.PathLike | None = None, tar_paths: bool = False,
                keep_empty: bool = False) -> dict:
    """Writes the dataset as ODVG JSON lines (and, for OD data, the label map); returns what was written.

    `images_dir`: write images kept inside img2dataset shards there and name them relative to it
    (`formats.export.images`); without it such datasets are refused unless `tar_paths`.
    VG records without regions are left out (Open-GroundingDino's ODVG reader raises on ``"regions": []``)
    and counted as ``left_out_empty``, unless `keep_empty`.

    A VG dataset with a label map (the vocabulary union of ``ovlabel pseudo --classes`` on captions) holds two
    views, and MMDetection's ``ODVGDataset`` reads one mode per file (OD when given a label map): OUT gets the
    VG lines (every region with caption spans), ``<stem>.od.jsonl`` (`default_od_path`) the OD lines (every
    region of a class, spans or not: an OD image's boxes are all its boxes of the label map's classes) with the
    label map beside it. Regions of a class that are no phrase of the caption are in the OD view only; images
    without any class region are left out of the OD view (counted as ``od_left_out_empty``)."""
    ds = Dataset(dataset_dir).require_complete()
    m = ds.manifest
    if m.kind == "od":
        return _export_view(ds, out, "od", images_dir, tar_paths, keep_empty, label_map)
    result = _export_view(ds, out, "vg", images_dir, tar_paths, keep_empty, None)
    if m.categories and _has_class_regions(ds):
        od = _export_view(ds, default_od_path(out), "od", images_dir, tar_paths, keep_empty, label_map)
        result |= {f"od_{k}": v for k, v in od.items() if k in ("records", "lines", "label_map", "left_out_empty")}
    return result


def _has_class_regions(ds: Dataset) -> bool:
    con = connect()
    register_export_records(con, ds, None, tar_paths=True)
    return bool(con.execute("SELECT 1 FROM (SELECT unnest(regions) AS r FROM records) WHERE r.label IS NOT NULL "
                            "LIMIT 1").fetchall())


def _export_view(ds: Dataset, out: str | os.PathLike, view: str, images_dir, tar_paths: bool, keep_empty: bool,
                 label_map) -> dict:
    """The OD or VG lines of `ds` (OD: regions with a label; VG: regions with a phrase) into `out`."""
    con = connect()
    pick = "r.label IS NOT NULL" if view == "od" else "r.phrase IS NOT NULL"
    trained = f"list_filter(coalesce(regions, []), lambda r: r.origin IN {S.TRAIN_ORIGINS} AND {pick})"
    leave_out = (view == "vg" or ds.manifest.kind == "vg") and not keep_empty
    where = f"WHERE len({trained}) > 0" if leave_out else ""
    image_counts = register_export_records(con, ds, images_dir, tar_paths=tar_paths, where=where)  # their images only
    score = ", 'score': r.score" if ds.has_scores else ""
    if view == "od":
        inner = f"{{'bbox': r.bbox, 'label': r.label, 'category': r.category{score}}}"
        body = f"{{'instances': list_transform({trained}, lambda r: {inner})}} AS detection"
    else:
        inner = f"{{'bbox': r.bbox, 'phrase': r.phrase, 'tokens_positive': r.tokens_positive{score}}}"
        body = f"{{'caption': caption, 'regions': list_transform({trained}, lambda r: {inner})}} AS grounding"
    left_out = 0
    if leave_out:
        left_out = con.execute(f"SELECT count(*) FROM records WHERE len({trained}) = 0").fetchall()[0][0]
    with atomic_path(out) as tmp:
        con.execute(f"""COPY (SELECT file_name AS filename, height, width, {body} FROM records {where})
                        TO '{tmp}' (FORMAT JSON)""")
    result = {"records": shown(out), "lines": ds.manifest.totals()["images"] - left_out, **image_counts}
    if view == "vg" or ds.manifest.kind == "vg":
        result["left_out_empty"] = left_out
    if view == "od":
        lm = label_map or default_label_map_path(out)
        atomic_write_json(lm, ds.manifest.label_map())
        result["label_map"] = shown(lm)
    return result
