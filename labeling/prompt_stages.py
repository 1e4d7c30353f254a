"""CPU stage: grounding prompts tokenized, with each phrase's token range, before the model actor.

A row's phrases are packed into prompts and tokenized by ``detector.prompts.PromptEncoder`` (``"a . b ."``
within the text encoder's limit, more prompts when they do not fit; each phrase's contiguous token range
``[start, end)``); the caption is tokenized for CLIP's image-vs-caption score.
"""

from __future__ import annotations

import pyarrow as pa

from detector.prompts import PromptEncoder
from labeling.stage import Resources, Stage

PROMPT_COLUMNS = ("prompt_ids", "prompt_phrases", "prompt_token_spans", "caption_clip_ids")
TOKEN_SPAN_TYPE = pa.list_(pa.int32(), 2)
PROMPT_TYPES = {
    "prompt_ids": pa.list_(pa.list_(pa.int32())),
    "prompt_phrases": pa.list_(pa.list_(pa.int32())),
    "prompt_token_spans": pa.list_(pa.list_(TOKEN_SPAN_TYPE)),
    "caption_clip_ids": pa.list_(pa.int32()),
}


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

    def setup(self) -> None:
        from transformers import AutoTokenizer

        self.encoder = PromptEncoder(AutoTokenizer.from_pretrained(self.detector), self.max_tokens)
        self.clip_tok = AutoTokenizer.from_pretrained(self.clip)

    def process(self, batch: pa.Table) -> pa.Table:
        rows = batch.select(["phrases", "caption"]).to_pylist()
        prompts = self.encoder.encode([[p["phrase"] for p in (r["phrases"] or [])] for r in rows])
        phr = [[p[0] for p in per] for per in prompts]
        ids = [[p[1] for p in per] for per in prompts]
        tsp = [[p[2].tolist() for p in per] for per in prompts]
        caps = [r["caption"] or "" for r in rows]
        clip_ids = self.clip_tok(caps, truncation=True, max_length=self.clip_max_tokens)["input_ids"] if caps else []
        out = batch
        for name, values in zip(PROMPT_COLUMNS, (ids, phr, tsp, clip_ids)):
            out = out.append_column(name, pa.array(values, PROMPT_TYPES[name]))
        return out
