"""COCO-format detection files (Objects365 v1/v2, COCO 2017, LVIS v1, V3Det, custom) -> ODVG OD dataset.

Follows MMDetection's conventions (``coco2odvg.py``, ``lvis2odvg.py``) where they are right: label ids
``category_id - 1`` for Objects365, V3Det and LVIS, the 80-class order for COCO 2017, boxes with no overlap
with the image, ``area <= 0`` or a side under 1 px dropped, Objects365 v2 path prefixes stripped and its known-broken images skipped. Unlike it, every drop and reject is counted
and written with its reason, unknown ids are rejects rather than crashes, the label map keeps every
category, and boxes partly outside their image are clipped to it and counted (``boxes_clipped``) by the
rule of every converter (`formats.boxes.clip_to_image`).

What evaluation and ``export coco`` need is kept (format version 2): ``iscrowd`` / ``ignore`` annotations
as regions of origin ``crowd`` / ``ignore`` (MMDetection drops them; they are never trained on), each
annotation's own ``area`` (region ``area``) and id (region ``source_id``, type kept), the source's image
ids (column ``source_image_id``) and category ids (manifest ``categories[].id``), ``coco_url``, LVIS
``frequency`` and the per-image ``neg_category_ids`` / ``not_exhaustive_category_ids`` (as labels:
``neg_labels``, ``not_exhaustive_labels``).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from formats import schema as S
from formats.arrow_np import from_numpy
from formats.boxes import NO_OVERLAP, clip_to_image
from formats.coco_read import F_AREA_MISSING, F_CROWD, F_IGNORE, MISSING, CocoColumns, read_coco
from formats.converters import COCO_SOURCES
from formats.converters.common import (
    MaskRejects,
    Rejects,
    checked_input,
    index_of,
    later_duplicates,
    reject_bad_image_files,
    reject_bad_image_ids,
    shared_ids,
    slot_offsets,
    verify_image_files,
    write_parts_pipelined,
)
from formats.dataset import DatasetWriter, Manifest, part_ranges, provenance
from formats.ids import Ids, codes, json_texts, parse_json_ids, self_codes, type_collision
from formats.json_stream import JSONStructureError
from formats.storage import FileInfo, local_file

log = logging.getLogger("ovlabel.convert")

SOURCES = COCO_SOURCES
ID_MINUS_ONE = {"o365v1", "o365v2", "v3det", "lvis_v1"}
KNOWN_BROKEN = {"o365v1": {6, 19, 23}, "o365v2": {908726, 320532, 320534}}
COCO80_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
# the 80 COCO 2017 (id, name) pairs of instances_*2017.json (MMDetection's CocoDataset.METAINFO classes)
COCO80_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
COCO80 = dict(zip(COCO80_IDS, COCO80_NAMES))
BACKGROUND_NAMES = {"background", "__background__", "_background_", "bg", "backgroud"}
COCO_URL_PREFIX = "http://images.cocodataset.org/"
O365V2_PREFIXES = ("images/v2/", "images/v1/")
# category fields kept in the manifest (and written back by `export coco`): LVIS's and COCO's
CATEGORY_FIELDS = ("synonyms", "def", "synset", "supercategory", "frequency", "image_count", "instance_count")


class ConversionError(ValueError):
    """A structural problem in the input: nothing was written."""


@dataclass
class IdColumns:
    """The file's ids (`formats.ids`: type and text kept) and their int64 codes (equal code = same id)."""

    images: Ids
    annotations: Ids
    refs: Ids  # annotations' image_id
    img_code: np.ndarray
    ann_code: np.ndarray
    ref_code: np.ndarray


def id_columns(cols: CocoColumns, path) -> IdColumns:
    """Parses the id columns; raises ConversionError when two image ids differ only in JSON type."""
    images, anns, refs = parse_json_ids(cols.img_id), parse_json_ids(cols.ann_id), parse_json_ids(cols.ann_img)
    clash = type_collision(images, cols.img_index)
    if clash:
        raise ConversionError(f"{path}: {clash}")
    img_code, ref_code = codes(images, refs)
    return IdColumns(images, anns, refs, img_code, self_codes(anns), ref_code)


