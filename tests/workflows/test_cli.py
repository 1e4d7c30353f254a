"""The `ovlabel` command line end to end, as a user runs it: stdout is data, stderr logs, exit codes."""

from __future__ import annotations

import json

from conftest import coco_doc, run_cli


def test_convert_export_stats(write_json, tmp_path):
    src = write_json(coco_doc(n_images=5))
    out = tmp_path / "ds"
    p = run_cli("convert", "coco", src, "--source", "o365v1", "--out", out)
    summary = json.loads(p.stdout)
    assert summary["images"] == 5 and summary["boxes"] == 15 and summary["dataset"] == str(out.resolve())
    assert "15 boxes" in p.stderr
    p = run_cli("export", "odvg", out, "--out", tmp_path / "o.jsonl")
    assert len(open(tmp_path / "o.jsonl").readlines()) == 5 and json.loads(p.stdout)["lines"] == 5
    run_cli("export", "coco", out, "--out", tmp_path / "c.json")
    assert len(json.load(open(tmp_path / "c.json"))["annotations"]) == 15
    run_cli("export", "yolo-world", out, "--out", tmp_path / "yw")
    assert (tmp_path / "yw" / "class_texts.json").is_file()
    s = json.loads(run_cli("stats", out, "--json").stdout)
    assert s["images"] == 5 and s["boxes"] == 15 and s["top"][0]["boxes"] >= 5
    text = run_cli("stats", out).stdout
    assert "images   5" in text and "person" in text


def test_errors_exit_1_with_a_message_and_usage_exits_2(write_json, tmp_path):
    p = run_cli("convert", "coco", tmp_path / "missing.json", "--source", "custom", "--out", tmp_path / "x", check=False)
    assert p.returncode == 1 and "missing.json" in p.stderr and p.stdout == ""
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [{"id": 1,, }]}')
    p = run_cli("convert", "coco", bad, "--source", "custom", "--out", tmp_path / "x", check=False)
    assert p.returncode == 1 and "bad.json: at byte" in p.stderr
    assert not (tmp_path / "x").exists()
    p = run_cli("convert", "coco", bad, "--source", "nope", "--out", tmp_path / "x", check=False)
    assert p.returncode == 2
    p = run_cli("export", "odvg", tmp_path, "--out", tmp_path / "o.jsonl", check=False)
    assert p.returncode == 1 and "not an ovlabel dataset" in p.stderr


def test_help():
    p = run_cli("--help")
    assert "convert" in p.stdout and "export" in p.stdout and "stats" in p.stdout
