"""CLIP re-scoring: crop-vs-phrase and image-vs-caption cosine similarity, batched.

Scores are CLIP's cosine similarities (the same quantity YOLO-World's CC3M-Lite recipe thresholds), clipped
to [0, 1]. Crops take a configurable context margin around the box.
"""

from __future__ import annotations

import numpy as np

from detector.models import DEFAULT_CLIP, autocast, load_pretrained, pick_device


def _features(out):
    """transformers 5 returns an output object from get_*_features; older versions a tensor."""
    return out if hasattr(out, "norm") else out.pooler_output


class RegionScorer:
    """``score_regions(image, boxes, texts)`` and ``score_images(images, captions)`` with one CLIP model."""

    def __init__(self, model: str = DEFAULT_CLIP, *, device: str | None = None, precision: str = "auto",
                 batch_size: int = 64, margin: float = 0.1, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModel, AutoProcessor

        self.name = model
        self.device = pick_device(device)
        self.precision = precision
        self.batch_size = batch_size
        self.margin = margin
        self.processor = load_pretrained(AutoProcessor, model, trust_remote_code=trust_remote_code)
        self.model = load_pretrained(AutoModel, model, trust_remote_code=trust_remote_code).to(self.device).eval()
        self._torch = torch

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings (N, D)."""
        torch = self._torch
        rows = []
        for b in range(0, len(texts), self.batch_size):
            enc = self.processor.tokenizer(texts[b:b + self.batch_size], padding=True, truncation=True,
                                           max_length=77, return_tensors="pt").to(self.device)
            with torch.inference_mode(), autocast(self.device, self.precision):
                f = _features(self.model.get_text_features(**enc)).float()
            rows.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.model.config.projection_dim), np.float32)

    def embed_images(self, images: list) -> np.ndarray:
        """L2-normalised image embeddings (N, D)."""
        torch = self._torch
        rows = []
        for b in range(0, len(images), self.batch_size):
            pix = self.processor.image_processor(images=images[b:b + self.batch_size], return_tensors="pt")
            with torch.inference_mode(), autocast(self.device, self.precision):
                f = _features(self.model.get_image_features(pixel_values=pix["pixel_values"].to(self.device))).float()
            rows.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.model.config.projection_dim), np.float32)

    def crops(self, image, boxes: np.ndarray) -> list:
        """Crops of `boxes` (xyxy) with the context margin, clipped to the image."""
        w, h = image.size
        out = []
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            mx, my = (x2 - x1) * self.margin, (y2 - y1) * self.margin
            box = (max(0, int(x1 - mx)), max(0, int(y1 - my)), min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my))))
            if box[2] <= box[0] or box[3] <= box[1]:
                box = (0, 0, w, h)
            out.append(image.crop(box))
        return out

    def similarity(self, image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        """Row-wise cosine similarity of paired embeddings, clipped to [0, 1]."""
        return np.clip((image_emb * text_emb).sum(-1), 0.0, 1.0).astype(np.float32)
