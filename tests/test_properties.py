"""Property-based tests over generated COCO files: whatever the input, every box is accounted for."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats.converters.coco import CocoConvertConfig, ConversionError, convert_coco
from formats.dataset import Dataset

numbers = st.one_of(st.floats(-50, 700, allow_nan=False), st.integers(-5, 700), st.just(float("nan")),
                    st.just(float("inf")), st.text(max_size=2))
bbox = st.one_of(st.lists(numbers, min_size=4, max_size=4), st.lists(st.floats(0, 100), max_size=5), st.none())


@st.composite
def coco_files(draw):
    n_img = draw(st.integers(0, 6))
    images = []
    for i in range(n_img):
        img = {"id": draw(st.integers(1, 8)), "file_name": draw(st.sampled_from(["a.jpg", "b/c.jpg", "../x.jpg", "/abs.jpg"])),
               "width": draw(st.one_of(st.integers(-1, 800), st.just("640"))), "height": draw(st.integers(0, 600))}
        if draw(st.booleans()) and i:
            del img[draw(st.sampled_from(["file_name", "width"]))]
        images.append(img)
    anns = []
    for _k in range(draw(st.integers(0, 25))):
        ann = {"id": draw(st.integers(1, 30)), "image_id": draw(st.integers(0, 9)), "category_id": draw(st.integers(0, 4)),
               "bbox": draw(bbox), "area": draw(st.one_of(st.floats(-1, 1e5, allow_nan=False), st.none())),
               "iscrowd": draw(st.sampled_from([0, 0, 0, 1]))}
        if draw(st.booleans()):
            ann.pop("area")
        anns.append(ann)
    cats = [{"id": c, "name": f"cat{c}"} for c in (1, 2, 3)]
    return {"images": images, "annotations": anns, "categories": cats}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=coco_files(), window=st.sampled_from([64, 1 << 20]))
def test_every_input_box_is_kept_dropped_or_rejected(tmp_path_factory, doc, window):
    tmp = tmp_path_factory.mktemp("p")
    path = tmp / "in.json"
    path.write_text(json.dumps(doc))
    out = tmp / "ds"
    m = convert_coco(path, out, CocoConvertConfig(source="custom"), window_bytes=window)
    ds = Dataset(out)
    recs = ds.read().to_pylist()
    rej = ds.read_rejects().to_pylist()
    n_img_rej = sum(1 for r in rej if r["record"].startswith("images["))
    n_ann_out = sum(1 for r in rej if r["record"].startswith("annotations["))
    assert len(recs) + n_img_rej == len(doc["images"]) == m.counts["images_in"]
    assert sum(len(r["regions"]) for r in recs) + n_ann_out == len(doc["annotations"])
    assert sum(m.counts["dropped"].values()) + sum(m.counts["rejected"].values()) == len(rej)
    for r in recs:  # what is kept is valid
        assert r["width"] > 0 and r["height"] > 0 and not r["file_name"].startswith(("/", ".."))
        for g in r["regions"]:
            x1, y1, x2, y2 = g["bbox"]
            assert all(math.isfinite(v) for v in g["bbox"]) and x2 - x1 >= 1 and y2 - y1 >= 1
            assert g["label"] in (0, 1, 2) and g["category"] == f"cat{g['label'] + 1}"
    ids = [r["image_id"] for r in recs]
    assert len(ids) == len(set(ids))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_garbage_is_a_clear_error_never_a_crash(tmp_path_factory, blob):
    tmp = tmp_path_factory.mktemp("g")
    path = tmp / "in.json"
    path.write_bytes(blob)
    try:
        convert_coco(path, tmp / "ds", CocoConvertConfig(source="custom"), window_bytes=32)
    except ConversionError as e:
        assert str(path) in str(e)
        assert not (tmp / "ds").exists()


# -- phrases and prompts over generated captions (formats.phrase_rules, detector.prompts) ------------------

WORDS = ["dog", "woman", "man", "red", "car", "old", "church", "bottle", "liter", "table", "cup", "hat", "café",
         "naïve", "東京", "Straße", "Ünïcödé", "snow", "two", "ball", "x_y"]
PIECES = WORDS + ["a", "the", "his", "and", "on", "in", "with", "St.", "Mr.", "Dr.", "2.5", "3", "woman's", "dog's",
                  "dogs'", "friend's", "(red)", '"blue"', "what?", "-", "...", ".", ",", "!", "?", "'", "'s", "🐕"]
SPACE = st.sampled_from([" ", " ", " ", "  ", "\t", "\n", " \n ", ""])


@st.composite
def captions(draw):
    parts = draw(st.lists(st.tuples(SPACE, st.sampled_from(PIECES)), min_size=1, max_size=14))
    return "".join(s + p for s, p in parts) + draw(SPACE)


_TOOLS: dict = {}


def _tools():
    """spaCy, the tiny BERT tokenizer and its separators, loaded once for every generated example."""
    if not _TOOLS:
        from detector.prompts import separator_chars
        from detector.tiny import bert_tokenizer
        from labeling.phrases import PhraseExtractor

        tok = bert_tokenizer()
        _TOOLS.update(ex=PhraseExtractor(), tok=tok, seps=separator_chars(tok))
    return _TOOLS


def _one_group_per_phrase(phrases: list[str]) -> None:
    """The prompt of `phrases` has exactly one label-map group per phrase, on that phrase's own tokens."""
    import numpy as np
    import torch
    from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps

    from detector.prompts import join_prompt, label_maps

    t = _tools()
    text, spans = join_prompt(phrases, t["seps"])
    enc = t["tok"]([text], return_offsets_mapping=True, return_tensors="pt")
    width = enc["input_ids"].shape[1] + 1
    model = build_label_maps(torch.zeros(1, 1, width), enc["input_ids"])[0].numpy()
    ours = label_maps(spans, enc["offset_mapping"][0].numpy(), enc["attention_mask"][0].numpy(), width)
    assert model.shape[0] == len(phrases) and np.array_equal(model, ours), (phrases, text)