@dataclass
class CocoConvertConfig:
    """Settings of a COCO-format conversion; recorded in the manifest."""

    source: str = "custom"
    image_root: str | None = None
    check_images: bool = False
    fix_o365_names: bool = False
    part_images: int = 100_000
    keep_unused_categories: bool = False  # custom: keep unused supercategory / background categories as classes


def o365_name_fixes() -> dict[int, tuple[str, str]]:
    """The 13 wrong Objects365 v2 category names: id -> (wrong, right)."""
    data = json.loads(resources.files("formats").joinpath("data/o365v2_name_fixes.json").read_text())
    return {int(k): (v[0], v[1]) for k, v in data["fixes"].items()}


def build_categories(raw: list, source: str, path: str, fix_names: bool = False) -> list[dict]:
    """Validates the file's categories and assigns label ids by the source's convention (sorted by label).

    Raises `ConversionError` for a category without an integer id or a name, a repeated id, or (COCO-style
    sources) an id below 1."""
    cats, seen = [], set()
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool):
            raise ConversionError(f"{path}: categories[{i}]: needs an integer 'id'")
        if not isinstance(c.get("name"), str) or not c["name"].strip():
            raise ConversionError(f"{path}: categories[{i}] (id={c['id']}): needs a non-empty 'name'")
        if c["id"] in seen:
            raise ConversionError(f"{path}: categories[{i}]: duplicate category id {c['id']}")
        seen.add(c["id"])
        entry = {"id": c["id"], "name": c["name"]}
        for k in CATEGORY_FIELDS:
            if k in c:
                entry[k] = c[k]
        cats.append(entry)
    ids = sorted(seen)
    if source in ID_MINUS_ONE:
        if ids[0] < 1:
            raise ConversionError(f"{path}: {source} category ids start at 1; found id {ids[0]}")
        label_of = {i: i - 1 for i in ids}
    elif source == "coco2017":
        cats = coco80_categories(cats, path)
        label_of = {cid: k for k, cid in enumerate(COCO80_IDS)}
    else:
        label_of = {cid: k for k, cid in enumerate(ids)}
    if fix_names:
        fixes = o365_name_fixes()
        for c in cats:
            wrong_right = fixes.get(c["id"])
            if wrong_right and c["name"] == wrong_right[0]:
                c["name"] = wrong_right[1]
    for c in cats:
        c["label"] = label_of[c["id"]]
    return sorted(cats, key=lambda c: c["label"])


def coco80_categories(cats: list[dict], path: str) -> list[dict]:
    """The 80 COCO 2017 categories for a file holding any subset of the standard (id, name) pairs.

    MMDetection's ``CocoDataset`` maps a file's categories into its fixed 80-class label space by name; here
    both id and name must be a standard pair (names compared ignoring case), and classes the file lacks are
    added with their standard name, so labels are the same 80 whatever subset a file holds. Raises
    `ConversionError` for an id that is not a COCO 2017 id or a name that is not its standard name."""
    by_id = {c["id"]: c for c in cats}
    for c in cats:
        std = COCO80.get(c["id"])
        if std is None:
            raise ConversionError(f"{path}: category id {c['id']} ({c['name']!r}) is not one of the 80 COCO 2017 "
                                  "categories; use --source custom")
        if c["name"].strip().lower() != std:
            raise ConversionError(f"{path}: category id {c['id']} is named {c['name']!r}; COCO 2017 names it "
                                  f"{std!r}; use --source custom")
    return [by_id.get(cid, {"id": cid, "name": name}) for cid, name in COCO80.items()]


