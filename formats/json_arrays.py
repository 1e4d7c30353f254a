"""Streaming the big arrays of a JSON object (COCO-like files: ``{"images": [...], "annotations": [...], ...}``)
into Arrow tables, the reader shared by the COCO reader (`formats.coco_read`) and the MDETR/GoldG converter.

The file is streamed (`formats.json_stream`): each window of array elements is parsed by duckdb's JSON reader
(`DuckParser`) against a column spec (``{column: duckdb type}``); a window the fast parser refuses is decoded
element by element (`objects_to_table`), coercing what is safe and noting a problem ``(array, index, reason,
detail)`` for each value that is not, so one bad record costs one reject, not the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from formats.arrow_np import from_numpy, warm_pandas_import
from formats.digest import sha256_async
from formats.json_stream import FastParseError, JSONObjectStream, JSONStructureError, Window

log = logging.getLogger("ovlabel.json")


class DuckParser:
    """Parses a window of array elements (``{..}, {..}``) into an Arrow table with duckdb's JSON reader.

    The window is turned into newline-delimited JSON in place (``}, {`` -> ``}\\n {``: same length, so
    nothing is copied and offsets hold), written over one temp file kept for the whole read (rewriting its
    pages is half the cost of a new file's), parsed, and restored. `specs`: array key -> {column: duckdb type}.
    Raises `FastParseError` for a window duckdb refuses (the caller decodes it element by element).
    """

    def __init__(self, specs: dict[str, dict[str, str]], tmp_dir: str | os.PathLike | None = None):
        self.con = duckdb.connect()
        self.fd, self.tmp = tempfile.mkstemp(prefix=".ovlabel-window-", suffix=".ndjson", dir=tmp_dir or fast_tmp_dir())
        self.specs = {key: "{" + ", ".join(f"'{k}': '{v}'" for k, v in cols.items()) + "}"
                      for key, cols in specs.items()}

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


def fast_tmp_dir() -> str | None:
    """A RAM-backed temp folder when one with room exists (window files are rewritten constantly)."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > (1 << 30):
            return "/dev/shm"
    except OSError:
        pass
    return None


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
    """Streams the arrays named in `specs` (key -> {column: duckdb type}) of a JSON object into Arrow tables,
    each with ``_index`` (the element's position in its array); other top-level values go to ``other``.

    Raises JSONStructureError when the file is not UTF-8, a named key is missing or is not a list."""
    path = str(path)
    warm_pandas_import()
    digest = sha256_async(path)
    parser = DuckParser(specs)
    pieces: dict[str, list[pa.Table]] = {k: [] for k in specs}
    other: dict = {}
    problems: list = []
    try:
        with open(path, "rb") as f:
            stream = JSONObjectStream(f, path, big_arrays=set(specs), fast_parse=parser,
                                      window_bytes=window_bytes, progress=progress)
            for item in stream:
                if isinstance(item, Window):
                    t = objects_to_table(item, specs[item.key], problems) if item.objects is not None else item.table
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


def objects_to_table(w: Window, columns: dict, problems: list) -> pa.Table:
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
        if isinstance(v, str) and v.strip().lstrip("-").isdecimal():  # sizes as strings in some dumps (not isdigit: "²")
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
