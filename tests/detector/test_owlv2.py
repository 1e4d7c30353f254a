"""The OWLv2 backend with a tiny random-weight model: transformers' own processing as the reference (square
padding, queries, box mapping), objectness, the evaluation path equal to the actor's, and pseudo-labeling
through Ray (CLI, class-list mode, resume)."""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import EXAMPLES, run_cli
from PIL import Image

from detector.owlv2 import PAD_VALUE

SAMPLE = EXAMPLES / "sample" / "images"


@pytest.fixture(scope="module")
def owl(tiny_owlv2):
    from detector.backends import load_detector

    return load_detector(str(tiny_owlv2), device="cpu", box_threshold=0.0)


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _reference(owl, image: Image.Image, names: list[str]):
    """transformers' pipeline: Owlv2Processor (its square padding set to the gray the OWLv2 authors pad with:
    transformers 5.x pads with 0.0) + model + post_process_grounded_object_detection with target_sizes
    (max, max) of the original image. Returns (inputs, boxes (Q, 4) clamped to the image, scores (Q, P),
    objectness (Q,))."""
    proc = owl.processor
    ip = proc.image_processor
    ip.pad = functools.partial(type(ip).pad, ip, constant_value=PAD_VALUE)
    try:
        inputs = proc(text=[names], images=[image], return_tensors="pt")
    finally:
        del ip.pad
    with torch.no_grad():
        out = owl.model(**inputs)
    side = max(image.size)
    post = proc.post_process_grounded_object_detection(out, threshold=-1.0, target_sizes=[(side, side)])[0]
    w, h = image.size
    boxes = post["boxes"].clamp_min(0).numpy()
    boxes = np.minimum(boxes, [w, h, w, h])
    return inputs, boxes, out.logits[0].sigmoid().numpy(), out.objectness_logits[0].sigmoid().numpy()


def _seen_inputs(owl):
    seen = []
    hook = owl.model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw), with_kwargs=True)
    return seen, hook


def test_the_resize_rule_is_the_square_of_the_processor(owl):
    rule = owl.resize_rule
    assert rule.square and rule.longest_edge == 64 == owl.side
    assert rule.resized(200, 100) == (64, 32) and rule.resized(100, 200) == (32, 64) and rule.resized(30, 10) == (64, 21)
    # one canvas for every image: the 64-px square plus the crop sampler's guard rows, rounded to 64 px
    assert {rule.canvas(*rule.resized(w, h)) for w, h in [(200, 100), (100, 200), (64, 64), (7, 3)]} == {(64, 128)}


@pytest.mark.parametrize("size", [(64, 32), (32, 64)])
def test_same_inputs_boxes_and_scores_as_transformers_on_a_non_square_image(owl, size):
    """An image already at the model's scale (no resampling on either side): the padded square, the queries,
    the boxes in original pixels (x max(w, h)) and the scores equal transformers' own pipeline's."""
    image = _image(*size)
    names = ["red car", "dog", "a horse"]  # within 16 tokens: the processor does not truncate
    inputs, ref_boxes, ref_scores, ref_obj = _reference(owl, image, names)
    seen, hook = _seen_inputs(owl)
    try:
        boxes, scores = owl.pair_scores(image, names)
    finally:
        hook.remove()
    (kw,) = seen
    assert kw["pixel_values"].shape == (1, 3, 64, 64)
    assert (kw["pixel_values"] - inputs["pixel_values"]).abs().max().item() < 1e-5
    assert torch.equal(kw["input_ids"], inputs["input_ids"]) and torch.equal(kw["attention_mask"], inputs["attention_mask"])
    assert scores.shape == (16, 3) and np.allclose(scores, ref_scores, atol=1e-6)
    assert np.allclose(boxes, ref_boxes, atol=1e-3)
    assert ref_boxes[:, 2:].max() > min(size) * 0.75  # boxes reach past the short side's scale: not x (w, h)


