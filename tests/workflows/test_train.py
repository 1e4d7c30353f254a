"""Training that learns (overfit), the distributed path (Ray Train, two gloo workers), the batch loss fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector.train import STATE, TrainConfig, last_checkpoint
from workflows.training import train

pytestmark = pytest.mark.slow


def _ap(model, gold) -> dict:
    from detector.evaluate import coco_ap
    from detector.grounding import GroundingDetector

    return coco_ap(GroundingDetector(str(model), device="cpu", box_threshold=0.0), gold)


def test_overfit_raises_ap_and_loss_falls(tiny_models, sample_gold, tmp_path):
    before = _ap(tiny_models["detector"], sample_gold)
    cfg = TrainConfig(steps=400, batch_size=2, lr=5e-4, lr_backbone=5e-4, max_grad_norm=1.0, negatives=0,
                      checkpoint_every=200, log_every=100)
    stats = train(str(tiny_models["detector"]), [str(sample_gold)], tmp_path / "run", cfg, device="cpu")
    after = _ap(last_checkpoint(tmp_path / "run"), sample_gold)
    assert after["AP50"] >= before["AP50"] + 0.05 and after["AP"] > before["AP"], (before, after)
    losses = [h["loss"] for h in json.loads((last_checkpoint(tmp_path / "run") / STATE).read_text())["history"]]
    assert np.mean(losses[-50:]) < 0.9 * np.mean(losses[:50])
    assert stats["steps"] == 400 and 0 <= stats["data_wait_share"] < 1


def test_resume_from_last_checkpoint(tiny_models, sample_gold, tmp_path):
    cfg = TrainConfig(steps=6, batch_size=2, checkpoint_every=3, negatives=2, loader_workers=0)
    first = train(str(tiny_models["detector"]), [str(sample_gold)], tmp_path / "run", TrainConfig(
        **{**cfg.__dict__, "steps": 3}), device="cpu")
    assert first["steps"] == 3 and last_checkpoint(tmp_path / "run").name == "checkpoint-3"
    again = train(str(tiny_models["detector"]), [str(sample_gold)], tmp_path / "run", cfg, device="cpu")
    assert again["start"] == 3 and again["steps"] == 6  # steps 4-6 only
    state = json.loads((last_checkpoint(tmp_path / "run") / STATE).read_text())
    assert [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5, 6]
    assert (last_checkpoint(tmp_path / "run") / "model.safetensors").exists()


def test_batch_loss_with_different_phrase_counts(tiny_models, sample_gold):
    """transformers' loss offsets label maps wrongly in mixed batches; ours matches one-image-at-a-time."""
    import dataclasses

    import torch
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    from detector.data import load_examples, load_image, prompt_text, target
    from detector.loss import grounding_loss

    exs, _ = load_examples(sample_gold)
    a = max(exs, key=lambda e: len(e.names))
    assert len(a.names) >= 2
    keep = [i for i, lab in enumerate(a.labels) if lab == 0]  # the same photo, one name only
    b = dataclasses.replace(a, names=a.names[:1], labels=[0] * len(keep), boxes=a.boxes[keep])
    proc = AutoProcessor.from_pretrained(tiny_models["detector"])
    model = AutoModelForZeroShotObjectDetection.from_pretrained(tiny_models["detector"]).eval()

    def loss(batch):
        enc = proc.tokenizer([prompt_text(e.names) for e in batch], padding="longest", return_tensors="pt")
        pix = proc.image_processor(images=[load_image(e) for e in batch], return_tensors="pt")
        with torch.no_grad():
            out = model(**enc, **pix, labels=[target(e, e.labels) for e in batch])
        return out.loss_dict["loss_ce"].item() * sum(len(e.labels) for e in batch)  # undo the box-count mean

    library = loss([a, b])
    model.loss_function = grounding_loss
    alone = loss([a]) + loss([b])
    assert loss([a, b]) == pytest.approx(alone, rel=1e-3)
    assert library != pytest.approx(alone, rel=1e-3)  # the bug this module fixes


def test_two_gloo_workers_with_ray_train(tiny_models, sample_gold, tmp_path, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = TrainConfig(steps=4, batch_size=1, num_workers=2, cpus_per_worker=0.5, checkpoint_every=2,
                      loader_workers=0, negatives=2)
    try:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 << 20)
        stats = train(str(tiny_models["detector"]), [str(sample_gold)], tmp_path / "run", cfg, device="cpu")
    finally:
        ray.shutdown()
    assert stats["steps"] == 4 and stats["images"] == 4 * 1 * 2  # both workers trained every step
    assert last_checkpoint(tmp_path / "run").name == "checkpoint-4"