def unused_categories(cats: list[dict], used_ids: set) -> dict[int, str]:
    """Categories with no box that are not classes: {id: reason}.

    A category no annotation uses is left out when other categories name it as their ``supercategory``
    (Roboflow's root category, e.g. id 0 "fishes" over "fish") or when its name is a background name
    (``background``, ``__background__``, ...). Used categories are always kept."""
    def norm(v) -> str | None:
        return None if v is None else str(v).strip().lower()

    supers = Counter(norm(c.get("supercategory")) for c in cats)
    out = {}
    for c in cats:
        if c["id"] in used_ids:
            continue
        name = norm(c["name"])
        if name in BACKGROUND_NAMES:
            out[c["id"]] = "unused background category"
        elif supers[name] - (norm(c.get("supercategory")) == name) > 0:
            out[c["id"]] = "unused supercategory of other categories"
    return out


def drop_categories(cats: list[dict], drop: dict[int, str], rej: Rejects) -> list[dict]:
    """`cats` without the `drop` ids, labels renumbered densely in the same order; each drop written to the
    rejects (counted in ``counts.categories_left_out`` only: ``counts.dropped`` counts boxes)."""
    for k, c in enumerate(cats):
        if c["id"] in drop:
            rej.add_records([f"categories[{k}] id={c['id']} name={c['name']!r}"], drop[c["id"]],
                            "no box uses it; --keep-unused-categories keeps it", dropped=True, counted=False)
    kept = [dict(c) for c in cats if c["id"] not in drop]
    for k, c in enumerate(kept):
        c["label"] = k
    return kept


def convert_coco(ann_path: str | os.PathLike, out_dir: str | os.PathLike, cfg: CocoConvertConfig, *,
                 overwrite: bool = False, progress: Callable[[int], None] | None = None,
                 window_bytes: int = 128 << 20) -> Manifest:
    """Converts one COCO-format JSON into an ODVG OD dataset directory; returns its manifest.

    `ann_path`, `out_dir` and ``cfg.image_root`` may be local paths or object-store URLs (`formats.storage`);
    a JSON file on an object store is copied to a local temp file to be parsed. Raises `ConversionError` for an
    unknown ``cfg.source`` (and, from `build_categories`, for invalid categories)."""
    if cfg.source not in SOURCES:
        raise ConversionError(f"unknown --source {cfg.source!r}; expected one of {', '.join(SOURCES)}")
    resume_key, info, existing = checked_input(ann_path, cfg, out_dir, overwrite, log)
    if existing is not None:
        return existing
    with local_file(ann_path) as local:
        return _convert(local, info, out_dir, cfg, resume_key, progress, window_bytes)


def _convert(ann_path: Path, info: FileInfo, out_dir, cfg: CocoConvertConfig, resume_key: dict,
             progress: Callable[[int], None] | None, window_bytes: int) -> Manifest:
    """`convert_coco` once the input is a local file (`info` names the original: path or URL)."""
    try:
        cols = read_coco(ann_path, progress=progress, window_bytes=window_bytes)
    except JSONStructureError as e:
        raise ConversionError(str(e)) from None
    cats = build_categories(cols.categories, cfg.source, info.location, cfg.fix_o365_names)
    ids = id_columns(cols, info.location)
    rej = Rejects(info.location)
    left_out: dict[int, str] = {}
    if cfg.source == "custom" and not cfg.keep_unused_categories:
        used = set(np.unique(cols.ann_cat[cols.ann_cat != MISSING]).tolist())
        left_out = unused_categories(cats, used)
        cats = drop_categories(cats, left_out, rej)
    problems = {(a, i): (r, d) for a, i, r, d in cols.problems}

    keep_img, file_names = _check_images(cols, ids, cfg, rej, problems)
    n_kept = int(keep_img.sum())
    kept_idx = np.flatnonzero(keep_img)
    img_slot = np.full(len(cols.img_id), -1, dtype=np.int64)
    img_slot[keep_img] = np.arange(int(keep_img.sum()))
    ann_keep, ann_slot, ann_label_pos, fit = _check_annotations(cols, ids, cats, keep_img, img_slot, rej, problems)

    manifest = Manifest(
        kind="od", source=cfg.source, image_root=cfg.image_root,
        categories=cats, config=asdict(cfg),
        provenance=provenance([{"path": info.location, "size": info.size, "sha256": cols.sha256}]),
    )
    extra = _extra_fields(cols, cfg)
    manifest.extra_columns = [f.name for f in extra]
    writer = DatasetWriter(out_dir, manifest, overwrite=True, resume_key=resume_key)
    boxes_per_image = _write_parts(writer, cols, ids.images, ids.annotations, cfg, cats, kept_idx, file_names,
                                   fit.xyxy, ann_keep, ann_slot, ann_label_pos, extra)
    writer.write_rejects("part-00000.parquet", rej.rows)
    counts = {
        "images_in": int(len(cols.img_id)), "images": n_kept,
        "boxes_in": int(len(cols.ann_id)), "boxes": int(ann_keep.sum()),
        "boxes_clipped": int((fit.clipped & ann_keep).sum()),
        "images_without_boxes": int((boxes_per_image == 0).sum()),
        **_ignore_counts(cols.ann_flags[ann_keep]),
        "categories": len(cats),
        "dropped": dict(sorted(rej.dropped.items())), "rejected": dict(sorted(rej.rejected.items())),
    }
    if left_out:
        counts["categories_left_out"] = dict(sorted(Counter(left_out.values()).items()))
    return writer.finish(counts)


