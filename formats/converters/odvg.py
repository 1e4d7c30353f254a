"""ODVG JSON lines (MMDetection's ``ODVGDataset``, Open-GroundingDino, `ovlabel export odvg`) -> OD or VG dataset.

One JSON object a line, as ``mmdet/datasets/odvg.py`` reads it:

- OD: ``{"filename", "height", "width", "detection": {"instances": [{"bbox", "label", "category"}]}}`` with a
  label map ``{"0": "person", ...}`` (``--label-map``); MMDetection reads a file as OD exactly when it is given
  a label map. Without one, the file's kind is that of its first record with ``detection`` or ``grounding``,
  and OD instances must name their ``category`` (the label map is then built from the labels and names seen).
- VG: ``{"filename", "height", "width", "grounding": {"caption", "regions": [{"bbox", "phrase",
  "tokens_positive"}]}}``; a region's ``bbox`` is one box or a list of boxes (each becomes a region with the
  region's phrase and spans, as MMDetection makes one instance per box).

Boxes are absolute-pixel ``x1 y1 x2 y2``. Per box, in this order: not 4 finite numbers or inverted -> rejected
``invalid bbox``; a placeholder (`PLACEHOLDER_BOXES`: ``[0, 0, 1, 1]`` or ``[0, 0, 0, 0]``, what
phrase-grounding bootstraps write for "no box yet") -> no box (VG: the phrase stays a given phrase, below;
OD: dropped ``placeholder box``); a side under 1 px as annotated -> dropped ``side < 1 px`` (MMDetection's
filter); then the one box rule (`formats.boxes.clip_to_image`): clipped boxes counted in ``boxes_clipped``,
a box with no area in the image dropped ``no overlap with image``. An instance or region with a ``score``
becomes a ``pseudo`` region with that score (what `export odvg` writes for pseudo data), else ``gold``.

VG spans are ``[start, end)`` characters of the caption, trimmed to word characters by the phrase rule
(`formats.phrase_rules.trim_span`) and sorted; the phrase text is kept as written. VG records get a
``phrases`` column (as `ovlabel phrases` writes it): every region's phrase with its spans, boxed or
placeholder, merged per caption by `formats.phrase_rules.phrase_key` in order of first span; `ovlabel pseudo`
prompts with these given phrases instead of extracting its own.

A line that is not a JSON object, or lacks a field every record needs (``filename``, positive integer
``width``/``height``, ``detection.instances`` / ``grounding.caption`` and ``grounding.regions``), is rejected
with its line number and reason; a bad instance or region (bad box, unknown label, span outside the caption)
is rejected alone, named ``line N: detection.instances[k]``; the rest converts. ``image_id`` is
``<source>/<line number>`` (a file may hold several captions of one image).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from formats import paths as P
from formats import schema as S
from formats.boxes import NO_OVERLAP, clip_to_image
from formats.converters.coco import ConversionError
from formats.dataset import DatasetWriter, Manifest, part_ranges, prior_run, provenance
from formats.digest import sha256_file
from formats.phrase_rules import merge_phrases, trim_span
from formats.storage import display, file_identity, local_file, read_bytes, shown

log = logging.getLogger("ovlabel.odvg")

PLACEHOLDER_BOXES = ((0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 0.0, 0.0))
PHRASES_FIELD = pa.field("phrases", S.PHRASES_TYPE)


@dataclass
class OdvgConvertConfig:
    """Settings of an ODVG conversion; recorded in the manifest."""

    source: str = "odvg"
    image_root: str | None = None
    label_map: str | None = None  # MMDetection label map JSON: the file is OD
    part_images: int = 100_000


class _Reject(Exception):
    """A record or box is refused: `reason` (counted), `detail` (what was found)."""

    def __init__(self, reason: str, detail: str | None = None, dropped: bool = False):
        super().__init__(reason)
        self.reason, self.detail, self.dropped = reason, detail, dropped


def read_label_map(path: str | os.PathLike) -> dict[int, str]:
    """MMDetection's label map ``{"0": "person", ...}`` (a local path or an object-store URL) -> {label: name};
    raises ConversionError."""
    shown_as = shown(path)
    try:
        data = json.loads(read_bytes(path).decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{shown_as}: unreadable label map: {e}") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{shown_as}: a label map is a JSON object {{\"0\": \"name\", ...}}")
    out: dict[int, str] = {}
    for k, v in data.items():
        if not (isinstance(k, str) and k.isdecimal() and str(int(k)) == k) or not isinstance(v, str) or not v:
            raise ConversionError(f"{shown_as}: entry {k!r}: {v!r}: keys are labels 0, 1, ... and values category names")
        out[int(k)] = v
    return out


def convert_odvg(jsonl: str | os.PathLike, out_dir: str | os.PathLike, cfg: OdvgConvertConfig, *,
                 overwrite: bool = False) -> Manifest:
    """Converts one ODVG JSON-lines file into a dataset directory (OD or VG); returns its manifest.

    `jsonl`, ``cfg.label_map``, ``cfg.image_root`` and `out_dir` may be local paths or object-store URLs
    (`formats.storage`; a file on a store is copied to a local temp file to be read). Raises FileNotFoundError
    for a missing input, ConversionError for an unreadable label map or a file with no OD or VG record,
    DatasetError when `out_dir` holds another dataset, `formats.storage.StorageError` for an unusable
    location."""
    info = file_identity(jsonl)
    label_map_at = cfg.label_map  # read from where it was given (a URL's credentials kept for reading)
    if cfg.image_root is not None:
        cfg.image_root = display(cfg.image_root)
    key: dict = {"config": asdict(cfg), "input": list(info)}
    if label_map_at is not None:
        lm = file_identity(label_map_at)
        cfg.label_map = lm.location
        key["config"] = asdict(cfg)
        key["label_map"] = [lm.size, lm.version]
    existing = prior_run(out_dir, key, overwrite)
    if existing is not None:
        log.info("%s: already converted from the same input and settings; nothing to do", display(out_dir))
        return existing
    label_map = read_label_map(label_map_at) if label_map_at is not None else None
    path = shown(jsonl)
    conv = _Converter(str(path), label_map)
    with local_file(jsonl) as local:
        conv.read(local)
        digest = sha256_file(local)
    if conv.kind is None:
        raise ConversionError(f"{path}: no record with 'detection' or 'grounding'; nothing to convert")

    inputs = [{"path": info.location, "size": info.size, "sha256": digest}]
    if label_map_at is not None:
        with local_file(label_map_at) as local:
            inputs.append({"path": lm.location, "size": lm.size, "sha256": sha256_file(local)})
    extra = [PHRASES_FIELD] if conv.kind == "vg" else []
    manifest = Manifest(kind=conv.kind, source=cfg.source, image_root=cfg.image_root, config=asdict(cfg),
                        categories=conv.categories(), extra_columns=[f.name for f in extra],
                        provenance=provenance(inputs))
    writer = DatasetWriter(out_dir, manifest, overwrite=True, resume_key=key)
    schema = S.record_schema(extra)
    for p, (a, b) in enumerate(part_ranges(len(conv.rows), cfg.part_images)):
        rows = [{**r, "image_id": f"{cfg.source}/{r['image_id']}", "source": cfg.source} for r in conv.rows[a:b]]
        writer.write_part(f"part-{p:05d}.parquet", pa.Table.from_pylist(rows, schema=schema))
    writer.write_rejects("part-00000.parquet", conv.rejects)
    counts = {"lines": conv.lines, "images_in": conv.records_in, "images": len(conv.rows),
              "boxes_in": conv.boxes_in, "boxes": sum(len(r["regions"]) for r in conv.rows),
              "boxes_clipped": conv.clipped}
    if conv.kind == "vg":
        counts["placeholder_boxes"] = conv.placeholders
    counts["dropped"] = dict(sorted(conv.dropped.items()))
    counts["rejected"] = dict(sorted(conv.rejected.items()))
    return writer.finish(counts)


class _Converter:
    """Reads the lines, checks them record by record and keeps rows, rejects and counts."""

    def __init__(self, file: str, label_map: dict[int, str] | None):
        self.file = file
        self.label_map = label_map
        self.kind: str | None = "od" if label_map is not None else None
        self.names: dict[int, tuple[str, int]] = {}  # label -> (name, first line) when no label map
        self.rows: list[dict] = []
        self.rejects: list[dict] = []
        self.rejected: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.line = 0  # the line being read
        self.lines = self.records_in = self.boxes_in = self.clipped = self.placeholders = 0

    def reject(self, record: str, e: _Reject) -> None:
        counter = self.dropped if e.dropped else self.rejected
        counter[e.reason] = counter.get(e.reason, 0) + 1
        self.rejects.append({"file": self.file, "record": record,
                             "reason": ("dropped: " if e.dropped else "") + e.reason, "detail": e.detail})

    def categories(self) -> list[dict]:
        if self.label_map is not None:
            return [{"label": k, "name": v} for k, v in sorted(self.label_map.items())]
        return [{"label": k, "name": v[0]} for k, v in sorted(self.names.items())]

    def read(self, path: Path) -> None:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                self.lines += 1
                if not raw.strip():
                    continue
                self.records_in += 1
                where = f"line {lineno}"
                try:
                    # a byte-order mark (files saved on Windows) opens the first line: no part of its JSON
                    rec = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    self.reject(where, _Reject("invalid json", str(e)))
                    continue
                try:
                    row = self.record(rec, lineno)
                except _Reject as e:
                    self.reject(where, e)
                    continue
                self.rows.append(row)

    def record(self, rec, lineno: int) -> dict:
        """One line's row (image_id = the line number until the source is prefixed); raises _Reject."""
        self.line = lineno
        if not isinstance(rec, dict):
            raise _Reject("invalid record", f"a JSON object was expected, got {type(rec).__name__}")
        name = rec.get("filename")
        if not isinstance(name, str):
            raise _Reject("missing filename", f"filename={name!r}")
        try:
            name = P.check_relative(name)
        except P.UnsafePathError as e:
            raise _Reject("unsafe file_name", str(e)) from None
        w, h = _positive_int(rec.get("width")), _positive_int(rec.get("height"))
        if w is None or h is None:
            raise _Reject("invalid width/height", f"width={rec.get('width')!r} height={rec.get('height')!r}")
        kind = "od" if "detection" in rec else "vg" if "grounding" in rec else None
        if self.kind is None:
            self.kind = kind
        if kind is None or kind != self.kind:
            want = "detection" if self.kind == "od" else "grounding"
            raise _Reject(f"no {want}", f"this file holds {self.kind.upper()} records (key '{want}')"
                          + (" (--label-map was given)" if self.label_map is not None else ""))
        row = {"image_id": str(lineno), "file_name": name, "width": w, "height": h, "caption": None}
        where = f"line {lineno}"
        if kind == "od":
            row["regions"] = self.instances(rec["detection"], w, h, where)
        else:
            row["caption"], row["regions"], row["phrases"] = self.grounding(rec["grounding"], w, h, where)
        return row

    def instances(self, det, w: int, h: int, where: str) -> list[dict]:
        inst = det.get("instances") if isinstance(det, dict) else None
        if not isinstance(inst, list):
            raise _Reject("missing detection.instances", f"detection={_short(det)}")
        out = []
        for k, obj in enumerate(inst):
            self.boxes_in += 1
            at = f"{where}: detection.instances[{k}]"
            try:
                if not isinstance(obj, dict):
                    raise _Reject("invalid instance", f"a JSON object was expected, got {_short(obj)}")
                label, category = self.category(obj, at)
                box = self.box(obj.get("bbox"), w, h, od=True)
                out.append({"bbox": box, "label": label, "category": category, **_score(obj)})
            except _Reject as e:
                self.reject(at, e)
        return out

    def category(self, obj: dict, at: str) -> tuple[int, str]:
        """(label, category name) of an OD instance, checked against the label map or the names seen."""
        raw, category = obj.get("label"), obj.get("category")
        label = raw if isinstance(raw, int) and not isinstance(raw, bool) else \
            int(raw) if isinstance(raw, str) and raw.isdecimal() else None  # isdigit: '¹', which int() refuses
        if label is None or label < 0:
            raise _Reject("invalid label", f"label={raw!r}")
        if category is not None and not isinstance(category, str):
            raise _Reject("invalid category", f"category={category!r}")
        if self.label_map is not None:
            if label not in self.label_map:
                raise _Reject("unknown label", f"label {label} is not in the label map")
            if category is not None and category != self.label_map[label]:
                raise _Reject("category does not match the label map",
                              f"label {label} is {self.label_map[label]!r} in the label map, {category!r} here")
            return label, self.label_map[label]
        if category is None:
            raise _Reject("no category", f"label {label} has no category and no --label-map names it")
        first = self.names.setdefault(label, (category, self.line))
        if first[0] != category:
            raise _Reject("label names two categories", f"label {label} is {first[0]!r} on line {first[1]}, {category!r} here")
        return label, category

    def box(self, raw, w: int, h: int, od: bool) -> list[float] | None:
        """A checked, clipped xyxy box; None for a placeholder (VG); raises _Reject."""
        if not (isinstance(raw, list) and len(raw) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in raw)):
            raise _Reject("invalid bbox", f"bbox={_short(raw)}: 4 finite numbers x1, y1, x2, y2 expected")
        b = [float(v) for v in raw]
        if tuple(b) in PLACEHOLDER_BOXES:
            if od:
                raise _Reject("placeholder box", f"bbox={raw}", dropped=True)
            return None
        if b[2] < b[0] or b[3] < b[1]:
            raise _Reject("invalid bbox", f"bbox={raw}: x2 < x1 or y2 < y1")
        if b[2] - b[0] < 1 or b[3] - b[1] < 1:
            raise _Reject("side < 1 px", f"bbox={raw}", dropped=True)
        fit = clip_to_image(np.array([b]), w, h)
        if fit.empty[0]:
            raise _Reject(NO_OVERLAP, f"bbox={raw} in a {w}x{h} image", dropped=True)
        self.clipped += int(fit.clipped[0])
        return fit.xyxy[0].tolist()

    def grounding(self, g, w: int, h: int, where: str) -> tuple[str, list[dict], list[dict]]:
        caption = g.get("caption") if isinstance(g, dict) else None
        if not isinstance(caption, str):
            raise _Reject("missing grounding.caption", f"grounding={_short(g)}")
        regions = g.get("regions")
        if not isinstance(regions, list):
            raise _Reject("missing grounding.regions", f"regions={_short(regions)}")
        out, given = [], []
        for k, reg in enumerate(regions):
            at = f"{where}: grounding.regions[{k}]"
            try:
                phrase, spans = self.phrase(reg, caption)
            except _Reject as e:
                self.boxes_in += 1
                self.reject(at, e)
                continue
            raw = reg.get("bbox")
            boxes = raw if isinstance(raw, list) and raw and isinstance(raw[0], list) else [raw]
            placeholder = 0
            for j, b in enumerate(boxes):
                self.boxes_in += 1
                try:
                    box = self.box(b, w, h, od=False)
                except _Reject as e:
                    self.reject(at if len(boxes) == 1 and b is raw else f"{at}.bbox[{j}]", e)
                    continue
                if box is None:
                    placeholder += 1
                    continue
                out.append({"bbox": box, "phrase": phrase, "tokens_positive": spans, **_score(reg)})
            self.placeholders += placeholder
            given.append((phrase, spans))
        return caption, out, merge_phrases(given)

    def phrase(self, reg, caption: str) -> tuple[str, list[list[int]]]:
        """A region's phrase and its spans (trimmed to word characters, sorted); raises _Reject."""
        if not isinstance(reg, dict):
            raise _Reject("invalid region", f"a JSON object was expected, got {_short(reg)}")
        phrase, tp = reg.get("phrase"), reg.get("tokens_positive")
        if not isinstance(phrase, str):
            raise _Reject("missing phrase", f"phrase={_short(phrase)}")
        if not isinstance(tp, list) or not tp or not all(
                isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in s)
                for s in tp):
            raise _Reject("invalid tokens_positive", f"tokens_positive={_short(tp)}: [[start, end], ...] expected")
        bad = [s for s in tp if not 0 <= s[0] < s[1] <= len(caption)]
        if bad:
            raise _Reject("span outside the caption", f"spans {bad} for a caption of {len(caption)} characters")
        spans = sorted({tuple(t) for s in tp if (t := trim_span(caption, s[0], s[1])) is not None})
        if not spans:
            raise _Reject("no word character in spans", f"spans {tp} cover {[caption[a:b] for a, b in tp]!r}")
        return phrase, [list(s) for s in spans]


def _positive_int(v) -> int | None:
    """`v` as a positive int (an integral float counts), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v) or v <= 0:
        return None
    return int(v)


def _score(obj: dict) -> dict:
    """``score`` and origin ``pseudo`` for a scored instance or region, else origin ``gold``."""
    s = obj.get("score")
    if isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s):
        return {"score": float(s), "origin": "pseudo"}
    return {"origin": "gold"}


def _short(v, limit: int = 120) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."
