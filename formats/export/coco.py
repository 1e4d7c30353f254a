"""COCO JSON that pycocotools and the LVIS API load: xywh boxes, ``score`` on pseudo boxes.

A conversion of a COCO-format file (COCO, LVIS, Objects365, V3Det, custom) is written back with the source's
ids and the fields evaluation reads, so the export of an unmodified conversion scores like the original
file: image ids as the source wrote them (``source_image_id``: integers stay integers, ``"03"`` stays a
string), category ids as in the source (`Manifest.category_ids`), each category's kept fields (LVIS
``frequency``, ``synonyms``, ``def``, ``synset``, counts; COCO ``supercategory``), ``coco_url``, LVIS
``neg_category_ids`` / ``not_exhaustive_category_ids``, crowd regions as ``iscrowd: 1``, ignore regions as
``ignore: 1``, and each annotation's own ``area`` (else the box's, px²). Datasets without source ids
(pseudo-labeled captions, Open Images) number images 1..N in record order and categories ``label + 1``.
Optional image keys (``coco_url``, ``neg_category_ids``, ``not_exhaustive_category_ids``) are left out of an
image that has no value, as in the source file, never written as ``null``.

Annotation ids (`annotation_ids`): each region's source annotation id (region ``source_id``: ``5678`` stays an
integer, ``"a-17"`` a string) when the exported source ids are distinct; regions without one (pseudo boxes,
reviewers' edits) are numbered after the largest integer id (0 when none), in record and region order, so no
two annotations share an id. When two exported regions have the same source id (a dataset merged from files
whose ids overlap), every annotation is numbered 1..N in record and region order.

VG datasets export in the CC3M-Lite style YOLO-World reads (``YOLOv5MixedGroundingDataset`` and
``YOLOv5GeneralGroundingDataset``): images carry ``caption``; annotations carry ``tokens`` (the phrase)
and ``tokens_positive`` (its character spans); one category per distinct phrase.
Images and annotations are written by duckdb as JSON arrays and joined into one object on disk. The dataset and
the output file may be local or on an object store (`formats.storage`: ``s3://``, ``gs://``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from formats.dataset import Dataset, Manifest, atomic_path
from formats.export.images import register_export_records
from formats.phrase_rules import phrase_key
from formats.query import connect
from formats.storage import is_url, shown


def coco_categories(ds: Dataset, con) -> list[dict]:
    """COCO categories: the label map (the source's category ids, `Manifest.category_ids`, with the fields the
    manifest kept) for OD data, `vg_categories` for VG data."""
    if ds.manifest.kind == "od":
        return od_categories(ds.manifest)
    return vg_categories(ds, con)[0]


def od_categories(manifest: Manifest) -> list[dict]:
    """The label map as COCO categories: the source's ids (`Manifest.category_ids`), name, and every field the
    converter kept (LVIS ``frequency``/``synonyms``/``def``/``synset``/counts, COCO ``supercategory``)."""
    ids = manifest.category_ids()
    return [{"id": ids[int(c["label"])], "name": c["name"],
             **{k: v for k, v in c.items() if k not in ("label", "id", "name")}} for c in manifest.categories]


def vg_categories(ds: Dataset, con) -> tuple[list[dict], dict[str, int]]:
    """VG categories and each phrase text's category id: one per distinct phrase (`phrase_categories`). A VG
    dataset with a label map (pseudo labels of the vocabulary union: `ovlabel pseudo --classes` on captions)
    lists its classes first, with their OD ids (`od_categories`); a phrase that is one of a class's texts (name
    or synonym, by `phrase_key`) is that class, the other phrases follow with ids after the largest."""
    classes = od_categories(ds.manifest) if ds.manifest.categories else []
    ids = ds.manifest.category_ids() if classes else {}
    keys: dict[str, int] = {}
    for c in ds.manifest.categories if classes else []:
        for t in [c["name"], *(c.get("synonyms") or [])]:
            keys.setdefault(phrase_key(t), ids[int(c["label"])])
    cats, text_ids = phrase_categories(con, first_id=max(ids.values(), default=0) + 1, classes=keys)
    return classes + cats, text_ids


def phrase_categories(con, first_id: int = 1, classes: dict[str, int] | None = None
                      ) -> tuple[list[dict], dict[str, int]]:
    """VG categories, one per `phrase_key` (case folded, whitespace collapsed), named by the first text seen
    (record order, then region order; ids from `first_id` in name order), and each phrase text's category id.
    A phrase whose key is in `classes` (key -> category id) is that category instead of one of its own.

    `con` has the view ``records`` with ``_ord`` (`register_records(..., with_order=True)`).
    """
    classes = classes or {}
    rows = con.execute("""
        WITH b AS (SELECT _ord, generate_subscripts(regions, 1) AS k, unnest(regions) AS r FROM records)
        SELECT r.phrase, min(_ord::HUGEINT * 4294967296 + k) AS first FROM b
        WHERE r.phrase IS NOT NULL GROUP BY 1 ORDER BY 2, 1""").fetchall()
    name: dict[str, str] = {}
    for text, _ in rows:
        if phrase_key(text) not in classes:
            name.setdefault(phrase_key(text), text)
    ids = {n: first_id + i for i, n in enumerate(sorted(name.values()))}
    text_ids = {t: classes[phrase_key(t)] if phrase_key(t) in classes else ids[name[phrase_key(t)]] for t, _ in rows}
    return [{"id": i, "name": n} for n, i in ids.items()], text_ids


def export_coco(dataset_dir: str | os.PathLike, out: str | os.PathLike, *,
                images_dir: str | os.PathLike | None = None, tar_paths: bool = False,
                training: bool = False, view: str | None = None) -> dict:
    """Writes the dataset as one COCO JSON file; returns counts.

    `view` (a VG dataset with a label map: the vocabulary union of ``ovlabel pseudo --classes``): ``"od"``
    writes its class regions with the label map's categories (a detection file), ``"vg"`` its regions with
    caption spans (a grounding file: YOLO-World's grounding reader reads every annotation's
    ``tokens_positive``); None writes every region, classes first in the categories (`vg_categories`).

    `images_dir`: write images kept inside img2dataset shards there and name them relative to it
    (`formats.export.images`); without it such datasets are refused unless `tar_paths`. `training`: leave
    crowd and ignore regions out (a file a trainer reads as plain boxes); by default they are written as
    ``iscrowd`` / ``ignore`` annotations, which evaluation tools and MMDetection's loaders ignore.

    Raises `ValueError` for a `view` the dataset lacks: ``"od"`` without a label map, ``"vg"`` of an OD
    dataset, or any other name."""
    ds = Dataset(dataset_dir).require_complete()
    con = connect()
    image_counts = register_export_records(con, ds, images_dir, with_order=True, tar_paths=tar_paths)
    if view not in (None, "od", "vg") or (view == "od" and not ds.manifest.categories) or \
            (view == "vg" and ds.manifest.kind != "vg"):  # an OD dataset has no spans: an empty file
        raise ValueError(f"{ds.root}: no {view!r} view of this {ds.manifest.kind.upper()} dataset"
                         f"{'' if ds.manifest.categories else ' without a label map'}")
    vg = ds.manifest.kind == "vg" and view != "od"
    cats = od_categories(ds.manifest) if not vg else None
    cols = set(ds.manifest.extra_columns)
    image_id = _image_id_sql(con, cols)
    label_to_id = _label_map_sql(ds.manifest.category_ids())
    extra_img = ", coco_url" if "coco_url" in cols else ""
    for col, key in (("neg_labels", "neg_category_ids"), ("not_exhaustive_labels", "not_exhaustive_category_ids")):
        if col in cols:
            extra_img += f", list_transform({col}, lambda x: {label_to_id.format('x')}) AS {key}"
    if vg:
        extra_img += ", caption"
    if vg:
        cats, text_ids = vg_categories(ds, con)  # twins in case/whitespace share their category
        con.execute("CREATE TEMP TABLE phrase_ids AS SELECT unnest($1::VARCHAR[]) AS phrase, "
                    "unnest($2::BIGINT[]) AS cid", [list(text_ids), list(text_ids.values())])
        category = "p.cid"
        if ds.manifest.categories:  # the vocabulary union: a class region is its class, whatever its phrase
            category = f"coalesce(CASE WHEN b.r.label IS NOT NULL THEN {label_to_id.format('b.r.label')} END, p.cid)"
        join = "LEFT JOIN phrase_ids p ON p.phrase = b.r.phrase"
        extra_ann = ", b.r.phrase AS tokens, b.r.tokens_positive AS tokens_positive"
    else:
        category, join, extra_ann = label_to_id.format("b.r.label"), "", ""
    if ds.has_scores:
        extra_ann += ", b.r.score AS score"
    origins = {o for p in ds.manifest.parts for o in p.get("origins", {})}
    if "ignore" in origins and not training:
        extra_ann += ", (b.r.origin = 'ignore')::INTEGER AS ignore"
    keep = (["b.r.origin NOT IN ('crowd', 'ignore')"] if training else []) + \
        {"od": ["b.r.label IS NOT NULL"], "vg": ["b.r.tokens_positive IS NOT NULL"], None: []}[view]
    where = f"WHERE {' AND '.join(keep)}" if keep else ""
    with tempfile.TemporaryDirectory(dir=None if is_url(str(out)) else Path(out).parent) as tmp:
        images, anns = Path(tmp) / "images.json", Path(tmp) / "annotations.json"
        _write_images(con, images, f"""SELECT {image_id} AS id, file_name, width, height{extra_img},
                                        image_id AS ovlabel_id FROM records ORDER BY _ord""")
        ann_id, n_anns = annotation_ids(con, where)
        con.execute(f"""COPY (
            WITH b AS (SELECT _ord, {image_id} AS image_id, generate_subscripts(regions, 1) AS k,
                              unnest(regions) AS r FROM records)
            SELECT {ann_id} AS id, b.image_id, {category} AS category_id,
                   xyxy_to_xywh(b.r.bbox) AS bbox, coalesce(b.r.area, xyxy_area(b.r.bbox)) AS area,
                   (b.r.origin = 'crowd')::INTEGER AS iscrowd{extra_ann}
            FROM b {join} {where} ORDER BY b._ord, b.k) TO '{anns}' (FORMAT JSON, ARRAY true)""")
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
    return {"file": shown(out), "images": totals["images"], "annotations": int(n_anns), "categories": len(cats),
            **image_counts}


OPTIONAL_IMAGE_KEYS = ("coco_url", "neg_category_ids", "not_exhaustive_category_ids")


def _write_images(con, path: Path, query: str) -> None:
    """Writes the images of `query` as one JSON array, leaving out each optional key (`OPTIONAL_IMAGE_KEYS`)
    that is null for that image: a source image without ``coco_url`` gets none, not ``"coco_url": null``."""
    names = [d[0] for d in con.execute(f"SELECT * FROM ({query}) LIMIT 0").description]
    optional = [k for k in OPTIONAL_IMAGE_KEYS if k in names]
    if not optional:
        con.execute(f"COPY ({query}) TO '{path}' (FORMAT JSON, ARRAY true)")
        return
    # a JSON merge patch with a null value removes the key (RFC 7396); concat_ws skips the non-null keys
    nulls = ", ".join(f"CASE WHEN q.{k} IS NULL THEN '\"{k}\": null' END" for k in optional)
    patch = f"'{{' || concat_ws(', ', {nulls}) || '}}'"
    reader = con.sql(f"SELECT json_merge_patch(to_json(q), {patch})::VARCHAR AS j FROM ({query}) q"
                     ).to_arrow_reader(65536)
    with open(path, "wb") as f:
        f.write(b"[")
        first = True
        for batch in reader:
            if batch.num_rows == 0:
                continue
            f.write(("" if first else ",\n").encode() + ",\n".join(batch.column(0).to_pylist()).encode())
            first = False
        f.write(b"]")


def annotation_ids(con, where: str) -> tuple[str, int]:
    """The SQL of each exported annotation's COCO id (over ``b``: ``_ord``, ``k``, region ``r``) and the number
    of exported annotations (regions passing `where`).

    The rule (docs/format.md, "export coco"): when the exported regions' source ids (``source_id``, JSON
    text) are distinct, each keeps its own (type and text) and a region without one is numbered after the
    largest integer id (integers and strings of digits; 0 when none), in record and region order; when two
    share a source id, or none has one, every annotation is numbered 1..N in record and region order."""
    n, with_id, distinct, top = con.execute(f"""
        SELECT count(*), count(b.r.source_id), count(DISTINCT b.r.source_id),
               max(TRY_CAST(trim(b.r.source_id, '"') AS HUGEINT))
        FROM (SELECT unnest(regions) AS r FROM records) b {where}""").fetchone()
    if with_id == 0 or distinct < with_id:
        return "row_number() OVER (ORDER BY b._ord, b.k)", int(n)
    base = max(int(top or 0), 0)
    numbered = f"({base} + row_number() OVER (PARTITION BY b.r.source_id IS NULL ORDER BY b._ord, b.k))::JSON"
    return f"coalesce(b.r.source_id::JSON, {numbered})", int(n)


def _image_id_sql(con, cols: set[str]) -> str:
    """The SQL of each record's COCO image id: the source's (``source_image_id``, JSON text: its type kept)
    when every record has one, else the record's position + 1."""
    if "source_image_id" in cols and not con.execute(
            "SELECT count(*) FROM records WHERE source_image_id IS NULL").fetchone()[0]:
        return "source_image_id::JSON"
    return "(_ord + 1)"


def _label_map_sql(ids: dict[int, int]) -> str:
    """A SQL template (``{}``: a label expression) giving the label's COCO category id."""
    if all(v == k + 1 for k, v in ids.items()):
        return "({} + 1)"
    keys = ", ".join(f"{k}: {v}" for k, v in sorted(ids.items()))
    return "map_extract_value(MAP {{" + keys + "}}, {})"
