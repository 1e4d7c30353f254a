"""Grounding prompts: phrases joined into ``"a . b ."`` texts, one function for inference and training.

Grounding DINO (and MM-Grounding-DINO, which imports the same list) reads phrase boundaries from token ids:
``SPECIAL_TOKENS`` in transformers' ``models/grounding_dino/modeling_grounding_dino.py`` = the ids of
[CLS], [SEP], ``.`` and ``?``. Its text encoder attends within the blocks between them, and the training
loss's label maps (``build_label_maps``) are those blocks plus [PAD]. A ``.`` or ``?`` *inside* a phrase
("st. mary church", "2.5 liter bottle") therefore splits it in two: at inference the phrase is two phrases
inside the model, and in training every later phrase is supervised on its neighbour's tokens.

The rule: every character (or special-token text such as ``[SEP]``) that tokenizes to a separator id is
replaced by spaces *in the prompt text only* (`prompt_form`; same length, so character spans stay valid);
the stored phrase keeps its text. `join_prompt` is the one place prompts are built: `build_prompts`
(inference, ``detector/grounding.py``) and ``detector/data.py: prompt_text`` (training) call it, and the
training label maps come from its character spans (`label_maps`), so each phrase is exactly one group.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import weakref

import numpy as np

from formats.phrase_rules import has_word

# BERT ids of [CLS], [SEP], "." and "?": transformers' grounding_dino SPECIAL_TOKENS (5.x), used only when
# that module cannot be imported.
FALLBACK_SEPARATOR_IDS = (101, 102, 1012, 1029)
JOINER = " . "
_FOUND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its separator_chars


def separator_ids() -> tuple[int, ...]:
    """Token ids the model reads as phrase boundaries (transformers' ``SPECIAL_TOKENS`` for Grounding DINO)."""
    try:
        from transformers.models.grounding_dino.modeling_grounding_dino import SPECIAL_TOKENS
    except ImportError:
        return FALLBACK_SEPARATOR_IDS
    return tuple(int(i) for i in SPECIAL_TOKENS)


def separator_chars(tokenizer, ids: tuple[int, ...] | None = None) -> frozenset[str]:
    """Texts that become a separator id when `tokenizer` reads them: characters (``.``, ``?`` for BERT)
    and the tokenizer's own special-token texts with such ids (``[CLS]``, ``[SEP]``, ``[PAD]``, which it
    matches literally in any text).

    Found by tokenizing every punctuation and symbol character (about 8,600; a quarter of a second once
    per tokenizer, remembered while the tokenizer lives), so a tokenizer that maps another character to a
    separator id is covered too.
    """
    if ids is None and tokenizer in _FOUND:
        return _FOUND[tokenizer]
    wanted = set(separator_ids() if ids is None else ids) | {0}  # build_label_maps adds [PAD] (id 0)
    found = {t for t, i in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids) if i in wanted}
    cands = _candidate_chars()
    encoded = tokenizer(list(cands), add_special_tokens=False)["input_ids"]
    found |= {c for c, toks in zip(cands, encoded) if wanted.intersection(toks)}
    return _FOUND.setdefault(tokenizer, frozenset(found)) if ids is None else frozenset(found)


@functools.cache
def _candidate_chars() -> tuple[str, ...]:
    return tuple(chr(i) for i in range(0x21, 0x30000) if unicodedata.category(chr(i))[0] in "PS")


@functools.lru_cache(maxsize=16)
def _pattern(separators: frozenset[str]) -> re.Pattern | None:
    if not separators:
        return None
    return re.compile("|".join(re.escape(s) for s in sorted(separators, key=lambda s: (-len(s), s))))


def prompt_form(phrase: str, separators: frozenset[str] = frozenset()) -> str:
    """The phrase as written into a prompt: each separator text replaced by as many spaces (same length)."""
    pat = _pattern(frozenset(separators))
    return phrase if pat is None else pat.sub(lambda m: " " * len(m.group()), phrase)


