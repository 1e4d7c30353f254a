"""Pieces every converter shares: reject bookkeeping, id lookups, safe image paths, image header checks."""

from __future__ import annotations

import functools
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from formats import paths as P
from formats.coco_read import MISSING
from formats.dataset import prior_run
from formats.ids import format_id
from formats.storage import FileInfo, display, file_identity


class Rejects:
    """Collects rejected and dropped records with their reasons, and counts them."""

    def __init__(self, file: str):
        self.file = file
        self.rows: list[dict] = []
        self.rejected: Counter = Counter()
        self.dropped: Counter = Counter()

    def add(self, array: str, indices, reason: str, details=None, ids=None, dropped: bool = False) -> None:
        indices = np.asarray(indices).reshape(-1)
        if len(indices) == 0:
            return
        (self.dropped if dropped else self.rejected)[reason] += len(indices)
        for k, idx in enumerate(indices.tolist()):
            detail = details[k] if isinstance(details, list) else details
            rid = None if ids is None else ids[k]
            record = f"{array}[{idx}]" + ("" if rid is None or rid == MISSING else f" id={format_id(rid)}")
            self.rows.append({"file": self.file, "record": record,
                              "reason": ("dropped: " if dropped else "") + reason, "detail": detail})

    def add_records(self, records: list[str], reason: str, details=None, dropped: bool = False,
                    counted: bool = True) -> None:
        """Like `add`, for records named by the caller (``ImageID=...``); `counted=False` writes the rows
        without counting them in `dropped` / `rejected` (the caller counts them elsewhere)."""
        if not records:
            return
        if counted:
            (self.dropped if dropped else self.rejected)[reason] += len(records)
        for k, record in enumerate(records):
            detail = details[k] if isinstance(details, list) else details
            self.rows.append({"file": self.file, "record": record,
                              "reason": ("dropped: " if dropped else "") + reason, "detail": detail})


class MaskRejects:
    """Rejects (or drops) the elements of one array selected by boolean masks, each at most once.

    ``r = MaskRejects(rejects, "images", index, ids, problems)``; ``r(mask, reason, detail)`` records every
    still-kept element under `mask` with its reason; `r.keep` is what is left. A detail may be one string,
    a list (one per selected element) or a function of the selected positions; `ids` an array or a
    `formats.ids.Ids` (named as the file wrote them: ``id=3``, ``id='03'``); a problem noted while
    decoding the element (`problems[(array, index)]`) is the better detail and wins for rejects.
    """

    def __init__(self, rejects: Rejects, array: str, index: np.ndarray, ids, problems: dict):
        self.rejects, self.array, self.index, self.ids, self.problems = rejects, array, index, ids, problems
        self.keep = np.ones(len(index), dtype=bool)

    def __call__(self, mask, reason: str, detail=None, dropped: bool = False) -> None:
        idx = np.flatnonzero(mask & self.keep)
        if len(idx) == 0:
            return
        details = detail(idx) if callable(detail) else detail
        if not dropped:
            details = [self.problems.get((self.array, int(self.index[i])), (None, None))[1]
                       or (details[k] if isinstance(details, list) else details) for k, i in enumerate(idx)]
        ids = self.ids.display(idx) if hasattr(self.ids, "display") else self.ids[idx].tolist()
        self.rejects.add(self.array, self.index[idx], reason, details, ids, dropped=dropped)
        self.keep[idx] = False


def checked_input(ann_path: str | os.PathLike, cfg, out_dir, overwrite: bool, log) -> tuple[dict, FileInfo, object]:
    """The resume key of a one-file conversion, the file's identity (`formats.storage.FileInfo`: path or URL,
    size, version), and the finished dataset if there is one. The input, the image root and `out_dir` may be
    local paths or object-store URLs (`formats.storage`); the image root is recorded absolute, without
    credentials."""
    info = file_identity(ann_path)
    if getattr(cfg, "image_root", None) is not None:
        cfg.image_root = display(cfg.image_root)
    resume_key = {"config": asdict(cfg), "input": list(info)}
    existing = prior_run(out_dir, resume_key, overwrite)
    if existing is not None:
        log.info("%s: already converted from the same input and settings; nothing to do", display(out_dir))
    return resume_key, info, existing


