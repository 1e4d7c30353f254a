"""Evaluation arithmetic with detectors whose answers are known: COCO AP, grounding recall@k, pseudo quality."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import EXAMPLES, run_cli

from detector.eval_gold import EvaluationError
from detector.eval_grounding import flickr30k_recall
from detector.evaluate import coco_ap, pseudo_quality
from formats import schema as S
from formats.dataset import Dataset, DatasetWriter, Manifest
from formats.detections import Detections
from formats.images import decode_image, read_image_bytes


@pytest.fixture
def gold(sample_gold):
    return sample_gold


def _key(im) -> str:
    return hashlib.md5(im.tobytes()).hexdigest()


class Oracle:
    """Answers with the gold boxes of each image (found by its pixels), optionally shifted or mislabelled."""

    def __init__(self, records: list[dict], shift: float = 0.0, wrong_every: int = 0):
        root = str(EXAMPLES / "sample" / "images")
        self.by_pixels = {_key(decode_image(read_image_bytes(root, r["file_name"]))): r for r in records}
        self.shift, self.wrong_every = shift, wrong_every

    def detect(self, images, phrases):
        out = []
        for im, names in zip(images, phrases):
            r = self.by_pixels[_key(im)]
            boxes, scores, idx = [], [], []
            for k, g in enumerate(r["regions"]):
                name = g["category"] or g["phrase"]
                j = names.index(name)
                if self.wrong_every and k % self.wrong_every == 0:
                    j = (j + 1) % len(names)
                boxes.append(np.asarray(g["bbox"]) + self.shift)
                scores.append(0.9)
                idx.append(j)
            out.append(Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                                  np.asarray(idx, np.int64)))
        return out


def test_coco_ap_of_perfect_and_mislabelled_answers(gold):
    recs = Dataset(gold).read().to_pylist()
    assert coco_ap(Oracle(recs), gold)["AP"] == pytest.approx(1.0)
    half = coco_ap(Oracle(recs, wrong_every=2), gold)
    assert 0.2 < half["AP"] < 0.9 and half["gt_boxes"] == sum(len(r["regions"]) for r in recs)


def test_grounding_recall_at_k(gold, tmp_path):
    recs = Dataset(gold).read().to_pylist()
    rows = [{**{c: r[c] for c in S.CORE_COLUMNS if c != "regions"}, "caption": " ".join(g["category"] for g in r["regions"]),
             "regions": [{**g, "phrase": g["category"], "category": None, "label": None} for g in r["regions"]]}
            for r in recs]
    vg = tmp_path / "vg"
    w = DatasetWriter(vg, Manifest(kind="vg", source="t", image_root=Dataset(gold).manifest.image_root))
    w.write_part("part-00000.parquet", S.conform(pa.Table.from_pylist(rows, schema=S.CORE_SCHEMA)))
    w.finish()
    perfect = flickr30k_recall(Oracle(rows), vg)
    assert perfect["R@1"] == 1.0 and perfect["phrases"] == sum(len({g["phrase"] for g in r["regions"]}) for r in rows)
    far = flickr30k_recall(Oracle(rows, shift=10_000.0), vg)
    assert far["R@1"] == far["R@10"] == 0.0


def test_pseudo_quality_against_hidden_gold(gold, tmp_path):
    recs = Dataset(gold).read().to_pylist()
    template = next(g for r in recs for g in r["regions"])
    rows = []
    for r in recs:
        regs = [{**g, "origin": "pseudo", "score": 0.8, "bbox": [v + 2 for v in g["bbox"]]} for g in r["regions"]]
        regs.append({**template, "origin": "pseudo", "score": 0.1, "bbox": [0.0, 0.0, 3.0, 3.0]})  # a wrong box
        rows.append({**{c: r[c] for c in S.CORE_COLUMNS if c != "regions"}, "regions": regs})
    p = tmp_path / "pseudo"
    w = DatasetWriter(p, Manifest(kind="od", source="t", image_root=Dataset(gold).manifest.image_root))
    w.write_part("part-00000.parquet", S.conform(pa.Table.from_pylist(rows, schema=S.CORE_SCHEMA)))
    w.finish()
    q = pseudo_quality(p, gold)
    n = sum(len(r["regions"]) for r in recs)
    assert q["recall@0.5"] == 1.0 and q["precision@0.5"] == pytest.approx(n / (n + len(recs)), abs=1e-4)
    assert q["AP50"] == pytest.approx(1.0) and q["gold_boxes"] == n
    cli = json.loads(run_cli("evaluate", gold, "--pseudo", p).stdout)
    assert cli["recall@0.5"] == 1.0


def _pseudo_set(root, recs: list[dict], image_root, origin: str = "pseudo", prefix: str = "") -> str:
    rows = [{**{c: r[c] for c in S.CORE_COLUMNS if c != "regions"}, "image_id": prefix + r["image_id"],
             "regions": [{**g, "origin": origin, "score": 0.5} for g in r["regions"]]} for r in recs]
    w = DatasetWriter(root, Manifest(kind="od", source="t", image_root=image_root))
    w.write_part("part-00000.parquet", S.conform(pa.Table.from_pylist(rows, schema=S.CORE_SCHEMA)))
    w.finish()
    return str(root)


def test_pseudo_quality_refuses_sets_that_share_nothing(gold, tmp_path):
    """No shared image, or no pseudo region: an error naming both directories, never AP 0.0."""
    recs = Dataset(gold).read().to_pylist()
    root = Dataset(gold).manifest.image_root
    elsewhere = _pseudo_set(tmp_path / "elsewhere", recs, root, prefix="other/")
    with pytest.raises(EvaluationError, match=f"{elsewhere} shares no image with the gold set {gold}"):
        pseudo_quality(elsewhere, gold)
    unlabeled = _pseudo_set(tmp_path / "unlabeled", recs, root, origin="gold")
    with pytest.raises(EvaluationError, match=f"{unlabeled} has no pseudo regions to judge against {gold}"):
        pseudo_quality(unlabeled, gold)
    proc = run_cli("evaluate", gold, "--pseudo", elsewhere, check=False)
    assert proc.returncode != 0 and proc.stdout == "" and elsewhere in proc.stderr and str(gold) in proc.stderr
