"""Reads a COCO-format detection JSON (COCO, Objects365, LVIS, V3Det) into compact numpy columns.

The file is streamed (``formats.json_stream``): big arrays are parsed window by window by the shared JSON-arrays
reader (`formats.json_arrays`, duckdb's JSON reader), then kept as flat numpy columns (about 65 bytes a box),
never as Python dicts. Elements the fast parser refuses are decoded one by one and checked individually, so one
bad record costs one reject, not the file. The MDETR/GoldG converter reads its files with
`formats.json_arrays.read_tables`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from formats.arrow_np import warm_pandas_import
from formats.digest import sha256_async
from formats.json_arrays import DuckParser, objects_to_table
from formats.json_stream import JSONObjectStream, JSONStructureError, Window

log = logging.getLogger("ovlabel.coco")

_IMAGE_COLUMNS = {
    "id": "JSON",  # raw JSON text: the id's type and text are kept (formats.ids)
    "file_name": "VARCHAR",
    "coco_url": "VARCHAR",
    "width": "BIGINT",
    "height": "BIGINT",
    "neg_category_ids": "BIGINT[]",
    "not_exhaustive_category_ids": "BIGINT[]",
}
_ANN_COLUMNS = {
    "id": "JSON",
    "image_id": "JSON",
    "category_id": "BIGINT",
    "bbox": "DOUBLE[]",
    "area": "DOUBLE",
    "iscrowd": "BIGINT",
    "ignore": "BIGINT",
}
COCO_SPECS = {"images": _IMAGE_COLUMNS, "annotations": _ANN_COLUMNS}  # the columns read (formats.json_arrays)
_MISSING = np.iinfo(np.int64).min  # sentinel for a missing integer

# annotation flag bits
F_CROWD = 1
F_IGNORE = 2
F_AREA_MISSING = 4


@dataclass
class CocoColumns:
    """What a COCO file holds, as columns. Integers missing in the file are ``_MISSING``; ids are the raw JSON
    text of each id (null where absent), read by `formats.ids.parse_json_ids`."""

    path: str
    sha256: str | None = None
    categories: list = field(default_factory=list)
    other: dict = field(default_factory=dict)  # info, licenses, ...
    # images
    img_id: pa.Array = None  # raw JSON text
    img_file: pa.Array = None
    img_url: pa.Array = None
    img_w: np.ndarray = None
    img_h: np.ndarray = None
    img_neg: pa.Array = None
    img_not_exh: pa.Array = None
    img_index: np.ndarray = None
    # annotations
    ann_id: pa.Array = None  # raw JSON text
    ann_img: pa.Array = None  # raw JSON text
    ann_cat: np.ndarray = None
    ann_box: np.ndarray = None  # (N, 4) xywh, NaN where invalid
    ann_area: np.ndarray = None
    ann_flags: np.ndarray = None
    ann_index: np.ndarray = None
    # per-element problems found while decoding: (array, index, reason, detail)
    problems: list = field(default_factory=list)
    has_images: bool = False
    has_annotations: bool = False


def read_coco(path: str | os.PathLike, *, tmp_dir: str | os.PathLike | None = None,
              progress: Callable[[int], None] | None = None, window_bytes: int = 128 << 20) -> CocoColumns:
    """Streams a COCO JSON file into CocoColumns; raises JSONStructureError for structural problems."""
    path = str(path)
    warm_pandas_import()
    out = CocoColumns(path=path)
    categories_given = False
    digest = sha256_async(path)
    parser = DuckParser(COCO_SPECS, tmp_dir)
    imgs: list[dict] = []
    anns: list[dict] = []
    try:
        with open(path, "rb") as f:
            stream = JSONObjectStream(f, path, big_arrays={"images", "annotations"}, fast_parse=parser,
                                      window_bytes=window_bytes, progress=progress)
            for item in stream:
                if isinstance(item, Window):
                    if item.key == "images":
                        out.has_images = True
                        imgs.append(_image_window(item, out.problems))
                    else:
                        out.has_annotations = True
                        anns.append(_ann_window(item, out.problems))
                    continue
                key, value = item
                if key in ("images", "annotations"):
                    if not isinstance(value, list):
                        raise JSONStructureError(f"{path}: '{key}' must be a list, found {type(value).__name__}")
                    setattr(out, f"has_{key}", True)
                elif key == "categories":
                    out.categories, categories_given = value, True
                else:
                    out.other[key] = value
            out.has_images = out.has_images or "images" in stream.keys
            out.has_annotations = out.has_annotations or "annotations" in stream.keys
    except UnicodeDecodeError as e:
        raise JSONStructureError(f"{path}: not UTF-8 text: {e}") from None
    finally:
        parser.close()
    out.sha256 = digest.result()
    if not out.has_images:
        raise JSONStructureError(f"{path}: no 'images' list; not a COCO detection file")
    if not isinstance(out.categories, list) or not (out.categories or categories_given):
        raise JSONStructureError(f"{path}: no 'categories' list; not a COCO detection file")
    if not out.categories:
        raise JSONStructureError(f"{path}: the 'categories' list is empty; a COCO detection file names its "
                                 "categories")
    _concat_images(out, imgs)
    _concat_anns(out, anns)
    return out


# -- windows -> columns ---------------------------------------------------------------------------------

def _ints(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        arr = arr.fill_null(_MISSING)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


def _image_window(w: Window, problems: list) -> dict:
    t = objects_to_table(w, _IMAGE_COLUMNS, problems) if w.objects is not None else w.table
    n = t.num_rows
    return {
        "id": t.column("id").combine_chunks().cast(pa.string()),
        "file_name": t.column("file_name").combine_chunks(),
        "coco_url": t.column("coco_url").combine_chunks(),
        "width": _ints(t.column("width")),
        "height": _ints(t.column("height")),
        "neg": t.column("neg_category_ids").combine_chunks(),
        "not_exh": t.column("not_exhaustive_category_ids").combine_chunks(),
        "index": np.arange(w.start_index, w.start_index + n, dtype=np.int64),
    }


def _ann_window(w: Window, problems: list) -> dict:
    t = objects_to_table(w, _ANN_COLUMNS, problems) if w.objects is not None else w.table
    n = t.num_rows
    bbox = t.column("bbox").combine_chunks()
    box = np.full((n, 4), np.nan)
    lengths = np.diff(bbox.offsets.to_numpy()) if n else np.zeros(0, dtype=np.int64)
    valid = bbox.is_valid().to_numpy(zero_copy_only=False) & (lengths == 4)
    values = bbox.flatten()
    if values.null_count:  # a null coordinate invalidates its box
        owner = np.repeat(np.arange(n), np.where(bbox.is_valid().to_numpy(zero_copy_only=False), lengths, 0))
        valid[np.unique(owner[values.is_null().to_numpy(zero_copy_only=False)])] = False
        values = values.fill_null(np.nan)
    flat = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if valid.all() and len(flat) == 4 * n:
        box = flat.reshape(n, 4).copy()
    elif valid.any():
        starts = bbox.offsets.to_numpy()[:-1][valid] - bbox.offsets.to_numpy()[0]
        box[valid] = flat[starts[:, None] + np.arange(4)]
    area_col = t.column("area").combine_chunks()
    area = area_col.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls become NaN
    crowd = _ints(t.column("iscrowd"))
    ignore = _ints(t.column("ignore"))
    flags = ((crowd != _MISSING) & (crowd != 0)) * F_CROWD + ((ignore != _MISSING) & (ignore != 0)) * F_IGNORE
    flags = flags + area_col.is_null().to_numpy(zero_copy_only=False) * F_AREA_MISSING
    return {
        "id": t.column("id").combine_chunks().cast(pa.string()),
        "image_id": t.column("image_id").combine_chunks().cast(pa.string()),
        "category_id": _ints(t.column("category_id")),
        "box": box,
        "area": area,
        "flags": flags.astype(np.uint8),
        "index": np.arange(w.start_index, w.start_index + n, dtype=np.int64),
    }


def _concat(windows: list[dict], key: str, empty):
    """Concatenates one column of all windows, freeing each window's piece as it is copied."""
    pieces = [w.pop(key) for w in windows]
    if not pieces:
        return empty
    if not isinstance(pieces[0], np.ndarray):
        return pa.concat_arrays(pieces)
    out = np.empty((sum(len(p) for p in pieces),) + pieces[0].shape[1:], dtype=pieces[0].dtype)
    at = 0
    for k in range(len(pieces)):
        p = pieces[k]
        out[at:at + len(p)] = p
        at += len(p)
        pieces[k] = None
    return out


