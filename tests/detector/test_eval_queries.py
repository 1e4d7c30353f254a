"""MMDetection's (query, class) top-k and MDETR's per-phrase ranking on a real (tiny, random) GroundingDetector:
every query's best pair is what detect() returns; the pairs beyond it are there too."""

from __future__ import annotations

import numpy as np
import pytest

from detector.eval_queries import detect_query_class, phrase_detections, prompt_scores


@pytest.fixture(scope="module")
def tiny_detector(tiny_models):
    from detector.grounding import GroundingDetector

    return GroundingDetector(str(tiny_models["detector"]), device="cpu", box_threshold=0.0)


def test_top_k_pairs_contain_each_querys_best_class(tiny_detector, sample_images):
    im = sample_images[0]
    names = ["cup", "table", "spoon"]
    (det,) = tiny_detector.detect([im], [names])
    q = tiny_detector.model.config.num_queries
    boxes, scores, labels = detect_query_class(tiny_detector, im, names, k=q * len(names))
    assert len(scores) == q * len(names) and np.all(np.diff(scores) <= 0)  # every pair, best first
    uniq, inv = np.unique(boxes, axis=0, return_inverse=True)
    assert len(uniq) == q and np.all(np.bincount(inv.ravel()) == len(names))  # each query under each class
    best = np.array([scores[inv.ravel() == j].max() for j in range(len(uniq))])
    assert np.sort(best) == pytest.approx(np.sort(det.scores), abs=1e-6)  # detect(): each query's best class
    b5, s5, c5 = detect_query_class(tiny_detector, im, names, k=5)
    assert s5 == pytest.approx(scores[:5], abs=1e-7) and c5.tolist() == labels[:5].tolist()


def test_caption_phrases_rank_every_query(tiny_detector, sample_images):
    caption = "a cup on a table"
    spans = [(0, 5), (9, 16)]
    boxes, scores = prompt_scores(tiny_detector, sample_images[0], caption, spans)
    q = tiny_detector.model.config.num_queries
    assert boxes.shape == (q, 4) and scores.shape == (q, 2) and np.all((scores >= 0) & (scores <= 1))
    det = phrase_detections(tiny_detector, sample_images[0], caption, spans)
    assert len(det) == 2 * q and sorted(det.scores[det.phrase == 1]) == pytest.approx(sorted(scores[:, 1]))


def test_cli_runs_a_model_on_the_original_annotation_file(tiny_models):
    """`evaluate GOLD.json --image-root --model`: 100 (query, class) pairs per image, scored by COCOeval."""
    import json

    from conftest import EXAMPLES, run_cli

    out = json.loads(run_cli("evaluate", EXAMPLES / "sample" / "gold.json", "--model", tiny_models["detector"],
                             "--image-root", EXAMPLES / "sample" / "images", "--max-images", "2",
                             "--device", "cpu").stdout)
    assert out["protocol"] == "coco" and out["images"] == 2 and out["detections"] == 200  # 20 queries x 13 classes
    assert 0.0 <= out["AP"] <= 1.0 and set(out) >= {"AP50", "AP75", "APs", "APm", "APl", "AR100"}