def _ignore_counts(flags: np.ndarray) -> dict:
    """``{"crowd": n, "ignore": m}`` of the kept annotations (regions kept for evaluation only), when any."""
    counts = Counter(region_origins(flags).to_pylist())
    out = {k: counts[k] for k in S.IGNORE_ORIGINS if counts[k]}
    return {"ignore_regions": out} if out else {}


def _check_images(cols: CocoColumns, ids: IdColumns, cfg: CocoConvertConfig, rej: Rejects, problems: dict):
    reject = MaskRejects(rej, "images", cols.img_index, ids.images, problems)
    keep = reject.keep

    reject_bad_image_ids(reject, ids.img_code, cols.img_index, ids.images, cols.img_file)
    names = reject_bad_image_files(reject, _file_names(cols, cfg), cols.img_w, cols.img_h,
                                   name_missing="no 'file_name' (nor 'coco_url')")
    broken = KNOWN_BROKEN.get(cfg.source)
    if broken:
        known = pc.is_in(ids.images.text, value_set=pa.array([str(b) for b in broken])).fill_null(False)
        reject(known.to_numpy(zero_copy_only=False) & ~ids.images.is_str, "known broken image",
               f"{cfg.source} image skipped as MMDetection's coco2odvg.py skips it")
    if cfg.check_images and cfg.image_root:
        idx = np.flatnonzero(keep)
        bad = verify_image_files(cfg.image_root, names.take(from_numpy(idx)).to_pylist(), cols.img_w[idx], cols.img_h[idx])
        why = {int(idx[k]): v for k, v in bad.items()}
        for reason in sorted({r for r, _ in why.values()}):
            rows = [i for i, (r, _) in why.items() if r == reason]
            reject(np.isin(np.arange(len(keep)), rows), reason, lambda sel: [why[i][1] for i in sel])
    return keep, names


def _file_names(cols: CocoColumns, cfg: CocoConvertConfig) -> pa.Array:
    """Image paths as the dataset stores them: LVIS's ``coco_url`` -> ``train2017/NAME``, O365v2 prefixes cut."""
    names = cols.img_file
    if names.null_count and cols.img_url.null_count < len(cols.img_url):
        from_url = pc.replace_substring_regex(cols.img_url, pattern=r"^.*/([^/]+/[^/]+)$", replacement=r"\1")
        names = pc.if_else(pc.is_null(names), from_url, names)
    if cfg.source == "o365v2":
        names = pc.replace_substring_regex(names, pattern=r"^images/v[12]/", replacement="")
    return names


