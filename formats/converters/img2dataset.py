"""img2dataset output (CC3M, GRIT, any URL list) -> caption records, one part per shard.

img2dataset writes ``NNNNN.parquet`` (one row per URL: key, caption, status, error_message, width, height,
sha256, url and the columns it was asked to keep) beside ``NNNNN.tar`` (webdataset) or ``NNNNN/`` (files)
and ``NNNNN_stats.json``. Successful rows become records whose file_name points into the shard
(``tar://KEY.jpg::NNNNN.tar``); failed downloads go to rejects with img2dataset's error message.
Images stay where img2dataset put them.

Webdataset shards without a side parquet (CC3M/CC12M/GRIT as distributed: ``NNNNN.tar`` holding
``KEY.jpg`` + ``KEY.txt`` + ``KEY.json`` per sample) are read through the same code: each sample's
``.json`` gives the row (img2dataset writes the same columns there), its ``.txt`` the caption, and a size
missing from the ``.json`` is read from the image header (`formats.images.image_size` rule). A sample
without an image, with unreadable ``.json``/``.txt``, a failed status or a ``.json`` field of the wrong type
(``"ref_exps": "notalist"``, a score ``"0.9"``: reason ``invalid json field``, with the field and value) is
rejected on its own, and the shard's other samples are converted.

GRIT rows carry boxes: ``ref_exps`` / ``noun_chunks`` lists of ``[start, end, x1, y1, x2, y2, score]``
with coordinates in 0..1 of the image. They become regions in pixels of the *stored* image (img2dataset
may have resized it; a resize that cropped or padded is detected from the aspect ratio and rejected).
GRIT's boxes are machine-made, so their regions have origin ``pseudo`` and GRIT's score.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tarfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from formats import schema as S
from formats.boxes import NO_OVERLAP, clip_to_image, normalized_to_pixels
from formats.dataset import (
    DatasetWriter,
    Manifest,
    input_entry,
    prior_run,
    provenance,
    write_part_file,
    write_rejects_file,
)
from formats.images import parquet_url, tar_url
from formats.phrase_rules import trim_span
from formats.storage import Folder, display, split_location

log = logging.getLogger("ovlabel.img2dataset")

KEEP_COLUMNS = ("sha256", "url")


class Img2DatasetError(ValueError):
    """A folder is not img2dataset output, or a shard is unreadable."""


IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")


def is_img2dataset_dir(path: str | os.PathLike) -> bool:
    """True for a folder holding img2dataset shards (``NNNNN.parquet`` with ``NNNNN_stats.json``) or webdataset
    shards (``NNNNN.tar``, with or without a side parquet). `path` may be a local folder or an object-store URL
    (its files are listed there)."""
    folder = Folder(path)
    if not folder.is_local:
        return _img2dataset_names(folder.list())
    p = Path(folder.path)
    if not p.is_dir():
        return False
    return (any(p.glob("*_stats.json")) and any(p.glob("[0-9]*.parquet"))) or any(p.glob("[0-9]*.tar"))


def _img2dataset_names(names: list[str]) -> bool:
    """`is_img2dataset_dir` of a folder's file names."""
    def has(suffix: str) -> bool:
        return any(n[:1].isdigit() and n.endswith(suffix) for n in names)

    return (any(n.endswith("_stats.json") for n in names) and has(".parquet")) or has(".tar")


def shards(raw_dir: str | os.PathLike) -> list[Path]:
    """The shards, in name order (`shard_names`): each ``NNNNN.parquet``, and each ``NNNNN.tar`` that has no
    parquet beside it. Raises `Img2DatasetError` when there is none."""
    root = Path(raw_dir)
    names = [p.name for p in root.iterdir() if p.is_file()] if root.is_dir() else []
    found = [root / n for n in shard_names(names)]
    if not found:
        raise Img2DatasetError(f"{raw_dir}: no img2dataset shards (NNNNN.parquet) nor webdataset shards (NNNNN.tar)")
    return found


