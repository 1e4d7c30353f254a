"""Self-training end to end on CPU with tiny models: two rounds, a kill -9 in round 2, resume, report;
review corrections honoured."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import EXAMPLES, run_cli, run_until_killed
from selftrain_inputs import write_config

from formats.corrections import write_corrections
from formats.dataset import Dataset

pytestmark = pytest.mark.slow


def test_two_rounds_kill_resume_report(tiny_models, tmp_path):
    cfg = tmp_path / "selftrain.json"
    write_config(cfg, tiny_models)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "workflows.cli", "selftrain", "run", str(cfg), "--out", str(run)]
    # kill -9 once round 2 is training: right after its first checkpoint, the 4th of the run (round 1 saves
    # steps 10, 20 and 30; formats.faults)
    run_until_killed(cmd, "checkpoint", 4)
    assert [p.name for p in (run / "round-2" / "model").glob("checkpoint-*")] == ["checkpoint-10"]
    state = json.loads((run / "run.json").read_text())
    assert set(state["rounds"]["1"]["steps"]) == {"pseudo", "review", "train", "eval"}
    assert "train" not in state["rounds"]["2"]["steps"] and state["status"] == "running"
    round1 = {p: p.stat().st_mtime_ns for p in (run / "round-1").rglob("*") if p.is_file()}

    out = json.loads(run_cli("selftrain", "run", cfg, "--out", run).stdout)
    assert out["status"] == "complete" and out["rounds"] == [0, 1, 2]
    assert {p: p.stat().st_mtime_ns for p in (run / "round-1").rglob("*") if p.is_file()} == round1  # not redone
    state = json.loads((run / "run.json").read_text())
    assert state["rounds"]["2"]["steps"]["train"]["start"] > 0  # round 2 resumed from its checkpoint
    for k in ("1", "2"):
        m = json.loads((run / f"round-{k}" / "metrics.json").read_text())
        assert m["round"] == int(k) and "AP50" in m["eval"]["sample"] and m["train"]["steps"] == 30
        pseudo = Dataset(state["rounds"][k]["steps"]["pseudo"]["dir"]).read().to_pylist()
        assert pseudo and all(g["round"] == int(k) for r in pseudo for g in r["regions"])
    assert json.loads((run / "round-2" / "metrics.json").read_text())["model"].startswith(str(run / "round-2" / "model"))

    status = run_cli("selftrain", "status", run).stdout
    assert "complete" in status and "sample.AP50" in status and len(status.strip().splitlines()) == 6
    rep = json.loads(run_cli("selftrain", "report", run).stdout)
    assert sorted(rep["plots"]) == ["boxes", "metrics", "scores"]
    for png in rep["plots"].values():
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert [r["round"] for r in rep["rounds"]] == [0, 1, 2]
    assert "sample.AP50" in (run / "report" / "report.md").read_text()


def test_corrections_are_honoured(tiny_models, tmp_path):
    """Rejected boxes are dropped from a round's pseudo data; accepted ones become gold training data."""
    from workflows.selftrain import Run, SelfTrainConfig, _review

    # a pseudo dataset as a round would make it
    pseudo = tmp_path / "pseudo"
    gold = tmp_path / "gold"
    run_cli("convert", "coco", EXAMPLES / "sample" / "gold.json", "--source", "custom",
            "--image-root", EXAMPLES / "sample" / "images", "--out", gold)
    from formats import schema as S
    from formats.dataset import DatasetWriter, Manifest

    recs = Dataset(gold).read().to_pylist()
    rows = [{**{c: r[c] for c in S.CORE_COLUMNS if c != "regions"},
             "regions": [{**g, "region_id": f"{r['image_id']}#r0c{i}", "origin": "pseudo", "score": 0.5,
                          "phrase": g["category"], "round": 2} for i, g in enumerate(r["regions"])]} for r in recs]
    w = DatasetWriter(pseudo, Manifest(kind="od", source="custom", image_root=Dataset(gold).manifest.image_root,
                                       categories=Dataset(gold).manifest.categories))
    import pyarrow as pa

    w.write_part("part-00000.parquet", S.conform(pa.Table.from_pylist(rows, schema=S.CORE_SCHEMA)))
    w.finish()
    bad, good = rows[0]["regions"][0], rows[1]["regions"][0]
    x1, y1, x2, y2 = bad["bbox"]
    corr = tmp_path / "corrections"
    write_corrections([
        # a round-1 rejection of (nearly) the same box: region ids differ between rounds, geometry does not
        {"image_id": rows[0]["image_id"], "region_id": "old-round#7", "action": "reject", "field": "round_1",
         "dataset": str(tmp_path / "round1"), "bbox": [x1 + 2, y1 + 1, x2 - 1, y2], "phrase": bad["phrase"],
         "category": None, "score": 0.4, "tags": ["reject"], "when": "t"},
        {"image_id": rows[1]["image_id"], "region_id": good["region_id"], "action": "accept", "field": "round_2",
         "dataset": str(pseudo.resolve()), "bbox": good["bbox"], "phrase": good["phrase"], "category": None,
         "score": 0.5, "tags": ["accept"], "when": "t"},
    ], corr)
    cfg = SelfTrainConfig(base_model=str(tiny_models["detector"]), pool=str(EXAMPLES / "cc3m_sample"),
                          corrections=str(corr))
    run = Run(tmp_path / "run", cfg)
    kept, reviewed = _review(run, 2, str(pseudo))
    kept_boxes = [g for r in Dataset(kept).read().to_pylist() for g in r["regions"]]
    assert bad["region_id"] not in {g["region_id"] for g in kept_boxes}
    assert len(kept_boxes) == sum(len(r["regions"]) for r in rows) - 1
    (rv,) = reviewed
    reviewed_boxes = [g for r in Dataset(rv).read().to_pylist() for g in r["regions"]]
    assert [(g["region_id"], g["origin"]) for g in reviewed_boxes] == [(good["region_id"], "review")]
    from detector.data import load_examples

    (ex,), _ = load_examples(rv)
    assert not ex.pseudo  # reviewed boxes train as gold


