"""labeling/model_settings.py: the actor's settings load without torch, and `PseudoConfig` takes the candidate
rule's defaults from them (one place)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields

from conftest import ROOT

from labeling.model_settings import ModelSettings
from workflows.pseudo_label import PseudoConfig

RULE = ("box_threshold", "clip_margin", "top_k", "candidate_nms_iou", "min_box_size", "canvas_multiple")


def test_the_candidate_rule_defaults_are_the_same_in_pseudo_config():
    s = ModelSettings(detector="d", clip="c")
    assert {k: getattr(s, k) for k in RULE} == {"box_threshold": 0.1, "clip_margin": 0.1, "top_k": 100,
                                                "candidate_nms_iou": 0.7, "min_box_size": 2.0,
                                                "canvas_multiple": 64}
    cfg = PseudoConfig()
    assert {k: getattr(cfg, k) for k in RULE} == {k: getattr(s, k) for k in RULE}
    assert (s.device, s.precision, s.batch_size, s.round, s.classes, s.with_phrases) == (None, "auto", 4, None,
                                                                                         None, True)
    assert [f.name for f in fields(ModelSettings)][:2] == ["detector", "clip"]  # the two without defaults


def test_settings_and_the_pseudo_config_load_without_torch():
    script = ("import sys; import labeling.model_settings, workflows.pseudo_label; "
              "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[]\n"
