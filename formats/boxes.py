"""Box conventions, converted only at the edges. Inside ovlabel a box is absolute-pixel ``xyxy``.

COCO is absolute ``xywh``, FiftyOne relative ``xywh``, GRIT and Open Images normalised ``xyxy``: the names
say which. `clip_to_image` is the one rule every converter applies to a source's boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_OVERLAP = "no overlap with image"  # the drop reason of a box `clip_to_image` finds empty


@dataclass(frozen=True)
class ClippedBoxes:
    """What `clip_to_image` made of N boxes."""

    xyxy: np.ndarray  # (N, 4) the boxes clipped to the image, in the units they were given in
    clipped: np.ndarray  # (N,) bool: kept by the rule, and at least one coordinate changed
    empty: np.ndarray  # (N,) bool: no area inside the image (to be dropped as NO_OVERLAP)


def clip_to_image(xyxy: np.ndarray, width, height, *, in_place: bool = False) -> ClippedBoxes:
    """The box rule of every converter (COCO, GoldG, Open Images, GRIT): boxes clipped to the image.

    `xyxy` rows are ``[x1, y1, x2, y2]``, in pixels with `width`/`height` the image size in pixels (a scalar
    or one per box), or normalised with ``width = height = 1`` (Open Images, GRIT: clipping to 0..1 and then
    scaling equals scaling and then clipping). Each coordinate is clipped to ``0..width`` / ``0..height``.
    A box with no area left (``x2 <= x1`` or ``y2 <= y1`` after clipping: wholly outside the image, only
    touching its edge, or inverted) is `empty`, and the caller drops it as `NO_OVERLAP`, written to rejects
    and counted; a box kept with a changed coordinate is `clipped`, counted as ``boxes_clipped``. A
    non-finite coordinate makes the box `empty` (callers reject those first, as ``invalid box``).
    `in_place` clips a float64 (N, 4) array in place (no copy of a large column)."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    out = b if in_place else b.copy()
    w = np.broadcast_to(np.asarray(width, dtype=np.float64), (len(b),))
    h = np.broadcast_to(np.asarray(height, dtype=np.float64), (len(b),))
    with np.errstate(invalid="ignore"):
        # a kept box can only have changed where it reached past a side: a coordinate beyond the opposite
        # side (x1 > width, x2 < 0) leaves no area
        reached = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h)
        for k, top in ((0, w), (1, h), (2, w), (3, h)):
            np.clip(out[:, k], 0.0, top, out=out[:, k])
        empty = ~((out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1]))
    return ClippedBoxes(out, reached & ~empty, empty)


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """COCO ``[x, y, w, h]`` rows -> ``[x1, y1, x2, y2]`` rows (absolute pixels)."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` with every box in `b` (xyxy)."""
    a = a.reshape(-1, 4)[:, None, :]
    b = b.reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)
