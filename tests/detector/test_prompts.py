"""Prompts: separators inside phrases blanked in the prompt only; one label-map group per phrase."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps

from detector.data import prompt_text
from detector.loss import checked_label_maps
from detector.prompts import (
    build_prompts,
    join_prompt,
    label_maps,
    prompt_form,
    separator_chars,
    separator_ids,
)
from detector.tiny import bert_tokenizer

NAMES = ["st. mary church", "dog", "red car"]


@pytest.fixture(scope="module")
def tok():
    return bert_tokenizer()


@pytest.fixture(scope="module")
def seps(tok):
    return separator_chars(tok)


def groups(tok, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(model's label maps from the separator tokens, ours from the spans) for one prompt."""
    enc = tok([text], return_offsets_mapping=True, return_tensors="pt")
    model = build_label_maps(torch.zeros(1, 1, 32), enc["input_ids"])[0].numpy()
    return model, enc


def test_separators_come_from_the_model_and_tokenizer(tok, seps):
    assert separator_ids() == (101, 102, 1012, 1029)  # transformers' SPECIAL_TOKENS
    assert seps == {".", "?", "[CLS]", "[SEP]", "[PAD]"}
    assert separator_chars(tok, ids=(101, 102, 1029)) == {"?", "[CLS]", "[SEP]", "[PAD]"}


def test_prompt_form_keeps_length_and_the_stored_phrase(seps):
    assert prompt_form("st. mary church", seps) == "st  mary church"
    assert prompt_form("2.5 liter bottle?", seps) == "2 5 liter bottle "
    assert prompt_form("a [SEP] b", seps) == "a       b"
    assert prompt_form("st. mary church") == "st. mary church"  # no separators given: unchanged


def test_dotted_name_is_one_group_on_its_own_tokens(tok, seps):
    text, spans = join_prompt(NAMES, seps)
    assert text == "st  mary church . dog . red car ."
    assert spans == [(0, 15), (18, 21), (24, 31)]
    assert prompt_text(NAMES, seps) == text
    model, enc = groups(tok, text)
    ours = label_maps(spans, enc["offset_mapping"][0].numpy(), enc["attention_mask"][0].numpy(), 32)
    assert model.shape == (3, 32) and np.array_equal(model, ours)
    ids = enc["input_ids"][0].tolist()
    for row, (s, e) in zip(ours, spans):  # each group's tokens spell its own phrase
        toks = [ids[t] for t in np.flatnonzero(row)]
        assert tok.decode(toks).replace(" ", "") == text[s:e].replace(" ", "")
    # the bug this fixes: unchanged, "st." makes four groups and "dog" is trained on "mary church"
    model_old, enc_old = groups(tok, " . ".join(NAMES) + " .")
    assert len(model_old) == 4
    second = [enc_old["input_ids"][0][t].item() for t in np.flatnonzero(model_old[1])]
    assert tok.decode(second).replace(" ", "") == "marychurch"


def test_loss_refuses_label_maps_that_disagree_with_the_phrases(tok, seps):
    old = " . ".join(NAMES) + " ."
    spans = [(0, 15), (18, 21), (24, 31)]
    model_old, enc = groups(tok, old)
    ours = label_maps(spans, enc["offset_mapping"][0].numpy(), enc["attention_mask"][0].numpy(), 32)
    with pytest.raises(ValueError, match="make 4 phrase groups, its phrases 3"):
        checked_label_maps((torch.as_tensor(model_old),), [{"label_map": torch.as_tensor(ours)}])
    text, spans = join_prompt(NAMES, seps)
    model, enc = groups(tok, text)
    ours = label_maps(spans, enc["offset_mapping"][0].numpy(), enc["attention_mask"][0].numpy(), 32)
    maps = (torch.as_tensor(model),)
    assert checked_label_maps(maps, [{"label_map": torch.as_tensor(ours)}]) is maps
    assert checked_label_maps(maps, [{}]) is maps  # targets without a span-built map: the model's