def _check_annotations(cols: CocoColumns, ids: IdColumns, cats: list[dict], keep_img, img_slot, rej: Rejects,
                       problems: dict):
    """Rejects or drops annotations by reason; returns (keep, image slot, label position, the boxes clipped by
    `formats.boxes.clip_to_image`: absolute-pixel xyxy). `cols.ann_box` (xywh) is turned into those xyxy
    boxes in place and unset."""
    n = len(cols.ann_id)
    reject = MaskRejects(rej, "annotations", cols.ann_index, ids.annotations, problems)
    keep = reject.keep

    reject(ids.ann_code == MISSING, "invalid id", ids.annotations.why)
    reject(later_duplicates(ids.ann_code), "duplicate annotation id", "an earlier annotation has the same id; the first is kept")
    img_row = index_of(ids.img_code, ids.ref_code)  # a duplicated image id is rejected below, never resolved
    reject(ids.ref_code == MISSING, "invalid image_id", ids.refs.why)
    reject(img_row < 0, "unknown image id",
           lambda idx: [f"image_id={r!r} names no image in 'images'" if isinstance(r, str)
                        else f"image_id={r} names no image in 'images'" for r in ids.refs.display(idx)])
    shared = shared_ids(ids.img_code, cols.img_index, ids.images, cols.img_file)
    if shared:
        ambiguous = np.isin(img_row, list(shared))
        reject(ambiguous, "ambiguous image id",
               lambda idx: [f"image_id={r!r} names more than one image: {shared[int(img_row[i])]}"
                            for i, r in zip(idx, ids.refs.display(idx))])
    if len(cols.img_id) == 0:  # nothing can be kept; every annotation is rejected above
        return keep, np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64), clip_to_image(
            np.zeros((n, 4)), 1.0, 1.0)
    img_ok = np.zeros(n, dtype=bool)
    img_ok[img_row >= 0] = keep_img[img_row[img_row >= 0]]
    reject(~img_ok, "image rejected", "its image was rejected (see images rejects)")
    cat_ids = np.array([c["id"] for c in cats], dtype=np.int64)
    label_pos = index_of(cat_ids, cols.ann_cat)
    reject(cols.ann_cat == MISSING, "invalid category_id", "missing or not an integer")
    reject(label_pos < 0, "unknown category id", lambda idx: [f"category_id={c} is not in 'categories'" for c in cols.ann_cat[idx]])
    box = cols.ann_box
    reject(~np.isfinite(box).all(axis=1), "invalid bbox", "bbox must be 4 finite numbers [x, y, w, h]")
    # MMDetection's filters, in its order; area and sides are the annotated box's, as MMDetection's
    w, h = box[:, 2], box[:, 3]
    with np.errstate(invalid="ignore"):
        no_area = np.where((cols.ann_flags & F_AREA_MISSING) > 0, w * h, cols.ann_area) <= 0
        small = (w < 1) | (h < 1)
    box[:, 2:] += box[:, :2]  # xywh -> xyxy in place (a copy of a 10-million-box column is 320 MB)
    cols.ann_box = None  # no longer xywh; the clipped xyxy boxes are returned
    safe_row = np.maximum(img_row, 0)
    fit = clip_to_image(box, cols.img_w[safe_row], cols.img_h[safe_row], in_place=True)
    reject(fit.empty, NO_OVERLAP, "box lies outside its image", dropped=True)
    reject(no_area, "area <= 0", None, dropped=True)
    reject(small, "width or height < 1", None, dropped=True)
    slot = np.where(keep, img_slot[np.maximum(img_row, 0)], -1)
    return keep, slot, label_pos, fit


def _extra_fields(cols: CocoColumns, cfg: CocoConvertConfig) -> list[pa.Field]:
    """``source_image_id`` always; ``coco_url`` when an image has one; LVIS's label lists for LVIS-like files."""
    extra = [pa.field("source_image_id", pa.string())]
    if len(cols.img_url) and cols.img_url.null_count < len(cols.img_url):
        extra.append(pa.field("coco_url", pa.string()))
    lvis_like = cfg.source == "lvis_v1" or (len(cols.img_neg) and cols.img_neg.null_count < len(cols.img_neg))
    if lvis_like:
        extra += [pa.field("neg_labels", pa.list_(pa.int32())), pa.field("not_exhaustive_labels", pa.list_(pa.int32()))]
    return extra