def shard_keys(shard: Path) -> list[str]:
    """The keys of a shard's images (successful rows of a parquet, samples with an image member of a tar),
    read without decoding anything. Raises `Img2DatasetError` when the parquet or tar cannot be read."""
    if shard.suffix == ".tar":
        keys: dict[str, None] = {}
        try:
            with tarfile.open(shard) as tf:
                for m in tf:
                    folder, _, base = m.name.rpartition("/")
                    stem, dot, ext = base.partition(".")
                    if m.isfile() and dot and not base.startswith(".") and ext.lower() in IMAGE_EXTENSIONS:
                        keys[f"{folder}/{stem}" if folder else stem] = None
        except (OSError, tarfile.TarError) as e:
            raise Img2DatasetError(f"{shard}: unreadable tar: {e}") from None
        return list(keys)
    try:
        t = pq.read_table(shard, columns=["key", "status"])
    except Exception as e:  # noqa: BLE001
        raise Img2DatasetError(f"{shard}: unreadable parquet: {e}") from None
    ok = pc.fill_null(pc.equal(t.column("status"), "success"), False)
    return [k for k in t.filter(ok).column("key").to_pylist() if k is not None]


def duplicate_keys(parts: list[Path]) -> dict[str, dict[str, str]]:
    """Shard name -> {key: name of the earlier shard holding it} for keys that an earlier shard (name order)
    already has: such a later sample is rejected (``duplicate key``), as its record would share the earlier
    one's image_id (``SOURCE/KEY``). Raises `Img2DatasetError` for an unreadable shard."""
    return duplicates_of([(shard.name, shard_keys(shard)) for shard in parts])


def duplicates_of(keys: list[tuple[str, list[str]]]) -> dict[str, dict[str, str]]:
    """`duplicate_keys` from each shard's name and keys (`shard_keys`), the shards in name order."""
    first: dict[str, str] = {}
    out: dict[str, dict[str, str]] = {}
    for name, shard_keys_ in keys:
        for k in shard_keys_:
            if k in first:
                if first[k] != name:
                    out.setdefault(name, {})[k] = first[k]
            else:
                first[k] = name
    return out


def shard_names(names: list[str]) -> list[str]:
    """The shards among a folder's file names, as `shards` picks them: each ``NNNNN.parquet``, and each
    ``NNNNN.tar`` without a parquet beside it, sorted by (stem, suffix)."""
    def numbered(n: str, suffix: str) -> bool:
        return n.endswith(suffix) and n[:1].isdigit()

    stems = {n.removesuffix(".parquet") for n in names if numbered(n, ".parquet")}
    found = [n for n in names if numbered(n, ".parquet") or (numbered(n, ".tar") and n.removesuffix(".tar") not in stems)]
    return sorted(found, key=lambda n: tuple(n.rsplit(".", 1)))


def _scan_stored_shard(item: tuple[str, str]) -> tuple[dict, list[str]]:
    """Hashes and scans one shard of an object-store folder (URL, shard name) from a local temp copy that
    is deleted right after: its provenance entry (the shard's URL, size, sha256) and its keys (`shard_keys`).
    Raises `Img2DatasetError` for an unreadable shard, FileNotFoundError for a missing one."""
    folder, name = Folder(item[0]), item[1]
    with folder.local_copy(name) as local:
        return input_entry(local) | {"path": folder.url_of(name)}, shard_keys(local)


@functools.lru_cache(maxsize=4)
def _folder_duplicates(folder: str, listing: tuple) -> dict[str, dict[str, str]]:
    return duplicate_keys([Path(folder) / name for name, _, _ in listing])


def folder_duplicate_keys(shard: Path) -> dict[str, str]:
    """`duplicate_keys` of the shard's folder for this shard (cached by the folder's shard names, sizes and times)."""
    listing = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shards(shard.parent))
    return _folder_duplicates(str(shard.parent), listing).get(shard.name, {})