def test_build_prompts_blanks_separators_and_keeps_spans(seps):
    phrases = ["Mr. Smith", "dog", "what?", "2.5 liter bottle"]
    prompts = build_prompts(phrases, [3, 1, 2, 5], max_tokens=11, separators=seps)  # 2+4+2+3; 2+6
    assert [(p[0], p[1]) for p in prompts] == [([0, 1, 2], "Mr  Smith . dog . what  ."),
                                               ([3], "2 5 liter bottle .")]
    for idx, text, spans in prompts:
        assert [text[s:e] for s, e in spans] == [prompt_form(phrases[i], seps) for i in idx]
    assert build_prompts(["a.b"], [3], 10)[0][1] == "a.b ."  # without separators: as before
    assert build_prompts(["a.b", "...", "c?"], [3, 3, 2], 20, separators=seps) == [([0, 2], "a b . c  .",
                                                                                    [(0, 3), (6, 8)])]


def test_build_prompts_finds_the_separators_of_a_tokenizer(tok, seps):
    """The one-argument call grounding.py makes: separators from the tokenizer, found once."""
    phrases = ["st. mary church", "dog"]
    assert build_prompts(phrases, [5, 1], 256, tokenizer=tok) == build_prompts(phrases, [5, 1], 256, separators=seps)
    assert separator_chars(tok) is separator_chars(tok)  # remembered per tokenizer


def test_a_phrase_with_no_word_is_never_prompted(seps):
    with pytest.raises(ValueError, match="no word character"):
        join_prompt(["dog", "..."], seps)
    with pytest.raises(ValueError, match="no word character"):
        join_prompt([" "])


