"""The one text rule for phrases, wherever they come from (spaCy chunks, MDETR/GoldG spans, GRIT chunks,
reviewers' edits, class names).

- A phrase's span is trimmed to its first and last word character (``\\w``, unicode: letters, digits,
  underscore), so no phrase starts or ends with whitespace, quotes, ``'s`` or punctuation; a span with no
  word character is no phrase at all (converters reject it with a reason). MMDetection's grounding
  datasets fail on such spans as an "empty positive map": no text token maps to them.
- Phrases of one caption are the same phrase when their texts are equal after case folding and collapsing
  whitespace (`phrase_key`); the phrase keeps all its spans.

Prompt text rules (the model's separator tokens) live in ``detector/prompts.py``.
"""

from __future__ import annotations

import re

import numpy as np

WORD = re.compile(r"\w")  # Python's \w: str.isalnum() or "_"

# bytes that are ASCII word characters (a UTF-8 lead byte >= 0x80 needs the Python check)
_ASCII_WORD = np.zeros(256, dtype=bool)
for _c in range(128):
    _ASCII_WORD[_c] = bool(WORD.match(chr(_c)))


def has_word(text: str | None) -> bool:
    """True when `text` holds at least one word character."""
    return bool(text) and WORD.search(text) is not None


def trim_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    """``text[start:end]`` narrowed to its first and last word character; None when it has none."""
    m = WORD.search(text, start, end)
    if m is None:
        return None
    while not (text[end - 1].isalnum() or text[end - 1] == "_"):
        end -= 1
    return m.start(), end


def trim_phrase(phrase: str | None) -> str | None:
    """The phrase without leading/trailing non-word characters; None when no word character is left."""
    if not phrase:
        return None
    span = trim_span(phrase, 0, len(phrase))
    return None if span is None else phrase[span[0]:span[1]]


def phrase_key(phrase: str) -> str:
    """The dedup key of a phrase within one caption: case folded, whitespace runs collapsed."""
    return " ".join(phrase.casefold().split())


def edges_are_words(data: np.ndarray, byte_start: np.ndarray, byte_end: np.ndarray) -> np.ndarray:
    """True per span whose first and last bytes are ASCII word characters (then it is already trimmed).

    `data` is UTF-8 text; spans whose edge is a non-ASCII byte (or not a word) need `trim_span`.
    """
    ok = byte_end > byte_start
    first = data[np.minimum(byte_start, max(len(data) - 1, 0))] if len(data) else np.zeros(len(ok), np.uint8)
    last = data[np.clip(byte_end - 1, 0, max(len(data) - 1, 0))] if len(data) else np.zeros(len(ok), np.uint8)
    return ok & _ASCII_WORD[first] & _ASCII_WORD[last]
