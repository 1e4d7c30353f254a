"""The phrase text rule on captions written here: trimmed spans, possessives, dedup (formats.phrase_rules)."""

from __future__ import annotations

import pytest

from formats.phrase_rules import has_word, phrase_key, trim_phrase, trim_span
from labeling.phrases import PhraseConfig, PhraseExtractor


@pytest.fixture(scope="module")
def ex():
    return PhraseExtractor()


def test_trim_span_and_phrase():
    cap = "  two dogs   play\tin the  snow\n"
    assert trim_span(cap, 0, 10) == (2, 10) and trim_span(cap, 25, 31) == (26, 30)
    assert trim_span(cap, 10, 13) is None and trim_span(". ", 0, 2) is None
    assert trim_span('"Mr. Smith."', 0, 12) == (1, 10)
    assert trim_span("¿café?", 0, 6) == (1, 5) and trim_span("_x_", 0, 3) == (0, 3)
    assert trim_phrase(" . ") is None and trim_phrase(None) is None
    assert has_word("2.5") and not has_word(" .?") and not has_word("")
    assert phrase_key("  Red\tCAR ") == "red car" == phrase_key("red  car")


def test_a_possessive_ending_never_starts_a_phrase():
    assert trim_phrase("'s hand") == "hand" and trim_phrase("\u2019s bowl") == "bowl"
    assert trim_phrase("s' bowl") == "bowl" and trim_phrase("' hat") == "hat" and trim_phrase(" 's 's cat") == "cat"
    assert trim_phrase("'s") is None and trim_phrase("\u2019s .") is None and trim_phrase("s'") is None
    cap = "a woman's hand holding a cup."
    assert trim_span(cap, 7, 14) == (10, 14)  # "'s hand"
    assert trim_span(cap, 8, 14) == (10, 14)  # "s hand": the apostrophe is just left of the span
    assert trim_span(cap, 7, 9) is None and trim_span(cap, 2, 14) == (2, 14)
    assert trim_span("the dogs' bowl", 7, 14) == (10, 14)  # "s' bowl"
    # words that only look like one stay whole
    assert trim_phrase("s'mores") == "s'mores" and trim_phrase("'sup dog") == "sup dog"
    assert trim_phrase("S curve") == "S curve" and trim_phrase("'s' shape") == "s' shape"


def test_combining_marks_stay_with_their_letter():
    cap = "cafe\u0301 au lait"  # a decomposed "é": U+0301 (Mn) is not \\w
    assert trim_span(cap, 0, 5) == (0, 5) and cap[0:5] == "cafe\u0301"
    assert trim_span(cap, 0, 4) == (0, 5)  # the span ended between the letter and its accent
    assert trim_span(cap, 4, 9) == (3, 8)  # it started on the accent: back to its letter
    assert trim_span(cap, 5, 13) == (6, 13)
    assert trim_phrase("na\u0308ive.") == "na\u0308ive" and trim_phrase("(re\u0301sume\u0301)") == "re\u0301sume\u0301"
    assert trim_phrase("\u0928\u092e\u0938\u094d\u0924\u0947!") == "\u0928\u092e\u0938\u094d\u0924\u0947"
    assert trim_phrase("\u0301 x") == "x" and trim_phrase(" \u0301 ") is None  # an accent on nothing is no word


def test_possessive_of_an_emoji_owner_leaves_no_s(ex):
    bowl, james = ex(["the \U0001f436's bowl on the floor", "\U0001f600 \u2019s James's man"])
    assert bowl == [{"phrase": "bowl", "tokens_positive": [[8, 12]]},
                    {"phrase": "floor", "tokens_positive": [[20, 25]]}]
    assert james == [{"phrase": "James's man", "tokens_positive": [[5, 16]]},
                     {"phrase": "James", "tokens_positive": [[5, 10]]}]