def test_training_forward_uses_one_group_per_name(tiny_models, sample_images):
    """The tiny model trains on the three names; the unblanked prompt is refused, not mis-supervised."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    from detector.loss import grounding_loss
    from detector.train import with_label_maps

    proc = AutoProcessor.from_pretrained(tiny_models["detector"])
    model = AutoModelForZeroShotObjectDetection.from_pretrained(tiny_models["detector"]).eval()
    model.loss_function = grounding_loss
    pix = proc.image_processor(images=sample_images[:1], return_tensors="pt")
    target = {"class_labels": torch.tensor([0, 1, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 3)}

    def loss(text: str, spans):
        enc = proc.tokenizer([text], return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping").numpy()
        labels = with_label_maps([target], [spans], offsets, enc["attention_mask"].numpy(), model.config.max_text_len)
        with torch.no_grad():
            return model(**enc, **pix, labels=labels).loss

    text, spans = join_prompt(NAMES, separator_chars(proc.tokenizer))
    assert torch.isfinite(loss(text, spans))
    with pytest.raises(ValueError, match="4 phrase groups"):
        loss(" . ".join(NAMES) + " .", spans)


def test_names_cut_by_the_token_limit_leave_the_targets(tok, seps):
    from detector.train import with_label_maps

    text, spans = join_prompt(NAMES, seps)  # [CLS] s ##t m ##a ##r ##y c ##h ##u ##r ##c ##h . dog . red car . [SEP]
    target = {"class_labels": torch.tensor([2, 0, 1, 2]), "boxes": torch.arange(16.0).reshape(4, 4)}
    for limit, groups in ((17, 2), (18, 3)):  # "red car" cut off entirely; only "car" cut off
        enc = tok([text], return_offsets_mapping=True, truncation=True, max_length=limit, return_tensors="np")
        (t,) = with_label_maps([target], [spans], enc["offset_mapping"], enc["attention_mask"], 32)
        model = build_label_maps(torch.zeros(1, 1, 32), torch.as_tensor(enc["input_ids"]))[0]
        assert len(model) == groups and torch.equal(t["label_map"], model)
    enc = tok([text], return_offsets_mapping=True, truncation=True, max_length=17, return_tensors="np")
    (t,) = with_label_maps([target], [spans], enc["offset_mapping"], enc["attention_mask"], 32)
    assert t["class_labels"].tolist() == [0, 1] and t["boxes"][:, 0].tolist() == [4.0, 8.0]


def _goldg(tmp_path, cap: str, spans: list[list[list[int]]]):
    import json

    from formats.converters.goldg import GoldGConvertConfig, convert_goldg

    doc = {"images": [{"file_name": "1.jpg", "height": 100, "width": 100, "id": 1, "caption": cap}],
           "annotations": [{"id": i + 1, "image_id": 1, "bbox": [1 + i, 1, 10, 10], "area": 100, "iscrowd": 0,
                            "tokens_positive": sp} for i, sp in enumerate(spans)],
           "categories": [{"id": 1, "name": "o"}]}
    (tmp_path / "m.json").write_text(json.dumps(doc))
    convert_goldg(tmp_path / "m.json", tmp_path / "ds", GoldGConvertConfig(source="t"))
    return tmp_path / "ds"


def test_names_differing_in_case_or_whitespace_are_one_group_and_one_class(tmp_path, seps):
    """"dog Dog  DOG", a box per word: one prompt name and one YOLO-World class, every box on it."""
    import json
    import random

    from detector.data import load_examples, prompt_for
    from formats.export.yolo_world import export_yolo_world

    ds = _goldg(tmp_path, "dog Dog  DOG", [[[0, 3]], [[4, 7]], [[9, 12]]])
    (ex,), _ = load_examples(ds, separators=seps)
    assert (ex.names, ex.labels) == (["dog"], [0, 0, 0])
    assert prompt_for(ex, [], 0, random.Random(0)) == (["dog"], [0, 0, 0])
    export_yolo_world(ds, tmp_path / "yw")
    assert json.loads((tmp_path / "yw" / "class_texts.json").read_text()) == [["dog"]]
    coco = json.loads((tmp_path / "yw" / "grounding.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "dog"}]
    assert [(a["category_id"], a["tokens"]) for a in coco["annotations"]] == [(1, "dog"), (1, "Dog"), (1, "DOG")]


def test_training_keeps_the_names_inference_can_prompt(tmp_path, seps):
    """Training checks names as inference does (prompt form): "[SEP]" or "." is no name, no crash."""
    import json
    import random

    from detector.data import load_examples, prompt_for
    from formats.converters.coco import CocoConvertConfig, convert_coco

    names = ["dog", "[SEP]", "[PAD]", "Dog", "red  car", "Red car"]
    doc = {"images": [{"file_name": "1.jpg", "height": 100, "width": 100, "id": 1}],
           "annotations": [{"id": i + 1, "image_id": 1, "bbox": [1 + i, 1, 10, 10], "area": 100, "iscrowd": 0,
                            "category_id": i + 1} for i in range(len(names))],
           "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    convert_coco(tmp_path / "c.json", tmp_path / "od", CocoConvertConfig(source="custom"))
    (ex,), cats = load_examples(tmp_path / "od", separators=seps)
    assert cats == ["dog", "red  car"]
    assert (ex.names, ex.labels, len(ex.boxes)) == (["dog", "red  car"], [0, 0, 1, 1], 4)
    shown, labels = prompt_for(ex, cats + ["DOG", "cat"], 5, random.Random(0))
    assert sorted(shown) == ["cat", "dog", "red  car"]  # "DOG" is a positive's twin, never its negative
    assert [shown[i] for i in labels] == ["dog", "dog", "red  car", "red  car"]
    text, spans = join_prompt(shown, seps)  # the training prompt builds
    assert [text[s:e] for s, e in spans] == shown


def test_pad_prompts_pads_ids_masks_and_spans():
    from detector.prompts import pad_prompts

    ids, mask, spans = pad_prompts([[101, 7, 102], [101, 102], []], [[[1, 2]], [], []], pad_id=0)
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    assert spans.tolist() == [[[1, 2]], [[0, 0]], [[0, 0]]] and spans.dtype == ids.dtype == np.int64
    ids, mask, spans = pad_prompts([[5]], [[[0, 1], [1, 1]]], pad_id=9)
    assert ids.tolist() == [[5]] and spans.shape == (1, 2, 2)
