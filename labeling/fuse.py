"""Score fusion and filters that turn raw candidates into pseudo boxes (no GPU: `ovlabel refilter` reruns it).

Defaults follow YOLO-World's CC3M-Lite recipe: fused = sqrt(det x clip), NMS 0.5 within a phrase, keep
fused >= 0.3, keep the image if sqrt(s_img x mean s_r) > 0.3. GRIT (Kosmos-2) options: NMS across phrases,
det >= 0.65, drop the pair when no box survives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from formats.config import from_dict, read_config_file
from formats.detections import Detections


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
    def load(cls, path: str | Path | None = None, *, base: FilterConfig | None = None, **overrides) -> FilterConfig:
        """`base` (default: the defaults) with the keys a JSON/TOML file sets (its "filter" section, or the
        whole file), then flag overrides (None = unset): a setting neither names keeps `base`'s value.

        Raises formats.config.ConfigError (a ValueError) for an unknown key or a value of the wrong type;
        OSError when the file cannot be read."""
        cfg = base or cls()
        if path:
            raw = read_config_file(path)
            section, where = (raw["filter"], "filter") if "filter" in raw else (raw, "")
            given = from_dict(cls, section, file=path, path=where)  # checks every key and value
            cfg = replace(cfg, **{k: getattr(given, k) for k in section})
        return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def recorded(cls, settings: dict | None) -> FilterConfig:
        """The filter config a pseudo dataset's manifest records (``config["filter"]``); settings a dataset
        written by an older version lacks take their defaults. Raises ConfigError for an unknown key."""
        return from_dict(cls, settings or {}, path="filter")

    def to_dict(self) -> dict:
        return asdict(self)


def fused_scores(det: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """``sqrt(det x clip)`` elementwise (negative scores count as 0), float32: the score a candidate is
    stored with (``score``) and ranked by. Computed once, when candidates are assembled
    (`labeling.candidates.assemble_candidates`); the filters read it back."""
    return np.sqrt(np.clip(det, 0, None) * np.clip(clip, 0, None)).astype(np.float32)


def select(dets: Detections, width: float, height: float, image_score: float | None,
           cfg: FilterConfig) -> tuple[np.ndarray, bool]:
    """The candidates kept for one image, and whether the image itself is kept.

    `dets`: the image's candidates, ``scores`` the fused scores (`fused_scores`), ``data["det_score"]`` and
    ``data["clip_score"]``, optionally ``data["objectness"]`` (NaN: unknown, passes
    ``cfg.objectness_threshold``); ``phrase`` the NMS groups. `width`/`height` in pixels (the area rule).
    `image_score`: the CLIP image-vs-caption score; None or NaN for an image without caption, which is then
    kept or dropped by its boxes alone.

    Returns the kept indices into `dets` in ascending order, and the image decision: kept when a box survives
    and ``sqrt(image_score x mean clip of the kept boxes) > cfg.image_threshold`` (CC3M-Lite's rule);
    without a surviving box, ``not cfg.drop_image_without_boxes``."""
    det, clip, fused = dets.data["det_score"], dets.data["clip_score"], dets.scores
    area = dets.area
    ok = (det >= cfg.det_threshold) & (clip >= cfg.clip_threshold) & (fused >= cfg.fused_threshold)
    ok &= (area <= cfg.max_box_area_fraction * width * height) & (area > 0)
    objectness = dets.data.get("objectness")
    if objectness is not None and cfg.objectness_threshold > 0:
        ok &= ~(objectness < cfg.objectness_threshold)  # NaN (no objectness) passes
    idx = np.flatnonzero(ok)
    if len(idx):
        idx = idx[dets[idx].nms(cfg.nms_iou, within_phrase=not cfg.nms_across_phrases)][: cfg.max_boxes_per_image]
    if len(idx) == 0:
        return idx, not cfg.drop_image_without_boxes
    if image_score is None or np.isnan(image_score):
        return np.sort(idx), True
    # the mean in NMS order (best first), as the rule has always summed it: float32 sums depend on order
    image_ok = float(np.sqrt(max(image_score, 0.0) * float(clip[idx].mean()))) > cfg.image_threshold
    return np.sort(idx), image_ok
