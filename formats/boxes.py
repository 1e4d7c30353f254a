"""Box conventions, converted only at the edges. Inside ovlabel a box is absolute-pixel ``xyxy``.

COCO is absolute ``xywh``, FiftyOne relative ``xywh``, GRIT normalised ``xyxy``: the names say which.
"""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """COCO ``[x, y, w, h]`` rows -> ``[x1, y1, x2, y2]`` rows (absolute pixels)."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
