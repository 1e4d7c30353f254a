"""The one text rule for phrases, wherever they come from (spaCy chunks, MDETR/GoldG spans, GRIT chunks,
reviewers' edits, class names).

- A phrase's span is trimmed to its first and last word character (``\\w``, unicode: letters, digits,
  underscore; a combining mark counts with the letter it sits on), so no phrase starts or ends with
  whitespace, quotes or punctuation, nor splits a letter from its accent; a possessive ending at the start
  (``'s``, ``’s``, ``s'``, a bare apostrophe) is cut too, so no phrase starts with ``'s`` or ``s`` left of one. A span with no word character is no phrase at all (converters reject it with a reason).
  MMDetection's grounding datasets fail on such spans as an "empty positive map": no text token maps to them.
- Phrases of one caption are the same phrase when their texts are equal after case folding and collapsing
  whitespace (`phrase_key`); the phrase keeps all its spans.

Prompt text rules (the model's separator tokens) live in ``detector/prompts.py``.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

WORD = re.compile(r"\w")  # Python's \w: str.isalnum() or "_"

# bytes that are ASCII word characters (a UTF-8 lead byte >= 0x80 needs the Python check)
_ASCII_WORD = np.zeros(256, dtype=bool)
for _c in range(128):
    _ASCII_WORD[_c] = bool(WORD.match(chr(_c)))


def has_word(text: str | None) -> bool:
    """True when `text` holds at least one word character."""
    return bool(text) and WORD.search(text) is not None


APOSTROPHES = "'\u2019\u2018`\u00b4\u2032"  # ' ’ ‘ ` ´ ′: written for the possessive apostrophe


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _possessive_ending(text: str, i: int, end: int) -> int | None:
    """The end of a possessive ending whose word is the lone ``s`` at `i` (``'s``, ``’s``, ``s'``), else None.

    ``'s``: the ``s`` is a word of its own right after an apostrophe (inside the span or just before it,
    e.g. a span starting at the ``s`` of "woman's"); ``s'``: the ``s`` is followed by an apostrophe that
    ends the word ("dogs' bowl" cut after the ``g``). A quoted letter (``'s'``) is not a possessive.
    """
    if text[i] not in "sS":
        return None
    nxt = text[i + 1] if i + 1 < end else ""
    if nxt and _is_word(nxt):
        return None  # a longer word ("'sup", "s'mores" is caught below)
    quoted = i > 0 and text[i - 1] in APOSTROPHES
    if nxt and nxt in APOSTROPHES:
        if quoted:
            return None  # 's' or ’s’: a letter in quotes
        after = text[i + 2] if i + 2 < end else ""
        return None if after and _is_word(after) else i + 2
    return i + 1 if quoted else None


def _is_mark(ch: str) -> bool:
    """A combining mark (Mn, Mc, Me: the accent of a decomposed "é"); not ``\\w`` itself."""
    return unicodedata.category(ch)[0] == "M"


def _base(text: str, i: int) -> int:
    """The index of the character that the combining marks ending at `i` (inclusive) sit on (-1: none)."""
    while i >= 0 and _is_mark(text[i]):
        i -= 1
    return i


def _on_word(text: str, i: int) -> bool:
    """`text[i]` is a combining mark sitting on a word character."""
    b = _base(text, i)
    return b != i and b >= 0 and _is_word(text[b])


def trim_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    """``text[start:end]`` narrowed to its first and last word character; None when it has none.

    A possessive ending at the start (``'s hand``, ``’s bowl``, ``s' bowl``, ``' hat``) is not a word of the
    phrase: it is cut with the punctuation, and a span that holds nothing else has no word character.
    Combining marks belong to the word character they sit on: a span never ends between a letter and its
    accent ("cafe\\u0301" keeps the U+0301, even when the span ended before it), nor starts on an accent
    whose letter is left of it (the start moves back to the letter).
    """
    if start < end and _on_word(text, start):
        start = _base(text, start)
    while True:
        m = WORD.search(text, start, end)
        if m is None:
            return None
        cut = _possessive_ending(text, m.start(), end)
        if cut is None:
            break
        start = cut
    while not (_is_word(text[end - 1]) or _on_word(text, end - 1)):
        end -= 1
    while end < len(text) and _is_mark(text[end]):
        end += 1
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


def merge_phrases(phrases) -> list[dict]:
    """One entry per phrase of a caption: `phrases` ((text, spans) pairs, spans ``[start, end)`` characters)
    merged by `phrase_key` (the first text seen names the phrase; spans united, each once, sorted), in order
    of first span: ``[{"phrase": text, "tokens_positive": [[s, e], ...]}, ...]``."""
    merged: dict[str, dict] = {}
    for text, spans in phrases:
        entry = merged.setdefault(phrase_key(text), {"phrase": text, "tokens_positive": []})
        entry["tokens_positive"] += [list(sp) for sp in spans if list(sp) not in entry["tokens_positive"]]
    for entry in merged.values():
        entry["tokens_positive"].sort()
    return sorted(merged.values(), key=lambda v: v["tokens_positive"][0])


def edges_are_words(data: np.ndarray, byte_start: np.ndarray, byte_end: np.ndarray) -> np.ndarray:
    """True per span that `trim_span` would leave as it is, checked on bytes (nearly every span).

    `data` is UTF-8 text. A span qualifies when its first and last bytes are ASCII word characters and its
    first character cannot be a possessive ``s`` (an ``s``/``S`` next to an apostrophe or a non-ASCII byte)
    and the character after it is ASCII (not a combining mark of its last letter); the rest need `trim_span`.
    """
    ok = byte_end > byte_start
    if not len(data):
        return ok & False
    top = len(data) - 1
    first = data[np.minimum(byte_start, top)]
    last = data[np.clip(byte_end - 1, 0, top)]
    ok &= _ASCII_WORD[first] & _ASCII_WORD[last]
    s = (first == ord("s")) | (first == ord("S"))
    before = np.where(byte_start > 0, data[np.clip(byte_start - 1, 0, top)], 32)
    after = np.where(byte_start + 1 < len(data), data[np.minimum(byte_start + 1, top)], 32)
    follow = np.where(byte_end < len(data), data[np.minimum(byte_end, top)], 32)
    return ok & ~(s & (_NEAR_APOSTROPHE[before] | _NEAR_APOSTROPHE[after])) & (follow < 0x80)


# bytes that may be (part of) an apostrophe: ' and ` and every non-ASCII byte (’ ‘ ´ ′ are multi-byte)
_NEAR_APOSTROPHE = np.zeros(256, dtype=bool)
_NEAR_APOSTROPHE[[ord("'"), ord("`")]] = True
_NEAR_APOSTROPHE[0x80:] = True
