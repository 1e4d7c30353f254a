"""Property-based tests over generated inputs (COCO, GoldG, Open Images, img2dataset/webdataset shards): whatever
the input, no crash, every record and box is kept or rejected with a reason, and no box lands on another record.

Examples are derandomized (`conftest.py`'s hypothesis profile): every run tries the same inputs."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
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
    for r in recs:  # what is kept is valid: inside its image (formats.boxes.clip_to_image), with area
        assert r["width"] > 0 and r["height"] > 0 and not r["file_name"].startswith(("/", ".."))
        for g in r["regions"]:
            x1, y1, x2, y2 = g["bbox"]
            assert all(math.isfinite(v) for v in g["bbox"]) and 0 <= x1 < x2 <= r["width"] and 0 <= y1 < y2 <= r["height"]
            assert g["label"] in (0, 1, 2) and g["category"] == f"cat{g['label'] + 1}"
    ids = [r["image_id"] for r in recs]
    assert len(ids) == len(set(ids))
    by_image = boxes_by_image(doc["annotations"])
    assert_boxes_belong(recs, by_image, clip=True)
    assert_clipped_count(m.counts["boxes_clipped"], recs, by_image)


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
    from formats.phrase_rules import has_word, phrase_key, trim_span

    (ps,) = _tools()["ex"]([cap])
    for p in ps:
        phrase, spans = p["phrase"], p["tokens_positive"]
        (s0, e0) = spans[0]
        assert cap[s0:e0] == phrase  # the phrase is the caption's text at its first span
        assert all(phrase_key(cap[s:e]) == phrase_key(phrase) for s, e in spans)  # the others up to case/space
        assert spans == sorted(spans) and len({tuple(x) for x in spans}) == len(spans)
        assert has_word(phrase) and has_word(phrase[0]) and has_word(phrase[-1])  # trimmed: no "'s", no space
        assert all(trim_span(cap, s, e) == (s, e) for s, e in spans)  # nor the "s" of a possessive ending
    assert len({phrase_key(p["phrase"]) for p in ps}) == len(ps)  # deduplicated
    if ps:
        _one_group_per_phrase([p["phrase"] for p in ps])


@settings(max_examples=150, deadline=None)
@given(names=st.lists(st.text(min_size=1, max_size=12).filter(lambda s: bool(__import__("re").search(r"\w", s))),
                      min_size=1, max_size=6))
def test_any_names_with_a_word_make_one_group_each(names):
    from detector.data import promptable

    # the rule training and inference share: a word outside the separators ("[SEP]" alone has none)
    names = [n for n in names if promptable(n, _tools()["seps"])]
    assume(names)
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
    from formats.phrase_rules import has_word, trim_span

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
                assert trim_span(r["caption"], s, e) == (s, e)  # no "s" of a possessive ending left
    # exactly the boxes with a word (past any possessive ending) somewhere in their spans are kept
    wordy = sum(any(trim_span(doc["images"][a["image_id"]]["caption"], s, e) is not None
                    for s, e in a["tokens_positive"]) for a in doc["annotations"])
    assert kept == wordy
# -- ids, GoldG, Open Images, img2dataset / webdataset: every record kept or rejected, no box moved ----------

any_id = st.sampled_from([1, 2, 3, "1", "01", "3", "a", "2008_000123", 3.0, "", None, True, 1.5])


def id_text(v):
    """The text an id is matched by (formats.ids): None where it is not a valid id."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else None
    if isinstance(v, int):
        return str(v)
    return v if v.strip() else None


def boxes_by_image(anns, clip=None) -> dict:
    """xyxy boxes of the annotations, keyed by the text of their image_id."""
    out = {}
    for a in anns:
        b = a.get("bbox")
        if not (isinstance(b, list) and len(b) == 4 and all(isinstance(x, (int, float)) and math.isfinite(x)
                                                            for x in b)):
            continue
        out.setdefault(id_text(a.get("image_id")), []).append([b[0], b[1], b[0] + b[2], b[1] + b[3]])
    return out