def shard_records(shard: Path, source: str, spans: str | None = None, min_score: float = 0.0,
                  stats: dict | None = None, duplicates: dict[str, str] | None = None,
                  tar_beside: bool | None = None) -> tuple[pa.Table, list[dict]]:
    """Records for the successful rows of one shard (with GRIT regions from the `spans` column), and rejects.

    `tar_beside`: whether the shard's folder holds ``NNNNN.tar`` beside ``NNNNN.parquet`` (img2dataset's
    output_format webdataset); None looks beside `shard` on disk (a temp copy of a stored shard has no
    neighbours, so its caller says). Raises `Img2DatasetError` for an unreadable shard or one without
    img2dataset's columns.

    `stats`, when given, receives ``images_rejected`` (rows rejected whole) and, with `spans`, ``boxes_clipped``
    and ``boxes_under_min_score`` (GRIT boxes clipped to the image, and left out under `min_score`). `duplicates`: this shard's keys that an earlier shard of the folder
    holds (`duplicate_keys`; computed for the folder when not given), rejected. A key twice in the shard and
    a row without a caption are rejected too.
    """
    if duplicates is None:
        duplicates = folder_duplicate_keys(shard)
    members: dict[str, str] | None = None
    if shard.suffix == ".tar":
        t, members, rejects = webdataset_table(shard)
        images_inside = False
        if spans is not None and spans not in t.column_names:  # no sample's .json has boxes
            t = t.append_column(spans, pa.nulls(t.num_rows, pa.list_(pa.list_(pa.float64()))))
    else:
        try:
            columns = pq.read_schema(shard).names
            images_inside = "jpg" in columns  # output_format parquet: the image bytes are in this file
            t = pq.read_table(shard, columns=[c for c in columns if c != "jpg"])
        except Exception as e:  # noqa: BLE001
            raise Img2DatasetError(f"{shard}: unreadable parquet: {e}") from None
        rejects = []
    missing = [c for c in ("key", "caption", "status", "width", "height") if c not in t.column_names]
    if spans is not None and spans not in t.column_names:
        missing.append(spans)
    if missing:
        raise Img2DatasetError(f"{shard}: not an img2dataset shard (missing {', '.join(missing)})")
    ok = pc.fill_null(pc.equal(t.column("status"), "success"), False)
    failed = t.filter(pc.invert(ok))
    errors = failed.column("error_message").to_pylist() if "error_message" in t.column_names else [None] * len(failed)
    rejects += [{"file": str(shard), "record": f"key={k}", "reason": "download failed", "detail": err}
                for k, err in zip(failed.column("key").to_pylist(), errors)]
    t = t.filter(ok)
    keys = t.column("key")
    counts = pc.value_counts(keys)
    twice = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if len(twice):  # which row's image is `tar://KEY.jpg` is ambiguous: none is kept
        n_of = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
        dup = pc.fill_null(pc.is_in(keys, value_set=twice), False)
        rejects += [{"file": str(shard), "record": f"key={k}", "reason": "duplicate key",
                     "detail": f"key {k} is in {shard.name} {n_of[k]} times"} for k in t.filter(dup).column("key").to_pylist()]
        t = t.filter(pc.invert(dup))
    if duplicates:
        dup = pc.fill_null(pc.is_in(t.column("key"), value_set=pa.array(list(duplicates), pa.string())), False)
        rejects += [{"file": str(shard), "record": f"key={k}", "reason": "duplicate key",
                     "detail": f"key {k} of {shard.name} is also in {duplicates[k]} (kept there): its record would "
                               "have the same image_id"} for k in t.filter(dup).column("key").to_pylist()]
        t = t.filter(pc.invert(dup))
    no_caption = pc.fill_null(pc.equal(pc.utf8_length(t.column("caption").cast(pa.string())), 0), True)
    if pc.any(no_caption).as_py():
        rejects += [{"file": str(shard), "record": f"key={k}", "reason": "no caption",
                     "detail": "no .txt and no caption in the .json" if shard.suffix == ".tar" else "empty caption"}
                    for k in t.filter(no_caption).column("key").to_pylist()]
        t = t.filter(pc.invert(no_caption))
    bad_size = pc.fill_null(pc.or_kleene(pc.less_equal(t.column("width"), 0), pc.less_equal(t.column("height"), 0)),
                            True)  # a missing side is no size either
    if pc.any(bad_size).as_py():
        rejects += [{"file": str(shard), "record": f"key={k}", "reason": "invalid width/height", "detail": None}
                    for k in t.filter(bad_size).column("key").to_pylist()]
        t = t.filter(pc.invert(bad_size))
    if spans is not None and "original_width" in t.column_names:
        distorted = _distorted(t)
        rejects += [{"file": str(shard), "record": f"key={k}", "reason": "image cropped or padded by img2dataset",
                     "detail": "boxes cannot be mapped; download with resize_mode keep_ratio or no"}
                    for k in t.filter(distorted).column("key").to_pylist()]
        t = t.filter(pc.invert(distorted))
    # keys sort in download order; records keep shard order by key for determinism
    t = t.sort_by("key")
    keys = t.column("key").to_pylist()
    if members is not None:  # a webdataset shard read on its own
        names = [tar_url(members[k], shard.name) for k in keys]
    elif (shard.with_suffix(".tar").exists() if tar_beside is None else tar_beside):  # output_format webdataset
        names = [tar_url(f"{k}.jpg", shard.with_suffix(".tar").name) for k in keys]
    elif images_inside:
        names = [parquet_url(k, shard.name) for k in keys]
    else:  # output_format files
        names = [f"{shard.stem}/{k}.jpg" for k in keys]
    n = t.num_rows
    if stats is not None:
        stats["images_rejected"] = len(rejects)
    if spans is None:
        regions = S.empty_regions(n)
    else:
        regions, region_rejects, box_counts = _grit_regions(t, spans, min_score, str(shard))
        rejects += region_rejects
        if stats is not None:
            stats.update(box_counts)
    cols = {
        "image_id": pa.array([f"{source}/{k}" for k in keys], pa.string()),
        "source": pa.repeat(pa.scalar(source), n),
        "file_name": pa.array(names, pa.string()),
        "width": t.column("width").cast(pa.int32()),
        "height": t.column("height").cast(pa.int32()),
        "caption": t.column("caption").cast(pa.string()),
        "regions": regions,
    }
    for c in KEEP_COLUMNS:
        cols[c] = t.column(c).cast(pa.string()) if c in t.column_names else pa.nulls(n, pa.string())
    return pa.table(cols), rejects