@settings(max_examples=150, deadline=None)
@given(cap=captions())
def test_phrases_are_caption_text_with_words_and_one_prompt_group_each(cap):
    from formats.phrase_rules import has_word, phrase_key

    (ps,) = _tools()["ex"]([cap])
    for p in ps:
        phrase, spans = p["phrase"], p["tokens_positive"]
        (s0, e0) = spans[0]
        assert cap[s0:e0] == phrase  # the phrase is the caption's text at its first span
        assert all(phrase_key(cap[s:e]) == phrase_key(phrase) for s, e in spans)  # the others up to case/space
        assert spans == sorted(spans) and len({tuple(x) for x in spans}) == len(spans)
        assert has_word(phrase) and has_word(phrase[0]) and has_word(phrase[-1])  # trimmed: no "'s", no space
    assert len({phrase_key(p["phrase"]) for p in ps}) == len(ps)  # deduplicated
    if ps:
        _one_group_per_phrase([p["phrase"] for p in ps])


@settings(max_examples=150, deadline=None)
@given(names=st.lists(st.text(min_size=1, max_size=12).filter(lambda s: bool(__import__("re").search(r"\w", s))),
                      min_size=1, max_size=6))
def test_any_names_with_a_word_make_one_group_each(names):
    _one_group_per_phrase(names)


@st.composite
def mdetr_files(draw):
    caps = [draw(captions()) for _ in range(draw(st.integers(1, 4)))]
    images = [{"file_name": f"{i}.jpg", "height": 50, "width": 50, "id": i, "caption": c} for i, c in enumerate(caps)]
    anns = []
    for i, c in enumerate(caps):
        for _ in range(draw(st.integers(0, 4))):
            cuts = sorted(draw(st.lists(st.integers(0, len(c)), min_size=2, max_size=4, unique=True)))
            spans = [[a, b] for a, b in zip(cuts[::2], cuts[1::2])]
            anns.append({"id": len(anns) + 1, "image_id": i, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0,
                         "tokens_positive": spans})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "o"}]}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=mdetr_files())
def test_mdetr_spans_become_trimmed_phrases_or_rejects(tmp_path_factory, doc):
    from formats.converters.goldg import GoldGConvertConfig, convert_goldg
    from formats.phrase_rules import has_word

    tmp = tmp_path_factory.mktemp("m")
    (tmp / "in.json").write_text(json.dumps(doc, ensure_ascii=False))
    m = convert_goldg(tmp / "in.json", tmp / "ds", GoldGConvertConfig(source="p"))
    recs = Dataset(tmp / "ds").read().to_pylist()
    kept = sum(len(r["regions"]) for r in recs)
    rej = [x for x in Dataset(tmp / "ds").read_rejects().to_pylist() if x["record"].startswith("annotations[")]
    assert kept + len(rej) == len(doc["annotations"]) == m.counts["boxes_in"]
    assert {x["reason"] for x in rej} <= {"no word character in spans"}
    for r in recs:
        for g in r["regions"]:
            assert g["phrase"] == " ".join(r["caption"][s:e] for s, e in g["tokens_positive"])
            for s, e in g["tokens_positive"]:
                assert has_word(r["caption"][s]) and has_word(r["caption"][e - 1])
    # exactly the boxes with a word somewhere in their spans are kept
    wordy = sum(any(has_word(doc["images"][a["image_id"]]["caption"][s:e]) for s, e in a["tokens_positive"])
                for a in doc["annotations"])
    assert kept == wordy