def assert_boxes_belong(recs, by_image, clip: bool = False):
    """Every kept region is a box of an annotation that names its record's image (never another image's)."""
    for r in recs:
        mine = by_image.get(r["image_id"].split("/", 1)[1], [])
        for g in r["regions"]:
            cands = [[min(max(v, 0), r["width" if k % 2 == 0 else "height"]) for k, v in enumerate(b)] if clip else b
                     for b in mine]
            assert any(g["bbox"] == pytest.approx(c) for c in cands), (r["image_id"], g["bbox"], mine)


def assert_clipped_count(n: int, recs, by_image) -> None:
    """`boxes_clipped` lies between the kept regions that equal no source box as given (surely clipped) and
    those that touch an image side (perhaps clipped)."""
    surely = perhaps = 0
    for r in recs:
        mine = by_image.get(r["image_id"].split("/", 1)[1], [])
        for g in r["regions"]:
            x1, y1, x2, y2 = g["bbox"]
            surely += not any(g["bbox"] == pytest.approx(b) for b in mine)
            perhaps += x1 == 0 or y1 == 0 or x2 == r["width"] or y2 == r["height"]
    assert surely <= n <= perhaps


@st.composite
def coco_files_with_any_ids(draw):
    images = [{"id": draw(any_id), "file_name": f"i{i}.jpg", "width": 640, "height": 480}
              for i in range(draw(st.integers(0, 6)))]
    anns = [{"id": draw(st.one_of(st.integers(1, 40), any_id)), "image_id": draw(any_id), "category_id": 1,
             "bbox": [float(k), float(draw(st.integers(0, 50))), 10.0, 10.0], "area": 100.0}
            for k in range(draw(st.integers(0, 12)))]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=coco_files_with_any_ids(), window=st.sampled_from([64, 1 << 20]))
def test_coco_ids_of_any_type_never_move_a_box(tmp_path_factory, doc, window):
    tmp = tmp_path_factory.mktemp("ids")
    path = tmp / "in.json"
    path.write_text(json.dumps(doc))
    try:
        m = convert_coco(path, tmp / "ds", CocoConvertConfig(source="custom"), window_bytes=window)
    except ConversionError as e:  # only for 3 and "3" in one images array
        assert str(path) in str(e) and "differ only in JSON type" in str(e)
        texts = [(id_text(i["id"]), isinstance(i["id"], str)) for i in doc["images"] if id_text(i["id"])]
        assert any((t, True) in texts and (t, False) in texts for t, _ in texts)
        return
    ds = Dataset(tmp / "ds")
    recs, rej = ds.read().to_pylist(), ds.read_rejects().to_pylist()
    assert len(recs) + sum(r["record"].startswith("images[") for r in rej) == len(doc["images"]) == m.counts["images_in"]
    assert sum(len(r["regions"]) for r in recs) + sum(r["record"].startswith("annotations[") for r in rej) == len(doc["annotations"])
    texts = Counter(id_text(i["id"]) for i in doc["images"] if id_text(i["id"]) is not None)
    # an id that two images have is no record: neither image can be told to own its boxes
    assert sorted(r["image_id"] for r in recs) == sorted(f"custom/{t}" for t, n in texts.items() if n == 1)
    assert_boxes_belong(recs, boxes_by_image(doc["annotations"]))


@st.composite
def goldg_files(draw):
    caption = "a red fish near two blue boats"
    images = [{"id": draw(any_id), "file_name": f"{i}.jpg", "width": draw(st.sampled_from([100, 0, "80"])),
               "height": 80, "caption": draw(st.sampled_from([caption, None, "x"]))}
              for i in range(draw(st.integers(0, 5)))]
    spans = st.lists(st.lists(st.integers(-2, 35), min_size=2, max_size=2), max_size=3)
    anns = [{"id": k + 1, "image_id": draw(any_id), "area": draw(st.sampled_from([100.0, 0.0])),
             "bbox": draw(st.one_of(st.lists(st.floats(-20, 120, allow_nan=False), min_size=4, max_size=4),
                                    st.none())),
             "tokens_positive": draw(spans), "iscrowd": draw(st.sampled_from([0, 0, 1]))}
            for k in range(draw(st.integers(0, 10)))]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=goldg_files(), window=st.sampled_from([64, 1 << 20]))