@pytest.mark.parametrize("size", [(256, 128), (128, 256), (500, 250)])
def test_a_shrunk_image_gives_the_processors_pixels_up_to_the_filter(owl, size):
    """A non-square image larger than the model input: shrunk here with PIL's bilinear filter, by transformers
    with a Gaussian blur and a linear zoom of the padded square. The model input is the same square: the image
    in the same place, the padding the same gray, the pixels within about 2/255 on average (a random tiny
    model's boxes amplify even that, so boxes are compared on exactly scaled images above)."""
    image = Image.open(SAMPLE / "rocket.jpg").convert("RGB").resize(size)
    inputs, *_ = _reference(owl, image, ["rocket"])
    seen, hook = _seen_inputs(owl)
    try:
        owl.pair_scores(image, ["rocket"])
    finally:
        hook.remove()
    ours, ref = seen[0]["pixel_values"][0], inputs["pixel_values"][0]
    w, h = (round(v * 64 / max(size)) for v in size)
    assert (ours[:, :h, :w] - ref[:, :h, :w]).abs().mean().item() < 2 / 255 / min(owl.std)
    # two pixels past the image's edge (which transformers blurs into the padding) both are the gray
    pad_ours, pad_ref = (ours[:, h + 2:, :], ref[:, h + 2:, :]) if h < 64 else (ours[:, :, w + 2:], ref[:, :, w + 2:])
    assert pad_ours.numel() and torch.allclose(pad_ours, pad_ref, atol=1e-5)


class _FixedBoxes(torch.nn.Module):
    """A stand-in for the model: every patch predicts the same normalised (cx, cy, w, h) box."""

    def __init__(self, box):
        super().__init__()
        self.box = torch.tensor(box)
        self.seen = []

    def forward(self, pixel_values, input_ids, attention_mask):
        self.seen.append(pixel_values)
        n, q = len(pixel_values), 4
        p = len(input_ids) // n
        return SimpleNamespace(logits=torch.zeros(n, q, p), objectness_logits=torch.zeros(n, q),
                               pred_boxes=self.box.expand(n, q, 4))


@pytest.mark.parametrize("size,box,expected", [
    ((200, 100), (0.5, 0.25, 0.5, 0.5), (50.0, 0.0, 150.0, 100.0)),
    ((100, 200), (0.25, 0.5, 0.5, 0.5), (0.0, 50.0, 100.0, 150.0)),
    ((300, 100), (1 / 6, 1 / 6, 1 / 3, 1 / 3), (0.0, 0.0, 100.0, 100.0)),
])
def test_boxes_of_a_non_square_image_map_by_its_longest_side(owl, size, box, expected):
    """Normalised to the padded square: the image's top half (2:1) is y in [0, 0.5]; x (w, h) would be wrong."""
    real = owl.model
    owl.model = _FixedBoxes(box)
    try:
        det = owl.detect([_image(*size)], [["thing"]])[0]
        (pv,) = owl.model.seen
    finally:
        owl.model = real
    assert len(det) == 4 and np.allclose(det.boxes, expected, atol=0.02)
    # the model input is the 64 x 64 square; the padding is the authors' gray, normalised
    gray = (PAD_VALUE - torch.tensor(owl.mean)) / torch.tensor(owl.std)
    w, h = (round(v * 64 / max(size)) for v in size)
    assert pv.shape == (1, 3, 64, 64)
    pad = pv[0, :, h:, :] if h < 64 else pv[0, :, :, w:]
    assert torch.allclose(pad, gray.view(3, 1, 1).expand_as(pad), atol=1e-6)


