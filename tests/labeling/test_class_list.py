"""Class-list mode (`pseudo --classes FILE`): every form of class list parsed with exact values and errors, the
vocabulary's prompts built once and chunked past the text limit, and an end-to-end CLI run on the bundled sample
whose OD output exports to ODVG OD and COCO."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import EXAMPLES, run_cli

from labeling.candidates import select_regions
from labeling.fuse import FilterConfig
from labeling.prompt_stages import TokenizePrompts
from labeling.vocabulary import VocabularyError, read_vocabulary, vocabulary_categories, vocabulary_from_json
from workflows.pseudo_label import PseudoConfig, RunOptions, build_stages

IMAGES = EXAMPLES / "sample" / "images"


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_every_form_of_class_list(tmp_path):
    txt = write(tmp_path, "c.txt", " person | human |\n\nforklift\n  Fork lift truck|lift truck  \n")
    assert read_vocabulary(txt) == [["person", "human"], ["forklift"], ["Fork lift truck", "lift truck"]]
    assert read_vocabulary(write(tmp_path, "l.json", '["cat", " dog "]')) == [["cat"], ["dog"]]
    yw = write(tmp_path, "yw.json", json.dumps([["aerosol can", "spray can"], ["bat", "bat animal", "bat"]]))
    assert read_vocabulary(yw) == [["aerosol can", "spray can"], ["bat", "bat animal"]]
    lm = write(tmp_path, "lm.json", json.dumps({"1": "car", "0": "person", "2": "Cabinet/shelf"}))
    assert read_vocabulary(lm) == [["person"], ["car"], ["Cabinet/shelf"]]
    cats = [{"label": 1, "id": 7, "name": "car"}, {"label": 0, "id": 3, "name": "bat", "synonyms": ["bat", "club"]}]
    assert read_vocabulary(write(tmp_path, "cats.json", json.dumps(cats))) == [["bat", "club"], ["car"]]
    # a dataset directory: its manifest's label map
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps({"categories": cats}))
    assert read_vocabulary(tmp_path / "ds") == [["bat", "club"], ["car"]]
    assert vocabulary_from_json(["a", ["b", "bee"]]) == [["a"], ["b", "bee"]]
    assert vocabulary_categories([["bat", "club"], ["car"]]) == [
        {"label": 0, "name": "bat", "synonyms": ["bat", "club"]}, {"label": 1, "name": "car"}]


@pytest.mark.parametrize("name, text, message", [
    ("a.txt", "cat\n|kitty\n", "a.txt: line 2: empty class name"),
    ("b.txt", "cat\n\n  Cat \n", "b.txt: line 3: class 'Cat' repeats line 1 ('cat')"),
    ("c.txt", "cat\n...\n", "c.txt: line 2: class name '...' has no word character; it cannot be prompted"),
    ("d.txt", "\n  \n", "d.txt: no classes"),
    ("e.json", '["cat",\n 3]', "e.json: [1]: a class is a name or a non-empty list of texts, got 3"),
    ("f.json", '[["cat"], []]', "f.json: [1]: a class is a name or a non-empty list of texts, got []"),
    ("g.json", '[["cat", 2]]', "g.json: [0]: class texts are strings, got [\"cat\", 2]"),
    ("h.json", '["cat",\n "dog"', "h.json: line 2 column 7: invalid JSON"),
    ("i.json", '{"0": "cat", "2": "dog"}', "i.json: a label map's labels must be 0..1, got [0, 2]"),
    ("j.json", '{"0": "cat", "x": "dog"}', "j.json: a label map's keys are labels \"0\", \"1\", ...; got 'x'"),
    ("k.json", '{"0": "cat", "1": "CAT"}', "k.json: \"1\": class 'CAT' repeats \"0\" ('cat')"),
    ("l.json", '"cat"', "l.json: a class list is a JSON list or a label map object, not str"),
    ("m.json", '[{"label": 0, "name": "a"}, {"label": 2, "name": "b"}]',
     "m.json: the categories' labels must be 0..1, got [0, 2]"),
])
def test_class_list_errors_name_the_file_and_line(tmp_path, name, text, message):
    with pytest.raises(VocabularyError) as e:
        read_vocabulary(write(tmp_path, name, text))
    assert str(e.value).startswith(f"{tmp_path / name}: ") and message in str(e.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(VocabularyError, match="no such class-list file"):
        read_vocabulary(tmp_path / "nope.txt")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00cat")
    with pytest.raises(VocabularyError, match="b.txt: unreadable class list"):
        read_vocabulary(tmp_path / "b.txt")


def test_config_reads_the_file_and_keeps_the_classes(tmp_path):
    cfg = PseudoConfig(classes=str(write(tmp_path, "c.txt", "cat|kitty\ndog\n")))
    assert cfg.classes == [["cat", "kitty"], ["dog"]] and cfg.class_names == ["cat", "dog"]
    assert PseudoConfig(classes=["cat"]).classes == [["cat"]]
    assert PseudoConfig().class_names is None


def test_vocabulary_prompts_are_built_once_and_chunked(tiny_models):
    """A vocabulary longer than the text limit is cut into several prompts, each within the limit, covering every
    class exactly once in order; every row gets the same prompts, whatever its caption; no phrase stage runs."""
    classes = [f"class{i} thing" for i in range(40)]
    stage = TokenizePrompts(str(tiny_models["detector"]), str(tiny_models["clip"]), max_tokens=32,
                            vocabulary=[[c] for c in classes], with_phrases=False)
    assert stage.reads == ("caption",)
    stage.setup()
    calls = []
    encode = stage.encoder.encode
    stage.encoder.encode = lambda lists: calls.append(lists) or encode(lists)
    out = stage(pa.table({"caption": ["a cat", None, ""]}))
    out2 = stage(pa.table({"caption": ["x"]}))
    assert calls == []  # the vocabulary's prompts came from setup, not per batch
    ids, phr, spans = (out.column(c).to_pylist() for c in ("prompt_ids", "prompt_phrases", "prompt_token_spans"))
    assert len(phr[0]) > 1 and ids[0] == ids[1] == ids[2] == out2.column("prompt_ids").to_pylist()[0]
    assert phr[0] == phr[1] == phr[2]
    assert [i for p in phr[0] for i in p] == [-1 - i for i in range(40)]  # class_index(label)
    assert all(len(x) <= 32 for x in ids[0])
    for x, p, s in zip(ids[0], phr[0], spans[0]):  # each class's token range spells its name
        words = [stage.encoder.tok.decode(x[a:b]).replace(" ", "") for a, b in s]
        assert words == [classes[-1 - i].replace(" ", "") for i in p]
    cfg = PseudoConfig(detector=str(tiny_models["detector"]), clip=str(tiny_models["clip"]), classes=classes)
    stages = build_stages(cfg, RunOptions(), 0, "column")
    names = [s.name for s in stages]
    assert "phrases" not in names and "phrases" not in stages[0].adds
    assert all("phrases" not in s.reads for s in stages)


def test_class_regions_group_by_label_and_skip_the_missing_image_score():
    def cand(box, label, det):
        return {"bbox": box, "label": label, "category": f"c{label}", "phrase": None, "det_score": det,
                "clip_score": 0.5}
    cands = [cand([0, 0, 10, 10], 0, 0.9), cand([0, 0, 10, 10.5], 1, 0.8), cand([0, 0, 10, 10.2], 0, 0.7)]
    filt = FilterConfig(fused_threshold=0.0)
    kept, ok = select_regions(cands, 100, 100, float("nan"), filt)
    assert [(c["label"], c["det_score"]) for c in kept] == [(0, 0.9), (1, 0.8)] and ok
    assert select_regions(cands, 100, 100, 0.0, filt)[1] is False  # a real score of 0 still fails the image filter


def test_inputs_without_captions_ask_for_a_class_list(tmp_path):
    """An image folder (or an OD dataset) has nothing to take phrases from: pseudo refuses it before any work,
    naming --classes, instead of running the models over images that can only come out empty."""
    from formats.converters.image_folder import ImageFolderConvertConfig, convert_image_folder
    from formats.dataset import DatasetError
    from workflows.pseudo_label import has_captions, run_pseudo

    convert_image_folder(IMAGES, tmp_path / "imgs", ImageFolderConvertConfig())
    assert not has_captions(tmp_path / "imgs") and has_captions(EXAMPLES / "cc3m_sample")
    with pytest.raises(DatasetError, match="no record has a caption or phrases .* --classes FILE"):
        run_pseudo(tmp_path / "imgs", tmp_path / "p", PseudoConfig())
    assert not (tmp_path / "p").exists()
    proc = run_cli("pseudo", "--input", tmp_path / "imgs", "--out", tmp_path / "p", check=False)
    assert proc.returncode == 1 and "label it with a class list, --classes FILE" in proc.stderr


@pytest.mark.slow
def test_class_list_end_to_end_through_the_cli(tiny_models, tmp_path):
    """convert images -> pseudo --classes (tiny models, Ray) -> an OD dataset whose regions carry the classes'
    labels and names and whose label map is the vocabulary; export odvg (OD, label map) and coco load."""
    from pycocotools.coco import COCO

    from formats.dataset import Dataset

    run_cli("convert", "images", IMAGES, "--out", tmp_path / "imgs")
    classes = write(tmp_path, "classes.txt", "cat|kitty\ncoffee mug\nrocket ship|rocket\nperson\n")
    vocab = ["cat", "coffee mug", "rocket ship", "person"]
    common = ["--detector", tiny_models["detector"], "--clip", tiny_models["clip"], "--box-threshold", "0",
              "--fused-threshold", "0", "--num-cpus", "2"]
    args = ["pseudo", "--input", tmp_path / "imgs", "--out", tmp_path / "p", "--classes", classes, *common]
    summary = json.loads(run_cli(*args).stdout)
    ds = Dataset(tmp_path / "p")
    n_images = Dataset(tmp_path / "imgs").read().num_rows
    assert n_images == len([f for f in IMAGES.iterdir() if f.suffix.lower() in (".jpg", ".png", ".jpeg")])
    assert summary["images_in"] == n_images and summary["images"] == n_images and summary["boxes"] > 0
    assert ds.manifest.kind == "od"
    assert ds.manifest.label_map() == {str(i): n for i, n in enumerate(vocab)}
    assert ds.manifest.categories[0] == {"label": 0, "name": "cat", "synonyms": ["cat", "kitty"]}
    assert ds.manifest.config["classes"] == [["cat", "kitty"], ["coffee mug"], ["rocket ship", "rocket"], ["person"]]
    regions = [g for regs in ds.read(["regions"]).column("regions").to_pylist() for g in regs]
    assert len(regions) == summary["boxes"]
    assert all(vocab[g["label"]] == g["category"] and g["phrase"] is None and g["origin"] == "pseudo"
               for g in regions)
    # rerun: resumed as complete; another vocabulary is another run
    assert json.loads(run_cli(*args).stdout)["skipped"] is True
    other = write(tmp_path, "other.txt", "cat\n")
    again = run_cli("pseudo", "--input", tmp_path / "imgs", "--out", tmp_path / "p", "--classes", other, *common,
                    check=False)
    assert again.returncode == 1 and "other inputs or settings" in again.stderr
    # exports: ODVG OD with the label map, COCO with the vocabulary's categories
    run_cli("export", "odvg", tmp_path / "p", "--out", tmp_path / "o.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "o.label_map.json").read_text()) == {str(i): n for i, n in enumerate(vocab)}
    inst = [i for x in lines for i in x["detection"]["instances"]]
    assert len(inst) == len(regions) and all(vocab[i["label"]] == i["category"] for i in inst)
    run_cli("export", "coco", tmp_path / "p", "--out", tmp_path / "c.json")
    coco = COCO(str(tmp_path / "c.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == vocab
    assert len(coco.getAnnIds()) == len(regions)
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert sorted(names[a["category_id"]] for a in coco.loadAnns(coco.getAnnIds())) == \
        sorted(g["category"] for g in regions)
    # refilter keeps the OD kind and the label map
    run_cli("refilter", tmp_path / "p", "--out", tmp_path / "rf", "--fused-threshold", "0")
    rf = Dataset(tmp_path / "rf")
    assert rf.manifest.kind == "od" and rf.manifest.label_map() == ds.manifest.label_map()
    assert np.isnan([r["image_score"] for r in _candidates(tmp_path / "p")]).all()  # no captions: no image score


def _candidates(root):
    import pyarrow.parquet as pq

    return [r for f in sorted((root / "candidates").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_a_byte_order_mark_is_no_part_of_the_first_name(tmp_path):
    # Windows editors save "UTF-8 with BOM": the text form gave a class '\ufeffperson', the JSON form an error
    (tmp_path / "c.txt").write_bytes("person|man\ncat\n".encode("utf-8-sig"))
    assert read_vocabulary(tmp_path / "c.txt") == [["person", "man"], ["cat"]]
    (tmp_path / "c.json").write_bytes(json.dumps(["person", "cat"]).encode("utf-8-sig"))
    assert read_vocabulary(tmp_path / "c.json") == [["person"], ["cat"]]


def test_vocabulary_only_without_classes_is_refused(tmp_path):
    # it was ignored: the run prompted the caption phrases alone and wrote a phrase dataset
    from workflows.pseudo_label import run_pseudo

    with pytest.raises(ValueError, match="--vocabulary-only.*--classes FILE"):
        run_pseudo(EXAMPLES / "cc3m_sample", tmp_path / "p", PseudoConfig(vocabulary_only=True))
    assert not (tmp_path / "p").exists()
    proc = run_cli("pseudo", "--input", EXAMPLES / "cc3m_sample", "--out", tmp_path / "p", "--vocabulary-only",
                   check=False)
    assert proc.returncode == 1 and "give the classes (--classes FILE)" in proc.stderr
