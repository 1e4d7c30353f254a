"""Fusion and filters: the CC3M-Lite recipe, NMS, image-level filter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from formats.boxes import iou_matrix, nms
from formats.detections import Detections
from labeling.fuse import FilterConfig, fused_scores, select


def test_fused_score_is_the_geometric_mean():
    assert fused_scores(np.array([0.25, 0.81, 0.0]), np.array([1.0, 0.25, 0.5])) == pytest.approx([0.5, 0.45, 0.0])


def test_nms_within_and_across_phrases():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert iou_matrix(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 100)
    assert nms(boxes, scores, 0.5, groups=np.array([0, 0, 1, 1])).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.5).tolist() == [0, 3]


def test_select_applies_every_threshold():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 100, 100], [40, 40, 50, 50]], float)
    det = np.array([0.9, 0.2, 0.9, 0.5])
    clip = np.array([0.4, 0.9, 0.4, 0.01])
    phrase = np.array([0, 1, 2, 3])

    def dets(det, clip):
        return Detections(boxes, fused_scores(det, clip), phrase, {"det_score": det, "clip_score": clip})
    cfg = FilterConfig(fused_threshold=0.3, image_threshold=0.3)
    idx, ok = select(dets(det, clip), 100, 100, image_score=0.4, cfg=cfg)
    assert idx.tolist() == [0, 1]  # box 2 covers the image, box 3 fuses to 0.07
    assert ok  # sqrt(0.4 * mean(0.4, 0.9)) = 0.51 > 0.3
    _, ok = select(dets(det, clip), 100, 100, image_score=0.05, cfg=cfg)
    assert not ok
    idx, _ = select(dets(det, clip), 100, 100, 0.4, FilterConfig(det_threshold=0.65, fused_threshold=0))
    assert idx.tolist() == [0]  # GRIT-style det >= 0.65 (box 2 still too large)
    idx, ok = select(dets(det * 0, clip), 100, 100, 0.9, cfg)
    assert len(idx) == 0 and not ok
    idx, ok = select(dets(det, clip), 100, 100, float("nan"), cfg)  # no caption: the boxes alone decide
    assert idx.tolist() == [0, 1] and ok


def test_config_file_and_overrides(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"filter": {"fused_threshold": 0.5, "nms_across_phrases": True}}))
    cfg = FilterConfig.load(p, image_threshold=0.1, det_threshold=None)
    assert (cfg.fused_threshold, cfg.nms_across_phrases, cfg.image_threshold, cfg.det_threshold) == (0.5, True, 0.1, 0.0)
    p.write_text(json.dumps({"fused_treshold": 0.5}))
    with pytest.raises(ValueError, match=r"c\.json: fused_treshold: unknown key \(did you mean fused_threshold\?\)"):
        FilterConfig.load(p)
