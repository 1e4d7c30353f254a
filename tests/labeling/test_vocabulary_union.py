"""The vocabulary union (#16 item 4): `pseudo --classes` on captions prompts each image with its phrases plus
the class list; class boxes carry label and category (and the spans of the caption phrase that is the class),
phrase boxes their spans; duplicates between the two are one prompt entry and one NMS group."""

from __future__ import annotations

import json
import sys

import pyarrow as pa
import pytest
from conftest import EXAMPLES, label_twice, run_cli

from formats.phrase_rules import phrase_key
from labeling.candidates import select_regions
from labeling.fuse import FilterConfig
from labeling.prompt_stages import TokenizePrompts, class_index
from labeling.stages import AssembleCandidates
from labeling.vocabulary import class_keys, class_owners, phrases_as_classes

VOCAB = [["rocket ship", "rocket"], ["camera"], ["person", "man"], ["forklift"]]
CAPTION = "a man with a rocket and a camera near the launch pad"


def phrase(text: str) -> dict:
    start = CAPTION.index(text)
    return {"phrase": text, "tokens_positive": [[start, start + len(text)]]}


PHRASES = [phrase("man"), phrase("rocket"), phrase("camera"), phrase("launch pad")]


def test_phrases_that_are_classes():
    keys = class_keys(VOCAB)
    assert keys == {"rocket ship": 0, "rocket": 0, "camera": 1, "person": 2, "man": 2, "forklift": 3}
    assert phrases_as_classes(PHRASES, keys) == {0: 2, 1: 0, 2: 1}
    # case and spaces do not matter; two phrases of one class: the first owns its boxes
    twins = [{"phrase": "Rocket", "tokens_positive": [[0, 6]]}, {"phrase": "rocket  ship", "tokens_positive": [[8, 19]]}]
    assert phrases_as_classes(twins, keys) == {0: 0, 1: 0} and class_owners(twins, keys) == {0: 0}
    assert phrases_as_classes(None, keys) == {} and phrases_as_classes([phrase("launch pad")], keys) == {}


def test_each_row_gets_its_own_phrases_then_the_vocabulary(tiny_models):
    """A row's prompts: its phrases that are no class (indices into its phrases), then the vocabulary's prompts
    (class_index entries), the same for every row; a class's token range spells its name."""
    stage = TokenizePrompts(str(tiny_models["detector"]), str(tiny_models["clip"]), max_tokens=256,
                            vocabulary=VOCAB, with_phrases=True)
    assert "phrases" in stage.reads
    stage.setup()
    rows = pa.table({"caption": [CAPTION, "two dogs", None],
                     "phrases": pa.array([PHRASES, [], None], pa.list_(pa.struct([
                         ("phrase", pa.string()), ("tokens_positive", pa.list_(pa.list_(pa.int32(), 2)))])))})
    out = stage(rows)
    ids, entries, spans = (out.column(c).to_pylist() for c in ("prompt_ids", "prompt_phrases", "prompt_token_spans"))
    vocab_entries = [class_index(i) for i in range(4)]
    assert entries[0] == [[3], vocab_entries]  # only "launch pad" is prompted on its own
    assert entries[1] == entries[2] == [vocab_entries]  # no phrases: the vocabulary alone
    assert ids[1] == ids[2] == [ids[0][1]]
    decode = stage.encoder.tok.decode
    assert [decode(ids[0][0][a:b]) for a, b in spans[0][0]] == ["launch pad"]
    assert [decode(ids[0][1][a:b]) for a, b in spans[0][1]] == ["rocket ship", "camera", "person", "forklift"]
    assert class_index(class_index(5)) == 5