def test_stop_rule_and_step_bookkeeping(tmp_path, monkeypatch):
    """The loop's control flow with fast stand-ins for the heavy steps: the stop rule ends the run when the
    watched metric stops improving, and a rerun does not redo recorded steps."""
    import workflows.selftrain as st

    calls = []
    ap50 = {0: 0.10, 1: 0.20, 2: 0.15, 3: 0.30}

    def fake_eval(run, model, pseudo_dir=None):
        k = 0 if model == run.cfg.base_model else int(model.split("round-")[1].split("/")[0])
        calls.append(("eval", k))
        return {"sample": {"protocol": "coco", "AP50": ap50[k]}}

    def fake_pseudo(run, k):
        calls.append(("pseudo", k))
        out = run.root / f"round-{k}" / "pseudo"
        run_cli("convert", "cc3m", EXAMPLES / "cc3m_sample", "--out", out)
        return str(out)

    def fake_train(run, k, datasets):
        calls.append(("train", k))
        ckpt = run.root / f"round-{k}" / "model" / "checkpoint-1"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")
        return {"steps": 1}

    monkeypatch.setattr(st, "evaluate_model", fake_eval)
    monkeypatch.setattr(st, "_pseudo", fake_pseudo)
    monkeypatch.setattr(st, "_train", fake_train)
    cfg = st.SelfTrainConfig(base_model="base", pool=str(EXAMPLES / "cc3m_sample"), rounds=3,
                             metric="sample.AP50", min_gain=0.0, eval=[{"name": "sample", "path": "x"}])
    state = st.run_selftrain(cfg, tmp_path / "run")
    assert state["status"].startswith("stopped after round 2")  # 0.20 -> 0.15: no gain
    assert sorted(state["rounds"]) == ["0", "1", "2"]
    assert calls == [("eval", 0), ("pseudo", 1), ("train", 1), ("eval", 1), ("pseudo", 2), ("train", 2), ("eval", 2)]
    assert [state["rounds"][k]["steps"]["eval"]["metric"] for k in ("0", "2")] == [
        {"name": "sample.AP50", "value": 0.10, "protocol": "coco"},
        {"name": "sample.AP50", "value": 0.15, "protocol": "coco"}]
    calls.clear()
    st.run_selftrain(cfg, tmp_path / "run")
    assert calls == []  # everything recorded: nothing redone
    with pytest.raises(ValueError, match="another config"):
        st.run_selftrain(st.SelfTrainConfig(**{**cfg.__dict__, "rounds": 5}), tmp_path / "run")


def test_config_names_the_protocols(tmp_path):
    """Each eval entry may name its protocol (checked); the default metric is the first eval's headline."""
    from workflows.selftrain import SelfTrainConfig

    vg = tmp_path / "vg.json"
    vg.write_text(json.dumps({"base_model": "m", "pool": "p", "eval": [
        {"name": "flickr", "path": str(EXAMPLES / "sample" / "gold.json"), "protocol": "flickr30k"},
        {"name": "lvis", "path": str(EXAMPLES / "sample" / "gold.json"), "protocol": "lvis-fixed"}]}))
    cfg = SelfTrainConfig.load(vg)
    assert cfg.metric == "flickr.R@1" and [e["protocol"] for e in cfg.eval] == ["flickr30k", "lvis-fixed"]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"base_model": "m", "pool": "p", "eval": [
        {"name": "sample", "path": str(EXAMPLES / "sample" / "gold.json")}]}))
    assert SelfTrainConfig.load(plain).metric == "sample.AP"  # COCO gold: the COCO protocol's AP
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"base_model": "m", "pool": "p", "eval": [{"path": "x", "protocol": "voc"}]}))
    with pytest.raises(ValueError, match="protocol must be one of coco, lvis, lvis-fixed, odinw, flickr30k, refcoco"):
        SelfTrainConfig.load(bad)


def test_a_class_list_file_is_read_from_where_the_config_was_loaded(tmp_path, monkeypatch):
    """`pseudo.classes` as a relative file name becomes absolute at load, like the config's other paths, so
    each round (whatever its working directory) reads the same class list."""
    from workflows.selftrain import SelfTrainConfig

    (tmp_path / "classes.txt").write_text("cat\ndog|puppy\n")
    (tmp_path / "s.json").write_text(json.dumps({"base_model": "m", "pool": "p", "pseudo": {"classes": "classes.txt"}}))
    monkeypatch.chdir(tmp_path)
    cfg = SelfTrainConfig.load("s.json")
    assert cfg.pseudo["classes"] == str(tmp_path.resolve() / "classes.txt")
    inline = tmp_path / "inline.json"
    inline.write_text(json.dumps({"base_model": "m", "pool": "p", "pseudo": {"classes": ["cat", "dog"]}}))
    assert SelfTrainConfig.load(inline).pseudo["classes"] == ["cat", "dog"]
