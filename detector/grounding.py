"""Grounding detectors (MM-Grounding-DINO, Grounding DINO) from transformers: boxes for phrases.

Each image gets its own prompt (``"phrase one . phrase two ."``); phrases past the text encoder's limit
(256 tokens) go into further prompts for the same image. A box is scored for every phrase from the token
probabilities of *that phrase's own tokens* (mean over them, as MMDetection's grounding heads do), through a
positive map built on the device from token ranges (``detector.device_ops.positive_map``).

Two entry points share one device path (``propose``): the pseudo-labeling actor hands uint8 canvases and
token ranges made by the CPU stages; ``detect(images, phrases)`` (evaluation) makes them itself from PIL
images with the same resize rule and the same prompt tokenization.

The parts every backend shares live here: `Proposals`, `select_candidates` (threshold, size,
top-k, per-phrase NMS) and `CanvasDetector.detect` (one `formats.detections.Detections` per image). OWLv2 (``detector.owlv2.Owlv2Detector``) is the other
backend; ``detector.backends.load_detector`` picks one from the checkpoint's config.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from detector.models import DEFAULT_DETECTOR, autocast, load_pretrained, pick_device
from formats.detections import Detections

log = logging.getLogger("ovlabel.detector")


@dataclass
class Proposals:
    """Per prompt (N prompts, K slots each), on the model's device: ``boxes (N, K, 4)`` xyxy in the original
    image's pixels, ``scores (N, K)`` (the best phrase's score), ``phrase (N, K)`` (index into the prompt's
    phrases), ``keep (N, K)`` bool (above the box threshold, large enough, survived NMS); and the images'
    normalised ``pixel_values (B, 3, H, W)`` (padding 0), for crops cut from the same tensor; ``objectness
    (N, K)`` in [0, 1] for a backend that predicts it (OWLv2), else None."""

    boxes: object
    scores: object
    phrase: object
    keep: object
    pixel_values: object = None
    objectness: object = None


def best_phrase(scores, token_spans) -> tuple:
    """(best (N, K), phrase (N, K)) of ``scores (N, K, P)`` (every query's score for every prompt phrase):
    each query's best phrase, padding phrases (empty ``token_spans (N, P, 2)``) scored -1; -1 and phrase 0
    when a prompt has no phrase."""
    import torch

    scores = scores.masked_fill((token_spans[..., 1] <= token_spans[..., 0])[:, None, :], -1.0)
    if not scores.shape[-1]:
        return scores.new_full(scores.shape[:2], -1.0), scores.new_zeros(scores.shape[:2], dtype=torch.long)
    return scores.max(-1)


def select_candidates(boxes, best, phrase, *, box_threshold: float, top_k: int | None = None,
                      nms_iou: float | None = None, min_box_size: float = 0.0, extra: tuple = ()) -> tuple:
    """The candidate rule every backend applies to its queries, on the device: ``boxes (N, K, 4)`` xyxy
    pixels, ``best (N, K)`` each query's best phrase score, ``phrase (N, K)``. Queries under `box_threshold`
    or with a side under `min_box_size` px are not kept; then the `top_k` best per prompt (in query order),
    then greedy NMS within each phrase at `nms_iou` (None: no NMS). `extra` are further (N, K) tensors taken
    along with the top-k. Returns (boxes, best, phrase, keep, *extra)."""
    import torch

    from detector.device_ops import batched_nms

    ok = best >= box_threshold
    if min_box_size > 0:
        ok &= ((boxes[..., 2] - boxes[..., 0]) >= min_box_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_box_size)
    if top_k is not None and top_k < best.shape[1]:
        idx = torch.where(ok, best, torch.full_like(best, -2.0)).topk(top_k, dim=1).indices
        idx = idx.sort(dim=1).values  # query order, as without top-k
        boxes = boxes.gather(1, idx[..., None].expand(-1, -1, 4))
        best, phrase, ok = best.gather(1, idx), phrase.gather(1, idx), ok.gather(1, idx)
        extra = tuple(e.gather(1, idx) for e in extra)
    if nms_iou is not None:
        ok = batched_nms(boxes, best, phrase, ok, nms_iou)
    return (boxes, best, phrase, ok, *extra)


class CanvasDetector:
    """What the backends share: ``detect(images, phrases)`` through the backend's ``propose`` with the
    backend's ``resize_rule`` and prompt ``encoder``. A backend sets ``device``, ``batch_size``, ``tokenizer``,
    ``encoder`` (``encode(phrase_lists)`` as ``detector.prompts.PromptEncoder``), ``resize_rule``, ``mean``,
    ``std`` and implements ``propose``."""

    def _load(self, model: str, model_cls, processor_cls, *, device: str | None, precision: str, batch_size: int,
              box_threshold: float, trust_remote_code: bool, canvas_multiple: int) -> None:
        """Loads checkpoint `model` (processor and model, on the device, eval mode) and sets what every backend
        has: ``name``, ``device``, ``precision``, ``batch_size``, ``box_threshold``, ``processor``, ``model``,
        ``tokenizer``, ``resize_rule`` (from the image processor), ``mean``/``std``."""
        import torch

        from detector.preprocess import ResizeRule

        self.name, self.device, self.precision = model, pick_device(device), precision
        self.batch_size, self.box_threshold = batch_size, box_threshold
        self.processor = load_pretrained(processor_cls, model, trust_remote_code=trust_remote_code)
        self.model = load_pretrained(model_cls, model, trust_remote_code=trust_remote_code).to(self.device).eval()
        self.tokenizer = self.processor.tokenizer
        ip = self.processor.image_processor
        self.resize_rule = ResizeRule.from_processor(ip, canvas_multiple)
        self.mean, self.std = list(ip.image_mean), list(ip.image_std)
        self._torch = torch

    # -- PIL images in, Detections out (evaluation) ----------------------------------------------------------

    def detect(self, images: list, phrases: list[list[str]]) -> list[Detections]:
        """Boxes for each image's phrases (images are PIL RGB images): every query above the box threshold,
        labelled with its best phrase; no NMS (evaluation caps detections itself)."""
        torch = self._torch
        from detector.device_ops import assemble_canvases
        from detector.preprocess import prepare_image
        from detector.prompts import pad_prompts

        encoded = self.encoder.encode(phrases)
        requests = [(i, idx, ids, spans) for i, per in enumerate(encoded) for idx, ids, spans in per]
        found: list[list[Detections]] = [[] for _ in images]
        prepared = {}  # image -> (shipped bytes, SIZE_COLUMNS sizes), as the pipeline's CPU stage makes them
        for b in range(0, len(requests), self.batch_size):
            batch = requests[b:b + self.batch_size]
            for r in batch:
                if r[0] not in prepared:
                    prepared[r[0]] = prepare_image(images[r[0]], self.resize_rule)
            # one canvas per call: group the batch's requests by canvas
            by_canvas: dict = {}
            for r in batch:
                by_canvas.setdefault(prepared[r[0]][1][4:6], []).append(r)
            for (ch, cw), reqs in by_canvas.items():
                imgs = list(dict.fromkeys(r[0] for r in reqs))
                data = [prepared[i] for i in imgs]
                offsets = np.concatenate([[0], np.cumsum([len(d) for d, _ in data])]).tolist()
                flat = torch.frombuffer(bytearray(b"".join(d for d, _ in data)), dtype=torch.uint8).to(self.device)
                canvas = assemble_canvases(flat, offsets, [z[0:2] for _, z in data], [z[2:4] for _, z in data], ch, cw)
                ids, mask, spans = pad_prompts([r[2] for r in reqs], [r[3] for r in reqs],
                                               self.tokenizer.pad_token_id or 0)
                dev = self.device
                prop = self.propose(
                    canvas, torch.tensor([z[2:4] for _, z in data], device=dev),
                    torch.tensor([images[i].size for i in imgs], device=dev),
                    torch.from_numpy(ids).to(dev), torch.from_numpy(mask).to(dev), torch.from_numpy(spans).to(dev),
                    torch.tensor([imgs.index(r[0]) for r in reqs], device=dev))
                boxes, scores = prop.boxes.cpu().numpy(), prop.scores.cpu().numpy()
                phrase, keep = prop.phrase.cpu().numpy(), prop.keep.cpu().numpy()
                for k, r in enumerate(reqs):
                    m = keep[k]
                    found[r[0]].append(Detections(boxes[k][m].astype(np.float32), scores[k][m].astype(np.float32),
                                                  np.asarray(r[1], np.int64)[phrase[k][m]]))
        return [Detections.concat(f) for f in found]


class GroundingDetector(CanvasDetector):
    """Proposes boxes for phrases (Grounding DINO family). ``detect(images, phrases)`` -> one Detections per
    image."""

    def __init__(self, model: str = DEFAULT_DETECTOR, *, device: str | None = None, precision: str = "auto",
                 batch_size: int = 4, box_threshold: float = 0.1, trust_remote_code: bool = False,
                 canvas_multiple: int = 64):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self._load(model, AutoModelForZeroShotObjectDetection, AutoProcessor, device=device, precision=precision,
                   batch_size=batch_size, box_threshold=box_threshold, trust_remote_code=trust_remote_code,
                   canvas_multiple=canvas_multiple)
        self.max_tokens = int(getattr(self.model.config, "max_text_len", 256))
        self._encoder = None

    @property
    def encoder(self):
        """``PromptEncoder`` within ``max_tokens`` (made again when ``max_tokens`` is changed)."""
        from detector.prompts import PromptEncoder

        if self._encoder is None or self._encoder.max_tokens != self.max_tokens:
            self._encoder = PromptEncoder(self.tokenizer, self.max_tokens)
        return self._encoder

    # -- the device path -----------------------------------------------------------------------------------

    def propose(self, canvas, sizes, image_sizes, input_ids, attention_mask, token_spans, prompt_image, *,
                top_k: int | None = None, nms_iou: float | None = None, min_box_size: float = 0.0) -> Proposals:
        """Candidate boxes for N prompts over B images sharing one canvas, all on the model's device.

        ``canvas (B, H, W, 3)`` uint8 (each image resized by ``resize_rule`` at its top-left), ``sizes (B, 2)``
        resized (h, w), ``image_sizes (B, 2)`` original (w, h) that boxes are mapped to, ``input_ids`` /
        ``attention_mask (N, T)``, ``token_spans (N, P, 2)`` token range of each prompt phrase (``(0, 0)``:
        padding), ``prompt_image (N,)`` the image of each prompt. Every query keeps its best phrase; queries
        under ``box_threshold`` or with a side under `min_box_size` px are dropped; then the `top_k` best per
        prompt, then greedy NMS within each phrase at `nms_iou` (None: no NMS).
        """
        torch = self._torch
        from detector.device_ops import cxcywh_to_xyxy, normalize_pad, positive_map

        images, masks = normalize_pad(canvas, sizes, self.mean, self.std)
        pv, pm = images, masks
        if len(prompt_image) != len(pv) or bool((prompt_image != torch.arange(len(pv), device=pv.device)).any()):
            pv, pm = pv[prompt_image], pm[prompt_image]
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self.model(pixel_values=pv, pixel_mask=pm, input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=torch.zeros_like(input_ids))
        probs = out.logits.float().sigmoid()  # (N, Q, max_text_len)
        pos = positive_map(token_spans, probs.shape[-1])  # (N, P, max_text_len)
        scores = probs @ pos.transpose(1, 2)  # (N, Q, P): mean prob over each phrase's tokens
        best, phrase = best_phrase(scores, token_spans)
        wh = image_sizes[prompt_image].to(probs.dtype)  # (N, 2) original (w, h)
        boxes = cxcywh_to_xyxy(out.pred_boxes.float()) * wh.repeat(1, 2)[:, None, :]
        boxes = torch.minimum(boxes.clamp_min(0), wh.repeat(1, 2)[:, None, :])
        boxes, best, phrase, ok = select_candidates(boxes, best, phrase, box_threshold=self.box_threshold,
                                                    top_k=top_k, nms_iou=nms_iou, min_box_size=min_box_size)
        return Proposals(boxes, best, phrase, ok, images)
