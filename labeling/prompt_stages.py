"""CPU stage: grounding prompts tokenized, with each phrase's token range, before the model actor.

A row's phrases are packed into prompts (``detector.prompts.build_prompts``: ``"a . b ."`` within the text
encoder's limit, more prompts when they do not fit); each prompt is tokenized once with offsets, and each
phrase gets the contiguous token range ``[start, end)`` whose characters lie inside its span. The model actor
turns those ranges into the positive map on its device (``detector.device_ops.positive_map``).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pyarrow as pa

from detector.prompts import build_prompts
from labeling.stage import Resources, Stage

PROMPT_COLUMNS = ("prompt_ids", "prompt_phrases", "prompt_token_spans", "caption_clip_ids")
TOKEN_SPAN_TYPE = pa.list_(pa.int32(), 2)
PROMPT_TYPES = {
    "prompt_ids": pa.list_(pa.list_(pa.int32())),
    "prompt_phrases": pa.list_(pa.list_(pa.int32())),
    "prompt_token_spans": pa.list_(pa.list_(TOKEN_SPAN_TYPE)),
    "caption_clip_ids": pa.list_(pa.int32()),
}


def token_spans(char_spans: list[tuple[int, int]], offsets: np.ndarray, limit: int) -> np.ndarray:
    """(P, 2) int32 token ranges ``[start, end)`` of character spans, from a tokenization's offsets (T, 2).

    Token t belongs to a span when its characters lie inside it (``s <= a`` and ``b <= e``, ``b > a``: special
    tokens have empty offsets) and ``t < limit``; a span without tokens gets ``(0, 0)``.
    """
    if not char_spans:
        return np.zeros((0, 2), np.int32)
    off = np.asarray(offsets)[:limit]
    sp = np.asarray(char_spans, dtype=np.int64)
    inside = (off[None, :, 0] >= sp[:, 0:1]) & (off[None, :, 1] <= sp[:, 1:2]) & (off[None, :, 1] > off[None, :, 0])
    any_ = inside.any(1)
    first = np.where(any_, inside.argmax(1), 0)
    last = np.where(any_, len(off) - 1 - inside[:, ::-1].argmax(1), -1)
    return np.stack([first, last + 1], 1).astype(np.int32)


class TokenizePrompts(Stage):
    """Adds ``prompt_ids`` (per row, per prompt: token ids), ``prompt_phrases`` (phrase indices in each
    prompt), ``prompt_token_spans`` (per prompt phrase: its token range) and ``caption_clip_ids`` (the caption
    in CLIP's tokenizer, for the image-vs-caption score). Reads ``phrases`` and ``caption``.
    """

    name = "tokenize-prompts"
    resources = Resources(cpus=1.0)
    reads = ("phrases", "caption")
    adds = PROMPT_COLUMNS

    def __init__(self, detector: str, clip: str, max_tokens: int, clip_max_tokens: int = 77):
        self.detector, self.clip = detector, clip
        self.max_tokens, self.clip_max_tokens = max_tokens, clip_max_tokens
        self._counts: OrderedDict[str, int] = OrderedDict()

    def setup(self) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(self.detector)
        self.clip_tok = AutoTokenizer.from_pretrained(self.clip)

    def count(self, phrases: list[str]) -> list[int]:
        """Token counts of phrases (cached per worker: phrases repeat across captions)."""
        new = [p for p in dict.fromkeys(phrases) if p not in self._counts]
        if new:
            for p, ids in zip(new, self.tok(new, add_special_tokens=False)["input_ids"]):
                self._counts[p] = len(ids)
            while len(self._counts) > 200_000:
                self._counts.popitem(last=False)
        return [self._counts[p] for p in phrases]

    def process(self, batch: pa.Table) -> pa.Table:
        rows = batch.select(["phrases", "caption"]).to_pylist()
        per_row = []  # (row, phrase indices, prompt text, char spans)
        for i, r in enumerate(rows):
            names = [p["phrase"] for p in (r["phrases"] or [])]
            if names:
                per_row += [(i, idx, text, spans) for idx, text, spans in
                            build_prompts(names, self.count(names), self.max_tokens, tokenizer=self.tok)]
        ids: list[list] = [[] for _ in rows]
        phr: list[list] = [[] for _ in rows]
        tsp: list[list] = [[] for _ in rows]
        if per_row:
            enc = self.tok([p[2] for p in per_row], truncation=True, max_length=self.max_tokens,
                           return_offsets_mapping=True)
            for (i, idx, _, spans), input_ids, offsets in zip(per_row, enc["input_ids"], enc["offset_mapping"]):
                ids[i].append(input_ids)
                phr[i].append(list(idx))
                tsp[i].append(token_spans(spans, np.asarray(offsets, dtype=np.int64).reshape(-1, 2),
                                          self.max_tokens).tolist())
        caps = [r["caption"] or "" for r in rows]
        clip_ids = self.clip_tok(caps, truncation=True, max_length=self.clip_max_tokens)["input_ids"] if caps else []
        out = batch
        for name, values in zip(PROMPT_COLUMNS, (ids, phr, tsp, clip_ids)):
            out = out.append_column(name, pa.array(values, PROMPT_TYPES[name]))
        return out