def test_queries_are_the_processors(owl):
    """Each phrase its own 16-token query: the CPU side's concatenated ids split on the device give the
    processor's input ids and attention mask; a padding phrase becomes a masked query (first token 0)."""
    from detector.prompts import pad_prompts

    names = ["red car", "x" * 40, "dog"]  # the long one is cut to 16 tokens, ending with <|endoftext|>
    ((idx, ids, spans),) = owl.encoder.encode([names])[0]
    assert idx == [0, 1, 2] and spans.tolist() == [[0, 8], [8, 24], [24, 29]] and len(ids) == 29
    a_ids, _, a_spans = pad_prompts([ids, ids[:9]], [spans, spans[:1]], owl.pad_id)
    q_ids, q_mask = owl.queries(torch.from_numpy(a_ids), torch.from_numpy(a_spans))
    ref = owl.processor(text=names, return_tensors="pt", truncation=True, max_length=16)
    assert q_ids.shape == (6, 16)
    assert torch.equal(q_ids[:3], ref["input_ids"]) and torch.equal(q_mask[:3], ref["attention_mask"])
    assert torch.equal(q_ids[3], ref["input_ids"][0]) and (q_ids[4:] == 0).all()
    assert q_mask[4:, 0].eq(1).all() and q_mask[4:, 1:].eq(0).all()
    # a phrase without a word character is no query (as Grounding DINO's prompts leave it out)
    assert [p[0] for p in owl.encoder.encode([["cat", "...", "dog"]])[0]] == [[0, 2]]


def test_objectness_is_kept_beside_each_candidate(owl):
    from detector.device_ops import assemble_canvases
    from detector.preprocess import prepare_image
    from detector.prompts import pad_prompts

    image = Image.open(SAMPLE / "coffee.jpg").convert("RGB")
    data, z = prepare_image(image, owl.resize_rule)
    canvas = assemble_canvases(torch.frombuffer(bytearray(data), dtype=torch.uint8), [0, len(data)], [z[0:2]],
                               [z[2:4]], z[4], z[5])
    ((_, ids, spans),) = owl.encoder.encode([["cup", "saucer"]])[0]
    a_ids, a_mask, a_spans = pad_prompts([ids], [spans], owl.pad_id)
    seen = []
    hook = owl.model.register_forward_hook(lambda _m, _i, out: seen.append(out.objectness_logits.sigmoid()))
    try:
        prop = owl.propose(canvas, torch.tensor([z[2:4]]), torch.tensor([image.size]), torch.from_numpy(a_ids),
                           torch.from_numpy(a_mask), torch.from_numpy(a_spans), torch.zeros(1, dtype=torch.long),
                           top_k=5)
    finally:
        hook.remove()
    obj = prop.objectness
    assert obj.shape == prop.scores.shape == (1, 5)
    assert ((obj >= 0) & (obj <= 1)).all() and obj.std() > 0
    # top-k keeps each box's own objectness
    kept = prop.scores[0]
    full = seen[0][0]
    assert all(any(abs(float(o) - float(f)) < 1e-6 for f in full) for o in obj[0]) and len(kept) == 5


def test_evaluation_detect_equals_the_actor_path(owl, tiny_owlv2, tiny_models):
    """The same image and phrases through the pipeline's CPU stages + model actor and through ``detect``
    (evaluation): the same boxes, scores and phrases; the actor adds objectness in [0, 1]."""
    from labeling.image_stages import LoadImages
    from labeling.model_stage import ModelStage
    from labeling.prompt_stages import TokenizePrompts

    names = ["coffee.jpg", "rocket.jpg", "chelsea.jpg"]
    phrases = [["cup", "red saucer"], ["rocket", "towers", "sky"], ["tabby cat"]]
    caps = [" . ".join(p) for p in phrases]
    ph = [[{"phrase": p, "tokens_positive": [[c.index(p), c.index(p) + len(p)]]} for p in ps] for c, ps in zip(caps, phrases)]
    table = pa.table({"image_id": names, "file_name": names, "image_root": [str(SAMPLE)] * 3, "caption": caps,
                      "phrases": pa.array(ph, pa.list_(pa.struct([("phrase", pa.string()),
                                                                   ("tokens_positive", pa.list_(pa.list_(pa.int32(), 2)))])))})
    t = LoadImages(owl.resize_rule)(table)
    assert set(zip(t.column("canvas_h").to_pylist(), t.column("canvas_w").to_pylist())) == {(128, 64)}
    t = TokenizePrompts(str(tiny_owlv2), str(tiny_models["clip"]))(t)
    stage = ModelStage({"detector": str(tiny_owlv2), "clip": str(tiny_models["clip"]), "device": "cpu",
                        "batch_size": 2, "box_threshold": 0.0, "top_k": 1000, "candidate_nms_iou": None,
                        "min_box_size": 0.0})
    rows = stage(t).to_pylist()
    images = [Image.open(SAMPLE / n).convert("RGB") for n in names]
    for r, det, img in zip(rows, owl.detect(images, phrases), images):
        b = np.array(r["cand_boxes"]).reshape(-1, 4)
        assert len(b) == len(det) == 16  # every patch, its best phrase
        order = np.lexsort(b.T[::-1])
        ref = np.lexsort(det.boxes.T[::-1])
        assert np.allclose(b[order], det.boxes[ref], atol=1e-4)
        assert np.allclose(np.array(r["cand_det"])[order], det.scores[ref], atol=1e-6)
        assert np.array_equal(np.array(r["cand_phrase"])[order], det.phrase[ref])
        w, h = img.size
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        obj = np.array(r["cand_objectness"])
        assert obj.shape == (16,) and ((obj >= 0) & (obj <= 1)).all()


