"""Box conventions, converted only at the edges. Inside ovlabel a box is absolute-pixel ``xyxy``.

COCO is absolute ``xywh``, FiftyOne relative ``xywh``, GRIT normalised ``xyxy``: the names say which.
"""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """COCO ``[x, y, w, h]`` rows -> ``[x1, y1, x2, y2]`` rows (absolute pixels)."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    """``[x1, y1, x2, y2]`` rows -> COCO ``[x, y, w, h]`` rows."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def xyxy_norm_to_xyxy(b: np.ndarray, width: np.ndarray | float, height: np.ndarray | float) -> np.ndarray:
    """Normalised ``xyxy`` (0..1, as GRIT stores them) -> absolute pixels of a `width` x `height` image."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    scale = np.stack([np.broadcast_to(width, len(b)), np.broadcast_to(height, len(b))] * 1, axis=1)
    return b * np.concatenate([scale, scale], axis=1)


def xyxy_to_xywh_norm(b: np.ndarray, width: np.ndarray | float, height: np.ndarray | float) -> np.ndarray:
    """Absolute ``xyxy`` -> relative ``[x, y, w, h]`` in 0..1 (FiftyOne's convention)."""
    wh = xyxy_to_xywh(b)
    w = np.broadcast_to(np.asarray(width, dtype=np.float64), len(wh))
    h = np.broadcast_to(np.asarray(height, dtype=np.float64), len(wh))
    return wh / np.stack([w, h, w, h], axis=1)


def overlap_area_with_image(b_xyxy: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Area of each box that lies inside its ``[0, width] x [0, height]`` image."""
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)
    iw = np.maximum(0.0, np.minimum(b[:, 2], width) - np.maximum(b[:, 0], 0.0))
    ih = np.maximum(0.0, np.minimum(b[:, 3], height) - np.maximum(b[:, 1], 0.0))
    return iw * ih


def area(b_xyxy: np.ndarray) -> np.ndarray:
    """Area of ``xyxy`` boxes (0 for degenerate ones)."""
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
