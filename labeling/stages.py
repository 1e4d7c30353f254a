"""The pseudo-labeling stages as plain functions over Arrow batches (testable without Ray).

load_units -> add_phrases -> ModelStage (detect + CLIP) -> select_regions. Ray Data composes them in
``workflows/pseudo_label.py``; each stage only adds columns, so a batch can be inspected at any point.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from formats import schema as S
from formats.arrow_np import from_numpy
from formats.converters.img2dataset import shard_records
from formats.images import ImageError, decode_image, read_image_bytes
from labeling.fuse import FilterConfig, fused_scores, select
from labeling.phrases import PhraseConfig, PhraseExtractor

log = logging.getLogger("ovlabel.stages")

PHRASES_TYPE = pa.list_(pa.struct([pa.field("phrase", pa.string()), pa.field("tokens_positive", pa.list_(S.SPAN_TYPE))]))
CANDIDATES_TYPE = pa.list_(S.REGION_TYPE)
ROW_COLUMNS = ["unit", "row", "image_id", "source", "file_name", "width", "height", "caption"]


# -- load ------------------------------------------------------------------------------------------------

def load_units(units: pa.Table) -> pa.Table:
    """The records of each unit (a slice of an input part), with the image root to read images from."""
    out = []
    for u in units.to_pylist():
        if u["kind"] == "img2dataset":
            t = shard_records(Path(u["path"]), u["source"])[0]
        else:
            t = pq.read_table(u["path"], columns=ROW_COLUMNS[2:])
        t = t.slice(u["start"], u["stop"] - u["start"]).select(ROW_COLUMNS[2:])
        n = t.num_rows
        out.append(pa.table({
            "unit": pa.repeat(pa.scalar(u["unit"]), n), "row": pa.array(np.arange(n, dtype=np.int32)),
            **{c: t.column(c) for c in ROW_COLUMNS[2:]},
            "image_root": pa.repeat(pa.scalar(u["image_root"]), n),
        }))
    return pa.concat_tables(out)


# -- phrases ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _extractor(cfg_items: tuple) -> PhraseExtractor:
    return PhraseExtractor(PhraseConfig(**dict(cfg_items)))


def add_phrases(batch: pa.Table, phrase_cfg: dict) -> pa.Table:
    """Adds `phrases` (noun phrases of the caption with their spans); spaCy loads once per worker."""
    ex = _extractor(tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in phrase_cfg.items())))
    phrases = ex(batch.column("caption").to_pylist())
    return batch.append_column("phrases", pa.array(phrases, PHRASES_TYPE))


class CaptionPhrases:
    """Ray Data actor: phrases of units (row ranges of records parts), reading only the parts' captions.

    Returns one row per caption: the part's name, the row in the part and its phrases. spaCy loads once,
    when the actor starts; an actor keeps the captions of the parts it read last.
    """

    def __init__(self, phrase_cfg: dict):
        self.cfg = phrase_cfg
        add_phrases(pa.table({"caption": ["a dog"]}), phrase_cfg)  # load the model now, not on the first unit

    def __call__(self, units: pa.Table) -> pa.Table:
        out = []
        for u in units.to_pylist():
            captions = _part_captions(u["path"]).slice(u["start"], u["stop"] - u["start"])
            phrases = add_phrases(pa.table({"caption": captions}), self.cfg).column("phrases")
            out.append(pa.table({"part": pa.repeat(pa.scalar(u["name"]), len(captions)),
                                 "row": from_numpy(np.arange(u["start"], u["stop"], dtype=np.int64)),
                                 "phrases": phrases}))
        return pa.concat_tables(out)


@functools.lru_cache(maxsize=2)
def _part_captions(path: str) -> pa.ChunkedArray:
    schema = pq.read_schema(path)
    if "caption" not in schema.names:  # detection records: no captions, no phrases
        return pa.chunked_array([pa.nulls(pq.ParquetFile(path).metadata.num_rows, pa.string())])
    return pq.read_table(path, columns=["caption"]).column("caption")


# -- detect and score ------------------------------------------------------------------------------------

@dataclass
class ModelSettings:
    detector: str
    clip: str
    device: str | None = None
    precision: str = "auto"
    batch_size: int = 4
    box_threshold: float = 0.1
    clip_margin: float = 0.1
    round: int | None = None
    torch_threads: int | None = None  # the actor's CPU share; None leaves torch's default


class ModelStage:
    """Loads the detector and CLIP once (per actor); per batch adds `candidates` and `image_score`."""

    def __init__(self, settings: dict):
        from detector.clip_scorer import RegionScorer
        from detector.grounding import GroundingDetector

        self.s = ModelSettings(**settings)
        if self.s.torch_threads:
            import torch

            torch.set_num_threads(self.s.torch_threads)
        self.detector = GroundingDetector(self.s.detector, device=self.s.device, precision=self.s.precision,
                                          batch_size=self.s.batch_size, box_threshold=self.s.box_threshold)
        self.scorer = RegionScorer(self.s.clip, device=self.s.device, precision=self.s.precision,
                                   margin=self.s.clip_margin)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Detects and scores a unit's rows in fixed sub-batches (results never depend on Ray's grouping)."""
        step = self.s.batch_size * 4
        parts = [self._score(batch.slice(i, step)) for i in range(0, batch.num_rows, step)]
        return pa.concat_tables(parts) if parts else batch

    def _score(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        images: list = [None] * len(rows)
        errors: list = [None] * len(rows)
        for i, r in enumerate(rows):
            try:
                images[i] = decode_image(read_image_bytes(r["image_root"], r["file_name"]), r["image_id"])
            except (ImageError, ValueError) as e:
                errors[i] = str(e)
        cand, score = self.score_decoded(rows, images)
        return (batch.drop_columns(["image_root"]).append_column("error", pa.array(errors, pa.string()))
                .append_column("candidates", pa.array(cand, CANDIDATES_TYPE))
                .append_column("image_score", pa.array(score, pa.float32())))

    def score_decoded(self, rows: list[dict], images: list) -> tuple[list, np.ndarray]:
        """Candidates and image scores for rows whose images are decoded (None: skipped)."""
        live = [i for i, im in enumerate(images) if im is not None]
        texts = [[p["phrase"] for p in (rows[i]["phrases"] or [])] for i in live]
        dets = self.detector.detect([images[i] for i in live], texts) if live else []
        crops, crop_texts = [], []
        for k, (i, det) in enumerate(zip(live, dets)):
            crops += self.scorer.crops(images[i], det.boxes)
            crop_texts += [texts[k][j] for j in det.phrase]
        clip = np.zeros(0, np.float32)
        if crops:
            uniq = sorted(set(crop_texts))
            temb = self.scorer.embed_texts(uniq)
            pos = {t: j for j, t in enumerate(uniq)}
            clip = self.scorer.similarity(self.scorer.embed_images(crops), temb[[pos[t] for t in crop_texts]])
        caps = [rows[i]["caption"] or "" for i in live]
        img_scores = (self.scorer.similarity(self.scorer.embed_images([images[i] for i in live]),
                                             self.scorer.embed_texts(caps)) if live else np.zeros(0, np.float32))
        cand: list = [[] for _ in rows]
        score = np.full(len(rows), np.nan, np.float32)
        at = 0
        for k, (i, det) in enumerate(zip(live, dets)):
            c = clip[at:at + len(det)]
            at += len(det)
            score[i] = img_scores[k]
            cand[i] = _regions(rows[i], det, c, self.s.round)
        return cand, score


def _regions(row: dict, det, clip: np.ndarray, round_: int | None) -> list[dict]:
    phrases = row["phrases"] or []
    fused = fused_scores(det.scores, clip)
    out = []
    for k in range(len(det)):
        p = phrases[int(det.phrase[k])]
        out.append({"region_id": f"{row['image_id']}#r{round_ or 0}c{k}", "bbox": [float(v) for v in det.boxes[k]],
                    "label": None, "category": None, "phrase": p["phrase"], "tokens_positive": p["tokens_positive"],
                    "score": float(fused[k]), "det_score": float(det.scores[k]), "clip_score": float(clip[k]),
                    "origin": "pseudo", "round": round_})
    return out


# -- select ----------------------------------------------------------------------------------------------

def select_regions(candidates: list[dict] | None, width: int, height: int, image_score: float,
                   cfg: FilterConfig) -> tuple[list[dict], bool]:
    """The pseudo regions kept from one image's candidates, and whether the image is kept."""
    candidates = candidates or []
    if not candidates:
        return [], not cfg.drop_image_without_boxes
    boxes = np.array([c["bbox"] for c in candidates], dtype=np.float64)
    det = np.array([c["det_score"] for c in candidates], dtype=np.float32)
    clip = np.array([c["clip_score"] for c in candidates], dtype=np.float32)
    phrase = np.unique([c["phrase"] for c in candidates], return_inverse=True)[1]
    idx, ok = select(boxes, det, clip, phrase, width, height,
                     0.0 if image_score is None or np.isnan(image_score) else float(image_score), cfg)
    return [candidates[i] for i in sorted(idx.tolist())], ok