def test_the_objectness_filter(tiny_models):
    """``objectness_threshold`` drops candidates under it; candidates without objectness (NaN) pass."""
    from labeling.candidates import select_regions
    from labeling.fuse import FilterConfig

    cands = [{"bbox": [0, 0, 10 + k, 10], "det_score": 0.5, "clip_score": 0.5, "phrase": f"p{k}", "label": None}
             for k in range(3)]
    filt = FilterConfig(fused_threshold=0.0, image_threshold=-1.0, objectness_threshold=0.4)
    kept, _ = select_regions(cands, 100, 100, 0.5, filt, [0.1, 0.5, float("nan")])
    assert [c["phrase"] for c in kept] == ["p1", "p2"]
    kept, _ = select_regions(cands, 100, 100, 0.5, filt, None)  # a Grounding DINO output: no objectness
    assert len(kept) == 3


# -- through Ray -------------------------------------------------------------------------------------------

LOW = ["--box-threshold", "0", "--fused-threshold", "0", "--image-threshold", "-1", "--num-cpus", "2"]


def _config(tiny_owlv2, tiny_models):
    from labeling.fuse import FilterConfig
    from workflows.pseudo_label import PseudoConfig

    return PseudoConfig(detector=str(tiny_owlv2), clip=str(tiny_models["clip"]), box_threshold=0.0,
                        filter=FilterConfig(fused_threshold=0.0, image_threshold=-1.0).to_dict(), images_per_part=2)


def _records(path) -> list[dict]:
    from formats.dataset import Dataset

    return Dataset(path).read().to_pylist()


@pytest.fixture(scope="module")
def owl_reference(tiny_owlv2, tiny_models, tmp_path_factory):
    from workflows.pseudo_label import RunOptions, run_pseudo

    out = tmp_path_factory.mktemp("owl") / "pseudo"
    return out, run_pseudo(EXAMPLES / "cc3m_sample", out, _config(tiny_owlv2, tiny_models), RunOptions(num_cpus=2))