class StoredShard(NamedTuple):
    """One shard of an img2dataset folder on an object store, as `stored_shards` planned it: its URL (no
    credentials), its keys an earlier shard holds (rejected, as `duplicate_keys`), whether a parquet shard has
    its tar beside it, and its records' row count and rejects (named by the shard's URL)."""

    url: str
    duplicates: dict
    tar_beside: bool
    rows: int
    rejects: list


def stored_shards(raw_dir: str | os.PathLike, source: str) -> list[StoredShard]:
    """The shards of an img2dataset folder on an object store, each read as `shard_records` reads a local one:
    the folder is listed there and each shard is fetched to a local temp copy, deleted right after, twice (its
    keys first, for the duplicate keys across the folder, then its records), as `convert_img2dataset` does.
    `raw_dir` is opened as given (credentials in its URL included); the shards are named by URL without them.
    Raises `Img2DatasetError` (no shards, an unreadable shard), FileNotFoundError (a shard gone meanwhile)."""
    folder = Folder(raw_dir)
    listing = folder.list()
    names = shard_names(listing)
    if not names:
        raise Img2DatasetError(f"{folder.url}: no img2dataset shards (NNNNN.parquet) nor webdataset shards (NNNNN.tar)")
    keys = []
    for name in names:
        with folder.local_copy(name) as local:
            keys.append((name, shard_keys(local)))
    dups = duplicates_of(keys)
    out = []
    for name in names:
        tar_beside = name.endswith(".parquet") and f"{Path(name).stem}.tar" in listing
        with folder.local_copy(name) as local:
            table, rejects = shard_records(local, source, duplicates=dups.get(name, {}), tar_beside=tar_beside)
            url = folder.url_of(name)
            rejects = [{k: v.replace(str(local), url) if isinstance(v, str) else v for k, v in r.items()}
                       for r in rejects]
        out.append(StoredShard(url, dups.get(name, {}), tar_beside, table.num_rows, rejects))
    return out


@functools.lru_cache(maxsize=2)
def _stored_shard_table(url: str, source: str, duplicates: str, tar_beside: bool) -> pa.Table:
    folder, name = split_location(url)
    with folder.local_copy(name) as local:
        return shard_records(local, source, duplicates=json.loads(duplicates), tar_beside=tar_beside)[0]


def stored_shard_records(url: str, source: str, duplicates: dict, tar_beside: bool) -> pa.Table:
    """`shard_records` (the records only) of a shard on an object store, as `stored_shards` planned it: the shard
    is fetched to a local temp copy, deleted right after (the last two shards' records are kept per process, so
    the units of one shard fetch it once per worker). Reopened from its URL with the environment's credentials.
    Raises `Img2DatasetError`, FileNotFoundError."""
    return _stored_shard_table(url, source, json.dumps(duplicates, sort_keys=True), bool(tar_beside))


def webdataset_table(shard: Path) -> tuple[pa.Table, dict[str, str], list[dict]]:
    """A webdataset shard as img2dataset's parquet columns, each sample's image member, and rejects."""
    st = shard.stat()
    table, members, rejects = _webdataset_table(str(shard), st.st_size, st.st_mtime_ns)
    return table, members, list(rejects)


