"""MDETR grounding annotations (GoldG: Flickr30k Entities, mixed GQA/VG/COCO, RefCOCO*) -> ODVG VG dataset.

MDETR files are COCO-like: each *image* entry is one caption of a photo, each annotation a box with the
character spans (``tokens_positive``) of the words it grounds. Every annotation becomes one region with
its own spans, sorted; the phrase is the words at those spans joined by spaces (what MMDetection's
``goldg2odvg.py`` calls the phrase). Unlike that script, two mentions with the same words keep their
own spans instead of the first mention's, boxes are clipped on all four sides by the converters' one rule
(`formats.boxes.clip_to_image`: clipped boxes counted as ``boxes_clipped``, a box with no area inside the
image dropped as ``no overlap with image``), and every dropped box or caption is counted and written to
rejects with its reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from formats import schema as S
from formats.arrow_np import from_numpy
from formats.boxes import NO_OVERLAP, clip_to_image, xywh_to_xyxy
from formats.converters.coco import ConversionError
from formats.converters.common import (
    MaskRejects,
    Rejects,
    checked_input,
    index_of,
    reject_bad_image_files,
    reject_bad_image_ids,
    slot_offsets,
    write_parts_pipelined,
)
from formats.dataset import DatasetWriter, Manifest, part_ranges, provenance
from formats.ids import Ids, codes, parse_json_ids, type_collision
from formats.json_arrays import read_tables
from formats.json_stream import JSONStructureError
from formats.phrase_rules import edges_are_words, trim_span
from formats.storage import local_file, shown

log = logging.getLogger("ovlabel.goldg")

IMAGE_COLUMNS = {
    "id": "JSON",  # raw JSON text: type and text of ids kept (formats.ids)
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
    "id": "JSON",
    "image_id": "JSON",
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
    """Converts one MDETR annotation JSON into an ODVG VG dataset directory; returns its manifest.

    `ann_path`, `out_dir` and ``cfg.image_root`` may be local paths or object-store URLs (`formats.storage`);
    a JSON file on an object store is copied to a local temp file to be parsed. Raises `ConversionError`
    (bad settings, a file that is not MDETR JSON), `formats.storage.StorageError` (an unusable location)."""
    if cfg.data_source is not None and cfg.data_source not in DATA_SOURCES:
        raise ConversionError(f"unknown --data-source {cfg.data_source!r}; expected one of {', '.join(DATA_SOURCES)}")
    resume_key, info, existing = checked_input(ann_path, cfg, out_dir, overwrite, log)
    if existing is not None:
        return existing
    with local_file(ann_path) as local:
        try:
            doc = read_tables(local, {"images": IMAGE_COLUMNS, "annotations": ANN_COLUMNS},
                              progress=progress, window_bytes=window_bytes)
        except JSONStructureError as e:
            raise ConversionError(str(e).replace(str(local), str(shown(ann_path)))) from None
    ann_path = shown(ann_path)  # as given when local, the URL without credentials on a store
    rej = Rejects(str(ann_path))
    problems = {(a, i): (r, d) for a, i, r, d in doc.problems}
    imgs, anns = doc.tables["images"], doc.tables["annotations"]

    img_ids, refs = parse_json_ids(imgs.column("id")), parse_json_ids(anns.column("image_id"))
    clash = type_collision(img_ids, imgs.column("_index").to_numpy())
    if clash:
        raise ConversionError(f"{ann_path}: {clash}")
    img_code, ref_code = codes(img_ids, refs)
    keep_img, names, shared = _check_images(imgs, img_ids, img_code, cfg, rej, problems)
    slot = index_of(img_code, ref_code)
    regions = _check_boxes(imgs, anns, refs, slot, keep_img, rej, problems, shared)
    has_box = np.zeros(len(img_code), dtype=bool)
    has_box[regions["slot"]] = True
    no_box = keep_img & ~has_box
    rej.add("images", imgs.column("_index").to_numpy()[no_box], "no valid boxes",
            "every box of this caption was dropped or rejected", img_ids.display(np.flatnonzero(no_box)), dropped=True)
    keep_img &= has_box

    manifest = Manifest(kind="vg", source=cfg.source, image_root=cfg.image_root, config=asdict(cfg),
                        extra_columns=[f.name for f in EXTRA_FIELDS],
                        provenance=provenance([{"path": info.location, "size": info.size,
                                                "sha256": doc.sha256}]))
    writer = DatasetWriter(out_dir, manifest, overwrite=True, resume_key=resume_key)
    _write_parts(writer, imgs, img_ids, names, keep_img, regions, cfg)
    writer.write_rejects("part-00000.parquet", rej.rows)
    return writer.finish({
        "images_in": imgs.num_rows, "images": int(keep_img.sum()),
        "boxes_in": anns.num_rows, "boxes": int(len(regions["slot"])), "boxes_clipped": regions["clipped"],
        "dropped": dict(sorted(rej.dropped.items())), "rejected": dict(sorted(rej.rejected.items())),
    })


S_MISSING = np.iinfo(np.int64).min


def _ints(t: pa.Table, name: str) -> np.ndarray:
    col = t.column(name).combine_chunks()
    return np.asarray(col.fill_null(S_MISSING).to_numpy(zero_copy_only=False), dtype=np.int64)


def _check_images(imgs: pa.Table, img_ids: Ids, ids: np.ndarray, cfg: GoldGConvertConfig, rej: Rejects,
                  problems: dict):
    reject = MaskRejects(rej, "images", imgs.column("_index").to_numpy(), img_ids, problems)
    keep = reject.keep

    if cfg.data_source is not None:
        src = pc.fill_null(pc.equal(imgs.column("data_source"), cfg.data_source), False).to_numpy(zero_copy_only=False)
        reject(~np.asarray(src, dtype=bool), f"data_source is not {cfg.data_source}", None, dropped=True)
    index, names = imgs.column("_index").to_numpy(), imgs.column("file_name").combine_chunks()
    shared = reject_bad_image_ids(reject, ids, index, img_ids, names, owned="boxes")
    reject(pc.is_null(imgs.column("caption")).to_numpy(zero_copy_only=False), "missing caption")
    names = reject_bad_image_files(reject, names, _ints(imgs, "width"), _ints(imgs, "height"))
    return keep, names, shared


def _check_boxes(imgs: pa.Table, anns: pa.Table, refs: Ids, slot: np.ndarray, keep_img: np.ndarray, rej: Rejects,
                 problems: dict, shared: dict[int, str]) -> dict:
    """Validates every annotation; returns the kept boxes (absolute-pixel xyxy, clipped by
    `formats.boxes.clip_to_image`), how many were clipped, their image slot and sorted spans."""
    n = anns.num_rows
    ann_ids = parse_json_ids(anns.column("id"))
    reject = MaskRejects(rej, "annotations", anns.column("_index").to_numpy(), ann_ids, problems)
    keep = reject.keep

    reject(~refs.valid, "invalid image_id", refs.why)
    reject(slot < 0, "unknown image_id", "no caption with this id")
    if shared:  # an id that more than one caption has: the box is attached to none of them
        reject(np.isin(slot, list(shared)), "ambiguous image id",
               lambda idx: [f"image_id={r!r} names more than one caption: {shared[int(slot[i])]}"
                            for i, r in zip(idx, refs.display(idx))])
    if imgs.num_rows == 0:  # every annotation was rejected just above; nothing to index
        return {"slot": np.zeros(0, np.int64), "bbox": np.zeros((0, 4)), "clipped": 0,
                "spans": np.zeros((0, 2), np.int32), "span_offsets": np.zeros(1, np.int32)}
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
    fit = clip_to_image(xywh_to_xyxy(box), _ints(imgs, "width")[keep_slot], _ints(imgs, "height")[keep_slot])
    reject(fit.empty, NO_OVERLAP, "box lies outside its image", dropped=True)

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
    if ok_pairs.all():  # the usual case: no copies
        flat = pairs_list.flatten().to_numpy(zero_copy_only=False).reshape(-1, 2)
    else:
        flat = pairs_list.filter(from_numpy(ok_pairs)).flatten().to_numpy(zero_copy_only=False).reshape(-1, 2)
        owner = owner[ok_pairs]
    cap_len = pc.utf8_length(imgs.column("caption").combine_chunks()).fill_null(-1).to_numpy(zero_copy_only=False)
    outside = (flat[:, 0] < 0) | (flat[:, 1] <= flat[:, 0]) | (flat[:, 1] > cap_len[keep_slot[owner]])
    bad = np.zeros(n, dtype=bool)
    bad[owner[outside]] = True
    reject(bad, "span outside the caption", _span_details(np.flatnonzero(bad & keep), owner, flat, cap_len[keep_slot]))
    flat, owner = _trim_box_spans(imgs.column("caption"), flat, owner, keep_slot, reject)
    if not _grouped_and_sorted(owner, flat[:, 0]):
        order = np.lexsort((flat[:, 0], owner))  # spans of one box, by start
        flat, owner = flat[order], owner[order]
    same = owner[1:] == owner[:-1]
    overlap = np.zeros(n, dtype=bool)
    overlap[owner[1:][same & (flat[1:, 0] < flat[:-1, 1])]] = True
    reject(overlap, "overlapping spans", "two spans of this box share characters")

    kept = np.flatnonzero(keep)
    take = keep[owner]
    if not take.all():
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
    return {"slot": slot[order], "bbox": fit.xyxy[order], "clipped": int(fit.clipped[order].sum()),
            "spans": flat.astype(np.int32), "span_offsets": span_offsets}


def _trim_box_spans(captions, flat: np.ndarray, owner: np.ndarray, keep_slot: np.ndarray, reject: MaskRejects):
    """Every span of a kept box trimmed to word characters; spans with none are left out, and a box left
    with no span is rejected ("no word character in spans"): its phrase would be blank or punctuation."""
    live = np.flatnonzero(reject.keep[owner])
    trimmed = _trimmed(captions, flat[live], keep_slot[owner[live]])
    if np.array_equal(trimmed, flat[live]):
        return flat, owner
    empty = np.zeros(len(flat), dtype=bool)
    empty[live[trimmed[:, 0] < 0]] = True
    words = np.zeros(len(reject.keep), dtype=bool)
    words[owner[~empty]] = True
    caps = captions.combine_chunks() if isinstance(captions, pa.ChunkedArray) else captions

    def details(idx):
        out = []
        for i in idx.tolist():
            mine = flat[owner == i].tolist()
            text = caps[int(keep_slot[i])].as_py()
            out.append(f"spans {mine} cover {[text[a:b] for a, b in mine]!r}")
        return out
    reject(~words, "no word character in spans", details)
    new = np.array(flat, dtype=np.int64, copy=True)
    new[live] = trimmed
    return new[~empty], owner[~empty]


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
        box[ok] = bbox.filter(from_numpy(ok)).flatten().fill_null(np.nan).to_numpy(zero_copy_only=False).reshape(-1, 4)
    return box


def _utf8(captions: pa.Array) -> tuple[pa.StringArray, np.ndarray, np.ndarray]:
    """The captions as one string array, its character-offsets buffer and its UTF-8 bytes (no copies)."""
    captions = captions.combine_chunks() if isinstance(captions, pa.ChunkedArray) else captions
    if captions.type != pa.string():
        captions = captions.cast(pa.string())
    _, off_buf, data_buf = captions.buffers()
    cap_off = np.frombuffer(off_buf, dtype=np.int32)[captions.offset:captions.offset + len(captions) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return captions, cap_off, data


def _byte_spans(cap_off: np.ndarray, data: np.ndarray, cap: np.ndarray, spans: np.ndarray):
    """UTF-8 byte positions (start, end) in `data` of character spans of captions `cap` (inside them)."""
    first = cap_off[cap].astype(np.int64)
    s, e = spans[:, 0].astype(np.int64), spans[:, 1].astype(np.int64)
    if not (data[cap_off[0]:cap_off[-1]] & 0x80).any():  # ASCII: characters are bytes
        return first + s, first + e
    # the k-th character of a caption starts at its k-th UTF-8 lead byte
    lead = np.append(np.flatnonzero((data & 0xC0) != 0x80), len(data))  # + a sentinel past the end
    base = np.searchsorted(lead, first)
    last = cap_off[cap + 1].astype(np.int64)

    def byte_at(k):  # a caption's end for k == its length
        return np.minimum(lead[np.minimum(base + k, len(lead) - 1)], last)
    return byte_at(s), byte_at(e)


def _trimmed(captions: pa.Array, spans: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Spans trimmed to their first and last word character (formats.phrase_rules); [-1, -1] where none.

    Spans whose edge bytes are ASCII word characters (nearly all) are checked in one vectorised pass; the
    rest are trimmed in Python on their caption's text.
    """
    captions, cap_off, data = _utf8(captions)
    out = np.array(spans, dtype=np.int64, copy=True).reshape(-1, 2)
    if not len(out):
        return out
    b_s, b_e = _byte_spans(cap_off, data, cap, out)
    for i in np.flatnonzero(~edges_are_words(data, b_s, b_e)).tolist():
        trimmed = trim_span(captions[int(cap[i])].as_py(), int(out[i, 0]), int(out[i, 1]))
        out[i] = trimmed if trimmed is not None else (-1, -1)
    return out