def test_whitespace_never_reaches_a_phrase(ex):
    cap = "  two dogs   play\tin the  snow\n"
    (ps,) = ex([cap])
    assert ps == [{"phrase": "two dogs", "tokens_positive": [[2, 10]]},
                  {"phrase": "snow", "tokens_positive": [[26, 30]]}]


def test_possessives_keep_the_owner_and_make_it_a_phrase(ex):
    woman, dog, dogs = ex(["a woman's hand holding a cup", "the dog's collar", "the dogs' bowls"])
    assert woman == [{"phrase": "woman's hand", "tokens_positive": [[2, 14]]},
                     {"phrase": "woman", "tokens_positive": [[2, 7]]},
                     {"phrase": "cup", "tokens_positive": [[25, 28]]}]
    assert dog == [{"phrase": "dog's collar", "tokens_positive": [[4, 16]]},
                   {"phrase": "dog", "tokens_positive": [[4, 7]]}]
    assert dogs == [{"phrase": "dogs' bowls", "tokens_positive": [[4, 15]]},
                    {"phrase": "dogs", "tokens_positive": [[4, 8]]}]


def test_owner_keeps_its_modifiers_and_nested_owners(ex):
    old, nested = ex(["Mr. Smith and the old woman's red umbrella", "my friend's dog's toy"])
    assert [(p["phrase"], p["tokens_positive"]) for p in old] == [
        ("Mr. Smith", [[0, 9]]), ("old woman's red umbrella", [[18, 42]]), ("old woman", [[18, 27]])]
    assert [p["phrase"] for p in nested] == ["friend's dog's toy", "friend's dog", "friend"]


def test_possessive_owner_with_determiners_kept(ex):
    keep = PhraseExtractor(PhraseConfig(strip_determiners=False), nlp=ex.nlp)
    (ps,) = keep(["a woman's hand holding a cup"])
    assert [p["phrase"] for p in ps] == ["a woman's hand", "a woman", "a cup"]


def test_referring_expressions_keep_owner_phrases(ex):
    re = PhraseExtractor(PhraseConfig(referring_expressions=True), nlp=ex.nlp)
    (ps,) = re(["the dog's collar"])
    assert ps == [{"phrase": "dog's collar", "tokens_positive": [[4, 16]]},
                  {"phrase": "dog", "tokens_positive": [[4, 7]]}]


def test_periods_inside_phrases_stay_in_the_stored_phrase(ex):
    (ps,) = ex(["St. Bernard dog next to a 2.5 liter bottle"])
    assert ps == [{"phrase": "St. Bernard dog", "tokens_positive": [[0, 15]]},
                  {"phrase": "2.5 liter bottle", "tokens_positive": [[26, 42]]}]


def test_dedup_ignores_case_and_whitespace_and_keeps_every_span(ex):
    cap = "a red car, a Red  car and a dog near a DOG"
    (ps,) = ex([cap])
    assert ps == [{"phrase": "red car", "tokens_positive": [[2, 9], [13, 21]]},
                  {"phrase": "dog", "tokens_positive": [[28, 31], [39, 42]]}]
    assert [cap[s:e] for s, e in ps[0]["tokens_positive"]] == ["red car", "Red  car"]


