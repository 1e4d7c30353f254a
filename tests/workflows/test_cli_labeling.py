"""The labeling commands as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import EXAMPLES, run_cli

from formats.dataset import Dataset

pytestmark = pytest.mark.slow


def test_convert_cc3m_then_phrases(tmp_path):
    out = tmp_path / "cc3m"
    s = json.loads(run_cli("convert", "cc3m", EXAMPLES / "cc3m_sample", "--out", out).stdout)
    assert s["images"] == 7 and s["rejected"] == {"download failed": 1}
    recs = Dataset(out).read().to_pylist()
    assert recs[0]["file_name"] == "tar://00000000.jpg::00000.tar" and len(recs[0]["sha256"]) == 64
    run_cli("phrases", out, "--out", tmp_path / "ph", "--workers", "2", "--rows-per-unit", "3")
    ph = Dataset(tmp_path / "ph").read().to_pylist()
    cat = next(r for r in ph if "tabby cat" in r["caption"])
    assert [p["phrase"] for p in cat["phrases"]] == ["tabby cat", "green eyes"]
    assert all(r["caption"][s:e] == p["phrase"] for r in ph for p in r["phrases"] for s, e in p["tokens_positive"])
    assert "phrases" in Dataset(tmp_path / "ph").manifest.extra_columns


def test_phrases_of_parts_cut_into_units_come_back_in_row_order(tmp_path):
    """Small units spread each part over both actors; every record gets its own caption's phrases."""
    from labeling.phrases import PhraseConfig, PhraseExtractor
    from workflows.phrases import run_phrases

    src = tmp_path / "cc3m"
    run_cli("convert", "cc3m", EXAMPLES / "cc3m_sample", "--out", src)
    import ray

    r = run_phrases(src, tmp_path / "ph", PhraseConfig(), workers=2, rows_per_unit=2)
    assert not ray.is_initialized()  # it shut down the Ray it started (a later `ray stop` would kill this process)
    got = Dataset(tmp_path / "ph").read().to_pylist()
    assert r["images"] == len(got) == 7
    assert [g["image_id"] for g in got] == Dataset(src).read().column("image_id").to_pylist()
    want = PhraseExtractor(PhraseConfig())([g["caption"] for g in got])
    assert [g["phrases"] for g in got] == want and sum(map(len, want)) > 7


def test_models_tiny_embed_texts(tmp_path, write_json):
    run_cli("models", "tiny", "--out", tmp_path / "m")
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps([["cat"], ["tv", "monitor"], ["spoon"]]))
    r = json.loads(run_cli("embed-texts", texts, "--model", tmp_path / "m" / "clip", "--out", tmp_path / "e.npy").stdout)
    arr = np.load(tmp_path / "e.npy")
    assert r["shape"] == [3, 16] and arr.shape == (3, 16)
    assert np.linalg.norm(arr, axis=1) == pytest.approx(1, abs=1e-5)
    bad = tmp_path / "bad.json"
    bad.write_text('{"cat": 1}')
    p = run_cli("embed-texts", bad, "--model", tmp_path / "m" / "clip", "--out", tmp_path / "x.npy", check=False)
    assert p.returncode == 1 and "expected a JSON list of lists" in p.stderr
    # the text class lists `pseudo --classes` reads (name|synonym), one row per class in file order
    txt = tmp_path / "classes.txt"
    txt.write_text("cat\ntv|monitor\n\nspoon\n")
    r = json.loads(run_cli("embed-texts", txt, "--model", tmp_path / "m" / "clip", "--out", tmp_path / "t.npy").stdout)
    assert r["shape"] == [3, 16] and np.allclose(np.load(tmp_path / "t.npy"), arr)  # same classes as texts.json
    for missing in ("nope.json", "nope.txt"):
        p = run_cli("embed-texts", tmp_path / missing, "--model", tmp_path / "m" / "clip", "--out", tmp_path / "x.npy",
                    check=False)
        assert p.returncode == 1 and p.stderr.startswith(f"ovlabel: error: {tmp_path / missing}: no such"), p.stderr


def test_pseudo_and_refilter_commands(tiny_models, tmp_path):
    out = tmp_path / "p"
    s = json.loads(run_cli("pseudo", "--input", EXAMPLES / "cc3m_sample", "--out", out, "--detector",
                           tiny_models["detector"], "--clip", tiny_models["clip"], "--box-threshold", "0",
                           "--fused-threshold", "0", "--image-threshold", "-1", "--num-cpus", "2",
                           "--coco-out", tmp_path / "p.json").stdout)
    assert s["images"] == 7 and s["boxes"] > 0 and (tmp_path / "p.json").is_file()
    assert Dataset(out).manifest.config["filter"]["fused_threshold"] == 0
    r = json.loads(run_cli("refilter", out, "--out", tmp_path / "rf", "--fused-threshold", "2").stdout)
    assert r["images"] == 0 and r["boxes"] == 0  # nothing can fuse above 1
    # settings neither a flag nor --config names stay as the pseudo run had them (not the defaults)
    filt = Dataset(tmp_path / "rf").manifest.config["filter"]
    assert (filt["fused_threshold"], filt["image_threshold"]) == (2, -1)
    run_cli("refilter", out, "--out", tmp_path / "same", "--det-threshold", "0")
    assert Dataset(tmp_path / "same").read().to_pylist() == Dataset(out).read().to_pylist()
    assert Dataset(tmp_path / "same").manifest.config["filter"] == Dataset(out).manifest.config["filter"]
    p = run_cli("pseudo", "--input", tmp_path / "nothing", "--out", tmp_path / "x", check=False)
    assert p.returncode == 1 and "not an ovlabel dataset" in p.stderr