def test_goldg_every_caption_and_box_kept_or_rejected_and_never_moved(tmp_path_factory, doc, window):
    from formats.converters.goldg import GoldGConvertConfig, convert_goldg

    tmp = tmp_path_factory.mktemp("goldg")
    path = tmp / "in.json"
    path.write_text(json.dumps(doc))
    try:
        m = convert_goldg(path, tmp / "ds", GoldGConvertConfig(), window_bytes=window)
    except ConversionError as e:
        assert str(path) in str(e) and "differ only in JSON type" in str(e)
        return
    ds = Dataset(tmp / "ds")
    recs, rej = ds.read().to_pylist(), ds.read_rejects().to_pylist()
    assert len(recs) + sum(r["record"].startswith("images[") for r in rej) == len(doc["images"]) == m.counts["images_in"]
    assert sum(len(r["regions"]) for r in recs) + sum(r["record"].startswith("annotations[") for r in rej) == len(doc["annotations"])
    by_image = boxes_by_image(doc["annotations"])
    assert_boxes_belong(recs, by_image, clip=True)
    assert_clipped_count(m.counts["boxes_clipped"], recs, by_image)
    for r in recs:
        for g in r["regions"]:
            assert g["phrase"] == " ".join(r["caption"][s:e] for s, e in g["tokens_positive"])


OI_HEADER = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
coord = st.one_of(st.floats(-0.2, 1.2, allow_nan=False).map(lambda v: f"{v:.3f}"), st.sampled_from(["", "x", "nan"]))


@st.composite
def oi_lines(draw):
    lines = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["ok", "ok", "ok", "short", "long", "bytes"]))
        iid = draw(st.sampled_from(["img1", "img2", "img3", "../x"]))
        mid = draw(st.sampled_from(["/m/a", "/m/b", "/m/zz"]))
        fields = [iid, "xclick", mid, "1", draw(coord), draw(coord), draw(coord), draw(coord), "0", "0",
                  draw(st.sampled_from(["0", "1"])), "0", "0"]
        line = ",".join(fields).encode()
        if kind == "short":
            line = ",".join(fields[:draw(st.integers(2, 12))]).encode()
        elif kind == "long":
            line += b",9"
        elif kind == "bytes":
            line = line.replace(b"xclick", b"x\xffclick")
        lines.append((kind, iid, fields, line))
    return lines


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=oi_lines())
def test_openimages_every_line_kept_or_rejected_with_its_number(tmp_path_factory, lines):
    from formats.converters.openimages import OpenImagesConvertConfig, convert_openimages

    tmp = tmp_path_factory.mktemp("oi")
    ann = tmp / "ann"
    ann.mkdir()
    (ann / "x-train-annotations-bbox.csv").write_bytes(OI_HEADER.encode() + b"\n" + b"\n".join(x[3] for x in lines) + b"\n")
    (ann / "class-descriptions-boxable.csv").write_text("/m/a,A\n/m/b,B\n")
    sizes = tmp / "sizes.csv"
    sizes.write_text("ImageID,width,height\nimg1,100,50\nimg2,200,100\nimg3,10,10\n")
    try:
        m = convert_openimages(ann, tmp / "ds", OpenImagesConvertConfig(sizes=str(sizes)))
    except ConversionError as e:  # a file with no readable line
        assert "x-train-annotations-bbox.csv" in str(e) and len(str(e).splitlines()) <= 2
        assert all(k != "ok" for k, *_ in lines)
        return
    ds = Dataset(tmp / "ds")
    recs, rej = ds.read().to_pylist(), ds.read_rejects().to_pylist()
    line_rejects = sorted(int(r["record"].split()[1]) for r in rej if r["record"].startswith("line "))
    assert len(line_rejects) == len(set(line_rejects))
    assert sum(len(r["regions"]) for r in recs) + len(line_rejects) == len(lines) == m.counts["boxes_in"]
    for n in line_rejects:
        assert 2 <= n <= len(lines) + 1
    for n, (kind, *_rest) in enumerate(lines, start=2):
        if kind != "ok":  # a field missing or too many, or bytes that are not UTF-8
            assert n in line_rejects
    size = {"img1": (100, 50), "img2": (200, 100), "img3": (10, 10)}
    clipped = 0
    for r in recs:  # an image's regions are its kept lines, in line order, each clipped to the image
        iid = r["image_id"].split("/", 1)[1]
        w, h = size[iid]
        mine = []
        for n, (_kind, lid, f, _) in enumerate(lines, start=2):
            if lid == iid and n not in line_rejects:
                x1, x2, y1, y2 = (float(v) for v in f[4:8])
                mine.append([max(x1, 0) * w, max(y1, 0) * h, min(x2, 1) * w, min(y2, 1) * h])
                clipped += x1 < 0 or y1 < 0 or x2 > 1 or y2 > 1
        assert [g["bbox"] for g in r["regions"]] == [pytest.approx(c) for c in mine]
        for g in r["regions"]:
            assert 0 <= g["bbox"][0] < g["bbox"][2] <= w and 0 <= g["bbox"][1] < g["bbox"][3] <= h
    assert m.counts["boxes_clipped"] == clipped


