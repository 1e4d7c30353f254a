"""formats.detections.Detections: indexing, concatenation, validation, NMS by group."""

from __future__ import annotations

import numpy as np
import pytest

from formats.detections import Detections


def _dets() -> Detections:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 70]], np.float32)
    return Detections(boxes, np.array([0.9, 0.8, 0.7, 0.6], np.float32), np.array([0, 0, 1, 1]),
                      {"det_score": np.array([0.1, 0.2, 0.3, 0.4], np.float32)})


def test_mask_index_and_slice_select_every_column():
    d = _dets()
    for index in (np.array([False, True, False, True]), np.array([1, 3]), slice(1, 4, 2)):
        sub = d[index]
        assert len(sub) == 2
        assert sub.boxes.tolist() == [[1, 1, 10, 10], [50, 50, 60, 70]]
        assert sub.scores.tolist() == pytest.approx([0.8, 0.6])
        assert sub.phrase.tolist() == [0, 1]
        assert sub.data["det_score"].tolist() == pytest.approx([0.2, 0.4])
    assert d.area.tolist() == [100.0, 81.0, 100.0, 200.0]


def test_concat_keeps_order_and_the_columns_every_part_has():
    d = _dets()
    extra = Detections(np.array([[5, 5, 6, 6]], np.float32), np.array([0.5], np.float32), np.array([7]),
                       {"det_score": np.array([0.5], np.float32), "only_here": np.array([1.0])})
    both = Detections.concat([d[:2], Detections.empty(), extra])
    assert both.scores.tolist() == pytest.approx([0.9, 0.8, 0.5])
    assert both.phrase.tolist() == [0, 0, 7]
    assert set(both.data) == {"det_score"}
    assert len(Detections.concat([])) == 0 and Detections.concat([]).boxes.shape == (0, 4)


def test_inconsistent_arrays_are_refused():
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\)"):
        Detections(np.zeros((2, 3)), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"2 scores but lengths \{'phrase': 3\}"):
        Detections(np.zeros((2, 4)), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"'clip_score': 1"):
        Detections(np.zeros((2, 4)), np.zeros(2), np.zeros(2), {"clip_score": np.zeros(1)})


def test_nms_within_and_across_phrases_best_first():
    d = _dets()
    assert d.nms(0.5).tolist() == [0, 2, 3]  # box 1 overlaps box 0 (IoU 0.81) in phrase 0; box 2 is phrase 1
    assert d.nms(0.5, within_phrase=False).tolist() == [0, 3]
    assert d[np.array([3, 1])].nms(0.5).tolist() == [1, 0]  # indices into the value, best score first
    assert d.nms(0.9).tolist() == [0, 1, 2, 3]
