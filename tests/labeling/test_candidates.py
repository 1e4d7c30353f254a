"""labeling.candidates: the model stage's arrays as stored candidates, and candidates through the filters
(without Ray)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from formats import schema as S
from formats.boxes import iou_matrix
from formats.phrase_rules import phrase_key
from labeling.candidates import (
    CANDIDATES_TYPE,
    OBJECTNESS_TYPE,
    assemble_candidates,
    candidate_detections,
    records_from_candidates,
    select_regions,
)
from labeling.fuse import FilterConfig

MODEL_OUT = pa.schema([
    pa.field("image_id", pa.string()), pa.field("phrases", S.PHRASES_TYPE),
    pa.field("cand_boxes", pa.list_(pa.list_(pa.float32(), 4))), pa.field("cand_det", pa.list_(pa.float32())),
    pa.field("cand_clip", pa.list_(pa.float32())), pa.field("cand_phrase", pa.list_(pa.int32()))])


def _model_rows() -> pa.Table:
    phrases = [{"phrase": "a cat", "tokens_positive": [[0, 5]]}, {"phrase": "dog", "tokens_positive": [[10, 13]]}]
    return pa.Table.from_pylist([
        {"image_id": "img1", "phrases": phrases, "cand_boxes": [[0, 0, 10, 20], [5, 5, 6, 6], [1, 2, 3, 4]],
         "cand_det": [0.25, 0.81, 0.5], "cand_clip": [1.0, 0.25, 0.5], "cand_phrase": [1, 0, -2]},
        {"image_id": "img2", "phrases": [], "cand_boxes": [], "cand_det": [], "cand_clip": [], "cand_phrase": []},
        {"image_id": "img3", "phrases": None, "cand_boxes": None, "cand_det": None, "cand_clip": None,
         "cand_phrase": None},
    ], schema=MODEL_OUT)


def test_assemble_candidates_regions_with_every_score():
    cands, obj = assemble_candidates(_model_rows(), round_=2, vocabulary=[["cat", "kitty"], ["dog"]])
    rows = cands.to_pylist()
    assert [len(r) for r in rows] == [3, 0, 0]
    r = rows[0]
    assert [x["region_id"] for x in r] == ["img1#r2c0", "img1#r2c1", "img1#r2c2"]
    assert [x["bbox"] for x in r] == [[0, 0, 10, 20], [5, 5, 6, 6], [1, 2, 3, 4]]
    assert [x["score"] for x in r] == pytest.approx([0.5, 0.45, 0.5])  # sqrt(det * clip)
    assert [x["det_score"] for x in r] == pytest.approx([0.25, 0.81, 0.5])
    # phrase boxes carry the phrase and spans; the class box (-2: class 1, "dog") carries the label, the
    # category and the spans of the caption phrase that is the class
    assert [(x["label"], x["category"], x["phrase"], x["tokens_positive"]) for x in r] == [
        (None, None, "dog", [[10, 13]]), (None, None, "a cat", [[0, 5]]), (1, "dog", "dog", [[10, 13]])]
    assert {(x["origin"], x["round"]) for x in r} == {("pseudo", 2)}
    assert cands.type == CANDIDATES_TYPE and obj.type == OBJECTNESS_TYPE
    assert [len(o) for o in obj.to_pylist()] == [3, 0, 0] and all(math.isnan(v) for v in obj.to_pylist()[0])


def test_a_class_without_its_phrase_and_class_only_rows():
    t = _model_rows().slice(0, 1)
    cands, _ = assemble_candidates(t.drop_columns(["phrases"]).set_column(
        t.column_names.index("cand_phrase") - 1, "cand_phrase", pa.array([[-1, -1, -2]], pa.list_(pa.int32()))),
        vocabulary=[["cat"], ["dog"]], with_phrases=False)
    assert [(x["label"], x["category"], x["phrase"], x["tokens_positive"]) for x in cands.to_pylist()[0]] == [
        (0, "cat", None, None), (0, "cat", None, None), (1, "dog", None, None)]
    assert cands.to_pylist()[0][0]["region_id"] == "img1#r0c0"  # no round: r0
    with pytest.raises(IndexError, match=r"img1: candidate 0 names phrase 1 of 0"):
        assemble_candidates(t.set_column(1, "phrases", pa.array([[]], S.PHRASES_TYPE)))


def _cand(box, det, clip, *, label=None, phrase=None, score=None):
    return {"bbox": box, "det_score": det, "clip_score": clip, "label": label, "phrase": phrase, "score": score}


def test_filters_rank_by_the_stored_score():
    """The fused score is computed once, when candidates are assembled: the filters read ``score`` back
    (a stored score that disagrees with sqrt(det x clip) is the one used)."""
    cands = [_cand([0, 0, 10, 10], 0.9, 0.9, phrase="x", score=0.1),
             _cand([0, 0, 10, 10.5], 0.4, 0.4, phrase="x", score=0.8)]
    kept, ok = select_regions(cands, 100, 100, None, FilterConfig(fused_threshold=0.0))
    assert kept == [cands[1]] and ok
    kept, _ = select_regions(cands, 100, 100, None, FilterConfig(fused_threshold=0.5))
    assert kept == [cands[1]]  # 0.1 fails the threshold even though sqrt(0.9 * 0.9) would pass
    dets, offsets = candidate_detections(pa.array([[{f: c.get(f) for f in S.REGION_FIELDS} for c in cands]],
                                                  CANDIDATES_TYPE))
    assert dets.scores.tolist() == pytest.approx([0.1, 0.8]) and offsets.tolist() == [0, 2]


def test_groups_are_classes_then_phrase_keys():
    cands = [_cand([0, 0, 1, 1], .5, .5, phrase="Red  car"), _cand([0, 0, 1, 1], .5, .5, phrase="red car"),
             _cand([0, 0, 1, 1], .5, .5, label=3, phrase="red car"), _cand([0, 0, 1, 1], .5, .5, label=3),
             _cand([0, 0, 1, 1], .5, .5, phrase="tree")]
    dets, _ = candidate_detections(pa.array([[{f: c.get(f) for f in S.REGION_FIELDS} for c in cands]],
                                            CANDIDATES_TYPE))
    g = dets.phrase.tolist()
    assert g[0] == g[1] and g[2] == g[3] and len({g[0], g[2], g[4]}) == 3


def _candidate_table(rows: list[dict]) -> pa.Table:
    schema = pa.schema([*[f for f in S.CORE_FIELDS if f.name != "regions"], pa.field("candidates", CANDIDATES_TYPE),
                        pa.field("image_score", pa.float32()), pa.field("objectness", OBJECTNESS_TYPE)])
    full = [{"source": "s", "file_name": f"{r['image_id']}.jpg", "caption": "c", "width": 100, "height": 100,
             "objectness": None, **r, "candidates": [{f: c.get(f) for f in S.REGION_FIELDS} for c in r["candidates"]]}
            for r in rows]
    return pa.Table.from_pylist(full, schema=schema)


def test_records_from_candidates_keeps_and_counts_drops():
    table = _candidate_table([
        {"image_id": "a", "image_score": 0.9, "candidates": [
            _cand([0, 0, 10, 10], .9, .9, phrase="p", score=.9), _cand([0, 0, 10, 10.2], .8, .8, phrase="p", score=.8),
            _cand([20, 20, 40, 40], .5, .5, phrase="q", score=.5)]},
        {"image_id": "b", "image_score": 0.9, "candidates": []},
        {"image_id": "c", "image_score": 0.9, "candidates": [_cand([0, 0, 10, 10], .1, .1, phrase="p", score=.1)]},
        {"image_id": "d", "image_score": 0.01, "candidates": [_cand([0, 0, 10, 10], .9, .9, phrase="p", score=.9)]},
        {"image_id": "e", "image_score": float("nan"), "caption": None,
         "candidates": [_cand([0, 0, 10, 10], .9, .9, phrase="p", score=.9)]},
        {"image_id": "f", "image_score": 0.9, "objectness": [0.1],
         "candidates": [_cand([0, 0, 10, 10], .9, .9, phrase="p", score=.9)]},
    ])
    records, dropped = records_from_candidates(table, FilterConfig(objectness_threshold=0.5))
    assert records.schema == S.CORE_SCHEMA
    assert records.column("image_id").to_pylist() == ["a", "e"]
    assert [[x["det_score"] for x in r] for r in records.column("regions").to_pylist()] == \
        [pytest.approx([0.9, 0.5]), pytest.approx([0.9])]
    assert dropped == {"no_candidates": 1, "no_box_kept": 2, "below_image_threshold": 1}
    records, dropped = records_from_candidates(table.slice(1, 1), FilterConfig(drop_image_without_boxes=False))
    assert records.column("image_id").to_pylist() == ["b"] and dropped == {}


@pytest.mark.parametrize("seed", range(5))
def test_kept_regions_obey_every_filter(seed):
    """Property: on random candidates, what is kept is in candidate order, passes every threshold, and no two
    kept boxes of one group overlap above the NMS IoU; a dropped candidate that passed the thresholds is
    suppressed by a kept box of its group with a higher score (or the per-image cap)."""
    rng = np.random.default_rng(seed)
    words = ["cat", "Cat", "dog", "a red car"]
    cfg = FilterConfig(fused_threshold=0.2, clip_threshold=0.1, nms_iou=0.4, max_boxes_per_image=50,
                       image_threshold=-1.0)
    for _ in range(20):
        n = int(rng.integers(1, 12))
        xy = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 40, (n, 2))], 1).round(1)
        det, clip = rng.uniform(0, 1, n).round(2), rng.uniform(0, 1, n).round(2)
        cands = [_cand(boxes[i].tolist(), float(det[i]), float(clip[i]), phrase=words[int(rng.integers(4))],
                       score=float(np.sqrt(det[i] * clip[i]))) for i in range(n)]
        kept, ok = select_regions(cands, 100, 100, 0.5, cfg)
        pos = [cands.index(k) for k in kept]
        assert pos == sorted(pos) and ok == bool(kept)
        passing = [i for i, c in enumerate(cands) if c["score"] >= 0.2 and c["clip_score"] >= 0.1]
        assert set(pos) <= set(passing)
        key = [phrase_key(c["phrase"]) for c in cands]
        for i in passing:
            if i in pos:
                continue
            rivals = [j for j in pos if key[j] == key[i] and cands[j]["score"] >= cands[i]["score"]]
            assert any(iou_matrix(boxes[j], boxes[i])[0, 0] > 0.4 for j in rivals)
        for a in pos:
            for b in pos:
                if a < b and key[a] == key[b]:
                    assert iou_matrix(boxes[a], boxes[b])[0, 0] <= 0.4
