"""Candidates: the model stage's per-box arrays as stored regions, and stored regions back to `Detections`.

The model actor ends with flat arrays per row (``cand_boxes``, ``cand_det``, ``cand_clip``, ``cand_phrase``,
``cand_objectness``; `labeling.model_stage`). `assemble_candidates` turns a batch of them into the
``candidates`` column (one region struct per box, `formats.schema.REGION_TYPE`, what ``refilter`` reads)
with column operations, computing each box's fused score once. `candidate_detections` reads that column
back as one `formats.detections.Detections` per batch (the stored fused score as ``scores``), and
`records_from_candidates` applies the filters (`labeling.fuse.select`) image by image to make pseudo records.
No per-box Python object is built on either side.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from formats import schema as S
from formats.arrow_np import from_numpy
from formats.detections import Detections
from formats.phrase_rules import phrase_key
from labeling.fuse import FilterConfig, fused_scores, select

CANDIDATES_TYPE = pa.list_(S.REGION_TYPE)
OBJECTNESS_TYPE = pa.list_(pa.float32())  # per candidate, beside `candidates`


def _lengths(column) -> np.ndarray:
    """Per row list lengths of a list column (null lists: 0), int64."""
    return np.asarray(pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False), np.int64)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _flat(column) -> pa.Array:
    """A list column's values, in row order (null lists contribute none)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return pc.list_flatten(column)


def _class_owner_table(phrases: list, n_classes: int, keys: dict[str, int]) -> np.ndarray:
    """``(rows, classes)`` int64: the index of the row's caption phrase that is each class
    (`labeling.vocabulary.class_owners`), -1 where none is."""
    from labeling.vocabulary import class_owners

    owner = np.full((len(phrases), n_classes), -1, np.int64)
    for i, row in enumerate(phrases):
        for label, j in class_owners(row or [], keys).items():
            owner[i, label] = j
    return owner


def assemble_candidates(batch: pa.Table, round_: int | None = None, vocabulary: list[list[str]] | None = None,
                        with_phrases: bool = True) -> tuple[pa.ListArray, pa.ListArray]:
    """The ``candidates`` and ``objectness`` columns of a batch of the model stage's rows.

    `batch` holds ``image_id``, ``cand_boxes`` (per row ``(K, 4)`` xyxy pixels), ``cand_det``, ``cand_clip``,
    ``cand_phrase`` (int; ``j >= 0`` the row's phrase j, ``j < 0`` the vocabulary class ``-j - 1``,
    `labeling.prompt_stages.class_index`), ``phrases`` (when the rows were prompted with caption phrases) and
    optionally ``cand_objectness``. Region k of a row is ``IMAGE_ID#r<round>c<k>`` with ``score`` the fused
    score (`labeling.fuse.fused_scores`), ``det_score``, ``clip_score``, origin ``pseudo`` and the round.

    A box of a phrase carries the phrase and its spans. A box of a vocabulary class (`vocabulary`:
    ``[[name, synonym, ...], ...]`` in label order) carries ``label`` and ``category`` (the class's name) and,
    in the union with caption phrases (`with_phrases`), the spans of the caption phrase that is the class
    (`labeling.vocabulary.class_owners`), when there is one.

    ``objectness`` is aligned with ``candidates``: the detector's objectness per candidate (OWLv2), NaN for a
    detector without one or an input without ``cand_objectness``. Raises IndexError when a ``cand_phrase``
    names a phrase the row does not have."""
    from labeling.vocabulary import class_keys

    n = batch.num_rows
    lengths = _lengths(batch.column("cand_det"))
    offsets = _offsets(lengths)
    total = int(offsets[-1])
    boxes = np.asarray(_flat(_flat(batch.column("cand_boxes"))).to_numpy(zero_copy_only=False), np.float32)
    det = np.asarray(_flat(batch.column("cand_det")).to_numpy(zero_copy_only=False), np.float32)
    clip = np.asarray(_flat(batch.column("cand_clip")).to_numpy(zero_copy_only=False), np.float32)
    j = np.asarray(_flat(batch.column("cand_phrase")).to_numpy(zero_copy_only=False), np.int64)
    row = np.repeat(np.arange(n), lengths)
    k = np.arange(total) - offsets[row]

    ids = pc.take(batch.column("image_id"), pa.array(row)).combine_chunks() if total else pa.array([], pa.string())
    region_id = pc.binary_join_element_wise(ids, pa.array(k.astype(str)) if total else pa.array([], pa.string()),
                                            f"#r{round_ or 0}c")

    is_class = j < 0
    label = np.where(is_class, -j - 1, 0)
    # which of the row's phrases gives a box its phrase and spans (-1: none)
    source = np.where(is_class, -1, j)
    with_phrases = with_phrases or not vocabulary
    phrases = batch.column("phrases") if with_phrases and "phrases" in batch.column_names else None
    if vocabulary and phrases is not None and is_class.any():
        owner = _class_owner_table(phrases.to_pylist(), len(vocabulary), class_keys(vocabulary))
        source = np.where(is_class, owner[row, label], source)
    if phrases is not None:
        p_offsets = _offsets(_lengths(phrases))
        if (source >= p_offsets[row + 1] - p_offsets[row]).any():
            bad = int(np.flatnonzero(source >= p_offsets[row + 1] - p_offsets[row])[0])
            raise IndexError(f"{ids[bad]}: candidate {k[bad]} names phrase {source[bad]} of "
                             f"{p_offsets[row[bad] + 1] - p_offsets[row[bad]]}")
        taken = _flat(phrases).take(pa.array(p_offsets[row] + source, mask=source < 0))
        phrase, spans = pc.struct_field(taken, "phrase"), pc.struct_field(taken, "tokens_positive")
    else:
        if (source >= 0).any():
            raise IndexError(f"{ids[int(np.flatnonzero(source >= 0)[0])]}: a phrase candidate without phrases")
        phrase, spans = None, None
    names = pa.array([t[0] for t in vocabulary] if vocabulary else [], pa.string())
    category = names.take(pa.array(label, mask=~is_class)) if vocabulary else None

    candidates = S.regions_from_columns(
        offsets, boxes.reshape(-1, 4).astype(np.float64), region_id=region_id,
        label=pa.array(label, pa.int32(), mask=~is_class), category=category, phrase=phrase, tokens_positive=spans,
        score=fused_scores(det, clip), det_score=det, clip_score=clip, origin="pseudo", round=round_)
    if "cand_objectness" in batch.column_names:
        obj_col = batch.column("cand_objectness").combine_chunks()
        obj_col = pc.if_else(pc.is_null(obj_col), pa.scalar([], OBJECTNESS_TYPE), obj_col.cast(OBJECTNESS_TYPE))
        objectness = obj_col.cast(OBJECTNESS_TYPE)
    else:
        objectness = pa.ListArray.from_arrays(from_numpy(offsets.astype(np.int32)),
                                              from_numpy(np.full(total, np.nan, np.float32)))
    return candidates, objectness


