"""ODVG JSON lines + label map, as MMDetection's ``ODVGDataset`` (and Open-GroundingDino) read them.

OD:  {"filename", "height", "width", "detection": {"instances": [{"bbox", "label", "category"}]}}
VG:  {"filename", "height", "width", "grounding": {"caption", "regions": [{"bbox", "phrase", "tokens_positive"}]}}
Pseudo regions add "score". Boxes are absolute xyxy pixels. Written by duckdb, streaming, in record order.
Crowd and ignore regions (`formats.schema.IGNORE_ORIGINS`) are never written: ODVG is read for training.
"""

from __future__ import annotations

import os
from pathlib import Path

from formats import schema as S
from formats.dataset import Dataset, atomic_path, atomic_write_json
from formats.export.images import register_export_records
from formats.query import connect


def default_label_map_path(out: str | os.PathLike) -> Path:
    """``train.jsonl`` -> ``train.label_map.json`` beside it."""
    out = Path(out)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.stem
    return out.with_name(f"{stem}.label_map.json")


def export_odvg(dataset_dir: str | os.PathLike, out: str | os.PathLike, label_map: str | os.PathLike | None = None,
                *, images_dir: str | os.PathLike | None = None, tar_paths: bool = False,
                keep_empty: bool = False) -> dict:
    """Writes the dataset as ODVG JSON lines (and, for OD data, the label map); returns what was written.

    `images_dir`: write images kept inside img2dataset shards there and name them relative to it
    (`formats.export.images`); without it such datasets are refused unless `tar_paths`.
    VG records without regions are left out (Open-GroundingDino's ODVG reader raises on ``"regions": []``)
    and counted as ``left_out_empty``, unless `keep_empty`."""
    ds = Dataset(dataset_dir).require_complete()
    con = connect()
    leave_out_empty = ds.manifest.kind == "vg" and not keep_empty
    trained = f"list_filter(coalesce(regions, []), lambda r: r.origin IN {S.TRAIN_ORIGINS})"
    where = f"WHERE len({trained}) > 0" if leave_out_empty else ""
    image_counts = register_export_records(con, ds, images_dir, tar_paths=tar_paths, where=where)  # their images only
    score = ", 'score': r.score" if ds.has_scores else ""
    if ds.manifest.kind == "od":
        inner = f"{{'bbox': r.bbox, 'label': r.label, 'category': r.category{score}}}"
        body = f"{{'instances': list_transform({trained}, lambda r: {inner})}} AS detection"
    else:
        inner = f"{{'bbox': r.bbox, 'phrase': r.phrase, 'tokens_positive': r.tokens_positive{score}}}"
        body = f"{{'caption': caption, 'regions': list_transform({trained}, lambda r: {inner})}} AS grounding"
    left_out = 0
    if leave_out_empty:
        left_out = con.execute(f"SELECT count(*) FROM records WHERE len({trained}) = 0").fetchall()[0][0]
    out = Path(out)
    with atomic_path(out) as tmp:
        con.execute(f"""COPY (SELECT file_name AS filename, height, width, {body} FROM records {where})
                        TO '{tmp}' (FORMAT JSON)""")
    result = {"records": out, "lines": ds.manifest.totals()["images"] - left_out, **image_counts}
    if ds.manifest.kind == "vg":
        result["left_out_empty"] = left_out
    if ds.manifest.kind == "od":
        lm = Path(label_map) if label_map else default_label_map_path(out)
        atomic_write_json(lm, ds.manifest.label_map())
        result["label_map"] = lm
    return result