def _concat_images(out: CocoColumns, windows: list[dict]) -> None:
    out.img_id = _concat(windows, "id", pa.array([], pa.string()))
    out.img_file = _concat(windows, "file_name", pa.array([], pa.string()))
    out.img_url = _concat(windows, "coco_url", pa.array([], pa.string()))
    out.img_w = _concat(windows, "width", np.zeros(0, np.int64))
    out.img_h = _concat(windows, "height", np.zeros(0, np.int64))
    out.img_neg = _concat(windows, "neg", pa.array([], pa.list_(pa.int64())))
    out.img_not_exh = _concat(windows, "not_exh", pa.array([], pa.list_(pa.int64())))
    out.img_index = _concat(windows, "index", np.zeros(0, np.int64))


def _concat_anns(out: CocoColumns, windows: list[dict]) -> None:
    out.ann_id = _concat(windows, "id", pa.array([], pa.string()))
    out.ann_img = _concat(windows, "image_id", pa.array([], pa.string()))
    out.ann_cat = _concat(windows, "category_id", np.zeros(0, np.int64))
    out.ann_box = _concat(windows, "box", np.zeros((0, 4)))
    out.ann_area = _concat(windows, "area", np.zeros(0))
    out.ann_flags = _concat(windows, "flags", np.zeros(0, np.uint8))
    out.ann_index = _concat(windows, "index", np.zeros(0, np.int64))


MISSING = _MISSING
