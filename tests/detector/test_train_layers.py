"""Training is split from its runtime: `detector/` imports neither Ray nor `workflows`, and `train_loop` runs
as one rank of a group given by a plain `Distributed` value (what `workflows.training` builds from Ray Train)."""

from __future__ import annotations

import ast
import random
from pathlib import Path

from conftest import ROOT

from detector.train import Distributed, _Batches, _stats


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_detector_layer_imports_no_runtime_and_no_workflow():
    offenders = {p.name: sorted(m for m in imported_modules(p) if m.split(".")[0] in ("ray", "workflows"))
                 for p in sorted((ROOT / "detector").glob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_each_rank_draws_its_own_slice_of_one_global_batch():
    from detector.train import TrainConfig

    cfg = TrainConfig(batch_size=2, grad_accum=2, seed=7)
    gold = list(range(50))

    def plan(rank, world):
        b = _Batches.__new__(_Batches)
        b.gold, b.pseudo, b.cfg, b.rank, b.world = gold, [], cfg, rank, world
        return b.plan(3)

    whole = plan(0, 1)
    assert [len(idx) for _, idx in whole] == [2, 2]
    ranks = [plan(r, 3) for r in range(3)]
    for micro in range(2):
        rng = random.Random(f"7:3:{micro}")  # one global batch of 2 x 3 drawn per (seed, step, micro)
        assert [i for r in ranks for i in r[micro][1]] == [rng.randrange(50) for _ in range(6)]
        assert ranks[0][micro][1] == plan(0, 3)[micro][1]
    assert Distributed().rank == 0 and Distributed().world == 1 and Distributed().wrap_model is None


def test_stats_count_every_worker_and_the_data_wait_share():
    s = _stats(step=10, start=4, images=24, waited=1.0, computed=3.0, history=[{"step": 10, "loss": 0.5}])
    assert s == {"steps": 10, "start": 4, "images": 24, "seconds": 4.0, "data_wait_s": 1.0, "compute_s": 3.0,
                 "images_per_s": 6.0, "data_wait_share": 0.25, "final_loss": 0.5}
