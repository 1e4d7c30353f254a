"""Box conventions, converted only at the edges, one function each. Inside ovlabel a box is absolute-pixel
``xyxy`` (``[x1, y1, x2, y2]``, x right and y down from the image's top-left corner, x2 >= x1).

=====================================  ================================================  =====================
convention                             used by                                           to / from xyxy px
=====================================  ================================================  =====================
absolute ``xywh`` (pixels)             COCO, LVIS, Objects365, ODinW, MDETR/GoldG       `xywh_to_xyxy`,
                                                                                         `xyxy_to_xywh`
normalised ``cxcywh`` (0..1)           Grounding DINO / DETR targets and outputs        `cxcywh_to_xyxy`,
                                                                                         `xyxy_to_cxcywh`
relative ``xywh`` (0..1)               FiftyOne ``Detection.bounding_box``               `relative_xywh_to_xyxy`,
                                                                                         `xyxy_to_relative_xywh`
normalised ``xyxy`` (0..1)             GRIT, Open Images                                 `normalized_to_pixels`
=====================================  ================================================  =====================

Every function takes an array-like of shape ``(N, 4)`` (or one box of shape ``(4,)``) and returns a float64
``(N, 4)`` array; the image size is in pixels, a scalar or one per box (shape ``(N,)``). The device side
(torch tensors on the model's device) has its own versions in `detector.device_ops`. `clip_to_image` is the
one rule every converter applies to a source's boxes; `iou_matrix` the one IoU and `nms` the one NMS.
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


def _rows(b) -> np.ndarray:
    return np.asarray(b, dtype=np.float64).reshape(-1, 4)


def _size(width, height, n: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.broadcast_to(np.asarray(width, dtype=np.float64), (n,)),
            np.broadcast_to(np.asarray(height, dtype=np.float64), (n,)))


def xywh_to_xyxy(b) -> np.ndarray:
    """COCO ``[x, y, w, h]`` rows -> ``[x1, y1, x2, y2]`` rows (absolute pixels), shape (N, 4)."""
    b = _rows(b)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def xyxy_to_xywh(b) -> np.ndarray:
    """``[x1, y1, x2, y2]`` rows -> COCO ``[x, y, w, h]`` rows (absolute pixels), shape (N, 4)."""
    b = _rows(b)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def xyxy_to_cxcywh(b, width, height) -> np.ndarray:
    """Pixel ``xyxy`` rows -> ``[cx, cy, w, h]`` normalised by the image size (DETR / Grounding DINO
    targets), shape (N, 4); not clipped."""
    b = _rows(b)
    w, h = _size(width, height, len(b))
    return np.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                     (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], axis=1)


def cxcywh_to_xyxy(b, width, height) -> np.ndarray:
    """Normalised ``[cx, cy, w, h]`` rows (DETR / Grounding DINO outputs) -> pixel ``xyxy``, shape (N, 4)."""
    b = _rows(b)
    w, h = _size(width, height, len(b))
    return np.stack([(b[:, 0] - b[:, 2] / 2) * w, (b[:, 1] - b[:, 3] / 2) * h,
                     (b[:, 0] + b[:, 2] / 2) * w, (b[:, 1] + b[:, 3] / 2) * h], axis=1)


def xyxy_to_relative_xywh(b, width, height) -> np.ndarray:
    """Pixel ``xyxy`` rows -> FiftyOne's ``bounding_box`` ``[x, y, w, h]`` relative to the image size,
    shape (N, 4)."""
    b = _rows(b)
    w, h = _size(width, height, len(b))
    return np.stack([b[:, 0] / w, b[:, 1] / h, (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], axis=1)


def relative_xywh_to_xyxy(b, width, height) -> np.ndarray:
    """FiftyOne's relative ``[x, y, w, h]`` rows -> pixel ``xyxy``, shape (N, 4)."""
    b = _rows(b)
    w, h = _size(width, height, len(b))
    return np.stack([b[:, 0] * w, b[:, 1] * h, (b[:, 0] + b[:, 2]) * w, (b[:, 1] + b[:, 3]) * h], axis=1)


def normalized_to_pixels(b, width, height) -> np.ndarray:
    """Normalised ``xyxy`` rows (GRIT, Open Images: 0..1 of the image) -> pixel ``xyxy``, shape (N, 4)."""
    b = _rows(b)
    w, h = _size(width, height, len(b))
    return b * np.stack([w, h, w, h], axis=1)


# The same conversions as duckdb macros, for SQL over records (a box is a 4-item list, 1-based in SQL; sizes in
# pixels). `register_sql_macros` defines them on a connection (`formats.query.connect` does it for every one).
SQL_MACROS = {
    "xyxy_to_xywh": "b -> [b[1], b[2], b[3] - b[1], b[4] - b[2]]",
    "xyxy_area": "b -> (b[3] - b[1]) * (b[4] - b[2])",
    "normalized_to_pixels": "b, w, h -> [b[1] * w, b[2] * h, b[3] * w, b[4] * h]",
}


def register_sql_macros(con) -> None:
    """Defines `SQL_MACROS` on the duckdb connection `con` as temporary macros: ``xyxy_to_xywh(bbox)``,
    ``xyxy_area(bbox)``, ``normalized_to_pixels(bbox, width, height)``."""
    for name, spec in SQL_MACROS.items():
        args, body = spec.split(" -> ", 1)
        con.execute(f"CREATE OR REPLACE TEMP MACRO {name}({args}) AS {body}")


def xyxy_area(b) -> np.ndarray:
    """Areas of ``(N, 4)`` xyxy boxes (or one ``(4,)`` box) in squared units of the boxes, float64 ``(N,)``;
    negative where a side is inverted (callers treat ``<= 0`` as no area). The SQL macro of the same name
    computes it in duckdb."""
    b = _rows(b)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def iou_matrix(a, b) -> np.ndarray:
    """IoU of every box in `a` (N, 4) with every box in `b` (M, 4), both xyxy in the same units: (N, M);
    0 where boxes do not overlap or have no area."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a, area_b = xyxy_area(a[:, 0])[:, None], xyxy_area(b[0])[None, :]
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def nms(boxes, scores, iou: float, groups=None) -> np.ndarray:
    """Greedy non-maximum suppression: ``boxes (N, 4)`` xyxy, ``scores (N,)``; a box is suppressed by a
    better-scored kept box whose IoU (`iou_matrix`) exceeds `iou`, only within its group when ``groups (N,)``
    is given. Ties keep the earlier box (stable order). Returns the kept indices (int64), best first. The
    on-device version for batches of prompts is `detector.device_ops.batched_nms` (same rule, tested equal)."""
    scores = np.asarray(scores)
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order.astype(np.int64)
    ious = iou_matrix(boxes, boxes)
    same = np.ones_like(ious, dtype=bool) if groups is None else np.asarray(groups)[:, None] == np.asarray(groups)[None, :]
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= (ious[i] > iou) & same[i]
    return np.asarray(keep, dtype=np.int64)