def test_regions_of_classes_and_of_phrases():
    """Assembled regions: a class box carries label + category, and the spans of the caption phrase that is
    the class (phrase text as the caption wrote it); a class without such a phrase has none; a phrase box has
    no label."""
    stage = AssembleCandidates(round_=None, vocabulary=VOCAB, with_phrases=True)
    batch = pa.table({
        "image_id": ["img"], "phrases": [PHRASES],
        "cand_boxes": [[[0.0, 0, 10, 10], [5.0, 5, 20, 20], [1.0, 1, 8, 8], [2.0, 2, 9, 9]]],
        "cand_det": [[0.5, 0.6, 0.7, 0.8]], "cand_clip": [[0.5, 0.5, 0.5, 0.5]],
        "cand_phrase": pa.array([[3, class_index(0), class_index(3), class_index(2)]], pa.list_(pa.int32())),
        "cand_objectness": [[float("nan")] * 4]})
    regions = stage(batch).column("candidates").to_pylist()[0]
    got = [(g["label"], g["category"], g["phrase"], g["tokens_positive"]) for g in regions]
    assert got == [(None, None, "launch pad", [[42, 52]]),
                   (0, "rocket ship", "rocket", [[13, 19]]),
                   (3, "forklift", None, None),
                   (2, "person", "man", [[2, 5]])]
    assert [g["region_id"] for g in regions] == ["img#r0c0", "img#r0c1", "img#r0c2", "img#r0c3"]


def test_nms_groups_are_classes_then_phrase_keys():
    def cand(box, det, label=None, text=None):
        return {"bbox": box, "label": label, "category": None, "phrase": text, "det_score": det, "clip_score": 1.0}
    cands = [cand([0, 0, 10, 10], 0.9, label=0, text="rocket"),  # a class box that is a caption phrase
             cand([0, 0, 10, 10.2], 0.8, label=0),  # the same class from its own prompt: suppressed
             cand([0, 0, 10, 10.1], 0.7, text="launch pad"),  # another group: kept
             cand([0, 0, 10, 10.3], 0.6, text="Launch  pad"),  # the same phrase key: suppressed
             cand([0, 0, 10, 10.4], 0.5, label=1)]  # another class: kept
    kept, ok = select_regions(cands, 100, 100, float("nan"), FilterConfig(fused_threshold=0.0))
    assert [c["det_score"] for c in kept] == [0.9, 0.7, 0.5] and ok
    across = select_regions(cands, 100, 100, float("nan"), FilterConfig(fused_threshold=0.0, nms_across_phrases=True))
    assert [c["det_score"] for c in across[0]] == [0.9]


