"""OWLv2 (Minderer et al. 2023, "Scaling Open-Vocabulary Object Detection") through transformers, on the
pseudo-labeling data path: the same canvases, prompt columns, candidate rule and outputs as Grounding DINO.

- Queries: every phrase is its own text query (``detector.prompts.QueryEncoder`` tokenizes them on the CPU;
  ``queries`` splits a prompt's concatenated ids into ``(P, 16)`` input ids on the device).
- Images: transformers' ``Owlv2ImageProcessor`` pads the image to a square at the bottom/right and resizes the
  square to ``S x S`` (960). Here: the image scaled by ``S / max(w, h)`` (``ResizeRule.square``) at the
  top-left of the canvas, the rest of the ``S x S`` model input filled with `PAD_VALUE` gray before
  normalisation (``model_input``). The canvas keeps ``GUARD_ROWS`` rows below the square for the crop sampler;
  the model sees only the square.
- Boxes: the model predicts ``(cx, cy, w, h)`` normalised to the padded square, so they map to the original
  image by the square's size in original pixels, ``max(w, h)``, not by ``(w, h)`` (transformers'
  ``post_process_object_detection`` with ``target_sizes=(max, max)``). Here each axis is mapped by the
  canvas pixels it was resized to (``image / resized``), which is ``max(w, h) / S`` up to the resized size's
  rounding to whole pixels.
- Scores: a box's score for a phrase is ``sigmoid`` of its class logit for that query (transformers'
  post-processing); the box keeps its best phrase. ``objectness`` (``sigmoid(objectness_logits)``, the
  paper's objectness head) is kept beside it (``Proposals.objectness``).
"""

from __future__ import annotations

import numpy as np

from detector.grounding import CanvasDetector, Proposals, best_phrase, select_candidates
from detector.models import autocast

# The square's padding before normalisation: the OWLv2 authors' preprocessing (the scenic OWL-ViT colab pads
# "with gray pixels", 0.5, before resizing to the input size); transformers 4.x did the same. transformers
# 5.x's Owlv2ImageProcessor pads with 0.0 (black) instead: the checkpoints were trained with gray.
PAD_VALUE = 0.5