def later_duplicates(ids: np.ndarray) -> np.ndarray:
    """True for every occurrence of an id after its first (O(n) when ids are already increasing)."""
    dup = np.zeros(len(ids), dtype=bool)
    if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return dup
    _, first = np.unique(ids, return_index=True)
    dup[:] = True
    dup[first] = False
    return dup


def shared_ids(codes: np.ndarray, index: np.ndarray, ids, files: pa.Array) -> dict[int, str]:
    """Row -> the images that share its id (``images[0] id=3 file_name='a.jpg' and images[4] ...``), for
    every image whose id another image has too (`codes`: the ids' codes, MISSING where invalid; `index`:
    the position in the file's ``images``; `ids`: `formats.ids.Ids`; `files`: the file names)."""
    valid = codes != MISSING
    if valid.sum() < 2 or not later_duplicates(codes[valid]).any():
        return {}
    _, inv, counts = np.unique(codes, return_inverse=True, return_counts=True)
    rows = np.flatnonzero((counts[inv] > 1) & valid)
    names = files.take(pa.array(rows, pa.int64())).to_pylist()
    groups: dict[int, list[str]] = {}
    for r, f, i in zip(rows.tolist(), names, ids.display(rows)):
        groups.setdefault(int(codes[r]), []).append(f"images[{index[r]}] id={i!r} file_name={f!r}")
    return {r: " and ".join(groups[int(codes[r])]) for r in rows.tolist()}