@pytest.mark.slow
def test_union_end_to_end_with_exports(tiny_models, tmp_path):
    """img2dataset captions + a class list -> a VG dataset with the vocabulary as label map; exports: ODVG VG
    lines (every region with spans), ODVG OD lines + label map (every class region), COCO (classes first),
    YOLO-World; a run killed mid-way and rerun writes the same; --vocabulary-only gives an OD dataset."""
    from pycocotools.coco import COCO

    from formats.dataset import Dataset

    classes = tmp_path / "classes.txt"
    classes.write_text("rocket ship|rocket\ncamera\nperson|man\nforklift\n")
    common = ["--detector", tiny_models["detector"], "--clip", tiny_models["clip"], "--box-threshold", "0",
              "--fused-threshold", "0", "--image-threshold", "-1", "--num-cpus", "2", "--images-per-part", "3"]
    # one run killed with SIGKILL mid-way and rerun equals an uninterrupted one (tmp_path / "ref")
    summary, log, ds = label_twice([sys.executable, "-m", "workflows.cli", "pseudo", "--input", EXAMPLES / "cc3m_sample",
                                    "--classes", classes, *common], tmp_path, parts=3)
    assert "a class list of 4 classes plus each caption's phrases" in log
    assert ds.manifest.kind == "vg" and ds.manifest.config["vocabulary_only"] is False
    assert ds.manifest.label_map() == {"0": "rocket ship", "1": "camera", "2": "person", "3": "forklift"}
    recs = ds.read().to_pylist()
    assert summary["images"] == len(recs) == 7 and summary["boxes"] > 0
    keys = class_keys(VOCAB)
    kinds = set()
    for r in recs:
        for g in r["regions"]:
            if g["label"] is not None:
                assert g["category"] == VOCAB[g["label"]][0]
                if g["phrase"] is not None:  # the caption's phrase that is the class, with its own spans
                    assert keys[phrase_key(g["phrase"])] == g["label"]
                kinds.add("class+phrase" if g["phrase"] else "class")
            else:
                assert g["phrase"] and phrase_key(g["phrase"]) not in keys
                kinds.add("phrase")
            for s, e in g["tokens_positive"] or []:
                assert r["caption"][s:e] == g["phrase"]
    assert kinds == {"class", "class+phrase", "phrase"}
    # "rocket" (a synonym) and "man" are prompted as their classes
    rocket = next(r for r in recs if r["caption"].startswith("a rocket"))
    assert {(g["label"], g["phrase"]) for g in rocket["regions"] if g["label"] == 0} <= {(0, "rocket")}

    result = json.loads(run_cli("export", "odvg", tmp_path / "ref", "--out", tmp_path / "x.jsonl",
                                 "--tar-paths").stdout)
    vg = [json.loads(x) for x in (tmp_path / "x.jsonl").read_text().splitlines()]
    od = [json.loads(x) for x in (tmp_path / "x.od.jsonl").read_text().splitlines()]
    assert result["od_label_map"].endswith("x.od.label_map.json")
    assert json.loads((tmp_path / "x.od.label_map.json").read_text()) == ds.manifest.label_map()
    spans = sum(g["tokens_positive"] is not None for r in recs for g in r["regions"])
    labelled = sum(g["label"] is not None for r in recs for g in r["regions"])
    assert sum(len(x["grounding"]["regions"]) for x in vg) == spans
    assert all(g["tokens_positive"] for x in vg for g in x["grounding"]["regions"])
    assert sum(len(x["detection"]["instances"]) for x in od) == labelled
    assert all(i["category"] == VOCAB[i["label"]][0] for x in od for i in x["detection"]["instances"])

    run_cli("export", "coco", tmp_path / "ref", "--out", tmp_path / "c.json", "--tar-paths")
    coco = COCO(str(tmp_path / "c.json"))
    cats = coco.loadCats(coco.getCatIds())
    assert [c["name"] for c in cats[:4]] == ["rocket ship", "camera", "person", "forklift"]
    assert [c["id"] for c in cats] == list(range(1, len(cats) + 1))
    names = {c["id"]: c["name"] for c in cats}
    by_region = sorted(VOCAB[g["label"]][0] if g["label"] is not None else g["phrase"]
                       for r in recs for g in r["regions"])
    assert sorted(names[a["category_id"]] for a in coco.loadAnns(coco.getAnnIds())) == by_region

    # YOLO-World: grounding.json of the span regions, detection.json of the class regions, the classes' texts
    run_cli("export", "yolo-world", tmp_path / "ref", "--out", tmp_path / "yw", "--tar-paths")
    assert json.loads((tmp_path / "yw" / "class_texts.json").read_text()) == VOCAB
    grounding, detection = (COCO(str(tmp_path / "yw" / f)) for f in ("grounding.json", "detection.json"))
    assert len(grounding.getAnnIds()) == spans and len(detection.getAnnIds()) == labelled
    assert all(a["tokens_positive"] for a in grounding.loadAnns(grounding.getAnnIds()))
    assert [c["name"] for c in detection.loadCats(detection.getCatIds())] == [v[0] for v in VOCAB]

    # the vocabulary alone on the same captions: an OD dataset
    only = json.loads(run_cli("pseudo", "--input", EXAMPLES / "cc3m_sample", "--out", tmp_path / "v",
                              "--classes", classes, "--vocabulary-only", *common).stdout)
    v = Dataset(tmp_path / "v")
    assert v.manifest.kind == "od" and only["boxes"] > 0
    assert all(g["label"] is not None and g["phrase"] is None for r in v.read().to_pylist() for g in r["regions"])


def test_a_class_name_wins_over_another_class_synonym():
    # `person|man` and `man`: the phrase "man" is the class named "man", not person's synonym
    vocab = [["person", "man"], ["man"], ["dog", "hound"], ["cat", "hound"]]
    keys = class_keys(vocab)
    assert keys["man"] == 1 and keys["person"] == 0 and keys["hound"] == 2  # a shared synonym: the first class
    caption = [{"phrase": "man", "tokens_positive": [[2, 5]]}, {"phrase": "person", "tokens_positive": [[12, 18]]}]
    assert phrases_as_classes(caption, keys) == {0: 1, 1: 0} and class_owners(caption, keys) == {1: 0, 0: 1}