@functools.lru_cache(maxsize=4)
def _webdataset_table(shard: str, size: int, mtime_ns: int) -> tuple[pa.Table, dict[str, str], tuple[dict, ...]]:
    """Reads every sample of a tar (cached by path, size and time: the pseudo pipeline reads a shard twice).

    Each sample's ``.json`` fields are checked on their own (`_json_fields`): a sample with a malformed field
    is rejected with the field and value, and the others are converted.
    """
    samples, rejects = _tar_samples(Path(shard))
    rows, members = [], {}
    for key, s in samples.items():
        if "duplicates" in s:
            rejects.append({"file": shard, "record": f"key={key}", "reason": "duplicate member",
                            "detail": f"{', '.join(s['duplicates'])}: more than one member of this kind for the key; "
                                      "its image, size and caption would not agree"})
            continue
        why = s.get("error") or (None if "image" in s or s.get("json", {}).get("status") not in (None, "success")
                                 else f"no image member: found {', '.join(sorted(s['exts']))}")
        meta = s.get("json", {})
        extra = None
        if not why:
            extra, why = _json_fields(meta)
        if why:
            rejects.append({"file": shard, "record": f"key={key}", "reason": why.split(":")[0], "detail": why})
            continue
        caption = s["txt"] if "txt" in s else meta.get("caption")
        row = {**extra, "key": key, "caption": None if caption is None else str(caption),
               "status": meta.get("status", "success"),
               "width": _int_or_none(meta.get("width")), "height": _int_or_none(meta.get("height"))}
        if "size" in s:  # the image's own header, as displayed (formats.images rule), wins over the .json
            row["width"], row["height"] = s["size"]
        if "image" in s:
            members[key] = s["image"]
        rows.append(row)
    # every column typed here (from_pylist would take the columns of the first sample only, and its types)
    table = pa.table({c: pa.array([r.get(c) for r in rows], t) for c, t in _WDS_TYPES.items()
                      if c not in _WDS_EXTRA or any(c in r for r in rows)})
    return table, members, tuple(rejects)


_WDS_EXTRA = ("url", "sha256", "original_width", "original_height", "ref_exps", "noun_chunks")
_WDS_TYPES = {"key": pa.string(), "caption": pa.string(), "status": pa.string(), "error_message": pa.string(),
              "width": pa.int64(), "height": pa.int64(), "url": pa.string(), "sha256": pa.string(),
              "original_width": pa.int64(), "original_height": pa.int64(),
              "ref_exps": pa.list_(pa.list_(pa.float64())), "noun_chunks": pa.list_(pa.list_(pa.float64()))}


def _json_fields(meta: dict) -> tuple[dict | None, str | None]:
    """The sample's ``.json`` fields as the table's types, or None and why not (a field's name and value)."""

    def bad(field: str, v, what: str) -> tuple[None, str]:
        return None, f"invalid json field: {field} {what} ({v!r:.200})"

    status, message = meta.get("status", "success"), meta.get("error_message")
    if not isinstance(status, str):
        return bad("status", status, "is not a string")
    out = {"error_message": None if message is None else str(message)}
    for c in ("url", "sha256"):
        v = meta.get(c)
        if v is not None and not isinstance(v, str):
            return bad(c, v, "is not a string")
        if c in meta:
            out[c] = v
    for c in ("original_width", "original_height"):
        v = meta.get(c)
        if v is not None and _int_or_none(v) is None:
            return bad(c, v, "is not a positive whole number")
        if c in meta:
            out[c] = None if v is None else int(v)
    for c in ("ref_exps", "noun_chunks"):
        v = meta.get(c)
        if v is None:
            if c in meta:
                out[c] = None
            continue
        if not isinstance(v, list):
            return bad(c, v, "is not a list")
        entries = []
        for j, e in enumerate(v):
            if not isinstance(e, list):
                return bad(f"{c}[{j}]", e, "is not a list")
            for k, x in enumerate(e):
                if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float))):
                    return bad(f"{c}[{j}][{k}]", x, "is not a number")
            entries.append([None if x is None else float(x) for x in e])
        out[c] = entries
    return out, None


def _int_or_none(v) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and v > 0 else None