@st.composite
def wds_samples(draw):
    samples = []
    for k in range(draw(st.integers(0, 6))):
        key = f"{k:05d}"
        caption = draw(st.sampled_from(["a dog", "two cats on a mat", "", None]))
        samples.append({
            "key": key, "image": draw(st.sampled_from(["jpg", "png", None, "broken"])),
            "txt": None if caption is None else (caption.encode() if draw(st.booleans()) else b"\xff" + caption.encode()),
            "json": draw(st.sampled_from([None, "ok", "failed", "garbage", "grit"])),
        })
    return samples


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples=wds_samples())
def test_webdataset_every_sample_kept_or_rejected_and_never_mixed(tmp_path_factory, samples):
    import io
    import tarfile

    from PIL import Image

    tmp = tmp_path_factory.mktemp("wds")
    raw = tmp / "raw"
    raw.mkdir()
    with tarfile.open(raw / "00000.tar", "w") as tf:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        for i, s in enumerate(samples):
            if s["image"] in ("jpg", "png"):
                buf = io.BytesIO()
                Image.new("RGB", (10 + i, 20), (i, 0, 0)).save(buf, "JPEG" if s["image"] == "jpg" else "PNG")
                add(f"{s['key']}.{s['image']}", buf.getvalue())
            elif s["image"] == "broken":
                add(f"{s['key']}.jpg", b"not an image")
            if s["txt"] is not None:
                add(f"{s['key']}.txt", s["txt"])
            meta = {"ok": {"key": s["key"], "status": "success"}, "failed": {"status": "failed_to_download",
                                                                             "error_message": "404"},
                    "grit": {"status": "success", "caption": "a dog", "ref_exps": [grit_box(i)]},
                    "garbage": None, None: None}[s["json"]]
            if s["json"] == "garbage":
                add(f"{s['key']}.json", b"{not json")
            elif meta is not None:
                add(f"{s['key']}.json", json.dumps(meta).encode())
    m, recs, keys, rejected = convert_shards(raw, tmp / "ds")
    present = [s["key"] for s in samples if s["image"] or s["txt"] is not None or s["json"]]  # a sample has a member
    assert sorted(keys + rejected_keys(rejected)) == sorted(present)
    assert m.counts["images"] == len(recs) and m.counts["images_in"] == len(present)
    by_key = {s["key"]: s for s in samples}
    for r, k in zip(recs, keys):
        s = by_key[k]
        assert r["file_name"] == f"tar://{k}.{'png' if s['image'] == 'png' else 'jpg'}::00000.tar"
        assert (r["width"], r["height"]) == (10 + int(k), 20)  # its own image's size
        want = s["txt"].decode() if s["txt"] is not None else ("a dog" if s["json"] == "grit" else None)
        assert r["caption"] == want
        for g in r["regions"]:
            assert g["phrase"] == r["caption"][g["tokens_positive"][0][0]:g["tokens_positive"][0][1]]
        i = int(k)
        _, _, x1, y1, x2, y2, _ = grit_box(i)
        own = [max(x1, 0) * (10 + i), max(y1, 0) * 20, min(x2, 1) * (10 + i), min(y2, 1) * 20]
        assert len(r["regions"]) <= (s["json"] == "grit")  # only a GRIT sample's .json has boxes
        for g in r["regions"]:  # its own box, clipped, in its own image's pixels
            assert g["bbox"] == pytest.approx(own)
    assert m.counts.get("boxes_clipped", 0) == sum(len(r["regions"]) for r in recs)  # every GRIT box reaches past