@pytest.mark.slow
def test_pseudo_through_the_cli_and_refilter_by_objectness(owl_reference, tiny_owlv2, tiny_models, tmp_path):
    from formats.dataset import Dataset

    ref_out, ref_summary = owl_reference
    out = tmp_path / "p"
    summary = json.loads(run_cli("pseudo", "--input", EXAMPLES / "cc3m_sample", "--out", out, "--detector", tiny_owlv2,
                                 "--clip", tiny_models["clip"], "--images-per-part", "2", *LOW).stdout)
    assert summary["images_in"] == 8 and summary["rejected"] == 1 and summary["images"] == 7 and summary["boxes"] > 0
    m = Dataset(out).require_complete().manifest
    assert m.config["detector"] == str(tiny_owlv2) and m.provenance["models"]["detector"] == str(tiny_owlv2)
    recs = _records(out)
    assert recs == _records(ref_out)  # the CLI and the API give the same records
    for r in recs:
        assert r["regions"]
        for g in r["regions"]:
            x1, y1, x2, y2 = g["bbox"]
            assert 0 <= x1 <= x2 <= r["width"] and 0 <= y1 <= y2 <= r["height"] and x2 - x1 >= 2 and y2 - y1 >= 2
            assert r["caption"][g["tokens_positive"][0][0]:g["tokens_positive"][0][1]] == g["phrase"]
    cands = pa.concat_tables([pq.read_table(p) for p in sorted((out / "candidates").glob("*.parquet"))]).to_pylist()
    objectness = {}
    for c in cands:
        assert len(c["objectness"]) == len(c["candidates"]) > 0
        assert all(0.0 <= v <= 1.0 for v in c["objectness"])
        objectness.update({g["region_id"]: v for g, v in zip(c["candidates"], c["objectness"])})
    # refilter by objectness: every kept region's objectness is at least the threshold, and some are gone
    kept = [objectness[g["region_id"]] for r in recs for g in r["regions"]]
    thr = float(np.median(kept))
    assert 0 < thr < max(kept)
    rf = json.loads(run_cli("refilter", out, "--out", tmp_path / "rf", "--fused-threshold", "0", "--image-threshold",
                            "-1", "--objectness-threshold", str(thr)).stdout)
    after = [objectness[g["region_id"]] for r in _records(tmp_path / "rf") for g in r["regions"]]
    assert 0 < rf["boxes"] < summary["boxes"] and min(after) >= thr
    assert Dataset(tmp_path / "rf").manifest.config["filter"]["objectness_threshold"] == thr


@pytest.mark.slow
def test_resumed_run_equals_one_full_run(owl_reference, tiny_owlv2, tiny_models, tmp_path):
    from formats.dataset import Dataset
    from workflows.pseudo_label import RunOptions, run_pseudo

    ref_out, _ = owl_reference
    cfg = _config(tiny_owlv2, tiny_models)
    first = run_pseudo(EXAMPLES / "cc3m_sample", tmp_path / "p", cfg, RunOptions(num_cpus=2, max_units=1))
    assert first["units_done"] == 1 and not Dataset(tmp_path / "p").manifest.complete
    run_pseudo(EXAMPLES / "cc3m_sample", tmp_path / "p", cfg, RunOptions(num_cpus=2))
    assert _records(tmp_path / "p") == _records(ref_out)
    names = sorted(p.name for p in (ref_out / "candidates").iterdir())
    assert sorted(p.name for p in (tmp_path / "p" / "candidates").iterdir()) == names
    for n in names:
        assert pq.read_table(tmp_path / "p" / "candidates" / n).equals(pq.read_table(ref_out / "candidates" / n))


@pytest.mark.slow
def test_class_list_mode_with_owlv2(tiny_owlv2, tiny_models, tmp_path):
    from formats.dataset import Dataset

    run_cli("convert", "images", SAMPLE, "--out", tmp_path / "imgs")
    (tmp_path / "classes.txt").write_text("cat|kitty\ncoffee mug\nrocket ship|rocket\nperson\n")
    vocab = ["cat", "coffee mug", "rocket ship", "person"]
    summary = json.loads(run_cli("pseudo", "--input", tmp_path / "imgs", "--out", tmp_path / "p", "--classes",
                                 tmp_path / "classes.txt", "--detector", tiny_owlv2, "--clip", tiny_models["clip"],
                                 *LOW).stdout)
    n = Dataset(tmp_path / "imgs").read().num_rows
    assert summary["images_in"] == n == summary["images"] and summary["boxes"] > 0
    ds = Dataset(tmp_path / "p")
    assert ds.manifest.kind == "od" and ds.manifest.label_map() == {str(i): v for i, v in enumerate(vocab)}
    recs = ds.read(["width", "height", "regions"]).to_pylist()
    labels = set()
    for r in recs:
        for g in r["regions"]:
            assert vocab[g["label"]] == g["category"] and g["phrase"] is None
            x1, y1, x2, y2 = g["bbox"]
            assert 0 <= x1 <= x2 <= r["width"] and 0 <= y1 <= y2 <= r["height"]
            labels.add(g["label"])
    assert len(labels) >= 2  # boxes are labelled by their best query, not all by the first


