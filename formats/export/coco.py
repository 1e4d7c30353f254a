"""COCO JSON that pycocotools loads: xywh boxes, 1-based category ids (label + 1), ``score`` on pseudo boxes.

VG datasets export in the CC3M-Lite style YOLO-World reads (``YOLOv5MixedGroundingDataset`` and
``YOLOv5GeneralGroundingDataset``): images carry ``caption``; annotations carry ``tokens`` (the phrase)
and ``tokens_positive`` (its character spans); one category per distinct phrase.
Images and annotations are written by duckdb as JSON arrays and joined into one object on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from formats.dataset import Dataset, atomic_path
from formats.export.images import register_export_records
from formats.phrase_rules import phrase_key
from formats.query import connect


def coco_categories(ds: Dataset, con) -> list[dict]:
    """COCO categories: the label map (id = label + 1) for OD data, one per distinct phrase for VG data
    (`phrase_categories`: texts that differ only in case or whitespace are one category)."""
    if ds.manifest.kind == "od":
        out = []
        for c in ds.manifest.categories:
            entry = {"id": int(c["label"]) + 1, "name": c["name"]}
            for k in ("synonyms", "def", "supercategory"):
                if k in c:
                    entry[k] = c[k]
            out.append(entry)
        return out
    return phrase_categories(con)[0]


def phrase_categories(con) -> tuple[list[dict], dict[str, int]]:
    """VG categories, one per `phrase_key` (case folded, whitespace collapsed), named by the first text seen
    (record order, then region order; ids in name order), and each phrase text's category id.

    `con` has the view ``records`` with ``_ord`` (`register_records(..., with_order=True)`).
    """
    rows = con.execute("""
        WITH b AS (SELECT _ord, generate_subscripts(regions, 1) AS k, unnest(regions) AS r FROM records)
        SELECT r.phrase, min(_ord::HUGEINT * 4294967296 + k) AS first FROM b
        WHERE r.phrase IS NOT NULL GROUP BY 1 ORDER BY 2, 1""").fetchall()
    name: dict[str, str] = {}
    for text, _ in rows:
        name.setdefault(phrase_key(text), text)
    ids = {n: i + 1 for i, n in enumerate(sorted(name.values()))}
    return [{"id": i, "name": n} for n, i in ids.items()], {t: ids[name[phrase_key(t)]] for t, _ in rows}


def export_coco(dataset_dir: str | os.PathLike, out: str | os.PathLike, *,
                images_dir: str | os.PathLike | None = None, tar_paths: bool = False) -> dict:
    """Writes the dataset as one COCO JSON file; returns counts.

    `images_dir`: write images kept inside img2dataset shards there and name them relative to it
    (`formats.export.images`); without it such datasets are refused unless `tar_paths`."""
    ds = Dataset(dataset_dir).require_complete()
    con = connect()
    image_counts = register_export_records(con, ds, images_dir, with_order=True, tar_paths=tar_paths)
    vg = ds.manifest.kind == "vg"
    cats = coco_categories(ds, con)
    extra_img = ""
    cols = set(ds.manifest.extra_columns)
    if "neg_labels" in cols:
        extra_img += ", list_transform(neg_labels, lambda x: x + 1) AS neg_category_ids"
    if "not_exhaustive_labels" in cols:
        extra_img += ", list_transform(not_exhaustive_labels, lambda x: x + 1) AS not_exhaustive_category_ids"
    if vg:
        extra_img += ", caption"
    if vg:
        cats, text_ids = phrase_categories(con)  # twins in case/whitespace share their category
        con.execute("CREATE TEMP TABLE phrase_ids AS SELECT unnest($1::VARCHAR[]) AS phrase, "
                    "unnest($2::BIGINT[]) AS cid", [list(text_ids), list(text_ids.values())])
        category = "p.cid"
        join = "LEFT JOIN phrase_ids p ON p.phrase = b.r.phrase"
        extra_ann = ", b.r.phrase AS tokens, b.r.tokens_positive AS tokens_positive"
    else:
        category, join, extra_ann = "b.r.label + 1", "", ""
    if ds.has_scores:
        extra_ann += ", b.r.score AS score"
    with tempfile.TemporaryDirectory(dir=Path(out).parent) as tmp:
        images, anns = Path(tmp) / "images.json", Path(tmp) / "annotations.json"
        con.execute(f"""COPY (SELECT _ord + 1 AS id, file_name, width, height{extra_img}, image_id AS ovlabel_id
                              FROM records ORDER BY _ord) TO '{images}' (FORMAT JSON, ARRAY true)""")
        con.execute(f"""COPY (
            WITH b AS (SELECT _ord, generate_subscripts(regions, 1) AS k, unnest(regions) AS r FROM records)
            SELECT row_number() OVER (ORDER BY b._ord, b.k) AS id, b._ord + 1 AS image_id, {category} AS category_id,
                   [b.r.bbox[1], b.r.bbox[2], b.r.bbox[3] - b.r.bbox[1], b.r.bbox[4] - b.r.bbox[2]] AS bbox,
                   (b.r.bbox[3] - b.r.bbox[1]) * (b.r.bbox[4] - b.r.bbox[2]) AS area, 0 AS iscrowd{extra_ann}
            FROM b {join} ORDER BY id) TO '{anns}' (FORMAT JSON, ARRAY true)""")
        info = {"description": f"ovlabel export of {ds.root.name}", "source": ds.manifest.source,
                "kind": ds.manifest.kind}
        with atomic_path(out) as final, open(final, "wb") as f:
            f.write(b'{"info": ' + json.dumps(info).encode() + b', "licenses": [], "categories": ')
            f.write(json.dumps(cats, ensure_ascii=False).encode())
            for key, path in ((b"images", images), (b"annotations", anns)):
                f.write(b', "' + key + b'": ')
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, f, 16 << 20)
            f.write(b"}\n")
    totals = ds.manifest.totals()
    return {"file": Path(out), "images": totals["images"], "annotations": totals["boxes"], "categories": len(cats),
            **image_counts}
