"""The cluster route: `ray start --head` on 127.0.0.1, then `ray job submit --working-dir . -- python pipelines/...`."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import EXAMPLES, RAY, ROOT, ray_cli_env, start_ray_head

from formats.dataset import Dataset

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head():
    """A 2-CPU head node with the job API on 127.0.0.1; stopped afterwards by its own process tree, so other Ray
    instances on the machine are left alone. Yields (environment, dashboard URL)."""
    env = ray_cli_env()
    # a short temp dir: Ray's socket paths must stay under the OS limit (pytest's tmp_path can be too long)
    with tempfile.TemporaryDirectory(prefix="ovl-rj-", dir="/tmp") as d:
        node, _, url = start_ray_head(env, Path(d) / "head", num_cpus=2)
        try:
            yield env, url
        finally:
            node.stop()


def test_job_submit_runs_the_pipeline_on_the_cluster(ray_head, tiny_models, tmp_path):
    env, address = ray_head
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"filter": {"fused_threshold": 0.0, "image_threshold": -1.0}, "box_threshold": 0.0}))
    out = tmp_path / "pseudo"
    proc = subprocess.run(
        [RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
         sys.executable, "pipelines/cc3m_pseudo.py", "--input", str(EXAMPLES / "cc3m_sample"), "--out", str(out),
         "--detector", str(tiny_models["detector"]), "--clip", str(tiny_models["clip"]), "--config", str(cfg),
         "--images-per-part", "4"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "joining the Ray cluster" in proc.stdout + proc.stderr
    ds = Dataset(out).require_complete()
    assert ds.manifest.counts["images_in"] == 8 and ds.manifest.counts["images"] == 7


def test_a_run_beside_an_unrelated_cluster_starts_its_own_ray_even_on_one_cpu(ray_head, tiny_models, tmp_path):
    """A cluster runs on the machine (started by someone else), RAY_ADDRESS is not set: the pipeline starts its
    own local Ray instead of joining it (Ray would refuse num_cpus there), and --num-cpus 1 does not hang."""
    env, _ = ray_head
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"filter": {"fused_threshold": 0.0, "image_threshold": -1.0}, "box_threshold": 0.0}))
    out = tmp_path / "pseudo"
    proc = subprocess.run(
        [sys.executable, "pipelines/cc3m_pseudo.py", "--input", str(EXAMPLES / "cc3m_sample"), "--out", str(out),
         "--detector", str(tiny_models["detector"]), "--clip", str(tiny_models["clip"]), "--config", str(cfg),
         "--images-per-part", "4", "--num-cpus", "1"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "joining the Ray cluster" not in proc.stdout + proc.stderr
    assert "detect-and-score (0.5 CPU, 4 GiB, 1 actors)" in proc.stderr  # half of the one CPU, the rest for tasks
    # the CPU stages are Ray Data operators of their own, not fused into the model actor
    assert "ActorPoolMapOperator[MapBatches(_ActorStage)]" in proc.stderr
    ds = Dataset(out).require_complete()
    assert ds.manifest.counts["images_in"] == 8 and ds.manifest.counts["images"] == 7