def candidate_detections(candidates, objectness=None) -> tuple[Detections, np.ndarray]:
    """The stored candidates of a batch as one `Detections` over all its rows, and the row offsets
    (``(rows + 1,)`` int64: row i's candidates are ``dets[offsets[i]:offsets[i + 1]]``).

    ``scores`` are the stored fused scores (``score``; a region stored without one gets it from its det and
    clip scores, `labeling.fuse.fused_scores`), ``data`` holds ``det_score``, ``clip_score`` and
    ``objectness`` (from the `objectness` column where a row's list has one value per candidate, else NaN),
    ``phrase`` the NMS group: the class for a region found for a vocabulary class (``label``; a caption phrase
    that is the class is in its group), else the phrase by `formats.phrase_rules.phrase_key`. Groups are
    numbered over the whole batch; only equality within a row matters."""
    lengths = _lengths(candidates)
    offsets = _offsets(lengths)
    flat = _flat(candidates)
    total = int(offsets[-1])

    def num(name: str, dtype) -> np.ndarray:
        values = pc.struct_field(flat, name) if total else pa.array([], pa.float64())
        return np.asarray(pc.fill_null(values.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False), dtype)

    boxes = np.asarray(_flat(pc.struct_field(flat, "bbox")).to_numpy(zero_copy_only=False), np.float64) \
        if total else np.zeros(0)
    label = pc.struct_field(flat, "label") if total else pa.array([], pa.int32())
    phrase_text = pc.struct_field(flat, "phrase") if total else pa.array([], pa.string())
    # one group id per phrase key, and one per class after them
    texts = pc.unique(phrase_text.drop_null()).to_pylist()
    key_ids = {t: i for i, t in enumerate(dict.fromkeys(phrase_key(t) for t in texts))}
    text_group = pa.array([key_ids[phrase_key(t)] for t in texts], pa.int64())
    group = pc.take(text_group, pc.index_in(phrase_text, value_set=pa.array(texts, pa.string())))
    group = pc.if_else(pc.is_valid(label), pc.add(label.cast(pa.int64()), len(key_ids)), group)
    group = np.asarray(pc.fill_null(group, -1).to_numpy(zero_copy_only=False), np.int64)

    obj = np.full(total, np.nan, np.float32)
    if objectness is not None:
        o_lengths = _lengths(objectness)
        if (o_lengths == lengths).all():
            obj = np.asarray(pc.fill_null(_flat(objectness).cast(pa.float32()), np.nan)
                             .to_numpy(zero_copy_only=False), np.float32)
        else:  # rows whose list does not match their candidates have no objectness
            vals = _flat(objectness).cast(pa.float32()).to_numpy(zero_copy_only=False)
            o_offsets = _offsets(o_lengths)
            for i in np.flatnonzero(o_lengths == lengths):
                obj[offsets[i]:offsets[i + 1]] = vals[o_offsets[i]:o_offsets[i + 1]]
    det, clip, score = num("det_score", np.float32), num("clip_score", np.float32), num("score", np.float32)
    unscored = np.isnan(score)  # regions written without a score (by hand, another tool): fused here
    score[unscored] = fused_scores(det[unscored], clip[unscored])
    dets = Detections(boxes.reshape(-1, 4), score, group, {"det_score": det, "clip_score": clip, "objectness": obj})
    return dets, offsets


