"""CLIP re-scoring: crop-vs-phrase and image-vs-caption cosine similarity, batched on the model's device.

Scores are CLIP's cosine similarities (the quantity YOLO-World's CC3M-Lite recipe thresholds), clipped to
[0, 1]. A crop is cut on the device from the image tensor (``detector.device_ops``): the box grown by
``margin``, made square with image context (the short side extended about the centre, past the border
padded with CLIP's mean colour), resized to CLIP's input size. CLIP's own processor instead resizes the short
side and centre-crops, which judges a 60x180 standing person on its middle third. The whole image is scored
the same way (square, letterboxed). Text embeddings are cached per scorer (phrases repeat across images).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from detector.models import DEFAULT_CLIP, autocast, load_pretrained, pick_device

TEXT_BATCH = 32  # texts per text-embedding call: one fixed shape (see RegionScorer.text_features)


def _features(out):
    """transformers 5 returns an output object from get_*_features; older versions a tensor."""
    return out if hasattr(out, "norm") else out.pooler_output


class RegionScorer:
    """One CLIP model: ``embed_texts``, ``embed_regions`` (device crops), ``embed_images`` (PIL), ``similarity``."""

    def __init__(self, model: str = DEFAULT_CLIP, *, device: str | None = None, precision: str = "auto",
                 batch_size: int = 256, margin: float = 0.1, trust_remote_code: bool = False,
                 cache_size: int = 100_000):
        import torch
        from transformers import AutoModel, AutoProcessor

        self.name = model
        self.device = pick_device(device)
        self.precision = precision
        self.batch_size = batch_size
        self.margin = margin
        self.processor = load_pretrained(AutoProcessor, model, trust_remote_code=trust_remote_code)
        self.model = load_pretrained(AutoModel, model, trust_remote_code=trust_remote_code).to(self.device).eval()
        ip = self.processor.image_processor
        crop = getattr(ip, "crop_size", None) or {"height": 224}
        self.input_size = int(crop["height"] if isinstance(crop, dict) else crop.height)
        self.mean, self.std = list(ip.image_mean), list(ip.image_std)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, object] = OrderedDict()
        self._torch = torch

    # -- texts -----------------------------------------------------------------------------------------------

    def text_features(self, texts: list[str]):
        """L2-normalised text embeddings ``(N, D)`` float32 on the device; cached by text (LRU).

        A text's embedding never depends on which texts were embedded with it or before it (so a resumed run
        scores exactly as an uninterrupted one, whatever its cache holds): texts are embedded in calls of one
        fixed shape, ``TEXT_BATCH`` texts (a short call filled with empty texts) of the text model's full
        context (77 tokens for CLIP), since the float sums of a forward can change with its shape."""
        torch = self._torch
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        length = self._text_length()
        for b in range(0, len(new), TEXT_BATCH):
            chunk = new[b:b + TEXT_BATCH]
            enc = self.processor.tokenizer(chunk + [""] * (TEXT_BATCH - len(chunk)), padding="max_length",
                                           truncation=True, max_length=length, return_tensors="pt").to(self.device)
            for t, f in zip(chunk, self._embed_tokens(enc["input_ids"], enc["attention_mask"])):
                self._cache[t] = f
        for t in texts:
            self._cache.move_to_end(t)
        while len(self._cache) > max(self.cache_size, len(texts)):
            self._cache.popitem(last=False)
        if not texts:
            return torch.zeros((0, self.model.config.projection_dim), device=self.device)
        return torch.stack([self._cache[t] for t in texts])

    def _text_length(self) -> int:
        """The text model's context length in tokens (CLIP: 77)."""
        cfg = getattr(self.model.config, "text_config", self.model.config)
        return int(min(getattr(cfg, "max_position_embeddings", 77), 77))

    def token_features(self, ids: list[list[int]]):
        """L2-normalised embeddings ``(N, D)`` of already tokenized texts (CLIP ids, <= 77 each)."""
        torch = self._torch
        if not ids:
            return torch.zeros((0, self.model.config.projection_dim), device=self.device)
        pad = self.processor.tokenizer.pad_token_id or 0
        T = max(len(x) for x in ids)
        arr = np.full((len(ids), T), pad, np.int64)
        mask = np.zeros((len(ids), T), np.int64)
        for i, x in enumerate(ids):
            arr[i, :len(x)], mask[i, :len(x)] = x, 1
        return self._embed_tokens(torch.from_numpy(arr).to(self.device), torch.from_numpy(mask).to(self.device))

    def _embed_tokens(self, input_ids, attention_mask):
        torch = self._torch
        with torch.inference_mode(), autocast(self.device, self.precision):
            f = _features(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)).float()
        return torch.nn.functional.normalize(f, dim=-1)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings ``(N, D)`` as numpy (YOLO-World class embeddings)."""
        return self.text_features(texts).cpu().numpy()

    # -- images and regions ----------------------------------------------------------------------------------

    def region_pixels(self, images, boxes, image_index, mean=None, std=None):
        """CLIP inputs ``(M, 3, S, S)`` for ``boxes (M, 4)`` (xyxy pixels) of ``images[image_index]``, where
        ``images (B, 3, H, W)`` are normalised with their padding 0: square context, margin, no centre crop.

        `images` are normalised with `mean`/`std` (per channel; None: CLIP's own). The pseudo-labeling actor
        passes the detector's ``pixel_values``, so no second pass over the canvas is made; the crops are then
        moved to CLIP's normalisation (past the border they read the detector's mean colour, ImageNet's,
        within 0.02 of CLIP's).
        """
        from detector.device_ops import square_context_boxes

        return self.crop_pixels(images, square_context_boxes(boxes, self.margin), image_index, mean, std)

    def crop_pixels(self, images, regions, image_index, mean=None, std=None):
        """CLIP inputs ``(M, 3, S, S)`` of square ``regions (M, 4)`` (xyxy pixels) of ``images[image_index]``
        (normalised with `mean`/`std`, None: CLIP's), resized to CLIP's input size (``device_ops.crop_resize``)."""
        from detector.device_ops import crop_resize

        crops = crop_resize(images, regions, image_index, self.input_size)
        if mean is None:
            return crops
        torch = self._torch
        scale = torch.as_tensor(std, dtype=crops.dtype, device=crops.device) / torch.as_tensor(self.std, device=crops.device)
        shift = (torch.as_tensor(mean, device=crops.device) - torch.as_tensor(self.mean, device=crops.device)) / \
            torch.as_tensor(self.std, device=crops.device)
        return torch.addcmul(shift.view(3, 1, 1).to(crops.dtype), crops, scale.view(3, 1, 1))

    def image_features(self, pixel_values):
        """L2-normalised image embeddings ``(M, D)`` of CLIP inputs ``(M, 3, S, S)``, in chunks of batch_size."""
        torch = self._torch
        rows = []
        for b in range(0, len(pixel_values), self.batch_size):
            with torch.inference_mode(), autocast(self.device, self.precision):
                f = _features(self.model.get_image_features(pixel_values=pixel_values[b:b + self.batch_size])).float()
            rows.append(torch.nn.functional.normalize(f, dim=-1))
        if not rows:
            return torch.zeros((0, self.model.config.projection_dim), device=self.device)
        return torch.cat(rows)

    def embed_images(self, images: list) -> np.ndarray:
        """L2-normalised embeddings ``(N, D)`` of whole PIL images (each letterboxed to a square)."""
        return np.concatenate([self.embed_boxes(im, np.array([[0, 0, im.width, im.height]], np.float32), margin=0.0)
                               for im in images]) if images else np.zeros((0, self.model.config.projection_dim), np.float32)

    def embed_boxes(self, image, boxes: np.ndarray, margin: float | None = None) -> np.ndarray:
        """L2-normalised embeddings ``(K, D)`` of square-context crops of ``boxes (K, 4)`` (xyxy) of a PIL image."""
        torch = self._torch
        from detector.device_ops import GUARD_ROWS, normalize_pad

        a = np.asarray(image.convert("RGB"), np.uint8)
        h, w = a.shape[:2]
        canvas = np.zeros((1, -(-(h + GUARD_ROWS) // 8) * 8, -(-w // 8) * 8, 3), np.uint8)  # crop_resize's canvas
        canvas[0, :h, :w] = a
        canvas = torch.from_numpy(canvas).to(self.device)
        sizes = torch.tensor([[h, w]], device=self.device)
        src, _ = normalize_pad(canvas, sizes, self.mean, self.std)
        b = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4), device=self.device)
        keep, self.margin = self.margin, self.margin if margin is None else margin
        try:
            px = self.region_pixels(src, b, torch.zeros(len(b), dtype=torch.long, device=self.device))
        finally:
            self.margin = keep
        return self.image_features(px).cpu().numpy()

    @staticmethod
    def similarity(image_emb, text_emb):
        """Row-wise cosine similarity of paired L2-normalised embeddings, clipped to [0, 1] (numpy or torch)."""
        s = (image_emb * text_emb).sum(-1)
        return s.clamp(0.0, 1.0) if hasattr(s, "clamp") else np.clip(s, 0.0, 1.0).astype(np.float32)