class Owlv2Detector(CanvasDetector):
    """Proposes boxes for phrases with an OWLv2 checkpoint (``model_type == "owlv2"``); the interface of
    ``detector.grounding.GroundingDetector`` (``propose``, ``detect``, ``resize_rule``, ``mean``, ``std``,
    ``tokenizer``, ``encoder``) plus ``pair_scores`` for evaluation. Raises `ValueError` at construction when
    the checkpoint's processor size differs from its vision model's ``image_size``."""

    def __init__(self, model: str, *, device: str | None = None, precision: str = "auto", batch_size: int = 4,
                 box_threshold: float = 0.1, trust_remote_code: bool = False, canvas_multiple: int = 64,
                 max_queries: int | None = None, pad_value: float = PAD_VALUE):
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        from detector.prompts import QueryEncoder

        self._load(model, Owlv2ForObjectDetection, Owlv2Processor, device=device, precision=precision,
                   batch_size=batch_size, box_threshold=box_threshold, trust_remote_code=trust_remote_code,
                   canvas_multiple=canvas_multiple)
        self.query_length = int(self.model.config.text_config.max_position_embeddings)
        self.encoder = QueryEncoder(self.tokenizer, self.query_length, *([max_queries] if max_queries else []))
        self.side = self.resize_rule.longest_edge  # S: the model's input is S x S
        if self.side != int(self.model.config.vision_config.image_size):
            raise ValueError(f"{model}: processor size {self.side} != the vision model's image_size "
                             f"{self.model.config.vision_config.image_size}")
        self.pad_value = pad_value
        self.pad_id = int(self.tokenizer.pad_token_id or 0)

    # -- the device path -----------------------------------------------------------------------------------

    def queries(self, input_ids, token_spans):
        """OWLv2's text inputs from prompts: ``(input_ids, attention_mask)`` of shape ``(N * P, query_length)``,
        row ``n * P + p`` the ids ``input_ids[n, start:end]`` of phrase p of prompt n (``token_spans (N, P, 2)``),
        padded with the tokenizer's pad id (attention 0), as ``Owlv2Processor`` pads each query
        (``padding="max_length"``). A padding phrase (empty span) becomes an all-0 row, which the model masks
        out (its ``query_mask``: first token 0), with attention on its first position only."""
        torch = self._torch
        N, P, _ = token_spans.shape
        L = self.query_length
        start, end = token_spans[..., 0], token_spans[..., 1]
        n_tok = (end - start).clamp(0, L)  # (N, P)
        pos = torch.arange(L, device=input_ids.device)
        idx = (start[..., None] + pos).clamp(0, max(input_ids.shape[1] - 1, 0))  # (N, P, L)
        ids = input_ids.gather(1, idx.reshape(N, P * L)).reshape(N, P, L)
        valid = pos < n_tok[..., None]
        empty = n_tok == 0
        ids = torch.where(valid, ids, torch.full_like(ids, self.pad_id)).masked_fill(empty[..., None], 0)
        valid[..., 0] |= empty
        return ids.reshape(N * P, L), valid.reshape(N * P, L).long()

    def model_input(self, images, masks):
        """The ``(B, 3, S, S)`` model input from normalised canvases ``images (B, 3, H, W)`` (padding 0) and
        their ``masks (B, H, W)``: the top-left S x S, with the image's padding set to `pad_value` gray
        normalised by the processor's mean/std (what the processor makes of a square padded image)."""
        torch = self._torch
        S = self.side
        mean = torch.as_tensor(self.mean, dtype=images.dtype, device=images.device)
        std = torch.as_tensor(self.std, dtype=images.dtype, device=images.device)
        gray = ((self.pad_value - mean) / std).view(1, 3, 1, 1)
        return torch.where(masks[:, None, :S, :S].bool(), images[:, :, :S, :S], gray)

    def forward(self, canvas, sizes, image_sizes, input_ids, token_spans, prompt_image) -> tuple:
        """The model on N prompts: (boxes (N, Q, 4) xyxy original pixels clamped to the image, scores (N, Q, P)
        sigmoid of each patch's class logit per phrase (-1 for padding phrases, as ``best_phrase`` masks them
        later), objectness (N, Q) in [0, 1], the normalised canvases (B, 3, H, W), padding 0). Arguments as
        ``propose``'s; Q is the number of patches, ``(S / patch_size)**2``."""
        torch = self._torch
        from detector.device_ops import cxcywh_to_xyxy, normalize_pad

        images, masks = normalize_pad(canvas, sizes, self.mean, self.std)
        pv = self.model_input(images, masks)
        if len(prompt_image) != len(pv) or bool((prompt_image != torch.arange(len(pv), device=pv.device)).any()):
            pv = pv[prompt_image]
        ids, att = self.queries(input_ids, token_spans)
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self.model(pixel_values=pv, input_ids=ids, attention_mask=att)
        scores = out.logits.float().sigmoid()  # (N, Q, P); masked queries -> 0
        scores = scores.masked_fill((token_spans[..., 1] <= token_spans[..., 0])[:, None, :], -1.0)
        objectness = out.objectness_logits.float().sigmoid()  # (N, Q)
        # normalised to the S x S square -> canvas pixels (x S) -> original pixels (x image / resized, per axis)
        wh = image_sizes[prompt_image].to(scores.dtype)  # (N, 2) original (w, h)
        per_px = wh / sizes.flip(1)[prompt_image].to(scores.dtype)  # original px per canvas px, (N, 2)
        boxes = cxcywh_to_xyxy(out.pred_boxes.float()) * self.side
        boxes = boxes * per_px.repeat(1, 2)[:, None, :]
        boxes = torch.minimum(boxes.clamp_min(0), wh.repeat(1, 2)[:, None, :])
        return boxes, scores, objectness, images

    def propose(self, canvas, sizes, image_sizes, input_ids, attention_mask, token_spans, prompt_image, *,
                top_k: int | None = None, nms_iou: float | None = None, min_box_size: float = 0.0) -> Proposals:
        """``GroundingDetector.propose`` for OWLv2: the same arguments (``attention_mask`` unused: each query's
        own mask comes from its token range), the same candidate rule (``select_candidates``), and
        ``Proposals.objectness``."""
        boxes, scores, objectness, images = self.forward(canvas, sizes, image_sizes, input_ids, token_spans,
                                                         prompt_image)
        best, phrase = best_phrase(scores, token_spans)
        boxes, best, phrase, ok, objectness = select_candidates(
            boxes, best, phrase, box_threshold=self.box_threshold, top_k=top_k, nms_iou=nms_iou,
            min_box_size=min_box_size, extra=(objectness,))
        return Proposals(boxes, best, phrase, ok, images, objectness)

    # -- evaluation --------------------------------------------------------------------------------------

    def pair_scores(self, image, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (Q, 4) float32 xyxy pixels of the PIL `image`, scores (Q, P) float32) of every box for every
        name (-1 for a name that cannot be a query), for evaluation rules that rank (box, name) pairs
        (``detector.eval_queries``)."""
        torch = self._torch
        from detector.device_ops import assemble_canvases
        from detector.preprocess import prepare_image
        from detector.prompts import pad_prompts

        data, z = prepare_image(image, self.resize_rule)
        dev = self.device
        flat = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)
        canvas = assemble_canvases(flat, [0, len(data)], [z[0:2]], [z[2:4]], z[4], z[5])
        boxes, scores = None, np.full((0, len(names)), -1.0, np.float32)
        for idx, ids, spans in self.encoder.encode([names])[0]:
            a_ids, _, a_spans = pad_prompts([ids], [spans], self.pad_id)
            b, s, _, _ = self.forward(canvas, torch.tensor([z[2:4]], device=dev), torch.tensor([image.size], device=dev),
                                      torch.from_numpy(a_ids).to(dev), torch.from_numpy(a_spans).to(dev),
                                      torch.zeros(1, dtype=torch.long, device=dev))
            if boxes is None:
                boxes = b[0].cpu().numpy().astype(np.float32)
                scores = np.full((len(boxes), len(names)), -1.0, np.float32)
            scores[:, idx] = s[0].cpu().numpy()[:, :len(idx)]
        if boxes is None:
            return np.zeros((0, 4), np.float32), scores
        return boxes, scores