def _tar_samples(shard: Path) -> tuple[dict[str, dict], list[dict]]:
    """Groups a tar's members by webdataset key (the path up to the first dot of the file name)."""
    import json

    from formats.images import ImageError, header_size

    samples: dict[str, dict] = {}
    try:
        with tarfile.open(shard) as tf:
            for m in tf:
                if not m.isfile():
                    continue
                folder, _, base = m.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not dot or base.startswith("."):
                    continue
                key = f"{folder}/{stem}" if folder else stem
                s = samples.setdefault(key, {"exts": set()})
                ext = ext.lower()
                if ext in s["exts"] or (ext in IMAGE_EXTENSIONS and "image" in s):  # a second image, caption, ...
                    s.setdefault("duplicates", []).append(m.name)  # the sample is rejected; nothing is mixed
                    continue
                s["exts"].add(ext)
                data = None
                if ext in IMAGE_EXTENSIONS and "image" not in s:
                    s["image"] = m.name
                    try:
                        s["size"] = header_size(tf.extractfile(m), f"{shard}::{m.name}")
                    except ImageError as e:
                        s["error"] = f"unreadable image: {e}"
                elif ext in ("txt", "json"):
                    data = tf.extractfile(m).read()
                if ext == "txt":
                    try:
                        s["txt"] = data.decode("utf-8")
                    except UnicodeDecodeError as e:
                        s["error"] = f"invalid caption text: {m.name} is not UTF-8 ({e})"
                elif ext == "json":
                    try:
                        meta = json.loads(data)
                    except (UnicodeDecodeError, ValueError) as e:
                        s["error"] = f"invalid json: {m.name}: {e}"
                        continue
                    if not isinstance(meta, dict):
                        s["error"] = f"invalid json: {m.name} is not an object"
                        continue
                    s["json"] = meta
    except (OSError, tarfile.TarError) as e:
        raise Img2DatasetError(f"{shard}: unreadable tar: {e}") from None
    return samples, []  # per-sample problems are kept on the sample (`error`)


def _distorted(t: pa.Table, tolerance: float = 0.02) -> pa.Array:
    """Rows whose stored aspect ratio differs from the original's (img2dataset cropped or padded them)."""
    w = t.column("width").to_numpy(zero_copy_only=False).astype(float)
    h = t.column("height").to_numpy(zero_copy_only=False).astype(float)
    ow = t.column("original_width").fill_null(0).to_numpy(zero_copy_only=False).astype(float)
    oh = t.column("original_height").fill_null(0).to_numpy(zero_copy_only=False).astype(float)
    known = (ow > 0) & (oh > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sx, sy = w / np.where(known, ow, 1), h / np.where(known, oh, 1)
        # one pixel of rounding per side is not distortion
        off = np.abs(sx - sy) > np.maximum(tolerance * np.maximum(sx, sy), 1.0 / np.minimum(w, h))
    return pa.array(known & off)


def _grit_regions(t: pa.Table, column: str, min_score: float, file: str) -> tuple[pa.ListArray, list[dict], dict]:
    """GRIT ``[start, end, x1, y1, x2, y2, score]`` lists (coordinates 0..1) -> regions in pixels of the stored
    image, clipped by the converters' one box rule (`formats.boxes.clip_to_image`); a box with no area inside
    the image is dropped and written to rejects (``dropped: no overlap with image``). Returns the regions, the
    rejects and the counts ``boxes_clipped`` and ``boxes_under_min_score`` (left out, not written to rejects)."""
    rows = t.column(column).to_pylist()
    captions = t.column("caption").to_pylist()
    widths = t.column("width").to_pylist()
    heights = t.column("height").to_pylist()
    keys = t.column("key").to_pylist()
    owner, boxes, spans, scores, names, rejects = [], [], [], [], [], []
    for r, chunks in enumerate(rows):
        cap = captions[r] or ""
        for j, c in enumerate(chunks or []):
            why = _bad_chunk(c, len(cap))
            if why:
                rejects.append({"file": file, "record": f"key={keys[r]} {column}[{j}]", "reason": why, "detail": repr(c)})
                continue
            span = trim_span(cap, int(c[0]), int(c[1]))  # the phrase rule: formats.phrase_rules
            if span is None:
                rejects.append({"file": file, "record": f"key={keys[r]} {column}[{j}]",
                                "reason": "no word character in span", "detail": repr(cap[int(c[0]):int(c[1])])})
                continue
            owner.append(r)
            boxes.append(c[2:6])
            spans.append(span)
            scores.append(c[6] if len(c) > 6 and c[6] is not None else None)
            names.append(f"key={keys[r]} {column}[{j}]")
    owner_a = np.asarray(owner, dtype=np.int64)
    fit = clip_to_image(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), 1.0, 1.0)
    rejects += [{"file": file, "record": names[i], "reason": f"dropped: {NO_OVERLAP}",
                 "detail": f"box {boxes[i]} (0..1 of the image) has no area inside it"} for i in np.flatnonzero(fit.empty)]
    under = np.array([s is not None and s < min_score for s in scores], dtype=bool)
    keep = ~fit.empty & ~under
    idx = np.flatnonzero(keep)
    size = np.array([[widths[r], heights[r]] for r in owner], dtype=np.float64).reshape(-1, 2)[idx]
    bbox = normalized_to_pixels(fit.xyxy[idx], size[:, 0], size[:, 1])
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner_a[idx], minlength=len(rows)), out=offsets[1:])
    kept_spans = [[list(spans[i])] for i in idx.tolist()]
    kept_scores = [scores[i] for i in idx.tolist()]
    regions = S.regions_from_columns(offsets, bbox,
                                     phrase=pa.array([(captions[owner[i]] or "")[spans[i][0]:spans[i][1]] for i in idx.tolist()],
                                                     pa.string()),
                                     tokens_positive=pa.array(kept_spans, pa.list_(S.SPAN_TYPE)),
                                     score=pa.array(kept_scores, pa.float32()), origin="pseudo")
    return regions, rejects, {"boxes_clipped": int(fit.clipped[idx].sum()),
                              "boxes_under_min_score": int((under & ~fit.empty).sum())}


