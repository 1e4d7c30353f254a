"""MDETR grounding annotations (GoldG: Flickr30k Entities, mixed GQA/VG/COCO, RefCOCO*) -> ODVG VG dataset.

MDETR files are COCO-like: each *image* entry is one caption of a photo, each annotation a box with the
character spans (``tokens_positive``) of the words it grounds. Every annotation becomes one region with
its own spans, sorted; the phrase is the words at those spans joined by spaces (what MMDetection's
``goldg2odvg.py`` calls the phrase). Unlike that script, two mentions with the same words keep their
own spans instead of the first mention's, boxes are clipped on all four sides, and every dropped box or
caption is counted and written to rejects with its reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from formats import schema as S
from formats.coco_read import read_tables
from formats.converters.coco import ConversionError
from formats.converters.common import (
    MaskRejects,
    Rejects,
    checked_input,
    index_of,
    later_duplicates,
    safe_file_names,
)
from formats.dataset import DatasetWriter, Manifest, provenance
from formats.json_stream import JSONStructureError

log = logging.getLogger("ovlabel.goldg")

IMAGE_COLUMNS = {
    "id": "BIGINT",
    "file_name": "VARCHAR",
    "height": "BIGINT",
    "width": "BIGINT",
    "caption": "VARCHAR",
    "dataset_name": "VARCHAR",
    "data_source": "VARCHAR",
    "sentence_id": "BIGINT",
    "original_img_id": "BIGINT",
    "original_id": "BIGINT",
    "tokens_positive_eval": "BIGINT[][][]",
}
ANN_COLUMNS = {
    "id": "BIGINT",
    "image_id": "BIGINT",
    "bbox": "DOUBLE[]",
    "area": "DOUBLE",
    "iscrowd": "BIGINT",
    "tokens_positive": "BIGINT[][]",
}
EXTRA_FIELDS = [
    pa.field("dataset_name", pa.string()),
    pa.field("data_source", pa.string()),
    pa.field("sentence_id", pa.int64()),
    pa.field("original_img_id", pa.int64()),
    pa.field("original_id", pa.int64()),
    pa.field("tokens_positive_eval", pa.list_(pa.list_(S.SPAN_TYPE))),
]
DATA_SOURCES = ("coco", "vg", "flickr")


@dataclass
class GoldGConvertConfig:
    """Settings of an MDETR conversion; recorded in the manifest."""

    source: str = "goldg"
    image_root: str | None = None
    data_source: str | None = None  # keep only captions of this data_source ("coco" = extract_coco_from_mixed.py)
    part_images: int = 100_000


def convert_goldg(ann_path: str | os.PathLike, out_dir: str | os.PathLike, cfg: GoldGConvertConfig, *,
                  overwrite: bool = False, progress: Callable[[int], None] | None = None,
                  window_bytes: int = 32 << 20) -> Manifest:
    """Converts one MDETR annotation JSON into an ODVG VG dataset directory; returns its manifest."""
    ann_path = Path(ann_path)
    if cfg.data_source is not None and cfg.data_source not in DATA_SOURCES:
        raise ConversionError(f"unknown --data-source {cfg.data_source!r}; expected one of {', '.join(DATA_SOURCES)}")
    resume_key, st, existing = checked_input(ann_path, cfg, out_dir, overwrite, log)
    if existing is not None:
        return existing
    try:
        doc = read_tables(ann_path, {"images": IMAGE_COLUMNS, "annotations": ANN_COLUMNS},
                          progress=progress, window_bytes=window_bytes)
    except JSONStructureError as e:
        raise ConversionError(str(e)) from None
    rej = Rejects(str(ann_path))
    problems = {(a, i): (r, d) for a, i, r, d in doc.problems}
    imgs, anns = doc.tables["images"], doc.tables["annotations"]

    keep_img, names = _check_images(imgs, cfg, rej, problems)
    img_id = _ints(imgs, "id")
    slot = index_of(img_id, _ints(anns, "image_id"))
    regions = _check_boxes(imgs, anns, slot, keep_img, rej, problems)
    has_box = np.zeros(len(img_id), dtype=bool)
    has_box[regions["slot"]] = True
    no_box = keep_img & ~has_box
    rej.add("images", imgs.column("_index").to_numpy()[no_box], "no valid boxes",
            "every box of this caption was dropped or rejected", img_id[no_box].tolist(), dropped=True)
    keep_img &= has_box

    manifest = Manifest(kind="vg", source=cfg.source, image_root=cfg.image_root, config=asdict(cfg),
                        extra_columns=[f.name for f in EXTRA_FIELDS],
                        provenance=provenance([{"path": str(ann_path.resolve()), "size": st.st_size,
                                                "sha256": doc.sha256}]))
    writer = DatasetWriter(out_dir, manifest, overwrite=True, resume_key=resume_key)
    _write_parts(writer, imgs, names, keep_img, regions, cfg)
    writer.write_rejects("part-00000.parquet", rej.rows)
    return writer.finish({
        "images_in": imgs.num_rows, "images": int(keep_img.sum()),
        "boxes_in": anns.num_rows, "boxes": int(len(regions["slot"])),
        "dropped": dict(sorted(rej.dropped.items())), "rejected": dict(sorted(rej.rejected.items())),
    })


S_MISSING = np.iinfo(np.int64).min


def _ints(t: pa.Table, name: str) -> np.ndarray:
    col = t.column(name).combine_chunks()
    return np.asarray(col.fill_null(S_MISSING).to_numpy(zero_copy_only=False), dtype=np.int64)


def _check_images(imgs: pa.Table, cfg: GoldGConvertConfig, rej: Rejects, problems: dict):
    n = imgs.num_rows
    ids = _ints(imgs, "id")
    reject = MaskRejects(rej, "images", imgs.column("_index").to_numpy(), ids, problems)
    keep = reject.keep

    if cfg.data_source is not None:
        src = pc.fill_null(pc.equal(imgs.column("data_source"), cfg.data_source), False).to_numpy(zero_copy_only=False)
        reject(~np.asarray(src, dtype=bool), f"data_source is not {cfg.data_source}", None, dropped=True)
    reject(ids == S_MISSING, "invalid id", "missing or not an integer")
    reject(later_duplicates(ids), "duplicate image id", "an earlier caption has the same id; the first is kept")
    reject(pc.is_null(imgs.column("caption")).to_numpy(zero_copy_only=False), "missing caption")
    names = imgs.column("file_name").combine_chunks()
    reject(pc.is_null(names).to_numpy(zero_copy_only=False), "missing file_name")
    names, unsafe = safe_file_names(names)
    reject(np.isin(np.arange(n), list(unsafe)), "unsafe file_name", lambda idx: [unsafe[i] for i in idx])
    w, h = _ints(imgs, "width"), _ints(imgs, "height")
    reject((w == S_MISSING) | (h == S_MISSING) | (w <= 0) | (h <= 0), "invalid width/height",
           "width and height must be positive integers")
    return keep, names


def _check_boxes(imgs: pa.Table, anns: pa.Table, slot: np.ndarray, keep_img: np.ndarray, rej: Rejects,
                 problems: dict) -> dict:
    """Validates every annotation; returns the kept boxes (clipped xyxy), their image slot and sorted spans."""
    n = anns.num_rows
    reject = MaskRejects(rej, "annotations", anns.column("_index").to_numpy(), _ints(anns, "id"), problems)
    keep = reject.keep

    reject(slot < 0, "unknown image_id", "no caption with this id")
    keep_slot = np.where(slot >= 0, slot, 0)
    reject(~keep_img[keep_slot], "image rejected", "its caption was rejected or dropped", dropped=True)
    box = _boxes(anns.column("bbox").combine_chunks())
    reject(~np.isfinite(box).all(axis=1), "invalid bbox", "bbox is not 4 finite numbers")
    crowd = _ints(anns, "iscrowd")
    reject((crowd != S_MISSING) & (crowd != 0), "crowd", None, dropped=True)
    area = anns.column("area").combine_chunks().to_numpy(zero_copy_only=False).astype(np.float64)
    reject(np.nan_to_num(area, nan=1.0) <= 0, "area <= 0", None, dropped=True)
    with np.errstate(invalid="ignore"):
        reject((box[:, 2] < 1) | (box[:, 3] < 1), "side < 1 px", None, dropped=True)
    W = _ints(imgs, "width").astype(np.float64)[keep_slot]
    H = _ints(imgs, "height").astype(np.float64)[keep_slot]
    with np.errstate(invalid="ignore"):
        x1, y1 = np.clip(box[:, 0], 0, W), np.clip(box[:, 1], 0, H)
        x2, y2 = np.clip(box[:, 0] + box[:, 2], 0, W), np.clip(box[:, 1] + box[:, 3], 0, H)
        reject((x2 - x1) * (y2 - y1) <= 0, "outside the image", None, dropped=True)

    spans = anns.column("tokens_positive").combine_chunks()
    n_spans = pc.list_value_length(spans).fill_null(0).to_numpy(zero_copy_only=False)
    reject(n_spans == 0, "no tokens_positive", "the box grounds no words")
    pairs_list = spans.flatten()
    pair_len = pc.list_value_length(pairs_list).fill_null(0).to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(n), n_spans)
    bad_pair = np.zeros(n, dtype=bool)
    bad_pair[owner[pair_len != 2]] = True
    reject(bad_pair, "invalid tokens_positive", "every span must be [start, end]")
    ok_pairs = pair_len == 2
    flat = pairs_list.filter(pa.array(ok_pairs)).flatten().to_numpy(zero_copy_only=False).reshape(-1, 2)
    owner = owner[ok_pairs]
    cap_len = pc.utf8_length(imgs.column("caption").combine_chunks()).fill_null(-1).to_numpy(zero_copy_only=False)
    outside = (flat[:, 0] < 0) | (flat[:, 1] <= flat[:, 0]) | (flat[:, 1] > cap_len[keep_slot[owner]])
    bad = np.zeros(n, dtype=bool)
    bad[owner[outside]] = True
    reject(bad, "span outside the caption", _span_details(np.flatnonzero(bad & keep), owner, flat, cap_len[keep_slot]))
    if not _grouped_and_sorted(owner, flat[:, 0]):
        order = np.lexsort((flat[:, 0], owner))  # spans of one box, by start
        flat, owner = flat[order], owner[order]
    same = owner[1:] == owner[:-1]
    overlap = np.zeros(n, dtype=bool)
    overlap[owner[1:][same & (flat[1:, 0] < flat[:-1, 1])]] = True
    reject(overlap, "overlapping spans", "two spans of this box share characters")

    kept = np.flatnonzero(keep)
    take = keep[owner]
    flat, owner = flat[take], owner[take]
    # boxes grouped by caption, in file order (MDETR files are already grouped: no sort)
    order = kept if np.all(np.diff(slot[kept]) >= 0) else kept[np.argsort(slot[kept], kind="stable")]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(len(order))
    if not _grouped_and_sorted(rank[owner], flat[:, 0]):
        pair_order = np.lexsort((flat[:, 0], rank[owner]))
        flat, owner = flat[pair_order], owner[pair_order]
    counts = np.bincount(rank[owner], minlength=len(order))
    span_offsets = np.zeros(len(order) + 1, dtype=np.int32)
    np.cumsum(counts, out=span_offsets[1:])
    return {"slot": slot[order], "bbox": np.stack([x1, y1, x2, y2], axis=1)[order],
            "spans": flat.astype(np.int32), "span_offsets": span_offsets}


def _grouped_and_sorted(group: np.ndarray, key: np.ndarray) -> bool:
    """True when `group` is non-decreasing and `key` increases inside each group (no sort needed)."""
    if len(group) < 2:
        return True
    same = group[1:] == group[:-1]
    return bool(np.all(group[1:] >= group[:-1]) and np.all(~same | (key[1:] >= key[:-1])))


def _span_details(bad_idx, owner, flat, cap_len) -> list[str]:
    out = []
    for i in bad_idx.tolist():
        mine = flat[owner == i]
        out.append(f"spans {mine.tolist()} for a caption of {int(cap_len[i])} characters")
    return out


def _boxes(bbox: pa.ListArray) -> np.ndarray:
    n = len(bbox)
    box = np.full((n, 4), np.nan)
    lengths = pc.list_value_length(bbox).fill_null(0).to_numpy(zero_copy_only=False)
    ok = lengths == 4
    values = bbox.flatten()
    if ok.all() and values.null_count == 0:  # the usual case: one reshape, no copy of the lists
        return values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False).reshape(n, 4)
    if ok.any():
        box[ok] = bbox.filter(pa.array(ok)).flatten().fill_null(np.nan).to_numpy(zero_copy_only=False).reshape(-1, 4)
    return box


def _phrases(captions: pa.Array, spans: np.ndarray, span_offsets: np.ndarray, slots: np.ndarray) -> pa.Array:
    """The grounded words of each box: the text at its (sorted) spans, joined by single spaces."""
    import duckdb

    box = np.repeat(np.arange(len(slots)), np.diff(span_offsets))
    pairs = pa.table({"caption": captions.take(pa.array(slots[box])),
                      "s": spans[:, 0].astype(np.int64), "e": spans[:, 1].astype(np.int64)})
    con = duckdb.connect()
    con.register("pairs", pairs)  # substring counts characters (code points), as Python's spans do
    words = con.sql("SELECT substring(caption, s + 1, e - s) AS w FROM pairs").to_arrow_table().column("w")
    con.close()
    lists = pa.ListArray.from_arrays(pa.array(span_offsets.astype(np.int32)), words.combine_chunks())
    return pc.binary_join(lists, " ")


def _write_parts(writer: DatasetWriter, imgs: pa.Table, names: pa.Array, keep_img: np.ndarray, regions: dict,
                 cfg: GoldGConvertConfig) -> None:
    kept_idx = np.flatnonzero(keep_img)
    new_slot = np.full(len(keep_img), -1, dtype=np.int64)
    new_slot[kept_idx] = np.arange(len(kept_idx))
    box_slot = new_slot[regions["slot"]]
    counts = np.bincount(box_slot, minlength=len(kept_idx))
    offsets = np.zeros(len(kept_idx) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    step = max(1, cfg.part_images)
    so = regions["span_offsets"]
    phrases = _phrases(imgs.column("caption").combine_chunks(), regions["spans"], so, regions["slot"])
    pool, futures = ThreadPoolExecutor(2), []  # parquet encoding releases the GIL: write while building
    for p in range(max(1, -(-len(kept_idx) // step))):
        a, b = p * step, min(len(kept_idx), (p + 1) * step)
        rows = pa.array(kept_idx[a:b])
        ba, bb = int(offsets[a]), int(offsets[b])
        spans = pa.ListArray.from_arrays(
            pa.array(so[ba:bb + 1] - so[ba]),
            pa.FixedSizeListArray.from_arrays(pa.array(regions["spans"][so[ba]:so[bb]].reshape(-1)), 2))
        regs = S.regions_from_columns(offsets[a:b + 1] - ba, regions["bbox"][ba:bb], phrase=phrases.slice(ba, bb - ba),
                                      tokens_positive=spans, origin="gold")
        ids = pc.cast(imgs.column("id").take(rows), pa.string())
        data = {
            "image_id": pc.binary_join_element_wise(f"{cfg.source}/", ids, ""),
            "source": pa.repeat(pa.scalar(cfg.source), b - a),
            "file_name": names.take(rows),
            "width": imgs.column("width").take(rows),
            "height": imgs.column("height").take(rows),
            "caption": imgs.column("caption").take(rows),
            "regions": regs,
        }
        for f in EXTRA_FIELDS:
            data[f.name] = imgs.column(f.name).take(rows)
        table = S.conform(pa.table(data), EXTRA_FIELDS)
        futures.append(pool.submit(writer.write_part, f"part-{p:05d}.parquet", table))
        if len(futures) > 2:
            futures.pop(0).result()
    for f in futures:
        f.result()
    pool.shutdown()
