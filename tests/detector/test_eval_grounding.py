"""Flickr30k Entities recall@k (any-box and merged-box, as MDETR defines them) and RefCOCO accuracy@0.5 on
hand-checked cases; the caption (not a list of phrases) is what the detector is prompted with."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import EXAMPLES, run_cli

from detector.eval_grounding import (
    GroundingItem,
    flickr30k_recall,
    load_grounding_gold,
    phrase_hits,
    rec_accuracy,
    recall_at_k,
    refcoco_accuracy,
)
from formats.detections import Detections

TWO = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float64)  # one phrase, two gold boxes; enclosing [0,0,30,10]


def test_any_box_and_merged_box_hits():
    ranked = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 30, 10]], np.float64)
    # any-box: the first box is gold box 1 (IoU 1); merged: it covers a third of [0,0,30,10] (IoU 0.333)
    assert phrase_hits(ranked, TWO, ks=(1, 2, 3)) == {1: True, 2: True, 3: True}
    assert phrase_hits(ranked, TWO, ks=(1, 2, 3), merged=True) == {1: False, 2: False, 3: True}
    assert phrase_hits(np.zeros((0, 4)), TWO) == {1: False, 5: False, 10: False}


def test_recall_at_k_over_phrases():
    items = [GroundingItem("a", "a.jpg", "two dogs and a cat", [(0, 8), (13, 18)],
                           [TWO, np.array([[100, 100, 150, 150]], np.float64)]),
             GroundingItem("b", "b.jpg", "a man", [(0, 5)], [np.array([[0, 0, 100, 200]], np.float64)])]
    far = np.array([[300, 300, 310, 310]], np.float64)
    ranked = [[np.array([[0, 0, 10, 10], [0, 0, 30, 10]], np.float64),       # dogs: any @1, merged @2
               np.concatenate([far] * 5 + [np.array([[100, 100, 150, 160]], np.float64)])],  # cat: @6 (IoU 0.91)
              [np.array([[0, 0, 100, 90]], np.float64)]]                        # man: IoU 0.45, never
    r = recall_at_k(ranked, items)
    assert r["phrases"] == 3
    assert (r["R@1"], r["R@5"], r["R@10"]) == pytest.approx((1 / 3, 1 / 3, 2 / 3))
    assert (r["R@1_merged"], r["R@5_merged"], r["R@10_merged"]) == pytest.approx((0.0, 1 / 3, 2 / 3))


def test_rec_accuracy_at_half_iou():
    gold = [np.array([0, 0, 10, 20.0])] * 3 + [np.array([5, 5, 50, 50.0])]
    top = [np.array([0, 0, 10, 10.0]),  # IoU exactly 0.5: correct
           np.array([0, 0, 10, 9.8]),   # IoU 0.49: wrong
           None,                        # no box: wrong
           np.array([5, 5, 50, 50.0])]
    assert rec_accuracy(top, gold) == {"accuracy": 0.5, "expressions": 4}


def mdetr_style_gold(tmp_path):
    """Two captions on the sample photos, in the layout of MDETR's final_flickr_separateGT_*.json."""
    images = [{"id": 0, "file_name": "astronaut.jpg", "width": 512, "height": 512,
               "caption": "A woman in a white suit holds a helmet"},
              {"id": 1, "file_name": "chelsea.jpg", "width": 451, "height": 300, "caption": "a cat looks up"}]
    anns = [{"id": 1, "image_id": 0, "bbox": [100, 20, 300, 480], "tokens_positive": [[0, 7]], "iscrowd": 0},
            {"id": 2, "image_id": 0, "bbox": [120, 150, 250, 350], "tokens_positive": [[11, 23]], "iscrowd": 0},
            {"id": 3, "image_id": 0, "bbox": [300, 300, 100, 100], "tokens_positive": [[30, 38]], "iscrowd": 0},
            {"id": 4, "image_id": 1, "bbox": [50, 10, 300, 280], "tokens_positive": [[0, 5]], "iscrowd": 0}]
    p = tmp_path / "flickr.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}))
    return p


class CaptionOracle:
    """Grounds a caption: records the prompt it got; answers each span with its gold box (+ `shift`) and a
    decoy scored higher for the phrases in `decoy_first`."""

    def __init__(self, gold, shift=0.0, decoy_first=()):
        self.items = {it.caption: it for it in load_grounding_gold(gold)[0]}
        self.shift, self.decoy_first, self.prompts = shift, set(decoy_first), []

    def ground(self, image, caption, spans):
        self.prompts.append((caption, list(spans)))
        it = self.items[caption]
        boxes, scores, idx = [], [], []
        for j, b in enumerate(it.boxes):
            boxes += [b[0] + self.shift, [0, 0, 2, 2]]
            scores += [0.6, 0.9 if caption[slice(*spans[j])] in self.decoy_first else 0.1]
            idx += [j, j]
        return Detections(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(idx, np.int64))


def test_flickr30k_prompts_with_the_caption_and_its_spans(tmp_path):
    gold = mdetr_style_gold(tmp_path)
    root = EXAMPLES / "sample" / "images"
    oracle = CaptionOracle(gold, decoy_first={"a helmet"})
    r = flickr30k_recall(oracle, gold, image_root=root)
    assert oracle.prompts == [("A woman in a white suit holds a helmet", [(0, 7), (11, 23), (30, 38)]),
                              ("a cat looks up", [(0, 5)])]
    assert r["protocol"] == "flickr30k" and r["phrases"] == 4 and r["captions"] == 2
    assert (r["R@1"], r["R@5"], r["R@1_merged"]) == pytest.approx((0.75, 1.0, 0.75))
    assert flickr30k_recall(CaptionOracle(gold, shift=1000.0), gold, image_root=root)["R@10"] == 0.0


def test_refcoco_top_box_accuracy(tmp_path):
    gold = mdetr_style_gold(tmp_path)
    root = EXAMPLES / "sample" / "images"
    # the decoy outscores the gold box of the astronaut caption's first phrase: its top box is wrong
    r = refcoco_accuracy(CaptionOracle(gold, decoy_first={"A woman"}), gold, image_root=root)
    assert r == {"protocol": "refcoco", "accuracy": 0.5, "expressions": 2}


def test_cli_flickr30k_with_a_tiny_detector(tiny_models, tmp_path):
    """The real caption prompt path (GroundingDetector.propose) end to end; random weights, so only shapes."""
    gold = mdetr_style_gold(tmp_path)
    out = json.loads(run_cli("evaluate", gold, "--model", tiny_models["detector"], "--protocol", "flickr30k",
                             "--image-root", EXAMPLES / "sample" / "images", "--device", "cpu").stdout)
    assert out["protocol"] == "flickr30k" and out["phrases"] == 4
    assert all(0.0 <= out[k] <= 1.0 for k in ("R@1", "R@5", "R@10", "R@1_merged"))
    assert out["R@1"] <= out["R@5"] <= out["R@10"]
