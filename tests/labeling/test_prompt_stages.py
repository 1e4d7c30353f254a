"""The tokenize stage (labeling.prompt_stages) on small tables with stand-in tokenizers, without Ray or models:
which entries each prompt holds in each mode (caption phrases, vocabulary alone, union), the column types,
the vocabulary's prompts repeated per row, and the class index convention."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from labeling.prompt_stages import (
    PROMPT_COLUMNS,
    PROMPT_TYPES,
    TokenizePrompts,
    _append_per_row,
    _prompt_columns,
    class_index,
)
from labeling.vocabulary import class_keys


class _Encoder:
    """Stands in for PromptEncoder: at most `per_prompt` texts per prompt; a text's ids are its words' lengths,
    its token range the ids it took; a text without a letter is in no prompt."""

    def __init__(self, per_prompt: int = 2):
        self.per_prompt = per_prompt

    def encode(self, rows):
        out = []
        for texts in rows:
            kept = [i for i, t in enumerate(texts) if any(c.isalpha() for c in t)]
            prompts = []
            for k in range(0, len(kept), self.per_prompt):
                idx, ids, spans = kept[k:k + self.per_prompt], [], []
                for i in idx:
                    words = [len(w) for w in texts[i].split()]
                    spans.append([len(ids), len(ids) + len(words)])
                    ids += words
                prompts.append((idx, ids, np.asarray(spans, np.int64).reshape(-1, 2)))
            out.append(prompts)
        return out


def _clip_tok(caps, truncation, max_length):
    assert truncation
    return {"input_ids": [[49406, len(c), 49407][:max_length] for c in caps]}


def _stage(vocabulary=None, with_phrases=True, per_prompt=2) -> TokenizePrompts:
    """A TokenizePrompts set up with the stand-ins (what setup() does with real tokenizers)."""
    s = TokenizePrompts("detector", "clip", vocabulary=vocabulary, with_phrases=with_phrases)
    s.encoder, s.clip_tok = _Encoder(per_prompt), _clip_tok
    s.fixed = s.vocabulary_prompts() if s.classes else None
    s.keys = class_keys(s.vocabulary) if s.vocabulary else {}
    s._fixed_columns = None
    s._ready = True
    return s


def _phr(*texts):
    return [{"phrase": t, "tokens_positive": [[0, 1]]} for t in texts]


def test_class_index_is_negative_and_its_own_inverse():
    assert [class_index(label) for label in (0, 1, 5)] == [-1, -2, -6]
    assert all(class_index(class_index(label)) == label for label in range(10))


def test_caption_phrases_are_packed_into_prompts():
    t = pa.table({"caption": ["a big dog", None], "phrases": [_phr("a big dog", "cat", "red car"), None]})
    out = _stage()(t)
    assert out.column_names == ["caption", "phrases", *PROMPT_COLUMNS]
    assert [out.schema.field(c).type for c in PROMPT_COLUMNS] == [PROMPT_TYPES[c] for c in PROMPT_COLUMNS]
    assert out.column("prompt_phrases").to_pylist() == [[[0, 1], [2]], []]
    assert out.column("prompt_ids").to_pylist() == [[[1, 3, 3, 3], [3, 3]], []]
    assert out.column("prompt_token_spans").to_pylist() == [[[[0, 3], [3, 4]], [[0, 2]]], []]
    assert out.column("caption_clip_ids").to_pylist() == [[49406, 9, 49407], [49406, 0, 49407]]  # None -> ""


def test_the_vocabulary_alone_gives_every_row_the_same_prompts_without_reading_phrases():
    vocab = [["car", "auto"], ["traffic light"], ["dog"]]
    s = _stage(vocab, with_phrases=False)
    assert s.reads == ("caption",) and s.classes == ["car", "traffic light", "dog"]
    assert s.fixed[0][0] == [-1, -2] and s.fixed[1][0] == [-3]
    out = s(pa.table({"caption": ["x", "yy", None]}))
    assert out.column("prompt_phrases").to_pylist() == [[[-1, -2], [-3]]] * 3
    assert out.column("prompt_ids").to_pylist() == [[[3, 7, 5], [3]]] * 3
    assert out.column("prompt_token_spans").to_pylist() == [[[[0, 1], [1, 3]], [[0, 1]]]] * 3
    assert s(pa.table({"caption": pa.array([], pa.string())})).num_rows == 0


def test_the_union_prompts_a_rows_phrases_that_are_no_class_then_the_vocabulary():
    vocab = [["car", "auto"], ["dog"]]
    t = pa.table({"caption": ["c", "d"],
                  "phrases": [_phr("Auto", "red ball", "tree"),  # "Auto" is the class car: not prompted itself
                              _phr("dog")]})  # only a class: the row's own prompts are empty
    out = _stage(vocab, with_phrases=True)(t)
    assert out.column("prompt_phrases").to_pylist() == [[[1, 2], [-1, -2]], [[-1, -2]]]
    assert out.column("prompt_ids").to_pylist() == [[[3, 4, 4], [3, 3]], [[3, 3]]]
    assert out.column("prompt_token_spans").to_pylist() == [[[[0, 2], [2, 3]], [[0, 1], [1, 2]]],
                                                            [[[0, 1], [1, 2]]]]


def test_a_class_that_cannot_be_prompted_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"classes \['\.\.\.', '\?'\] cannot be prompted"):
        _stage([["car"], ["..."], ["?"]], with_phrases=False)


def test_append_per_row_puts_the_fixed_items_after_each_rows_own():
    rows = pa.array([[1, 2], [], [3]], pa.list_(pa.int32()))
    fixed = pa.array([[8, 9]], pa.list_(pa.int32()))
    assert _append_per_row(rows, fixed).to_pylist() == [[1, 2, 8, 9], [8, 9], [3, 8, 9]]
    assert _append_per_row(rows.slice(1, 2), fixed).to_pylist() == [[8, 9], [3, 8, 9]]  # a sliced input
    assert _append_per_row(pa.array([], pa.list_(pa.int32())), fixed).to_pylist() == []


def test_prompt_columns_of_encoded_rows():
    cols = _prompt_columns([[([0, 1], [5, 6, 7], np.array([[0, 1], [1, 3]]))], []])
    assert [c.to_pylist() for c in cols] == [[[[5, 6, 7]], []], [[[0, 1]], []], [[[[0, 1], [1, 3]]], []]]
    assert [c.type for c in cols] == [PROMPT_TYPES[n] for n in PROMPT_COLUMNS[:3]]
