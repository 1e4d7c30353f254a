"""Reads a COCO-format detection JSON (COCO, Objects365, LVIS, V3Det) into compact numpy columns.

The file is streamed (``formats.json_stream``): big arrays are parsed window by window with duckdb's
JSON reader, then kept as flat numpy columns (about 65 bytes a box), never as Python dicts. Elements
the fast parser refuses are decoded one by one and checked individually, so one bad record costs one
reject, not the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from formats.arrow_np import from_numpy, warm_pandas_import
from formats.digest import sha256_async
from formats.json_stream import FastParseError, JSONObjectStream, JSONStructureError, Window

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


class _DuckParser:
    """Parses a window of array elements (``{..}, {..}``) into an Arrow table with duckdb's JSON reader.

    The window is turned into newline-delimited JSON in place (``}, {`` -> ``}\\n {``: same length, so
    nothing is copied and offsets hold), written over one temp file kept for the whole read (rewriting its
    pages is half the cost of a new file's), parsed, and restored.
    """

    def __init__(self, tmp_dir: str | os.PathLike | None = None, specs: dict[str, dict[str, str]] | None = None):
        self.con = duckdb.connect()
        self.fd, self.tmp = tempfile.mkstemp(prefix=".ovlabel-window-", suffix=".ndjson", dir=tmp_dir or _fast_tmp_dir())
        self.specs = {key: "{" + ", ".join(f"'{k}': '{v}'" for k, v in cols.items()) + "}"
                      for key, cols in (specs or {"images": _IMAGE_COLUMNS, "annotations": _ANN_COLUMNS}).items()}

    def __call__(self, key: str, window: memoryview) -> pa.Table:
        arr = np.frombuffer(window, dtype=np.uint8)
        if not arr.flags.writeable:
            arr = arr.copy()
        commas = _separator_commas(arr)
        arr[commas] = 10  # ',' -> '\n'
        try:
            os.pwrite(self.fd, arr.data, 0)
            os.pwrite(self.fd, b"\n", len(arr))  # duckdb may misread a last line without its newline
            os.ftruncate(self.fd, len(arr) + 1)
        finally:
            arr[commas] = 44  # restore ','
        try:
            return self.con.sql(
                # default maximum_object_size: a larger one makes duckdb read the window single-threaded
                f"select * from read_json('{self.tmp}', format='newline_delimited', columns={self.specs[key]})"
            ).to_arrow_table()
        except duckdb.Error as e:
            log.debug("fast parser refused a %s window (%s); decoding it element by element", key, e)
            raise FastParseError(str(e)) from None

    def close(self) -> None:
        self.con.close()
        os.close(self.fd)
        Path(self.tmp).unlink(missing_ok=True)


def _separator_commas(a: np.ndarray, step: int = 1 << 20) -> np.ndarray:
    """Positions of the commas in ``},{`` and ``}, {`` (candidate element separators).

    The ``}`` are found 1 MB at a time: a window-sized boolean temporary would be a fresh mapping (and page
    faults) per window, a small one stays in cache and is reused.
    """
    n = len(a)
    if n < 3:
        return np.zeros(0, dtype=np.int64)
    brace = np.concatenate([np.flatnonzero(a[s:min(s + step, n - 2)] == 125) + (s + 1) for s in range(0, n - 2, step)])
    brace = brace[a[brace] == 44]  # '},'
    nxt = a[np.minimum(brace + 1, n - 1)]
    nxt2 = a[np.minimum(brace + 2, n - 1)]
    return brace[(nxt == 123) | ((nxt == 32) & (nxt2 == 123))]


def _fast_tmp_dir() -> str | None:
    """A RAM-backed temp folder when one with room exists (window files are rewritten constantly)."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > (1 << 30):
            return "/dev/shm"
    except OSError:
        pass
    return None


def read_coco(path: str | os.PathLike, *, tmp_dir: str | os.PathLike | None = None,
              progress: Callable[[int], None] | None = None, window_bytes: int = 128 << 20) -> CocoColumns:
    """Streams a COCO JSON file into CocoColumns; raises JSONStructureError for structural problems."""
    path = str(path)
    warm_pandas_import()
    out = CocoColumns(path=path)
    digest = sha256_async(path)
    parser = _DuckParser(tmp_dir)
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
                    out.categories = value
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
    if not isinstance(out.categories, list) or not out.categories:
        raise JSONStructureError(f"{path}: no 'categories' list; not a COCO detection file")
    _concat_images(out, imgs)
    _concat_anns(out, anns)
    return out


@dataclass
class JSONTables:
    """The big arrays of a COCO-like JSON file as Arrow tables (plus ``_index``: position in the array)."""

    path: str
    tables: dict[str, pa.Table]
    other: dict  # small top-level values (categories, info, ...)
    problems: list  # (array, index, reason, detail) found on the slow path
    sha256: str | None