def records_from_candidates(cands: pa.Table, filt: FilterConfig) -> tuple[pa.Table, dict[str, int]]:
    """Pseudo records (kept images with their kept regions, in candidate order) from candidate rows
    (``candidates``, ``width``, ``height``, ``image_score``, optional ``objectness`` and the core record
    columns) under `filt`, and the images the filters dropped, counted by reason (``no_candidates``,
    ``no_box_kept``, ``below_image_threshold``). Returns a `formats.schema.CORE_SCHEMA` table."""
    column = cands.column("candidates")
    dets, offsets = candidate_detections(column, cands.column("objectness") if "objectness" in
                                         cands.column_names else None)
    widths, heights = cands.column("width").to_pylist(), cands.column("height").to_pylist()
    image_scores = cands.column("image_score").to_pylist()
    keep_rows, kept, dropped = [], [], {}
    for i in range(cands.num_rows):
        a, b = int(offsets[i]), int(offsets[i + 1])
        if a == b:
            idx, keep = np.zeros(0, np.int64), not filt.drop_image_without_boxes
        else:
            idx, keep = select(dets[a:b], widths[i], heights[i], image_scores[i], filt)
        if keep:
            keep_rows.append(i)
            kept.append(idx + a)
        else:
            why = "no_candidates" if a == b else "no_box_kept" if not len(idx) else "below_image_threshold"
            dropped[why] = dropped.get(why, 0) + 1
    take = pa.array(keep_rows, pa.int64())
    counts = [len(x) for x in kept]
    regions = pa.ListArray.from_arrays(
        from_numpy(_offsets(np.asarray(counts, np.int64)).astype(np.int32)),
        _flat(column).take(pa.array(np.concatenate(kept) if kept else np.zeros(0, np.int64))).cast(S.REGION_TYPE))
    arrays = [regions if f.name == "regions" else pc.take(cands.column(f.name), take).combine_chunks().cast(f.type)
              for f in S.CORE_FIELDS]
    return pa.Table.from_arrays(arrays, schema=S.CORE_SCHEMA), dropped


def select_regions(candidates: list[dict] | None, width: int, height: int, image_score: float | None,
                   cfg: FilterConfig, objectness: list[float] | None = None) -> tuple[list[dict], bool]:
    """One image's candidates (region dicts as stored; a dict without ``score`` is fused from its
    ``det_score`` and ``clip_score``) through the filters, as `records_from_candidates` filters a row: the
    kept dicts in candidate order, and whether the image is kept. `objectness`: per candidate, None or NaN
    where unknown."""
    candidates = candidates or []
    if not candidates:
        return [], not cfg.drop_image_without_boxes
    column = pa.array([[{f: c.get(f) for f in S.REGION_FIELDS} for c in candidates]], CANDIDATES_TYPE)
    dets, _ = candidate_detections(column, pa.array([objectness], OBJECTNESS_TYPE) if objectness is not None else None)
    idx, keep = select(dets, width, height, image_score, cfg)
    return [candidates[i] for i in idx.tolist()], keep