def _bad_chunk(c, n_chars: int) -> str | None:
    if not isinstance(c, (list, tuple)) or len(c) < 6 or any(v is None for v in c[:6]):
        return "invalid span entry"
    s, e = c[0], c[1]
    if not (float(s).is_integer() and float(e).is_integer()) or not (0 <= s < e <= n_chars):
        return "span outside the caption"
    if not all(np.isfinite(v) for v in c[2:6]) or c[2] > c[4] or c[3] > c[5]:
        return "invalid box"
    return None


EXTRA_FIELDS = [pa.field(c, pa.string()) for c in KEEP_COLUMNS]


@dataclass
class Img2DatasetConvertConfig:
    """Settings of an img2dataset conversion; recorded in the manifest."""

    source: str = "cc3m"
    spans: str | None = None  # GRIT: "ref_exps" or "noun_chunks" -> regions
    min_score: float = 0.0  # GRIT: boxes with a lower score are left out


def convert_img2dataset(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: Img2DatasetConvertConfig, *,
                        overwrite: bool = False, map_fn: Callable | None = None) -> Manifest:
    """Converts every shard of an img2dataset folder; reruns skip finished shards.

    `map_fn(fn, items)` runs the per-shard work (default: in this process, in order); the Ray pipeline
    passes one that runs shards as parallel tasks. Parts and their rejects are written as shards finish.
    `raw_dir` and `out_dir` may be local or on an object store (`formats.storage`). Shards on a store are
    listed there and each is processed from a local temp copy made where it is processed and deleted right
    after (one shard per worker on disk at a time): a first pass (through `map_fn` too) hashes each shard
    and reads its keys, the second converts it. Inputs are recorded by URL with the same hashes as local
    copies, and the image root is the shards' URL (workers reopen it from the environment's credentials).
    Raises `Img2DatasetError` (no shards, an unreadable shard), `formats.dataset.DatasetError` (`out_dir`
    holds another dataset) and FileNotFoundError (a shard gone while converting).
    """
    folder = Folder(raw_dir)
    run = map_fn or map
    if folder.is_local:
        raw = Path(folder.path).resolve()
        parts: list[Path | str] = list(shards(raw))
        inputs = [input_entry(p) for p in parts]
        image_root, where = str(raw), None
    else:
        where = folder.url
        # in this process the folder is reopened as given (credentials in its URL included); tasks of another
        # process (`map_fn`: Ray) get the URL without them and use their environment's (formats.storage)
        opened = os.fspath(raw_dir) if map_fn is None else where
        listing = set(folder.list())
        names = shard_names(sorted(listing))
        if not names:
            raise Img2DatasetError(f"{where}: no img2dataset shards (NNNNN.parquet) nor webdataset shards (NNNNN.tar)")
        scans = list(run(_scan_stored_shard, [(opened, n) for n in names]))
        inputs = [entry for entry, _ in scans]
        parts, image_root = names, where
    resume_key = {"config": asdict(cfg), "inputs": [(i["path"], i["sha256"]) for i in inputs]}
    done = prior_run(out_dir, resume_key, overwrite)
    if done is not None:
        log.info("%s: already converted from the same shards and settings; nothing to do", display(out_dir))
        return done
    manifest = Manifest(kind="vg", source=cfg.source, image_root=image_root, config=asdict(cfg),
                        extra_columns=list(KEEP_COLUMNS), provenance=provenance(inputs))
    writer = DatasetWriter(out_dir, manifest, overwrite=overwrite, resume_key=resume_key)
    todo = [p for p in parts if not writer.is_done(f"part-{Path(p).stem}.parquet")]
    log.info("%s: %d shards, %d to convert", image_root, len(parts), len(todo))
    # across all shards, so a resumed run rejects the same keys
    if where is None:
        dups = duplicate_keys(parts)
    else:
        dups = duplicates_of([(n, keys) for n, (_, keys) in zip(names, scans)])
    # in this process the output folder as opened (credentials in its URL included); elsewhere its URL
    work = functools.partial(_convert_shard, root=writer.folder if map_fn is None else str(writer.root),
                             source=cfg.source, spans=cfg.spans,
                             min_score=cfg.min_score, stored=None if where is None else opened)
    # a stored img2dataset parquet shard's images are in the tar beside it when the folder lists one
    items = [(p, dups.get(Path(p).name, {}),
              where is not None and str(p).endswith(".parquet") and f"{Path(p).stem}.tar" in listing) for p in todo]
    for entry, has_rejects in run(work, items):
        if has_rejects:  # recorded before the part: a finished part implies its rejects are there
            writer.add_rejects(entry["name"])
        writer.add_part(entry)
    return writer.finish(_counts(writer))


