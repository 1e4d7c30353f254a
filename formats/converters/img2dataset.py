"""img2dataset output (CC3M, GRIT, any URL list) -> caption records, one part per shard.

img2dataset writes ``NNNNN.parquet`` (one row per URL: key, caption, status, error_message, width, height,
sha256, url and the columns it was asked to keep) beside ``NNNNN.tar`` (webdataset) or ``NNNNN/`` (files)
and ``NNNNN_stats.json``. Successful rows become records whose file_name points into the shard
(``tar://KEY.jpg::NNNNN.tar``); failed downloads go to rejects with img2dataset's error message.
Images stay where img2dataset put them.

GRIT rows carry boxes: ``ref_exps`` / ``noun_chunks`` lists of ``[start, end, x1, y1, x2, y2, score]``
with coordinates in 0..1 of the image. They become regions in pixels of the *stored* image (img2dataset
may have resized it; a resize that cropped or padded is detected from the aspect ratio and rejected).
GRIT's boxes are machine-made, so their regions have origin ``pseudo`` and GRIT's score.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from formats import schema as S
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

log = logging.getLogger("ovlabel.img2dataset")

KEEP_COLUMNS = ("sha256", "url")


class Img2DatasetError(ValueError):
    """A folder is not img2dataset output, or a shard is unreadable."""


def is_img2dataset_dir(path: str | os.PathLike) -> bool:
    """True for a folder holding img2dataset shards (``NNNNN.parquet`` with ``NNNNN_stats.json``)."""
    p = Path(path)
    return p.is_dir() and any(p.glob("*_stats.json")) and any(p.glob("[0-9]*.parquet"))


def shards(raw_dir: str | os.PathLike) -> list[Path]:
    """The shard parquet files, in name order."""
    found = sorted(Path(raw_dir).glob("[0-9]*.parquet"))
    if not found:
        raise Img2DatasetError(f"{raw_dir}: no img2dataset shards (NNNNN.parquet)")
    return found


def shard_records(shard: Path, source: str, spans: str | None = None, min_score: float = 0.0,
                  stats: dict | None = None) -> tuple[pa.Table, list[dict]]:
    """Records for the successful rows of one shard (with GRIT regions from the `spans` column), and rejects.

    `stats`, when given, receives ``images_rejected`` (rows rejected whole) and ``boxes_dropped`` (GRIT boxes
    left out as empty or under `min_score`).
    """
    try:
        columns = pq.read_schema(shard).names
        images_inside = "jpg" in columns  # output_format parquet: the image bytes are in this file
        t = pq.read_table(shard, columns=[c for c in columns if c != "jpg"])
    except Exception as e:  # noqa: BLE001
        raise Img2DatasetError(f"{shard}: unreadable parquet: {e}") from None
    missing = [c for c in ("key", "caption", "status", "width", "height") if c not in t.column_names]
    if spans is not None and spans not in t.column_names:
        missing.append(spans)
    if missing:
        raise Img2DatasetError(f"{shard}: not an img2dataset shard (missing {', '.join(missing)})")
    ok = pc.equal(t.column("status"), "success")
    failed = t.filter(pc.invert(ok))
    rejects = [{"file": str(shard), "record": f"key={k}", "reason": "download failed", "detail": err}
               for k, err in zip(failed.column("key").to_pylist(), failed.column("error_message").to_pylist())]
    t = t.filter(ok)
    bad_size = pc.or_(pc.is_null(t.column("width")), pc.less_equal(t.column("width"), 0))
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
    if shard.with_suffix(".tar").exists():  # output_format webdataset
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
        regions, region_rejects, dropped = _grit_regions(t, spans, min_score, str(shard))
        rejects += region_rejects
        if stats is not None:
            stats["boxes_dropped"] = dropped
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


def _grit_regions(t: pa.Table, column: str, min_score: float, file: str) -> tuple[pa.ListArray, list[dict], int]:
    """GRIT ``[start, end, x1, y1, x2, y2, score]`` lists -> regions in pixels of the stored image."""
    rows = t.column(column).to_pylist()
    captions = t.column("caption").to_pylist()
    widths = t.column("width").to_pylist()
    heights = t.column("height").to_pylist()
    keys = t.column("key").to_pylist()
    offsets, boxes, phrases, spans, scores, rejects = [0], [], [], [], [], []
    dropped = 0
    for r, chunks in enumerate(rows):
        cap = captions[r] or ""
        w, h = widths[r], heights[r]
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
            s, e = span
            x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in c[2:6])
            score = c[6] if len(c) > 6 and c[6] is not None else None
            if (x2 - x1) * (y2 - y1) <= 0 or (score is not None and score < min_score):
                dropped += 1  # empty after clipping, or under --min-score
                continue
            boxes.append((x1 * w, y1 * h, x2 * w, y2 * h))
            phrases.append(cap[s:e])
            spans.append([[s, e]])
            scores.append(score)
        offsets.append(len(boxes))
    bbox = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    regions = S.regions_from_columns(np.asarray(offsets), bbox, phrase=pa.array(phrases, pa.string()),
                                     tokens_positive=pa.array(spans, pa.list_(S.SPAN_TYPE)),
                                     score=np.asarray(scores, dtype=np.float32) if None not in scores else
                                     pa.array(scores, pa.float32()), origin="pseudo")
    return regions, rejects, dropped


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
    """
    raw = Path(raw_dir).resolve()
    parts = shards(raw)
    inputs = [input_entry(p) for p in parts]
    resume_key = {"config": asdict(cfg), "inputs": [(i["path"], i["sha256"]) for i in inputs]}
    done = prior_run(out_dir, resume_key, overwrite)
    if done is not None:
        return done
    manifest = Manifest(kind="vg", source=cfg.source, image_root=str(raw), config=asdict(cfg),
                        extra_columns=list(KEEP_COLUMNS), provenance=provenance(inputs))
    writer = DatasetWriter(out_dir, manifest, overwrite=overwrite, resume_key=resume_key)
    todo = [p for p in parts if not writer.is_done(f"part-{p.stem}.parquet")]
    log.info("%s: %d shards, %d to convert", raw, len(parts), len(todo))
    work = functools.partial(_convert_shard, root=str(writer.root), source=cfg.source, spans=cfg.spans,
                             min_score=cfg.min_score)
    for entry, has_rejects in (map_fn or map)(work, todo):
        if has_rejects:  # recorded before the part: a finished part implies its rejects are there
            writer.add_rejects(entry["name"])
        writer.add_part(entry)
    return writer.finish(_counts(writer))


def _convert_shard(shard: Path, *, root: str, source: str, spans: str | None, min_score: float) -> tuple[dict, bool]:
    """Converts one shard and writes its part and rejects files (in whichever process runs it)."""
    stats = {"boxes_dropped": 0, "images_rejected": 0}
    table, rejects = shard_records(shard, source, spans, min_score, stats)
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
    failed = sum(p.get("images_rejected", 0) for p in writer.manifest.parts)
    counts = {"images_in": totals["images"] + failed, **totals, "rejected": dict(sorted(reasons.items()))}
    dropped = sum(p.get("boxes_dropped", 0) for p in writer.manifest.parts)
    if dropped:
        counts["dropped"] = {"box empty after clipping or under min_score": dropped}
    return counts
