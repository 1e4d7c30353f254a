"""CPU stage: grounding prompts tokenized, with each phrase's token range, before the model actor.

A row's phrases are packed into prompts and tokenized by the detector's prompt encoder
(``detector.backends.prompt_encoder``): for Grounding DINO ``detector.prompts.PromptEncoder`` (``"a . b ."``
within the text encoder's limit, more prompts when they do not fit; each phrase's contiguous token range
``[start, end)``), for OWLv2 ``detector.prompts.QueryEncoder`` (each phrase its own query; a prompt's ids are
its queries' ids end to end, the token ranges mark each query); the caption is tokenized for CLIP's image-vs-caption score. In class-list mode the
vocabulary's prompts are built once per worker (`TokenizePrompts.vocabulary_prompts`) and every row gets them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from labeling.stage import Resources, Stage

PROMPT_COLUMNS = ("prompt_ids", "prompt_phrases", "prompt_token_spans", "caption_clip_ids")
TOKEN_SPAN_TYPE = pa.list_(pa.int32(), 2)
PROMPT_TYPES = {
    "prompt_ids": pa.list_(pa.list_(pa.int32())),
    "prompt_phrases": pa.list_(pa.list_(pa.int32())),
    "prompt_token_spans": pa.list_(pa.list_(TOKEN_SPAN_TYPE)),
    "caption_clip_ids": pa.list_(pa.int32()),
}


def class_index(label):
    """The ``prompt_phrases`` / ``cand_phrase`` entry of a vocabulary class: ``-(label + 1)`` (a row's own phrases
    are ``>= 0``, so one int32 column names both); the inverse of itself (``class_index(class_index(l)) == l``)."""
    return -(label + 1)


class TokenizePrompts(Stage):
    """Adds ``prompt_ids`` (per row, per prompt: token ids), ``prompt_phrases`` (per prompt: what each of its
    entries is: the row's phrase index ``>= 0``, or a vocabulary class ``class_index(label) < 0``),
    ``prompt_token_spans`` (per prompt entry: its token range) and ``caption_clip_ids`` (the caption in CLIP's
    tokenizer, for the image-vs-caption score). Reads ``phrases`` (unless `vocabulary` alone) and ``caption``.

    Modes: caption phrases only (`vocabulary` None); the vocabulary alone (`with_phrases` False: every row gets
    the same prompts); the union (both: a row's own prompts, holding its phrases that are no class
    (`labeling.vocabulary.phrases_as_classes`), then the vocabulary's). The vocabulary's prompts are built once
    per worker and repeated by Arrow ``take``, never re-tokenized per row.
    """

    name = "tokenize-prompts"
    resources = Resources(cpus=1.0)
    reads = ("phrases", "caption")
    adds = PROMPT_COLUMNS

    def __init__(self, detector: str, clip: str, max_tokens: int | None = None, clip_max_tokens: int = 77,
                 vocabulary: list[list[str]] | None = None, with_phrases: bool = True):
        self.detector, self.clip = detector, clip
        self.max_tokens, self.clip_max_tokens = max_tokens, clip_max_tokens
        self.vocabulary = [list(t) for t in vocabulary] if vocabulary else None
        self.classes = [t[0] for t in self.vocabulary] if self.vocabulary else None
        self.with_phrases = with_phrases or not self.vocabulary
        if not self.with_phrases:  # the vocabulary alone: no phrases column is read
            self.reads = ("caption",)

    def setup(self) -> None:
        from transformers import AutoTokenizer

        from detector.backends import prompt_encoder
        from labeling.vocabulary import class_keys

        self.encoder = prompt_encoder(self.detector, self.max_tokens)
        self.clip_tok = AutoTokenizer.from_pretrained(self.clip)
        self.fixed = self.vocabulary_prompts() if self.classes else None
        self.keys = class_keys(self.vocabulary) if self.vocabulary else {}
        self._fixed_columns: list[pa.Array] | None = None

    def vocabulary_prompts(self) -> list[tuple[list[int], list[int], np.ndarray]]:
        """The class list's prompts, once per worker: (entries (`class_index` of each class), token ids, token
        ranges (P, 2)) per prompt, packed within ``max_tokens`` (more prompts when the classes do not fit one).

        Raises ValueError when some class is in no prompt (its name's prompt form has no word character)."""
        prompts = self.encoder.encode([self.classes])[0]
        covered = sorted(i for idx, _, _ in prompts for i in idx)
        if covered != list(range(len(self.classes))):
            missing = sorted(set(range(len(self.classes))) - set(covered))
            raise ValueError(f"classes {[self.classes[i] for i in missing]} cannot be prompted (no word character "
                             "outside the detector's separators)")
        return [([class_index(i) for i in idx], ids, spans) for idx, ids, spans in prompts]

    def process(self, batch: pa.Table) -> pa.Table:
        from labeling.vocabulary import phrases_as_classes

        caps = [c or "" for c in batch.column("caption").to_pylist()]
        clip_ids = self.clip_tok(caps, truncation=True, max_length=self.clip_max_tokens)["input_ids"] if caps else []
        if self.fixed is not None and self._fixed_columns is None:
            self._fixed_columns = _prompt_columns([self.fixed])
        if not self.with_phrases:  # the vocabulary's prompt columns, built once, repeated for every row
            repeat = pa.array(np.zeros(batch.num_rows, np.int64))
            cols = [c.take(repeat) for c in self._fixed_columns]
        else:
            rows = batch.column("phrases").to_pylist()
            own = []
            for r in rows:  # a phrase that is a class is found by the class's prompt (labeling.vocabulary)
                skip = phrases_as_classes(r, self.keys) if self.keys else {}
                own.append([(i, p["phrase"]) for i, p in enumerate(r or []) if i not in skip])
            encoded = self.encoder.encode([[t for _, t in o] for o in own])
            encoded = [[([o[j][0] for j in idx], ids, spans) for idx, ids, spans in per] for o, per in zip(own, encoded)]
            cols = _prompt_columns(encoded)
            if self._fixed_columns is not None:
                cols = [_append_per_row(c, f) for c, f in zip(cols, self._fixed_columns)]
        out = batch
        for name, col in zip(PROMPT_COLUMNS, [*cols, pa.array(clip_ids, PROMPT_TYPES["caption_clip_ids"])]):
            out = out.append_column(name, col)
        return out


def _append_per_row(rows: pa.ListArray, fixed: pa.ListArray) -> pa.ListArray:
    """Each row's list followed by the items of `fixed`'s one row (vectorised: one ``take`` of the items)."""
    own, extra = rows.flatten(), fixed.flatten()
    counts = np.diff(rows.offsets.to_numpy())
    n_extra = len(extra)
    starts = rows.offsets.to_numpy()[:-1] - rows.offsets.to_numpy()[0]  # into `own` (a slice's offsets need not start at 0)
    index = np.concatenate([np.concatenate([np.arange(s, s + c), len(own) + np.arange(n_extra)])
                            for s, c in zip(starts.tolist(), counts.tolist())]) if len(counts) else np.zeros(0, np.int64)
    items = pa.concat_arrays([own, extra]).take(pa.array(index.astype(np.int64)))
    offsets = np.concatenate([[0], np.cumsum(counts + n_extra)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), items)


def _prompt_columns(prompts: list[list[tuple[list[int], list[int], np.ndarray]]]) -> list[pa.Array]:
    """``prompt_ids``, ``prompt_phrases``, ``prompt_token_spans`` of rows' prompts (PromptEncoder.encode)."""
    phr = [[p[0] for p in per] for per in prompts]
    ids = [[p[1] for p in per] for per in prompts]
    tsp = [[p[2].tolist() for p in per] for per in prompts]
    return [pa.array(v, PROMPT_TYPES[n]) for n, v in zip(PROMPT_COLUMNS[:3], (ids, phr, tsp))]