def _convert_shard(item: tuple[Path | str, dict[str, str], bool], *, root: str | Folder, source: str, spans: str | None,
                   min_score: float, stored: str | None = None) -> tuple[dict, bool]:
    """Converts one shard (with its keys held by earlier shards, and whether a stored parquet shard has its
    tar beside it) and writes its part and rejects files (in whichever process runs it). `stored`: the URL of
    the object-store folder holding the shard (named by `item`), which is then read from a local temp copy
    deleted after. Raises `Img2DatasetError` (an unreadable shard), FileNotFoundError (a stored shard gone)."""
    shard, duplicates, tar_beside = item
    if stored is None:
        return _write_shard(Path(shard), duplicates, root, source, spans, min_score)
    folder = Folder(stored)
    with folder.local_copy(str(shard)) as local:
        return _write_shard(local, duplicates, root, source, spans, min_score, tar_beside=tar_beside,
                            shown_as=folder.url_of(str(shard)))


def _write_shard(shard: Path, duplicates: dict[str, str], root: str | Folder, source: str, spans: str | None,
                 min_score: float, *, tar_beside: bool | None = None, shown_as: str | None = None) -> tuple[dict, bool]:
    """`shard_records` of one shard written as its part and rejects files; `shown_as`: the shard's name in the
    rejects (its URL, for a temp copy of a stored shard). Raises `Img2DatasetError` (an unreadable shard)."""
    stats = {"images_rejected": 0}
    table, rejects = shard_records(shard, source, spans, min_score, stats, duplicates, tar_beside)
    if shown_as is not None:  # the temp copy's path -> the shard's URL
        local = str(shard)
        rejects = [{k: v.replace(local, shown_as) if isinstance(v, str) else v for k, v in r.items()} for r in rejects]
    name = f"part-{shard.stem}.parquet"
    has_rejects = write_rejects_file(root, name, rejects)
    entry = write_part_file(root, name, S.conform(table, EXTRA_FIELDS))
    return {**entry, "shard": shard.name, **stats}, has_rejects


def _counts(writer: DatasetWriter) -> dict:
    """Final counts from the parts and reject files (also right after a resumed run)."""
    from formats.dataset import Dataset

    rejects = Dataset(writer.root).read_rejects() if writer.manifest.reject_parts else None
    reasons = {} if rejects is None else {
        d["values"]: d["counts"] for d in pc.value_counts(rejects.column("reason")).to_pylist()}
    totals = writer.manifest.totals()
    parts = writer.manifest.parts
    failed = sum(p.get("images_rejected", 0) for p in parts)
    counts = {"images_in": totals["images"] + failed, **totals,
              "rejected": dict(sorted((r, n) for r, n in reasons.items() if not r.startswith("dropped: ")))}
    dropped = {r.removeprefix("dropped: "): n for r, n in reasons.items() if r.startswith("dropped: ")}
    under = sum(p.get("boxes_under_min_score", 0) for p in parts)
    if under:
        dropped["under min_score"] = under
    if any("boxes_clipped" in p for p in parts):
        counts["boxes_clipped"] = sum(p.get("boxes_clipped", 0) for p in parts)
    if dropped:
        counts["dropped"] = dict(sorted(dropped.items()))
    return counts
