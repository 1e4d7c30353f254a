"""Grounding detectors (MM-Grounding-DINO, Grounding DINO) from transformers: boxes for phrases.

Each image gets its own prompt (``"phrase one . phrase two ."``); phrases past the text encoder's limit
(256 tokens) go into further prompts for the same image, and the boxes are merged. A box is scored for
every phrase from the token probabilities of *that phrase's own span* (mean over its tokens, as
MMDetection's grounding heads do), not from the processor's decoded word pieces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from detector.models import DEFAULT_DETECTOR, autocast, load_pretrained, pick_device
from detector.prompts import build_prompts

log = logging.getLogger("ovlabel.detector")


@dataclass
class Detections:
    """Boxes of one image: ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,), ``phrase`` (N,) phrase index."""

    boxes: np.ndarray
    scores: np.ndarray
    phrase: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, mask) -> Detections:
        return Detections(self.boxes[mask], self.scores[mask], self.phrase[mask])

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.phrase for p in parts]))


class GroundingDetector:
    """Proposes boxes for phrases. ``detect(images, phrases)`` -> one Detections per image."""

    def __init__(self, model: str = DEFAULT_DETECTOR, *, device: str | None = None, precision: str = "auto",
                 batch_size: int = 4, box_threshold: float = 0.1, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.name = model
        self.device = pick_device(device)
        self.precision = precision
        self.batch_size = batch_size
        self.box_threshold = box_threshold
        self.processor = load_pretrained(AutoProcessor, model, trust_remote_code=trust_remote_code)
        self.model = load_pretrained(AutoModelForZeroShotObjectDetection, model,
                                     trust_remote_code=trust_remote_code).to(self.device).eval()
        self.tokenizer = self.processor.tokenizer
        self.max_tokens = int(getattr(self.model.config, "max_text_len", 256))
        self._torch = torch

    def detect(self, images: list, phrases: list[list[str]]) -> list[Detections]:
        """Boxes for each image's phrases (images are PIL RGB images)."""
        requests = []  # (image index, phrase indices, prompt, spans)
        for i, ph in enumerate(phrases):
            if not ph:
                continue
            counts = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in ph]
            for idx, text, spans in build_prompts(ph, counts, self.max_tokens, tokenizer=self.tokenizer):
                requests.append((i, idx, text, spans))
        found: list[list[Detections]] = [[] for _ in images]
        for b in range(0, len(requests), self.batch_size):
            batch = requests[b:b + self.batch_size]
            for (i, idx, _, _), det in zip(batch, self._run([images[r[0]] for r in batch], batch)):
                det.phrase = np.asarray(idx, dtype=np.int64)[det.phrase]
                found[i].append(det)
        return [Detections.concat(f) for f in found]

    def _run(self, images: list, batch: list) -> list[Detections]:
        torch = self._torch
        texts = [r[2] for r in batch]
        enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_tokens,
                             return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping").numpy()
        pix = self.processor.image_processor(images=images, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in {**enc, **pix}.items()}
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self.model(**inputs)
        probs = out.logits.float().sigmoid().cpu().numpy()  # (B, Q, max_text_len)
        boxes = out.pred_boxes.float().cpu().numpy()  # (B, Q, 4) cxcywh, normalised
        results = []
        for k, (_, _, _, spans) in enumerate(batch):
            pos = _positive_map(spans, offsets[k], enc["attention_mask"][k].numpy(), probs.shape[-1])
            scores = probs[k] @ pos.T  # (Q, phrases): mean prob over each phrase's tokens
            best = scores.argmax(1)
            best_score = scores[np.arange(len(best)), best]
            keep = best_score >= self.box_threshold
            w, h = images[k].size
            cx, cy, bw, bh = boxes[k].T
            xyxy = np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], 1)
            xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
            results.append(Detections(xyxy[keep], best_score[keep].astype(np.float32), best[keep]))
        return results


def _positive_map(spans: list[tuple[int, int]], offsets: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """(phrases, width) rows averaging the token positions whose characters fall in each phrase's span."""
    pos = np.zeros((len(spans), width), np.float32)
    for j, (s, e) in enumerate(spans):
        toks = [t for t, (a, b) in enumerate(offsets) if mask[t] and b > a and a >= s and b <= e and t < width]
        if toks:
            pos[j, toks] = 1.0 / len(toks)
    return pos
