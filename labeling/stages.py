"""The pseudo-labeling stages as plain functions over Arrow batches (testable without Ray).

load_units -> add_phrases -> (labeling.image_stages, labeling.prompt_stages) -> labeling.model_stage.ModelStage
-> AssembleCandidates -> labeling.candidates.records_from_candidates. Ray Data composes them in ``workflows/pseudo_label.py``; each stage
declares the columns it reads and adds, so a batch can be inspected at any point.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector.preprocess import SIZE_COLUMNS
from formats import schema as S
from formats import storage
from formats.arrow_np import from_numpy
from formats.converters.img2dataset import shard_records, stored_shard_records
from formats.phrase_rules import merge_phrases
from labeling.candidates import assemble_candidates
from labeling.phrases import PhraseConfig, PhraseExtractor
from labeling.stage import Resources, Stage

log = logging.getLogger("ovlabel.stages")

PHRASES_TYPE = S.PHRASES_TYPE
ROW_COLUMNS = ["unit", "row", "image_id", "source", "file_name", "width", "height", "caption"]


# -- load ------------------------------------------------------------------------------------------------

def load_units(units: pa.Table) -> pa.Table:
    """The records of each unit (a slice of an input part), with the image root to read images from.

    A unit whose ``phrases`` is ``"column"`` or ``"regions"`` also gets the records' given phrases as the
    ``phrases`` column (`given_phrases`); otherwise phrases are extracted later (`AddPhrases`)."""
    out = []
    for u in units.to_pylist():
        given = u.get("phrases")
        if u["kind"] == "img2dataset" and u.get("duplicates") is not None:  # a shard on an object store
            t = stored_shard_records(u["path"], u["source"], json.loads(u["duplicates"]), u["tar_beside"])
        elif u["kind"] == "img2dataset":
            t = shard_records(Path(u["path"]), u["source"])[0]
        else:
            extra = {"column": ["phrases"], "regions": ["regions"]}.get(given, [])
            t = storage.read_parquet(u["path"], columns=ROW_COLUMNS[2:] + extra)  # a local path or a URL
        t = t.slice(u["start"], u["stop"] - u["start"])
        n = t.num_rows
        cols = {"unit": pa.repeat(pa.scalar(u["unit"]), n), "row": pa.array(np.arange(n, dtype=np.int32)),
                **{c: t.column(c) for c in ROW_COLUMNS[2:]},
                "image_root": pa.repeat(pa.scalar(u["image_root"]), n)}
        if given in GIVEN_PHRASES:
            cols["phrases"] = given_phrases(t, given)
        out.append(pa.table(cols))
    return pa.concat_tables(out)


GIVEN_PHRASES = ("column", "regions")  # where records carry their phrases: a `phrases` column, or VG regions


def given_phrases(records: pa.Table, source: str) -> pa.Array:
    """The phrases records already carry, as `PHRASES_TYPE` (``[{phrase, tokens_positive}]`` per record).

    `source` ``"column"``: the ``phrases`` column (what `ovlabel phrases` and `convert odvg` write), as it is;
    ``"regions"``: every region's ``phrase`` with its ``tokens_positive``, merged per record by
    `formats.phrase_rules.phrase_key` (the first text seen names the phrase; spans united and sorted), in order
    of first span. Either way a phrase is left out when its text is blank or a span is not ``0 <= start < end <=
    len(caption)`` (it would give regions that are no part of the caption); a record without a caption has none.
    """
    captions = records.column("caption").to_pylist()
    if source == "column":
        raw = records.column("phrases").cast(PHRASES_TYPE).to_pylist()
    else:
        raw = [[{"phrase": g["phrase"], "tokens_positive": g["tokens_positive"]} for g in (regs or [])]
               for regs in records.column("regions").to_pylist()]
    out = []
    for cap, phrases in zip(captions, raw):
        ok = [{"phrase": p["phrase"], "tokens_positive": [list(s) for s in p["tokens_positive"]]}
              for p in phrases or [] if cap is not None and _inside(p, len(cap))]
        if source == "regions":
            ok = merge_phrases((p["phrase"], p["tokens_positive"]) for p in ok)
        out.append(ok)
    return pa.array(out, PHRASES_TYPE)


def _inside(p: dict, n: int) -> bool:
    """True when a phrase has text and every one of its (at least one) spans lies in a caption of `n` characters."""
    text, spans = p.get("phrase"), p.get("tokens_positive") or []
    return bool(text and text.strip() and spans and all(0 <= s[0] < s[1] <= n for s in spans))


class LoadUnits(Stage):
    """Stage form of `load_units`: unit descriptions in, the units' records (+ ``unit``, ``row``) out; with
    `given_phrases`, the records' own phrases too (the ``phrases`` column: no extraction stage follows)."""

    name = "load-units"
    resources = Resources(cpus=0.25)
    reads = ("unit", "path", "start", "stop", "kind", "image_root", "source")
    adds = ("unit", "row", *ROW_COLUMNS[2:], "image_root")

    def __init__(self, given_phrases: bool = False):
        if given_phrases:
            self.adds = (*LoadUnits.adds, "phrases")

    def process(self, batch: pa.Table) -> pa.Table:
        return load_units(batch)