def test_evaluate_runs_owlv2(owl, tiny_owlv2, sample_gold, sample_images):
    """``ovlabel evaluate --model OWLV2``: the backend is chosen from the checkpoint; MMDetection's (box, class)
    top-k ranks the boxes ``detect`` proposes, scored per class."""
    from detector.eval_queries import detect_query_class

    out = json.loads(run_cli("evaluate", sample_gold, "--model", tiny_owlv2, "--device", "cpu").stdout)
    assert out["protocol"] == "coco" and 0.0 <= out["AP"] <= 1.0
    image, names = sample_images[0], ["cup", "saucer", "spoon"]
    boxes, scores, label = detect_query_class(owl, image, names, 20)
    det = owl.detect([image], [names])[0]
    assert len(boxes) == 20 and (np.diff(scores) <= 0).all() and set(label.tolist()) <= {0, 1, 2}
    assert all(np.abs(det.boxes - b).max(1).min() < 1e-4 for b in boxes)
    best = {tuple(np.round(b, 3)): s for b, s in zip(det.boxes, det.scores)}
    assert scores[0] == pytest.approx(max(best.values()), abs=1e-6)  # the top pair is the best box's best class


def test_union_of_caption_phrases_and_a_vocabulary_with_owlv2(tiny_owlv2, tiny_models):
    """``--classes`` on captions (the union): a row's own phrases that are no class are its first prompt, the
    vocabulary's queries (built once) the next; each query's ids spell its text; the actor labels boxes with
    both kinds of entry."""
    from transformers import AutoImageProcessor

    from detector.preprocess import ResizeRule
    from labeling.image_stages import LoadImages
    from labeling.model_stage import ModelStage
    from labeling.prompt_stages import TokenizePrompts, class_index

    vocab = [["rocket ship", "rocket"], ["cup"], ["person"]]
    stage = TokenizePrompts(str(tiny_owlv2), str(tiny_models["clip"]), vocabulary=vocab, with_phrases=True)
    phrases = [{"phrase": "rocket", "tokens_positive": [[0, 6]]}, {"phrase": "launch pad", "tokens_positive": [[10, 20]]}]
    table = pa.table({"image_id": ["r"], "file_name": ["rocket.jpg"], "image_root": [str(SAMPLE)],
                      "caption": ["rocket on launch pad"],
                      "phrases": pa.array([phrases], pa.list_(pa.struct([("phrase", pa.string()),
                                                                         ("tokens_positive", pa.list_(pa.list_(pa.int32(), 2)))])))})
    out = stage(LoadImages(ResizeRule.from_processor(AutoImageProcessor.from_pretrained(tiny_owlv2)))(table))
    (ids,), (entries,), (spans,) = (out.column(c).to_pylist() for c in ("prompt_ids", "prompt_phrases", "prompt_token_spans"))
    assert entries == [[1], [class_index(i) for i in range(3)]]  # "rocket" is the class rocket ship
    decode = functools.partial(stage.encoder.tok.decode, skip_special_tokens=True)
    assert [decode(ids[1][a:b]) for a, b in spans[1]] == ["rocket ship", "cup", "person"]
    model = ModelStage({"detector": str(tiny_owlv2), "clip": str(tiny_models["clip"]), "device": "cpu",
                        "box_threshold": 0.0, "top_k": 1000, "candidate_nms_iou": None, "min_box_size": 0.0,
                        "classes": [v[0] for v in vocab], "with_phrases": True})
    (row,) = model(out).to_pylist()
    assert len(row["cand_phrase"]) == 32  # every patch for each of the two prompts
    assert set(row["cand_phrase"][:16]) == {1} and set(row["cand_phrase"][16:]) <= {-1, -2, -3}