def test_grit_spans_are_trimmed_and_wordless_ones_rejected(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from formats.converters.img2dataset import shard_records

    cap = '  a "dog" .  on grass!'
    refs = [[0, 9, 0.1, 0.1, 0.5, 0.5, 0.9],  # '  a "dog"' -> 'a "dog' [2, 8]
            [9, 11, 0.1, 0.1, 0.5, 0.5, 0.9],  # ' .': rejected
            [13, 22, 0.2, 0.2, 0.6, 0.6, 0.8]]  # 'on grass!' -> 'on grass' [13, 21]
    pq.write_table(pa.table({"key": ["000000000"], "caption": [cap], "status": ["success"], "error_message": [None],
                             "width": [100], "height": [50], "ref_exps": [refs]}), tmp_path / "00000.parquet")
    table, rejects = shard_records(tmp_path / "00000.parquet", "grit", "ref_exps")
    (regions,) = table.column("regions").to_pylist()
    assert [(g["phrase"], g["tokens_positive"]) for g in regions] == [('a "dog', [[2, 8]]), ("on grass", [[13, 21]])]
    assert rejects == [{"file": str(tmp_path / "00000.parquet"), "record": "key=000000000 ref_exps[1]",
                        "reason": "no word character in span", "detail": "' .'"}]


def test_grit_spans_starting_with_a_possessive_ending(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from formats.converters.img2dataset import shard_records

    cap = "a woman's hand holding a cup."
    refs = [[7, 14, 0.1, 0.1, 0.5, 0.5, 0.9],  # "'s hand" -> "hand" [10, 14]
            [8, 14, 0.1, 0.1, 0.5, 0.5, 0.9],  # "s hand" -> "hand" [10, 14]
            [7, 9, 0.1, 0.1, 0.5, 0.5, 0.9]]  # "'s": rejected
    pq.write_table(pa.table({"key": ["000000000"], "caption": [cap], "status": ["success"], "error_message": [None],
                             "width": [100], "height": [50], "ref_exps": [refs]}), tmp_path / "00000.parquet")
    table, rejects = shard_records(tmp_path / "00000.parquet", "grit", "ref_exps")
    (regions,) = table.column("regions").to_pylist()
    assert [(g["phrase"], g["tokens_positive"]) for g in regions] == [("hand", [[10, 14]]), ("hand", [[10, 14]])]
    assert [(r["record"], r["reason"], r["detail"]) for r in rejects] == [
        ("key=000000000 ref_exps[2]", "no word character in span", '"\'s"')]


def test_reviewers_phrases_follow_the_rule(tmp_path):
    import json

    from formats.converters.goldg import GoldGConvertConfig, convert_goldg
    from formats.corrections import apply_corrections, write_corrections
    from formats.dataset import Dataset

    cap = "A woman walks past a man ."
    doc = {"images": [{"file_name": "1.jpg", "height": 100, "width": 100, "id": 1, "caption": cap}],
           "annotations": [{"id": i, "image_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0,
                            "tokens_positive": sp} for i, sp in ((1, [[2, 7]]), (2, [[21, 24]]))],
           "categories": [{"id": 1, "name": "o"}]}
    (tmp_path / "m.json").write_text(json.dumps(doc))
    convert_goldg(tmp_path / "m.json", tmp_path / "ds", GoldGConvertConfig(source="t"))
    me = str((tmp_path / "ds").resolve())

    def row(action, region_id, phrase):
        return {"image_id": "t/1", "region_id": region_id, "action": action, "field": "gold", "dataset": me,
                "bbox": [1.0, 1.0, 11.0, 11.0], "phrase": phrase, "category": None, "score": None, "tags": [],
                "when": "2026-11-30T00:00:00+00:00"}
    write_corrections([row("fix", "t/1#0", "  man. "), row("fix", "t/1#1", " . "), row("add", None, "?"),
                       row("add", None, "woman"), row("add", None, "\u2019s man"), row("add", None, "'s")],
                      tmp_path / "corr")
    counts = apply_corrections(tmp_path / "ds", tmp_path / "corr", tmp_path / "out")
    assert counts["applied"] == {"reject": 0, "accept": 0, "fix": 2, "add": 2, "wordless_phrase": 3}
    (r,) = Dataset(tmp_path / "out").read().to_pylist()
    got = [(g["phrase"], g["tokens_positive"], g["origin"]) for g in r["regions"]]
    # "man" is grounded on the word "man", not inside "woman"; " . " left the second box's words alone
    assert got == [("man", [[21, 24]], "review"), ("man", [[21, 24]], "review"), ("woman", [[2, 7]], "review"),
                   ("man", [[21, 24]], "review")]