def read_tables(path: str | os.PathLike, specs: dict[str, dict[str, str]], *,
                progress: Callable[[int], None] | None = None, window_bytes: int = 128 << 20) -> JSONTables:
    """Streams the arrays named in `specs` (key -> {column: duckdb type}) of a JSON object into Arrow tables."""
    path = str(path)
    warm_pandas_import()
    digest = sha256_async(path)
    parser = _DuckParser(specs=specs)
    pieces: dict[str, list[pa.Table]] = {k: [] for k in specs}
    other: dict = {}
    problems: list = []
    try:
        with open(path, "rb") as f:
            stream = JSONObjectStream(f, path, big_arrays=set(specs), fast_parse=parser,
                                      window_bytes=window_bytes, progress=progress)
            for item in stream:
                if isinstance(item, Window):
                    t = _objects_to_table(item, specs[item.key], problems) if item.objects is not None else item.table
                    index = from_numpy(np.arange(item.start_index, item.start_index + t.num_rows, dtype=np.int64))
                    pieces[item.key].append(t.append_column("_index", index))
                    continue
                key, value = item
                if key in specs and not isinstance(value, list):
                    raise JSONStructureError(f"{path}: '{key}' must be a list, found {type(value).__name__}")
                if key not in specs:
                    other[key] = value
            found = stream.keys
    except UnicodeDecodeError as e:
        raise JSONStructureError(f"{path}: not UTF-8 text: {e}") from None
    finally:
        parser.close()
    tables = {}
    for key, cols in specs.items():
        if key not in found:
            raise JSONStructureError(f"{path}: no '{key}' list")
        schema = pa.schema([(c, arrow_type(t)) for c, t in cols.items()] + [("_index", pa.int64())])
        tables[key] = pa.concat_tables([t.cast(schema) for t in pieces[key]]) if pieces[key] else schema.empty_table()
    return JSONTables(path, tables, other, problems, digest.result())


# -- windows -> columns ---------------------------------------------------------------------------------

def _ints(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        arr = arr.fill_null(_MISSING)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


def _image_window(w: Window, problems: list) -> dict:
    t = _objects_to_table(w, _IMAGE_COLUMNS, problems) if w.objects is not None else w.table
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
    t = _objects_to_table(w, _ANN_COLUMNS, problems) if w.objects is not None else w.table
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


def _objects_to_table(w: Window, columns: dict, problems: list) -> pa.Table:
    """Checks elements one by one (the slow path): coerces what is safe, nulls what is not, notes why."""
    rows = {k: [] for k in columns}
    array = w.key
    for i, obj in enumerate(w.objects):
        idx = w.start_index + i
        if not isinstance(obj, dict):
            problems.append((array, idx, "not an object", f"found {type(obj).__name__}"))
            for k in rows:
                rows[k].append(None)
            continue
        for k, typ in columns.items():
            v = obj.get(k)
            rows[k].append(_coerce(v, typ, array, idx, k, obj, problems))
    return pa.table({k: pa.array(v, type=arrow_type(columns[k])) for k, v in rows.items()})


def arrow_type(duck_type: str) -> pa.DataType:
    """The Arrow type duckdb gives a column spec (``BIGINT[][]`` -> list<list<int64>>)."""
    if duck_type.endswith("[]"):
        return pa.list_(arrow_type(duck_type[:-2]))
    return {"BIGINT": pa.int64(), "VARCHAR": pa.string(), "DOUBLE": pa.float64(), "JSON": pa.string()}[duck_type]


def _coerce(v, typ: str, array: str, idx: int, key: str, obj: dict, problems: list):
    if v is None:
        return None
    rid = obj.get("id")
    where = f"id={rid!r}" if isinstance(rid, (int, str)) else ""
    if typ == "JSON":  # an id: its raw JSON text, judged by formats.ids
        return json.dumps(v, ensure_ascii=False)
    if typ == "BIGINT":
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, int):
            return v
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            return int(v)
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():  # sizes as strings in some dumps
            return int(v)
        problems.append((array, idx, f"invalid {key}", f"{where} {key}={v!r} is not an integer".strip()))
        return None
    if typ == "DOUBLE":
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
        problems.append((array, idx, f"invalid {key}", f"{where} {key}={v!r} is not a finite number".strip()))
        return None
    if typ == "VARCHAR":
        if isinstance(v, str):
            return v
        problems.append((array, idx, f"invalid {key}", f"{where} {key}={v!r} is not a string".strip()))
        return None
    if typ == "DOUBLE[]":
        ok = isinstance(v, list) and len(v) == 4 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
        if ok:
            return [float(x) for x in v]
        problems.append((array, idx, "invalid bbox", f"{where} bbox={v!r} is not 4 finite numbers".strip()))
        return None
    if typ.startswith("BIGINT[]"):
        depth = typ.count("[]")
        if _int_lists(v, depth):
            return v
        problems.append((array, idx, f"invalid {key}", f"{where} {key} is not a {depth}-deep list of integers".strip()))
        return None
    raise AssertionError(typ)


def _int_lists(v, depth: int) -> bool:
    """True for integers nested in lists `depth` deep (``[[0, 4], [9, 12]]`` is depth 2)."""
    if depth == 0:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, list) and all(_int_lists(x, depth - 1) for x in v)


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