def join_prompt(phrases: list[str], separators: frozenset[str] = frozenset()) -> tuple[str, list[tuple[int, int]]]:
    """``"a . b ."`` and each phrase's character span in it; each phrase is one group between separators.

    Raises ValueError for a phrase whose prompt form has no word character: it would be no group at all
    (no token to supervise or score), shifting every later phrase's group.
    """
    text, spans = "", []
    for p in phrases:
        form = prompt_form(p, separators)
        if not has_word(form):
            raise ValueError(f"phrase {p!r} has no word character outside separators; it cannot be prompted")
        start = len(text)
        text += form
        spans.append((start, len(text)))
        text += JOINER
    return text.rstrip(), spans


def build_prompts(phrases: list[str], token_counts: list[int], max_tokens: int, *,
                  separators: frozenset[str] | None = None,
                  tokenizer=None) -> list[tuple[list[int], str, list[tuple[int, int]]]]:
    """Packs phrases into prompts ``"a . b ."`` within `max_tokens`; returns (phrase indices, text, char spans).

    `token_counts` are each phrase's tokens without special tokens (counting the phrase as stored is safe:
    its prompt form never has more). `separators` default to `separator_chars(tokenizer)` when a tokenizer
    is given, else none (the text is joined as it is). A phrase with no word character outside separators
    is left out of every prompt (no token could carry it), so it gets no boxes.
    """
    if separators is None:
        separators = separator_chars(tokenizer) if tokenizer is not None else frozenset()
    prompts, cur, used = [], [], 2  # [CLS] and [SEP]
    for i, n in enumerate(token_counts):
        if not has_word(prompt_form(phrases[i], separators)):
            continue
        need = n + 1  # the phrase and its " ."
        if cur and used + need > max_tokens:
            prompts.append(cur)
            cur, used = [], 2
        cur.append(i)
        used += need
    if cur:
        prompts.append(cur)
    return [(idx, *join_prompt([phrases[i] for i in idx], separators)) for idx in prompts]


