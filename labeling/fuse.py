"""Score fusion and filters that turn raw candidates into pseudo boxes (no GPU: `ovlabel refilter` reruns it).

Defaults follow YOLO-World's CC3M-Lite recipe: fused = sqrt(det x clip), NMS 0.5 within a phrase, keep
fused >= 0.3, keep the image if sqrt(s_img x mean s_r) > 0.3. GRIT (Kosmos-2) options: NMS across phrases,
det >= 0.65, drop the pair when no box survives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from formats.boxes import iou_matrix
from formats.config import from_dict, read_config_file


@dataclass
class FilterConfig:
    """Thresholds applied to candidates; recorded in the pseudo dataset's manifest."""

    det_threshold: float = 0.0  # on the detector's phrase score
    clip_threshold: float = 0.0  # on the crop-vs-phrase CLIP score
    fused_threshold: float = 0.3  # on sqrt(det * clip)
    image_threshold: float = 0.3  # keep the image if sqrt(s_img * mean s_r of kept boxes) > this
    nms_iou: float = 0.5
    nms_across_phrases: bool = False
    max_boxes_per_image: int = 100
    max_box_area_fraction: float = 0.95  # drop boxes covering nearly the whole image
    drop_image_without_boxes: bool = True  # an image with no surviving box is not a training pair
    # on the detector's objectness (OWLv2's objectness head, in [0, 1]); candidates without one (Grounding DINO,
    # NaN) pass
    objectness_threshold: float = 0.0

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> FilterConfig:
        """From a JSON/TOML file (its "filter" section, or the whole file), then flag overrides (None = unset).

        Raises formats.config.ConfigError (a ValueError) for an unknown key or a value of the wrong type."""
        cfg = cls()
        if path:
            raw = read_config_file(path)
            cfg = from_dict(cls, raw["filter"], file=path, path="filter") if "filter" in raw else \
                from_dict(cls, raw, file=path)
        return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


def fused_scores(det: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """sqrt(det * clip), elementwise."""
    return np.sqrt(np.clip(det, 0, None) * np.clip(clip, 0, None)).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, groups: np.ndarray | None = None) -> np.ndarray:
    """Greedy NMS (within `groups` when given); returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    ious = iou_matrix(boxes, boxes)
    same = np.ones_like(ious, dtype=bool) if groups is None else groups[:, None] == groups[None, :]
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= (ious[i] > iou) & same[i]
    return np.asarray(keep, dtype=np.int64)


def select(boxes: np.ndarray, det: np.ndarray, clip: np.ndarray, phrase: np.ndarray, width: float, height: float,
           image_score: float, cfg: FilterConfig, objectness: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Indices of the candidates kept for one image, and whether the image itself is kept. `objectness` (per
    candidate, NaN: unknown) is held to ``cfg.objectness_threshold`` where known."""
    fused = fused_scores(det, clip)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.zeros(0)
    ok = (det >= cfg.det_threshold) & (clip >= cfg.clip_threshold) & (fused >= cfg.fused_threshold)
    ok &= area <= cfg.max_box_area_fraction * width * height
    ok &= area > 0
    if objectness is not None and cfg.objectness_threshold > 0:
        ok &= ~(objectness < cfg.objectness_threshold)  # NaN (no objectness) passes
    idx = np.flatnonzero(ok)
    if len(idx):
        kept = nms(boxes[idx], fused[idx], cfg.nms_iou, None if cfg.nms_across_phrases else phrase[idx])
        idx = idx[kept][: cfg.max_boxes_per_image]
    if len(idx) == 0:
        return idx, not cfg.drop_image_without_boxes
    image_ok = float(np.sqrt(max(image_score, 0.0) * float(clip[idx].mean()))) > cfg.image_threshold
    return idx, image_ok