def grit_box(i: int) -> list[float]:
    """Sample i's GRIT ref_exp ("dog" in "a dog"): a box of its own that reaches past the left and bottom sides."""
    return [2, 5, -0.1 + 0.05 * i, 0.1, 0.6 + 0.05 * i, 1.2, 0.5]


def convert_shards(raw, out):
    """`convert grit`-style conversion of a shard folder: manifest, records, their keys, reject record names."""
    from formats.converters.img2dataset import Img2DatasetConvertConfig, convert_img2dataset

    m = convert_img2dataset(raw, out, Img2DatasetConvertConfig(source="g", spans="ref_exps"))
    ds = Dataset(out)
    recs = ds.read().to_pylist()
    rejected = [r["record"] for r in (ds.read_rejects().to_pylist() if ds.manifest.reject_parts else [])]
    return m, recs, [r["image_id"].split("/", 1)[1] for r in recs], rejected


def rejected_keys(records: list[str]) -> list[str]:
    """Sample keys named by whole-sample rejects (``key=K``; span rejects ``key=K ref_exps[j]`` are not samples)."""
    return [r.split("=", 1)[1] for r in records if r.startswith("key=") and " " not in r]


chunk = st.lists(st.one_of(st.floats(-0.5, 40, allow_nan=False), st.none(), st.just(float("nan"))), min_size=5, max_size=7)


@st.composite
def img2dataset_rows(draw):
    n = draw(st.integers(0, 6))
    return [{"key": f"{k:09d}", "caption": draw(st.sampled_from(["a dog on a mat", "", None])),
             "status": draw(st.sampled_from(["success", "success", "failed_to_download"])),
             "error_message": None, "width": draw(st.sampled_from([64, 0, None])), "height": 32,
             "ref_exps": draw(st.lists(chunk, max_size=3))} for k in range(n)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=img2dataset_rows())
def test_img2dataset_parquet_every_row_kept_or_rejected_and_boxes_stay_on_their_row(tmp_path_factory, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = tmp_path_factory.mktemp("i2d")
    raw = tmp / "raw"
    raw.mkdir()
    schema = pa.schema([("key", pa.string()), ("caption", pa.string()), ("status", pa.string()),
                        ("error_message", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
                        ("ref_exps", pa.list_(pa.list_(pa.float64())))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), raw / "00000.parquet")
    (raw / "00000_stats.json").write_text("{}")
    m, recs, keys, rejected = convert_shards(raw, tmp / "ds")
    assert sorted(keys + rejected_keys(rejected)) == sorted(r["key"] for r in rows)
    assert m.counts["images_in"] == len(rows)
    by_key = {r["key"]: r for r in rows}
    for r, k in zip(recs, keys):
        src = by_key[k]
        w, h = src["width"], src["height"]
        mine = [[min(max(c[i], 0.0), 1.0) * (w if i % 2 == 0 else h) for i in range(2, 6)] for c in src["ref_exps"]
                if len(c) >= 6 and None not in c[:6] and all(math.isfinite(v) for v in c[:6])]
        for g in r["regions"]:
            s, e = g["tokens_positive"][0]
            assert g["phrase"] == (src["caption"] or "")[s:e]
            assert any(g["bbox"] == pytest.approx(b) for b in mine)
            assert 0 <= g["bbox"][0] < g["bbox"][2] <= w and 0 <= g["bbox"][1] < g["bbox"][3] <= h
    assert m.counts["boxes_clipped"] <= sum(len(r["regions"]) for r in recs)
