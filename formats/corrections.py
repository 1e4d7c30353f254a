"""Review corrections: what reviewers did to boxes, as a table, and applying it to a dataset directory.

A corrections directory holds ``corrections.parquet`` (one row per reviewed box) and ``summary.json``.
Actions: ``reject`` (the box is wrong: removed, and never proposed again), ``accept`` (right as it is: kept
as a reviewed box, origin ``review``), ``fix`` (box or phrase edited: the new values, origin ``review``),
``add`` (a box the reviewer drew). Boxes are absolute xyxy pixels, like everywhere else. Self-training reads
the same table (rejected region keys are filtered out of later rounds, reviewed boxes train as gold).
Corrections directories and the datasets they apply to may be local or on an object store (``s3://...``,
`formats.storage`); locations are recorded without credentials.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from formats import schema as S
from formats import storage
from formats.boxes import iou_matrix
from formats.dataset import (
    Dataset,
    DatasetError,
    DatasetWriter,
    derived_manifest,
    prior_run,
)
from formats.phrase_rules import trim_phrase
from formats.storage import Folder

ACTIONS = ("reject", "accept", "fix", "add")
FILE = "corrections.parquet"
SCHEMA = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("region_id", pa.string()),  # the region key (schema.region_keys); null for a drawn box
    pa.field("action", pa.string(), nullable=False),
    pa.field("field", pa.string()),  # review label field it came from (gold, pseudo, round_2, ...)
    pa.field("dataset", pa.string()),  # dataset directory that field was built from
    pa.field("bbox", pa.list_(pa.float64(), 4)),  # the box as the reviewer left it (xyxy pixels)
    pa.field("phrase", pa.string()),
    pa.field("category", pa.string()),
    pa.field("score", pa.float32()),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("when", pa.string()),  # ISO time the corrections were pulled
])


def write_corrections(rows: list[dict], out_dir: str | os.PathLike, **summary) -> dict:
    """Writes the corrections table and its ``summary.json`` into `out_dir` (a local folder or an object-store
    URL), each whole or not at all; returns the summary, which names the table by its absolute path or its URL
    without credentials. Raises `formats.dataset.DatasetError` (an unknown action),
    `formats.storage.StorageError` (an unusable location)."""
    bad = sorted({r["action"] for r in rows} - set(ACTIONS))
    if bad:
        raise DatasetError(f"unknown correction action(s) {bad}; expected one of {ACTIONS}")
    out = Folder(out_dir)
    out.makedirs()
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    with out.atomic_path(FILE) as tmp:
        pq.write_table(table, tmp)
    counts = {a: int(pc.sum(pc.equal(table.column("action"), a)).as_py() or 0) for a in ACTIONS}
    where = str(Path(out.url_of(FILE)).resolve()) if out.is_local else out.url_of(FILE)
    info = {"corrections": where, "rows": table.num_rows, "actions": counts, **summary}
    out.write_json("summary.json", info)
    return info


def read_corrections(path: str | os.PathLike) -> pa.Table:
    """The corrections table of a corrections directory (or the parquet file itself), local or on an object
    store. Raises `formats.dataset.DatasetError` when there is none."""
    folder = Folder(path)
    if folder.isfile(FILE):
        return folder.read_parquet(FILE).cast(SCHEMA)
    parent, name = storage.split_location(path)
    if parent.isfile(name):
        return parent.read_parquet(name).cast(SCHEMA)
    raise DatasetError(f"{storage.display(path) if storage.is_url(os.fspath(path)) else path}: no {FILE}; pull "
                       "corrections with `ovlabel review pull` first")


def rejected_keys(corrections: pa.Table) -> set[str]:
    """Region keys reviewers rejected (they must never come back as pseudo labels)."""
    rej = corrections.filter(pc.equal(corrections.column("action"), "reject"))
    return {k for k in rej.column("region_id").to_pylist() if k}


def apply_corrections(dataset_dir: str | os.PathLike, corrections_dir: str | os.PathLike,
                      out_dir: str | os.PathLike, *, overwrite: bool = False, reviewed_only: bool = False) -> dict:
    """Writes `dataset_dir` with the corrections applied as a new dataset directory; returns what changed.

    `reviewed_only` keeps only reviewed regions (origin `review`) and the records that have some: the
    human-checked boxes self-training adds to its gold data.
    """
    src = Dataset(dataset_dir).require_complete()
    corr = read_corrections(corrections_dir)
    me = str(src.root.resolve())
    resume_key = {"op": "apply", "dataset": me, "reviewed_only": reviewed_only, "dataset_key": src.manifest.config.get("_resume_key"),
                  "corrections": pc.unique(corr.column("when")).to_pylist(), "rows": corr.num_rows}
    done = prior_run(out_dir, resume_key, overwrite)
    if done is not None:
        return done.counts
    by_key = {r["region_id"]: r for r in corr.to_pylist() if r["region_id"]}
    adds: dict[str, list[dict]] = {}
    for r in corr.to_pylist():
        if r["action"] in ("add", "accept", "fix") and r["dataset"] == me:
            adds.setdefault(r["image_id"], []).append(r)  # kept only when the region is not in the dataset
    m = src.manifest
    manifest = derived_manifest(src, {"op": "apply", "corrections": storage.redact(str(corrections_dir))},
                                derived_from=m.provenance)
    writer = DatasetWriter(out_dir, manifest, overwrite=overwrite, resume_key=resume_key)
    label_of = {c["name"]: c["label"] for c in m.categories}
    counts = {a: 0 for a in ACTIONS}
    wordless = 0  # reviewers' phrases with no word character: not written
    for path, part in zip(src.part_paths, m.parts):
        table = storage.read_parquet(path)  # a local path or a URL
        keys = S.region_keys(table.column("image_id").combine_chunks(), table.column("regions").combine_chunks())
        keys = iter(keys.to_pylist())
        new_regions = []
        captions = table.column("caption").to_pylist()
        for row, (image_id, regions) in enumerate(zip(table.column("image_id").to_pylist(),
                                                      table.column("regions").to_pylist())):
            out, seen = [], set()
            for reg in regions or []:
                key = next(keys)
                seen.add(key)
                c = by_key.get(key)
                if c is None:
                    out.append(reg)
                    continue
                counts[c["action"]] += 1
                wordless += _wordless_edit(c)
                if c["action"] == "reject":
                    continue
                out.append(_reviewed(reg, c, key, label_of))
            for c in adds.get(image_id, []):
                if c["region_id"] in seen:
                    continue
                wordless += _wordless_edit(c)
                if _wordless_edit(c) and c["category"] is None:
                    continue  # a drawn box whose only words are " " or ".": no phrase to write
                counts["add" if c["action"] == "add" else c["action"]] += 1
                out.append(_reviewed({"tokens_positive": None, "det_score": None, "clip_score": None,
                                      "round": None}, c, c["region_id"] or f"{image_id}#review{len(out)}", label_of))
            new_regions.append([_ground(r, captions[row]) for r in out])
        if reviewed_only:
            new_regions = [[g for g in r if g["origin"] == "review"] for r in new_regions]
        table = table.set_column(table.schema.get_field_index("regions"), "regions",
                                 pa.array(new_regions, pa.list_(S.REGION_TYPE)))
        if reviewed_only:
            table = table.filter(pa.array([bool(k) for k in new_regions]))
        writer.write_part(part["name"], table)
    applied = {**counts, "wordless_phrase": wordless} if wordless else counts
    return writer.finish({**writer.manifest.totals(), "applied": applied}).counts


def drop_rejected(dataset_dir: str | os.PathLike, corrections: pa.Table, out_dir: str | os.PathLike, *,
                  iou: float = 0.5, overwrite: bool = False) -> dict:
    """Writes `dataset_dir` without the regions that repeat a rejected box (same image, same words, IoU >= iou).

    Region ids are not stable across self-training rounds (a new model proposes new boxes), so a rejection is
    matched by image, phrase (or category) and overlap.
    """
    src = Dataset(dataset_dir).require_complete()
    rej = corrections.filter(pc.equal(corrections.column("action"), "reject")).to_pylist()
    by_image: dict[str, list[dict]] = {}
    for r in rej:
        if r["bbox"] is not None:
            by_image.setdefault(r["image_id"], []).append(r)
    resume_key = {"op": "drop_rejected", "dataset": str(src.root.resolve()), "iou": iou,
                  "dataset_key": src.manifest.config.get("_resume_key"),
                  "rejected": sorted((r["image_id"], tuple(r["bbox"])) for r in rej if r["bbox"] is not None)}
    done = prior_run(out_dir, resume_key, overwrite)
    if done is not None:
        return done.counts
    m = src.manifest
    writer = DatasetWriter(out_dir, derived_manifest(src, {**m.config, "op": "drop_rejected"}), overwrite=overwrite,
                           resume_key=resume_key)
    dropped = 0
    for path, part in zip(src.part_paths, m.parts):
        table = storage.read_parquet(path)  # a local path or a URL
        new = []
        for image_id, regions in zip(table.column("image_id").to_pylist(), table.column("regions").to_pylist()):
            bad = by_image.get(image_id, [])
            kept = [g for g in regions or [] if not any(_same(g, b, iou) for b in bad)]
            dropped += len(regions or []) - len(kept)
            new.append(kept)
        table = table.set_column(table.schema.get_field_index("regions"), "regions",
                                 pa.array(new, pa.list_(S.REGION_TYPE)))
        writer.write_part(part["name"], table)
    return writer.finish({**writer.manifest.totals(), "dropped_rejected": dropped}).counts


def _same(region: dict, rejected: dict, iou: float) -> bool:
    words = {rejected.get("phrase"), rejected.get("category")} - {None}
    if words and not ({region.get("phrase"), region.get("category")} & words):
        return False
    return bool(iou_matrix(region["bbox"], rejected["bbox"])[0, 0] >= iou)


def _reviewed(reg: dict, c: dict, key: str, label_of: dict) -> dict:
    """A region as the reviewer left it: their box and words, origin `review`, the region key kept; the source
    annotation id (``source_id``) only when the reviewer accepted the region as it was.

    A typed phrase follows the phrase rule (``formats.phrase_rules``): trimmed to its first and last word
    character; one with no word character is not written (the region keeps its words; see `apply_corrections`).
    """
    out = dict(reg)
    out["region_id"] = key
    out["origin"] = "review"
    if c["action"] != "accept":
        out["source_id"] = None  # an edited box is no longer the source's annotation (`export coco` numbers it)
    if c["bbox"] is not None and np.isfinite(c["bbox"]).all():
        out["bbox"] = list(c["bbox"])
    phrase = trim_phrase(c.get("phrase"))
    if c["action"] != "accept":
        if phrase is not None:
            out["phrase"] = phrase
            if out.get("tokens_positive") and phrase != reg.get("phrase"):
                out["tokens_positive"] = None  # the spans pointed at the old words
        if c["category"] is not None:
            out["category"] = c["category"]
            out["label"] = label_of.get(c["category"], out.get("label"))
    out.setdefault("phrase", phrase)
    for k in ("category", "label", "score"):
        out.setdefault(k, c.get(k) if k != "label" else label_of.get(c.get("category")))
    return out


def _wordless_edit(c: dict) -> bool:
    """A reviewer's phrase that has no word character (" ", "."): never written."""
    return c.get("phrase") is not None and trim_phrase(c["phrase"]) is None


def _ground(reg: dict, caption: str | None) -> dict:
    """Gives a reviewed phrase without spans the span of its first whole-word occurrence in the caption
    ("man" is not found inside "woman"), if any."""
    if reg.get("tokens_positive") is None and caption and reg.get("phrase"):
        m = re.search(r"(?<!\w)" + re.escape(reg["phrase"]) + r"(?!\w)", caption)
        if m is not None:
            reg["tokens_positive"] = [[m.start(), m.end()]]
    return reg


def summary_json(path: str | os.PathLike) -> dict:
    """The summary written beside a corrections table (a local folder or an object-store URL)."""
    return json.loads(Folder(path).read_bytes("summary.json"))


def now() -> str:
    """The time stamp recorded on pulled corrections."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