def _phrases(captions: pa.Array, spans: np.ndarray, span_offsets: np.ndarray, slots: np.ndarray) -> pa.Array:
    """The grounded words of each box: the text at its (sorted) spans, joined by single spaces.

    Spans count characters (code points), as Python's do; they are mapped to UTF-8 byte positions and the
    bytes gathered in one vectorised pass. Every span lies inside its caption (checked before).
    """
    captions, cap_off, data = _utf8(captions)
    n_box = len(span_offsets) - 1
    box = np.repeat(np.arange(n_box), np.diff(span_offsets))
    b_s, b_e = _byte_spans(cap_off, data, slots[box], spans)
    # each span's bytes, followed by a space unless it is its box's last span
    sep = np.ones(len(spans), dtype=np.int64)
    sep[span_offsets[1:][np.diff(span_offsets) > 0] - 1] = 0
    piece = b_e - b_s + sep
    out_off = np.zeros(len(spans) + 1, dtype=np.int64)
    np.cumsum(piece, out=out_off[1:])
    src = np.arange(out_off[-1], dtype=np.int64) + np.repeat(b_s - out_off[:-1], piece)
    out = data[np.minimum(src, max(len(data) - 1, 0))] if len(src) else np.zeros(0, np.uint8)
    out[out_off[1:][sep == 1] - 1] = 32  # ' '
    box_off = out_off[span_offsets]
    typ = pa.string() if out_off[-1] < 2**31 else pa.large_string()
    offsets = box_off.astype(np.int32 if typ == pa.string() else np.int64)
    return pa.Array.from_buffers(typ, n_box, [None, pa.py_buffer(offsets), pa.py_buffer(out)])


