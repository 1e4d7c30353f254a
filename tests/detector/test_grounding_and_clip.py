"""Grounding detector and CLIP scorer on tiny models loaded through from_pretrained."""

from __future__ import annotations

import numpy as np
import pytest

from detector.clip_scorer import RegionScorer
from detector.grounding import GroundingDetector
from detector.prompts import build_prompts


def test_prompts_fit_the_token_limit_and_keep_spans():
    phrases = ["red car", "dog", "a very long phrase indeed", "cat"]
    counts = [2, 1, 5, 1]
    prompts = build_prompts(phrases, counts, max_tokens=10)
    assert [p[0] for p in prompts] == [[0, 1], [2, 3]]  # 2 + (2+1) + (1+1) = 7; 2 + (5+1) + (1+1) = 10
    for idx, text, spans in prompts:
        assert [text[s:e] for s, e in spans] == [phrases[i] for i in idx]
        assert sum(counts[i] + 1 for i in idx) + 2 <= 10


def test_detect_prompts_dotted_phrases_whole_and_skips_wordless_ones(tiny_models, sample_images):
    det = GroundingDetector(str(tiny_models["detector"]), box_threshold=0.0)
    propose, texts = det.propose, []
    det.propose = lambda *a, **k: texts.extend(det.tokenizer.batch_decode(a[3], skip_special_tokens=True)) or propose(*a, **k)
    (d,) = det.detect(sample_images[:1], [["st. mary church", "...", "dog"]])
    assert texts == ["st mary church. dog."]
    assert len(d) == 20 and set(d.phrase.tolist()) <= {0, 2}
    assert len(det.detect(sample_images[:1], [["?"]])[0]) == 0


def test_positive_map_averages_each_phrase_own_tokens():
    import torch

    from detector.device_ops import positive_map
    from detector.prompts import token_spans

    # "red car . dog ." -> tokens: [CLS] red car . dog . [SEP]
    offsets = np.array([[0, 0], [0, 3], [4, 7], [8, 9], [10, 13], [14, 15], [0, 0]])
    spans = token_spans([(0, 7), (10, 13)], offsets, limit=8)
    assert spans.tolist() == [[1, 3], [4, 5]]
    pos = positive_map(torch.from_numpy(spans)[None], width=8)[0]
    assert pos[0].tolist() == [0, 0.5, 0.5, 0, 0, 0, 0, 0] and pos[1].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    # tokens past the text limit are not part of any phrase; a span without tokens maps to nothing
    assert token_spans([(10, 13), (20, 25)], offsets, limit=4).tolist() == [[0, 0], [0, 0]]


def test_detect_returns_boxes_inside_images_for_every_phrase(tiny_models, sample_images):
    det = GroundingDetector(str(tiny_models["detector"]), box_threshold=0.0, batch_size=2)
    phrases = [["cup", "red saucer", "spoon"], ["rocket", "towers"]]
    out = det.detect(sample_images, phrases)
    assert len(out) == 2
    for im, d, ph in zip(sample_images, out, phrases):
        w, h = im.size
        assert len(d) == 20  # one candidate per query
        assert (d.boxes[:, 0] >= 0).all() and (d.boxes[:, 2] <= w).all() and (d.boxes[:, 3] <= h).all()
        assert (d.boxes[:, 2] >= d.boxes[:, 0]).all() and set(d.phrase.tolist()) <= set(range(len(ph)))
    # a prompt past the token limit is split, and boxes still point at the right phrases
    det.max_tokens = 8
    many = [["cup", "red saucer", "spoon", "wooden table", "coffee"]]
    (d,) = det.detect(sample_images[:1], many)
    assert len(d) == 20 * 3 and set(d.phrase.tolist()) <= set(range(5)) and len(set(d.phrase.tolist())) >= 3
    assert det.detect(sample_images, [[], []])[0].boxes.shape == (0, 4)


def test_detector_is_deterministic_on_cpu(tiny_models, sample_images):
    det = GroundingDetector(str(tiny_models["detector"]), box_threshold=0.0)
    a = det.detect(sample_images, [["cup"], ["rocket"]])
    b = det.detect(sample_images, [["cup"], ["rocket"]])
    assert all(np.array_equal(x.boxes, y.boxes) and np.array_equal(x.scores, y.scores) for x, y in zip(a, b))


def test_clip_scores(tiny_models, sample_images):
    s = RegionScorer(str(tiny_models["clip"]), margin=0.5)
    e = s.embed_boxes(sample_images[0], np.array([[100, 100, 200, 150], [5, 5, 5, 5]]))
    t = s.embed_texts(["cup", "plate"])
    assert e.shape == t.shape == (2, 16)
    assert np.linalg.norm(e, axis=1) == pytest.approx(1, abs=1e-5)
    sim = s.similarity(e, t)
    assert ((sim >= 0) & (sim <= 1)).all()
    assert s.similarity(e[:1], e[:1])[0] == pytest.approx(1.0, abs=1e-5)
    # cached text embeddings equal fresh ones
    assert np.allclose(s.embed_texts(["plate"]), t[1:], atol=1e-6)


def test_a_text_embedding_does_not_depend_on_its_companions_or_the_cache(tiny_models):
    """A resumed run sees other texts before and beside a phrase than an uninterrupted one: its embedding must
    be bitwise the same (a fixed call shape; padding to the batch's longest text changed the float sums)."""
    from detector.clip_scorer import TEXT_BATCH

    texts = ["dog", "a red motorcycle in a garage", "cup", "launch pad"] + [f"thing {i}" for i in range(TEXT_BATCH)]
    together = RegionScorer(str(tiny_models["clip"])).text_features(texts).numpy()
    alone = RegionScorer(str(tiny_models["clip"]))
    singles = np.stack([alone.text_features([t]).numpy()[0] for t in reversed(texts)])[::-1]
    assert np.array_equal(together, singles)
    other = RegionScorer(str(tiny_models["clip"]))
    other.text_features(["launch pad", "x" * 60])  # another cache history
    assert np.array_equal(other.text_features(texts).numpy(), together)
    assert together.shape == (len(texts), 16) and not np.allclose(together[0], together[1])


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="ovlabel models tiny"):
        GroundingDetector(str(tmp_path / "nothing"))
