"""`Detections`: the one value for the boxes of an image, from the detector to the filters.

A detector's output for one image (`detector.grounding.CanvasDetector.detect`), the candidates the pseudo
labeler stores (`labeling.candidates.candidate_detections`) and what the filters select from
(`labeling.fuse.select`) are all a `Detections`: parallel arrays, one row per box, indexed together by a
mask, an index array or a slice (after supervision's ``Detections``). Converters to other shapes (Arrow
columns, COCO results, FiftyOne) live at the edges that need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from formats.boxes import nms, xyxy_area


@dataclass
class Detections:
    """The boxes of one image (or of several, concatenated; `concat`).

    - ``boxes``: ``(N, 4)`` float, xyxy in the image's pixels (`formats.boxes`' convention);
    - ``scores``: ``(N,)`` float32, the score boxes are ranked by (the detector's phrase score as it leaves
      the detector; the fused score ``sqrt(det x clip)`` once CLIP has scored the crops, `labeling.fuse`);
    - ``phrase``: ``(N,)`` int64, the group a box belongs to: the index of its phrase among the image's prompt
      phrases, or any integer naming its phrase or class (NMS within a phrase compares these);
    - ``data``: further per-box columns by name, each ``(N,)`` (``det_score``, ``clip_score``,
      ``objectness`` with NaN where the detector has none).

    Raises ValueError when the arrays disagree on N or ``boxes`` is not ``(N, 4)``."""

    boxes: np.ndarray
    scores: np.ndarray
    phrase: np.ndarray
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes).reshape(-1, 4) if np.size(self.boxes) == 0 else np.asarray(self.boxes)
        self.scores, self.phrase = np.asarray(self.scores), np.asarray(self.phrase)
        n = len(self.scores)
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"Detections: boxes must be (N, 4), got {self.boxes.shape}")
        bad = {k: len(v) for k, v in {"boxes": self.boxes, "phrase": self.phrase, **self.data}.items() if len(v) != n}
        if bad:
            raise ValueError(f"Detections: {n} scores but lengths {bad}")

    @classmethod
    def empty(cls) -> Detections:
        """No boxes: ``boxes (0, 4)`` float32, ``scores (0,)`` float32, ``phrase (0,)`` int64, no data."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index) -> Detections:
        """The boxes at `index`: a bool mask ``(N,)``, an integer index array or a slice (data included)."""
        return Detections(self.boxes[index], self.scores[index], self.phrase[index],
                          {k: v[index] for k, v in self.data.items()})

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        """One value with the boxes of `parts` in order; `data` columns are those every part has."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        keys = [k for k in parts[0].data if all(k in p.data for p in parts)]
        return cls(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.phrase for p in parts]),
                   {k: np.concatenate([p.data[k] for p in parts]) for k in keys})

    @property
    def area(self) -> np.ndarray:
        """``(N,)`` box areas in px² (float64)."""
        return xyxy_area(self.boxes)

    def nms(self, iou: float, *, within_phrase: bool = True) -> np.ndarray:
        """Indices of the boxes greedy NMS keeps at `iou` by ``scores`` (`formats.boxes.nms`), best first;
        boxes of different ``phrase`` groups never suppress each other unless ``within_phrase`` is False."""
        return nms(self.boxes, self.scores, iou, self.phrase if within_phrase else None)