def label_maps(spans: list[tuple[int, int]], offsets: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """(phrases, width) 0/1 rows: the tokens whose characters fall inside each phrase's prompt span.

    `offsets` (tokens, 2) and `mask` (tokens,) are the tokenizer's offset mapping and attention mask of
    the prompt. For a prompt from `join_prompt` these are exactly the groups Grounding DINO's
    ``build_label_maps`` reads from the separator tokens.
    """
    out = np.zeros((len(spans), width), np.int64)
    n = min(len(offsets), width)
    a, b = offsets[:n, 0], offsets[:n, 1]
    live = (np.asarray(mask[:n]) > 0) & (b > a)
    for j, (s, e) in enumerate(spans):
        out[j, :n] = live & (a >= s) & (b <= e)
    return out


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


def pad_prompts(ids: list[list[int]], spans: list, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompts as the detector's batch arrays: token ids (N, T) int64 padded with `pad_id`, attention mask
    (N, T) int64 (1 on each prompt's tokens), token ranges (N, P, 2) int64 ``[start, end)`` per phrase, zero
    past a prompt's phrases. T and P are the longest prompt and phrase count (at least 1).

    `ids`: token ids per prompt; `spans`: per prompt, its phrases' token ranges (``token_spans``)."""
    T = max(1, max((len(x) for x in ids), default=1))
    P = max(1, max((len(x) for x in spans), default=1))
    a_ids = np.full((len(ids), T), pad_id, np.int64)
    a_mask = np.zeros((len(ids), T), np.int64)
    a_spans = np.zeros((len(ids), P, 2), np.int64)
    for k, (x, s) in enumerate(zip(ids, spans)):
        a_ids[k, :len(x)], a_mask[k, :len(x)] = x, 1
        if len(s):
            a_spans[k, :len(s)] = s
    return a_ids, a_mask, a_spans


class PromptEncoder:
    """Phrase lists -> prompts (`build_prompts`) -> token ids and each phrase's token range, per image.

    Phrase token counts are cached (phrases repeat across captions). The model actor turns the token ranges
    into the positive map on its device (``detector.device_ops.positive_map``).
    """

    def __init__(self, tokenizer, max_tokens: int, cache_size: int = 200_000):
        self.tok, self.max_tokens, self.cache_size = tokenizer, max_tokens, cache_size
        self._counts: dict[str, int] = {}

    def count(self, phrases: list[str]) -> list[int]:
        """Token counts of phrases without special tokens."""
        new = [p for p in dict.fromkeys(phrases) if p not in self._counts]
        if new:
            if len(self._counts) + len(new) > self.cache_size:
                self._counts.clear()
            for p, ids in zip(new, self.tok(new, add_special_tokens=False)["input_ids"]):
                self._counts[p] = len(ids)
        return [self._counts[p] for p in phrases]

    def encode(self, phrase_lists: list[list[str]]) -> list[list[tuple[list[int], list[int], np.ndarray]]]:
        """Per image: its prompts as (phrase indices, token ids with [CLS]/[SEP], token ranges ``(P, 2)``)."""
        per = []  # (image, phrase indices, prompt text, char spans)
        for i, names in enumerate(phrase_lists):
            if names:
                per += [(i, idx, text, spans) for idx, text, spans in
                        build_prompts(names, self.count(names), self.max_tokens, tokenizer=self.tok)]
        out: list[list] = [[] for _ in phrase_lists]
        if per:
            enc = self.tok([p[2] for p in per], truncation=True, max_length=self.max_tokens,
                           return_offsets_mapping=True)
            for (i, idx, _, spans), ids, offsets in zip(per, enc["input_ids"], enc["offset_mapping"]):
                out[i].append((list(idx), list(ids), token_spans(spans, np.asarray(offsets, np.int64).reshape(-1, 2),
                                                                 self.max_tokens)))
        return out


class QueryEncoder:
    """Phrase lists -> OWLv2 text queries, in `PromptEncoder.encode`'s form, so the CPU stage, the prompt
    columns and ``pad_prompts`` serve both backends.

    OWLv2 (Minderer et al. 2023, "Scaling Open-Vocabulary Object Detection") embeds every query on its own:
    each phrase is tokenized alone by the CLIP tokenizer (``<|startoftext|> ... <|endoftext|>``, truncated
    to `query_length` tokens, OWLv2's 16). A "prompt" is up to `max_queries` phrases: its ids are the
    concatenation of the phrases' tokenizations and its token ranges mark each phrase's ids, which the
    detector splits into ``(queries, query_length)`` input ids on the device (``Owlv2Detector.queries``).
    A phrase with no word character is left out, as `build_prompts` leaves it out.
    """

    def __init__(self, tokenizer, query_length: int = 16, max_queries: int = 256, cache_size: int = 200_000):
        self.tok, self.query_length, self.max_queries, self.cache_size = tokenizer, query_length, max_queries, cache_size
        self._ids: dict[str, list[int]] = {}

    def ids(self, phrases: list[str]) -> list[list[int]]:
        """Each phrase's query token ids (special tokens included, at most `query_length`), cached."""
        new = [p for p in dict.fromkeys(phrases) if p not in self._ids]
        if new:
            if len(self._ids) + len(new) > self.cache_size:
                self._ids.clear()
            enc = self.tok(new, truncation=True, max_length=self.query_length)["input_ids"]
            self._ids.update(zip(new, (list(x) for x in enc)))
        return [self._ids[p] for p in phrases]

    def encode(self, phrase_lists: list[list[str]]) -> list[list[tuple[list[int], list[int], np.ndarray]]]:
        """Per image: its prompts as (phrase indices, concatenated query ids, token ranges ``(P, 2)``)."""
        out: list[list] = []
        for names in phrase_lists:
            keep = [i for i, p in enumerate(names) if has_word(p)]
            ids = self.ids([names[i] for i in keep])
            per = []
            for k in range(0, len(keep), self.max_queries):
                idx, chunk = keep[k:k + self.max_queries], ids[k:k + self.max_queries]
                ends = np.cumsum([len(x) for x in chunk], dtype=np.int64)
                spans = np.stack([ends - [len(x) for x in chunk], ends], 1).astype(np.int32).reshape(-1, 2)
                per.append((list(idx), [t for x in chunk for t in x], spans))
            out.append(per)
        return out
