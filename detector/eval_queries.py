"""Every (query, phrase) score of a GroundingDetector, for evaluation rules that rank pairs rather than each
query's best phrase: MMDetection's top-k over (query, class) pairs per image (COCO 100, LVIS 300) and MDETR's
per-phrase ranking of all queries (Flickr30k).

Runs on top of ``GroundingDetector.propose`` (same resize rule, canvas, tokenization and box mapping as
``detect``); the token probabilities are read from the model's output through a forward hook and averaged
over each phrase's tokens with ``device_ops.positive_map``, exactly as ``propose`` scores the best phrase.
A detector with ``pair_scores(image, names)`` (OWLv2: every query is one phrase, so its scores are already
per phrase) gives the (box, phrase) scores itself.
"""

from __future__ import annotations

import numpy as np

from detector.eval_coco import topk_query_class


def prompt_scores(detector, image, text: str, char_spans: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (Q, 4) float32 xyxy pixels of `image`, scores (Q, P) float32) of one prompt `text` whose P
    phrases are `char_spans`; a span without tokens (cut by the text limit) scores -1 for every query."""
    import torch

    from detector.device_ops import assemble_canvases, positive_map
    from detector.preprocess import prepare_image
    from detector.prompts import token_spans

    data, z = prepare_image(image, detector.resize_rule)
    dev = detector.device
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)
    canvas = assemble_canvases(flat, [0, len(data)], [z[0:2]], [z[2:4]], z[4], z[5])
    enc = detector.tokenizer([text], truncation=True, max_length=detector.max_tokens,
                             return_offsets_mapping=True, return_tensors="pt")
    tok = torch.from_numpy(token_spans(char_spans, enc["offset_mapping"].numpy()[0], detector.max_tokens)
                           .astype(np.int64)[None]).to(dev)
    seen = []
    hook = detector.model.register_forward_hook(lambda _m, _i, out: seen.append(out.logits.float().sigmoid()))
    try:
        prop = detector.propose(canvas, torch.tensor([z[2:4]], device=dev), torch.tensor([image.size], device=dev),
                                enc["input_ids"].to(dev), enc["attention_mask"].to(dev), tok,
                                torch.zeros(1, dtype=torch.long, device=dev))
    finally:
        hook.remove()
    probs = seen[-1]  # (1, Q, max_text_len)
    scores = (probs @ positive_map(tok, probs.shape[-1]).transpose(1, 2))[0]  # (Q, P)
    scores = scores.masked_fill((tok[0, :, 1] <= tok[0, :, 0])[None, :], -1.0)
    return prop.boxes[0].float().cpu().numpy(), scores.cpu().numpy()


def detect_query_class(detector, image, names: list[str], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MMDetection's grounding top-k for one image prompted with every name (packed into as many prompts as
    the text limit needs, as ``detect`` packs them): the `k` best (query, name) pairs over all prompts.
    Returns (boxes (n, 4) xyxy pixels, scores (n,), name index (n,)), best first."""
    from detector.prompts import build_prompts

    if hasattr(detector, "pair_scores"):
        prompts = [(list(range(len(names))), detector.pair_scores(image, names))]
    else:
        counts = [len(detector.tokenizer(n, add_special_tokens=False)["input_ids"]) for n in names]
        prompts = [(idx, prompt_scores(detector, image, text, spans)) for idx, text, spans in
                   build_prompts(names, counts, detector.max_tokens, tokenizer=detector.tokenizer)]
    boxes, scores, labels = [], [], []
    for idx, (b, s) in prompts:
        b, s, c = topk_query_class(b, s, k)  # the best k of this prompt suffice for the best k overall
        keep = s >= 0
        boxes.append(b[keep])
        scores.append(s[keep])
        labels.append(np.asarray(idx, np.int64)[c[keep]])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    b, s, c = np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels)
    order = np.argsort(-s, kind="stable")[:k]
    return b[order], s[order], c[order]


def phrase_detections(detector, image, caption: str, spans: list[tuple[int, int]]):
    """Detections for a caption prompt in which every query appears under every phrase with that phrase's
    score (MDETR ranks all queries per phrase); ``phrase`` indexes `spans`."""
    from formats.detections import Detections

    if hasattr(detector, "pair_scores"):
        b, s = detector.pair_scores(image, [caption[a:e] for a, e in spans])
    else:
        b, s = prompt_scores(detector, image, caption, spans)
    q, p = s.shape
    det = Detections(np.repeat(b, p, axis=0).astype(np.float32), s.reshape(-1).astype(np.float32),
                     np.tile(np.arange(p, dtype=np.int64), q))
    return det[det.scores >= 0]  # phrases cut off by the text limit get no boxes
