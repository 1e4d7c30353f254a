"""Grounding prompts: phrases packed into ``"a . b ."`` texts within the text encoder's token limit."""

from __future__ import annotations


def build_prompts(phrases: list[str], token_counts: list[int], max_tokens: int) -> list[tuple[list[int], str, list[tuple[int, int]]]]:
    """Packs phrases into prompts ``"a . b ."`` within `max_tokens`; returns (phrase indices, text, char spans)."""
    prompts, cur, used = [], [], 2  # [CLS] and [SEP]
    for i, n in enumerate(token_counts):
        need = n + 1  # the phrase and its " ."
        if cur and used + need > max_tokens:
            prompts.append(cur)
            cur, used = [], 2
        cur.append(i)
        used += need
    if cur:
        prompts.append(cur)
    out = []
    for idx in prompts:
        text, spans = "", []
        for i in idx:
            start = len(text)
            text += phrases[i]
            spans.append((start, len(text)))
            text += " . "
        out.append((idx, text.rstrip(), spans))
    return out