def region_origins(flags: np.ndarray) -> pa.Array:
    """Each annotation's region origin from its flags: ``crowd`` (``iscrowd``), else ``ignore``, else ``gold``."""
    crowd, ignore = (flags & F_CROWD) > 0, (flags & F_IGNORE) > 0
    names = np.array(["gold", "crowd", "ignore"], dtype=object)
    return pa.array(names[np.where(crowd, 1, np.where(ignore, 2, 0))], pa.string())


def _ids_to_labels(lists: pa.Array, cats: list[dict]) -> pa.Array:
    """Maps lists of category ids to lists of label ids; ids not in the categories are left out."""
    lut = {c["id"]: c["label"] for c in cats}
    return pa.array([None if v is None else [lut[x] for x in v if x in lut] for v in lists.to_pylist()],
                    type=pa.list_(pa.int32()))


def _write_parts(writer: DatasetWriter, cols: CocoColumns, img_ids: Ids, ann_ids: Ids, cfg: CocoConvertConfig,
                 cats: list[dict], kept_idx: np.ndarray, names: pa.Array, xyxy: np.ndarray, ann_keep, ann_slot, label_pos,
                 extra: list[pa.Field]) -> np.ndarray:
    """Groups the kept boxes (`xyxy`: absolute pixels, clipped) by image and writes the record parts; returns the
    box count of each image."""
    n_kept = len(kept_idx)
    boxes_idx = np.flatnonzero(ann_keep)
    order = boxes_idx[np.argsort(ann_slot[boxes_idx], kind="stable")]
    counts, offsets = slot_offsets(ann_slot[boxes_idx], n_kept)
    cat_names = pa.array([c["name"] for c in cats], pa.string())
    cat_labels = np.array([c["label"] for c in cats], dtype=np.int32)
    ranges = part_ranges(n_kept, cfg.part_images)
    prefix = f"{cfg.source}/"
    names_extra = {f.name for f in extra}

    def build(p: int) -> tuple[str, pa.Table]:
        a, b = ranges[p]
        rows = kept_idx[a:b]
        sel = order[offsets[a]:offsets[b]]
        image_id = pc.binary_join_element_wise(prefix, img_ids.text.take(from_numpy(rows)), "")
        lp = label_pos[sel]
        flags = cols.ann_flags[sel]
        regions = S.regions_from_columns(  # gold boxes are keyed by position (schema.region_keys)
            offsets[a:b + 1] - offsets[a], xyxy[sel],
            label=cat_labels[lp], category=cat_names.take(from_numpy(lp)), origin=region_origins(flags),
            area=np.where((flags & F_AREA_MISSING) > 0, np.nan, cols.ann_area[sel]),
            source_id=json_texts(ann_ids, sel),
        )
        data = {
            "image_id": image_id,
            "source": pa.repeat(pa.scalar(cfg.source), b - a),
            "file_name": names.take(from_numpy(rows)),
            "width": from_numpy(cols.img_w[rows].astype(np.int32)),
            "height": from_numpy(cols.img_h[rows].astype(np.int32)),
            "caption": pa.nulls(b - a, pa.string()),
            "regions": regions,
        }
        data["source_image_id"] = json_texts(img_ids, rows)
        if "coco_url" in names_extra:
            data["coco_url"] = cols.img_url.take(from_numpy(rows))
        if "neg_labels" in names_extra:
            data["neg_labels"] = _ids_to_labels(cols.img_neg.take(from_numpy(rows)), cats)
            data["not_exhaustive_labels"] = _ids_to_labels(cols.img_not_exh.take(from_numpy(rows)), cats)
        table = pa.Table.from_arrays(list(data.values()), schema=S.record_schema(extra))
        return f"part-{p:05d}.parquet", table

    write_parts_pipelined(writer, (build(p) for p in range(len(ranges))))
    return counts