# -- phrases ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _extractor(cfg_items: tuple) -> PhraseExtractor:
    return PhraseExtractor(PhraseConfig(**dict(cfg_items)))


def add_phrases(batch: pa.Table, phrase_cfg: dict) -> pa.Table:
    """Adds `phrases` (noun phrases of the caption with their spans); spaCy loads once per worker."""
    ex = _extractor(tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in phrase_cfg.items())))
    phrases = ex(batch.column("caption").to_pylist())
    return batch.append_column("phrases", pa.array(phrases, PHRASES_TYPE))


class AddPhrases(Stage):
    """Stage form of `add_phrases` (spaCy loads once per worker process)."""

    name = "phrases"
    resources = Resources(cpus=1.0)
    reads = ("caption",)
    adds = ("phrases",)

    def __init__(self, phrase_cfg: dict):
        self.phrase_cfg = phrase_cfg

    def process(self, batch: pa.Table) -> pa.Table:
        return add_phrases(batch, self.phrase_cfg)


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
    """The captions of a records part (a local path or an object-store URL, reopened here from the URL)."""
    schema = storage.parquet_schema(path)
    if "caption" not in schema.names:  # detection records: no captions, no phrases
        return pa.chunked_array([pa.nulls(storage.parquet_rows(path), pa.string())])
    return storage.read_parquet(path, columns=["caption"]).column("caption")


# -- candidates ------------------------------------------------------------------------------------------

class AssembleCandidates(Stage):
    """Turns the model actor's arrays into ``candidates`` (regions with every score; what ``refilter`` reads).

    Runs on CPU workers after the actor, so the actor never builds per-box Python objects. Region ids are
    ``IMAGE_ID#r<round>c<k>``, k the candidate's position in the image's candidate list. A readable row's
    ``width``/``height`` become the decoded image's (the size its boxes are in).

    With a vocabulary (`vocabulary`: ``[[name, synonym, ...], ...]`` in label order) a box found for a class
    carries ``label`` (the class's index) and ``category`` (its name); in the union with caption phrases
    (`with_phrases`) it also carries the spans of the caption's phrase that is that class, when there is one
    (`labeling.vocabulary.class_owners`: the phrase was prompted as the class). A box found for a caption
    phrase carries the phrase and its spans. A row without caption text has no image score (``image_score``
    NaN: the CLIP image-vs-caption score is meaningless; the image filter skips it).

    ``objectness`` (list<float32> per row, aligned with ``candidates``) is the detector's objectness of each
    candidate (OWLv2's objectness head, in [0, 1]; NaN for a detector without one, or when the input has no
    ``cand_objectness``). It is a column of the
    candidates files beside ``candidates``, not a region field, so the records' region struct (and the
    dataset format version) stay as they are; ``FilterConfig.objectness_threshold`` reads it.
    """

    name = "assemble-candidates"
    resources = Resources(cpus=0.25)
    reads = ("image_id", "phrases", "cand_boxes", "cand_det", "cand_clip", "cand_phrase")  # + cand_objectness
    adds = ("candidates", "objectness")
    drops = ("cand_boxes", "cand_det", "cand_clip", "cand_phrase", "cand_objectness", *SIZE_COLUMNS)

    def __init__(self, round_: int | None = None, vocabulary: list[list[str]] | None = None,
                 with_phrases: bool = True):
        self.round = round_
        self.vocabulary = [list(t) for t in vocabulary] if vocabulary else None
        self.with_phrases = with_phrases or not self.vocabulary
        if not self.with_phrases:
            self.reads = tuple(c for c in AssembleCandidates.reads if c != "phrases")

    def process(self, batch: pa.Table) -> pa.Table:
        candidates, objectness = assemble_candidates(batch, self.round, self.vocabulary, self.with_phrases)
        batch = _decoded_sizes(_no_caption_no_image_score(batch))
        drop = [c for c in self.drops if c in batch.column_names]
        return batch.drop_columns(drop).append_column("candidates", candidates).append_column("objectness", objectness)


def _no_caption_no_image_score(batch: pa.Table) -> pa.Table:
    """``image_score`` NaN on rows whose caption is null or blank (an image folder's records)."""
    if "image_score" not in batch.column_names or "caption" not in batch.column_names:
        return batch
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(batch.column("caption")), ""), True)
    i = batch.column_names.index("image_score")
    score = batch.column("image_score")
    return batch.set_column(i, "image_score", pc.if_else(blank, pa.scalar(float("nan"), score.type), score))


def _decoded_sizes(batch: pa.Table) -> pa.Table:
    """`width`/`height` of readable rows set to the decoded image's size (EXIF orientation applied), which
    the boxes are in: a record whose stored size disagrees (written before the image rule, or by another tool)
    never gets boxes outside its own width and height."""
    if "image_w" not in batch.column_names or "width" not in batch.column_names:
        return batch
    ok = pc.is_null(batch.column("error")) if "error" in batch.column_names else None
    for col, src in (("width", "image_w"), ("height", "image_h")):
        new = batch.column(src).cast(pa.int32())
        if ok is not None:
            new = pc.if_else(ok, new, batch.column(col).cast(pa.int32()))
        batch = batch.set_column(batch.column_names.index(col), col, new)
    return batch
