"""The self-training bookkeeping (`workflows.selftrain.run_steps`) without models or Ray: steps run in order,
each once; a recorded step is not run again; a step that fails is not recorded, so a rerun starts there."""

from __future__ import annotations

import json

import pytest

from workflows.selftrain import BASELINE, ROUND, Run, SelfTrainConfig, run_steps


def make_run(tmp_path) -> Run:
    cfg = SelfTrainConfig(base_model="m", clip="c", pool="p", gold=[{"path": "g"}], eval=[{"path": "e"}])
    return Run(tmp_path / "run", cfg)


def test_steps_run_in_order_see_earlier_results_and_are_recorded(tmp_path):
    run, calls = make_run(tmp_path), []

    def step(name):
        def fn(r, k, done):
            calls.append((name, k, sorted(done)))
            return {"from": name, "saw": sorted(done)}
        return fn

    steps = [(n, step(n)) for n in ("a", "b", "c")]
    got = run_steps(run, 3, steps)
    assert calls == [("a", 3, []), ("b", 3, ["a"]), ("c", 3, ["a", "b"])]
    assert got == {"a": {"from": "a", "saw": []}, "b": {"from": "b", "saw": ["a"]}, "c": {"from": "c", "saw": ["a", "b"]}}
    state = json.loads((tmp_path / "run" / "run.json").read_text())
    assert state["rounds"]["3"]["steps"] == got and sorted(state["rounds"]["3"]["timings"]) == ["a", "b", "c"]
    calls.clear()
    assert run_steps(Run(tmp_path / "run"), 3, steps) == got and calls == []  # a rerun redoes nothing


def test_a_failed_step_is_not_recorded_and_the_rerun_starts_there(tmp_path):
    run, calls = make_run(tmp_path), []

    def ok(r, k, done):
        calls.append("ok")
        return {"n": 1}

    def boom(r, k, done):
        calls.append("boom")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        run_steps(run, 1, [("ok", ok), ("boom", boom), ("never", ok)])
    assert calls == ["ok", "boom"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["rounds"]["1"]["steps"] == {"ok": {"n": 1}}
    calls.clear()
    run_steps(Run(tmp_path / "run"), 1, [("ok", ok), ("boom", ok), ("never", ok)])
    assert calls == ["ok", "ok"]


def test_the_round_is_pseudo_review_train_eval_and_round_0_is_eval():
    assert [n for n, _ in ROUND] == ["pseudo", "review", "train", "eval"]
    assert [n for n, _ in BASELINE] == ["eval"]