def index_of(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Row of the first occurrence of each query in `keys`, -1 where absent (a direct table for dense ids)."""
    out = np.full(len(queries), -1, dtype=np.int64)
    valid = keys[keys != MISSING]
    if len(valid) == 0:
        return out
    lo, hi = int(valid.min()), int(valid.max())
    if hi - lo < 4 * len(keys) + 1024:
        table = np.full(hi - lo + 1, -1, dtype=np.int64)
        rows = np.flatnonzero(keys != MISSING)
        table[keys[rows][::-1] - lo] = rows[::-1]  # reversed: the first occurrence wins
        inside = (queries >= lo) & (queries <= hi)
        out[inside] = table[queries[inside] - lo]
        return out
    uniq, first = np.unique(keys, return_index=True)
    pos = np.minimum(np.searchsorted(uniq, queries), len(uniq) - 1)
    hit = uniq[pos] == queries
    out[hit] = first[pos[hit]]
    return out


_SUSPICIOUS = r"^[/\\]|\\|\.\.|^[A-Za-z]:|\x00|://"


def safe_file_names(names: pa.Array) -> tuple[pa.Array, dict[int, str]]:
    """Normalises relative image paths; returns them and {index: why} for paths that escape the image root."""
    suspicious = np.flatnonzero(pc.fill_null(pc.match_substring_regex(names, _SUSPICIOUS), False).to_numpy(zero_copy_only=False))
    unsafe: dict[int, str] = {}
    if len(suspicious) == 0:
        return names, unsafe
    fixed = names.to_pylist()
    for i in suspicious.tolist():
        try:
            fixed[i] = P.check_relative(fixed[i])
        except P.UnsafePathError as e:
            unsafe[i] = str(e)
    return pa.array(fixed, pa.string()), unsafe


def verify_image_files(root: str, names: list[str], widths: np.ndarray, heights: np.ndarray) -> dict[int, tuple[str, str]]:
    """Checks each image exists under `root` and its header size (as displayed: EXIF orientation applied,
    `formats.images.image_size`) matches; returns {index: (reason, detail)}, details naming images by path, or
    by URL (no credentials) under a root on an object store (``s3://bucket/images``: asked of the store, an
    existence check and the header read by small range requests per image, `formats.images.image_size_under`)."""
    from formats.images import ImageError, image_size, image_size_under, store_root

    store = store_root(str(root))

    def check(i: int):
        try:
            full = P.resolve(root, names[i]) if store is None else P.check_relative(names[i])
        except P.UnsafePathError as e:
            return i, ("unsafe file_name", str(e))
        if store is not None:  # `full` is the name inside the store's folder
            if not store.isfile(full):
                return i, ("image file missing", store.url_of(full))
            measure, full = functools.partial(image_size_under, store, full), store.url_of(full)
        elif not full.is_file():
            return i, ("image file missing", str(full))
        else:
            measure = functools.partial(image_size, full)
        try:
            w, h = measure()
        except ImageError as e:
            return i, ("unreadable image", str(e))
        if (w, h) != (int(widths[i]), int(heights[i])):
            note = ""
            if (h, w) == (int(widths[i]), int(heights[i])):
                note = " (EXIF orientation turns the stored image; the annotation has the stored, unturned size)"
            return i, ("image size mismatch", f"{full}: header {w}x{h} as displayed, annotation {widths[i]}x{heights[i]}{note}")
        return i, None

    with ThreadPoolExecutor(8) as pool:
        return {i: r for i, r in pool.map(check, range(len(names))) if r is not None}


def reject_bad_image_ids(reject: MaskRejects, codes: np.ndarray, index: np.ndarray, ids, names: pa.Array, *,
                         owned: str = "annotations") -> dict[int, str]:
    """The image id checks every annotation-file converter makes (COCO, MDETR/GoldG), each element rejected
    once under the first reason that applies: ``invalid id`` (`codes` MISSING: the id did not decode), then
    ``duplicate image id`` (images sharing an id, named by their `names` in the detail: which one its `owned`
    belong to is ambiguous, so none is kept). `index` are the images' positions in the file, `ids` their
    `formats.ids.Ids`. Returns the shared ids (`shared_ids`: image position -> the records sharing its id)."""
    reject(codes == MISSING, "invalid id", ids.why)
    shared = shared_ids(codes, index, ids, names)
    reject(np.isin(np.arange(len(codes)), list(shared)), "duplicate image id",
           lambda idx: [f"{shared[i]} have the same id: which one its {owned} belong to is ambiguous; none is kept"
                        for i in idx])
    return shared


def reject_bad_image_files(reject: MaskRejects, names: pa.Array, widths: np.ndarray, heights: np.ndarray, *,
                           name_missing: str | None = None) -> pa.Array:
    """The image file checks every annotation-file converter makes, in order: ``missing file_name`` (`names`
    null; detail `name_missing`), ``unsafe file_name`` (a name escaping the image root, `safe_file_names`),
    ``invalid width/height`` (`widths`/`heights` MISSING or not positive). Returns the names made safe
    (same length as `names`)."""
    n = len(names)
    reject(pc.is_null(names).to_numpy(zero_copy_only=False), "missing file_name", name_missing)
    names, unsafe = safe_file_names(names)
    reject(np.isin(np.arange(n), list(unsafe)), "unsafe file_name", lambda idx: [unsafe[i] for i in idx])
    reject((widths == MISSING) | (heights == MISSING) | (widths <= 0) | (heights <= 0), "invalid width/height",
           "width and height must be positive integers")
    return names


def slot_offsets(slots: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes grouped by the image they belong to: `slots` (B,) each box's image position in 0..n-1. Returns
    (``counts (n,)`` boxes per image, ``offsets (n + 1,)`` int64: image i's boxes are ``offsets[i]:offsets[i+1]``
    once the boxes are sorted by slot, stably)."""
    counts = np.bincount(slots, minlength=n) if n else np.zeros(0, np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return counts, offsets


def write_parts_pipelined(writer, parts) -> None:
    """Writes ``(name, table)`` pairs from the iterable `parts` with `writer.write_part`, in order, while the
    next part is built: parquet encoding releases the GIL, so a converter's building and writing overlap (at
    most two parts in flight). An error from a write is raised here."""
    with ThreadPoolExecutor(2) as pool:
        futures = []
        for name, table in parts:
            futures.append(pool.submit(writer.write_part, name, table))
            if len(futures) > 2:
                futures.pop(0).result()
        for f in futures:
            f.result()
