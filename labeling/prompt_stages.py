"""CPU stage: grounding prompts tokenized, with each phrase's token range, before the model actor.

A row's phrases are packed into prompts and tokenized by ``detector.prompts.PromptEncoder`` (``"a . b ."``
within the text encoder's limit, more prompts when they do not fit; each phrase's contiguous token range
``[start, end)``); the caption is tokenized for CLIP's image-vs-caption score. In class-list mode the
vocabulary's prompts are built once per worker (`TokenizePrompts.vocabulary_prompts`) and every row gets them.
"""

from __future__ import annotations

import numpy as np
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

    def __init__(self, detector: str, clip: str, max_tokens: int, clip_max_tokens: int = 77,
                 classes: list[str] | None = None):
        self.detector, self.clip = detector, clip
        self.max_tokens, self.clip_max_tokens = max_tokens, clip_max_tokens
        self.classes = list(classes) if classes else None
        if self.classes:  # class-list mode: every row gets the vocabulary's prompts; no phrases column is read
            self.reads = ("caption",)

    def setup(self) -> None:
        from transformers import AutoTokenizer

        self.encoder = PromptEncoder(AutoTokenizer.from_pretrained(self.detector), self.max_tokens)
        self.clip_tok = AutoTokenizer.from_pretrained(self.clip)
        self.fixed = self.vocabulary_prompts() if self.classes else None
        self._fixed_columns: list[pa.Array] | None = None

    def vocabulary_prompts(self) -> list[tuple[list[int], list[int], np.ndarray]]:
        """The class list's prompts, once per worker: (class indices, token ids, token ranges (P, 2)) per prompt,
        packed within ``max_tokens`` (more prompts when the classes do not fit one).

        Raises ValueError when some class is in no prompt (its name's prompt form has no word character)."""
        prompts = self.encoder.encode([self.classes])[0]
        covered = sorted(i for idx, _, _ in prompts for i in idx)
        if covered != list(range(len(self.classes))):
            missing = sorted(set(range(len(self.classes))) - set(covered))
            raise ValueError(f"classes {[self.classes[i] for i in missing]} cannot be prompted (no word character "
                             "outside the detector's separators)")
        return prompts

    def process(self, batch: pa.Table) -> pa.Table:
        caps = [c or "" for c in batch.column("caption").to_pylist()]
        clip_ids = self.clip_tok(caps, truncation=True, max_length=self.clip_max_tokens)["input_ids"] if caps else []
        if self.fixed is not None:  # the vocabulary's prompt columns, built once, repeated for every row
            if self._fixed_columns is None:
                self._fixed_columns = _prompt_columns([self.fixed])
            repeat = pa.array(np.zeros(batch.num_rows, np.int64))
            cols = [c.take(repeat) for c in self._fixed_columns]
        else:
            rows = batch.column("phrases").to_pylist()
            cols = _prompt_columns(self.encoder.encode([[p["phrase"] for p in (r or [])] for r in rows]))
        out = batch
        for name, col in zip(PROMPT_COLUMNS, [*cols, pa.array(clip_ids, PROMPT_TYPES["caption_clip_ids"])]):
            out = out.append_column(name, col)
        return out


def _prompt_columns(prompts: list[list[tuple[list[int], list[int], np.ndarray]]]) -> list[pa.Array]:
    """``prompt_ids``, ``prompt_phrases``, ``prompt_token_spans`` of rows' prompts (PromptEncoder.encode)."""
    phr = [[p[0] for p in per] for per in prompts]
    ids = [[p[1] for p in per] for per in prompts]
    tsp = [[p[2].tolist() for p in per] for per in prompts]
    return [pa.array(v, PROMPT_TYPES[n]) for n, v in zip(PROMPT_COLUMNS[:3], (ids, phr, tsp))]