def _write_parts(writer: DatasetWriter, imgs: pa.Table, img_ids: Ids, names: pa.Array, keep_img: np.ndarray,
                 regions: dict, cfg: GoldGConvertConfig) -> None:
    kept_idx = np.flatnonzero(keep_img)
    new_slot = np.full(len(keep_img), -1, dtype=np.int64)
    new_slot[kept_idx] = np.arange(len(kept_idx))
    box_slot = new_slot[regions["slot"]]
    _, offsets = slot_offsets(box_slot, len(kept_idx))
    so = regions["span_offsets"]
    captions = imgs.column("caption").combine_chunks()

    def build(p: int, a: int, b: int) -> tuple[str, pa.Table]:
        rows = kept_idx[a:b]
        contiguous = b > a and rows[-1] - rows[0] == b - a - 1  # all kept: a slice, no copy
        part = imgs.slice(int(rows[0]), b - a) if contiguous else imgs.take(from_numpy(rows))
        part_names = names.slice(int(rows[0]), b - a) if contiguous else names.take(from_numpy(rows))
        ba, bb = int(offsets[a]), int(offsets[b])
        spans = pa.ListArray.from_arrays(
            from_numpy(so[ba:bb + 1] - so[ba]),
            pa.FixedSizeListArray.from_arrays(from_numpy(regions["spans"][so[ba]:so[bb]].reshape(-1)), 2))
        phrases = _phrases(captions, regions["spans"][so[ba]:so[bb]], so[ba:bb + 1] - so[ba], regions["slot"][ba:bb])
        regs = S.regions_from_columns(offsets[a:b + 1] - ba, regions["bbox"][ba:bb], phrase=phrases,
                                      tokens_positive=spans, origin="gold")
        ids = img_ids.text.slice(int(rows[0]), b - a) if contiguous else img_ids.text.take(from_numpy(rows))
        data = {
            "image_id": pc.binary_join_element_wise(f"{cfg.source}/", ids, ""),
            "source": pa.repeat(pa.scalar(cfg.source), b - a),
            "file_name": part_names,
            "width": part.column("width"),
            "height": part.column("height"),
            "caption": part.column("caption"),
            "regions": regs,
        }
        for f in EXTRA_FIELDS:
            data[f.name] = part.column(f.name)
        return f"part-{p:05d}.parquet", S.conform(pa.table(data), EXTRA_FIELDS)

    write_parts_pipelined(writer, (build(p, a, b) for p, (a, b) in enumerate(part_ranges(len(kept_idx), cfg.part_images))))
