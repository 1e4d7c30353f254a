"""The pseudo-labeling pipeline on Ray with tiny models: outputs, determinism, resume, kill -9, rejects."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLES, ROOT, assert_same_run, kill_mid_run

from formats.dataset import Dataset
from labeling.fuse import FilterConfig
from workflows.pseudo_label import PseudoConfig, RunOptions, refilter, run_pseudo

pytestmark = pytest.mark.slow
LOW = FilterConfig(fused_threshold=0.0, image_threshold=-1.0, max_boxes_per_image=7).to_dict()


def config(models, **kw) -> PseudoConfig:
    return PseudoConfig(detector=str(models["detector"]), clip=str(models["clip"]),
                        box_threshold=kw.pop("box_threshold", 0.0), filter=kw.pop("filter", LOW),
                        images_per_part=kw.pop("images_per_part", 2), **kw)


def records(path) -> list[dict]:
    return Dataset(path).read().to_pylist()


@pytest.fixture(scope="module")
def reference(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "pseudo"
    summary = run_pseudo(EXAMPLES / "cc3m_sample", out, config(tiny_models), RunOptions(num_cpus=2))
    return out, summary


def test_outputs(reference):
    out, summary = reference
    m = Dataset(out).require_complete().manifest
    assert summary["images_in"] == 8 and summary["rejected"] == 1  # one URL of the sample is dead
    assert summary["images_dropped"] == {}
    assert summary["units"] == 4 and m.kind == "vg" and m.config["detector"].endswith("detector")
    recs = records(out)
    assert len(recs) == 7 and all(r["caption"] for r in recs)
    for r in recs:
        assert 0 < len(r["regions"]) <= 7
        for g in r["regions"]:
            assert g["origin"] == "pseudo" and g["region_id"].startswith(r["image_id"] + "#")
            assert g["score"] == pytest.approx((g["det_score"] * g["clip_score"]) ** 0.5, abs=1e-6)
            assert all(r["caption"][s:e] == g["phrase"] for s, e in g["tokens_positive"])
            x1, y1, x2, y2 = g["bbox"]
            assert 0 <= x1 <= x2 <= r["width"] and 0 <= y1 <= y2 <= r["height"]
    rej = Dataset(out).read_rejects().to_pylist()
    assert [r["reason"] for r in rej] == ["download failed"] and "404" in rej[0]["detail"]
    cands = pa.concat_tables([pq.read_table(p) for p in sorted((out / "candidates").glob("*.parquet"))])
    assert cands.num_rows == 7 and all(len(c) >= 7 for c in cands.column("candidates").to_pylist())


def test_exports_of_pseudo_data(reference, tmp_path):
    from pycocotools.coco import COCO

    from formats.export.coco import export_coco
    from formats.export.odvg import export_odvg

    out, _ = reference
    export_odvg(out, tmp_path / "p.jsonl", tar_paths=True)  # shard-backed: refused without --images-dir / tar_paths
    lines = [json.loads(x) for x in open(tmp_path / "p.jsonl")]
    assert len(lines) == 7 and all("score" in g for x in lines for g in x["grounding"]["regions"])
    export_coco(out, tmp_path / "p.json", images_dir=tmp_path / "images")
    c = COCO(str(tmp_path / "p.json"))
    ann = c.anns[1]
    img = c.imgs[ann["image_id"]]
    assert img["caption"][ann["tokens_positive"][0][0]:ann["tokens_positive"][0][1]] == ann["tokens"]
    assert c.cats[ann["category_id"]]["name"] == ann["tokens"] and "score" in ann


def test_deterministic_and_resumable(reference, tiny_models, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "p"
    first = run_pseudo(EXAMPLES / "cc3m_sample", out, config(tiny_models), RunOptions(num_cpus=2, max_units=1))
    assert first["units_done"] == 1 and not Dataset(out).manifest.complete
    run_pseudo(EXAMPLES / "cc3m_sample", out, config(tiny_models), RunOptions(num_cpus=2))
    assert records(out) == records(ref_out)
    assert sorted(p.name for p in (out / "records").iterdir()) == sorted(p.name for p in (ref_out / "records").iterdir())
    again = run_pseudo(EXAMPLES / "cc3m_sample", out, config(tiny_models), RunOptions(num_cpus=2))
    assert again.get("skipped")
    with pytest.raises(ValueError, match="other inputs or settings"):
        run_pseudo(EXAMPLES / "cc3m_sample", out, config(tiny_models, box_threshold=0.5), RunOptions(num_cpus=2))


def test_refilter_matches_a_direct_run(reference, tiny_models, tmp_path):
    ref_out, _ = reference
    strict = FilterConfig(fused_threshold=0.0, image_threshold=-1.0, max_boxes_per_image=2, nms_across_phrases=True)
    refilter(ref_out, tmp_path / "rf", strict)
    direct = run_pseudo(EXAMPLES / "cc3m_sample", tmp_path / "direct", config(tiny_models, filter=strict.to_dict()),
                        RunOptions(num_cpus=2))
    assert direct["boxes"] <= 14
    assert records(tmp_path / "rf") == records(tmp_path / "direct")
    # the source's rejects stay; images the filters drop are counted by reason
    assert [r["reason"] for r in Dataset(tmp_path / "rf").read_rejects().to_pylist()] == ["download failed"]
    none = refilter(ref_out, tmp_path / "none", FilterConfig(fused_threshold=2.0))
    assert none["images"] == 0 and none["images_dropped"] == {"no_box_kept": 7} and none["rejected"] == 1
    loose = refilter(ref_out, tmp_path / "loose", FilterConfig(fused_threshold=0.0, image_threshold=2.0))
    assert loose["images"] == 0 and loose["images_dropped"] == {"below_image_threshold": 7}


def test_kill_minus_9_then_rerun_gives_the_same_records(reference, tiny_models, tmp_path):
    ref_out, _ = reference
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"filter": LOW, "box_threshold": 0.0}))
    out = tmp_path / "p"
    cmd = [sys.executable, str(ROOT / "pipelines" / "cc3m_pseudo.py"), "--input", str(EXAMPLES / "cc3m_sample"),
           "--out", str(out), "--detector", str(tiny_models["detector"]), "--clip", str(tiny_models["clip"]),
           "--config", str(cfg), "--images-per-part", "2", "--num-cpus", "2"]
    kill_mid_run(cmd, out, parts=4)
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    assert_same_run(out, ref_out)


def test_unreadable_images_are_rejected_with_their_reason(tiny_models, tmp_path, write_json):
    from formats.converters.coco import CocoConvertConfig, convert_coco

    root = tmp_path / "imgs"
    root.mkdir()
    good = (EXAMPLES / "sample" / "images" / "chelsea.jpg").read_bytes()
    (root / "good.jpg").write_bytes(good)
    (root / "cut.jpg").write_bytes(good[:400])
    doc = {"images": [{"id": i, "file_name": n, "width": 451, "height": 300} for i, n in
                      enumerate(["good.jpg", "cut.jpg", "missing.jpg"], 1)], "annotations": [],
           "categories": [{"id": 1, "name": "x"}]}
    convert_coco(write_json(doc), tmp_path / "ds", CocoConvertConfig(source="custom", image_root=str(root)))
    # give the records captions, as a caption dataset would have
    part = next((tmp_path / "ds" / "records").glob("*.parquet"))
    t = pq.read_table(part)
    pq.write_table(t.set_column(5, "caption", pa.array(["a tabby cat"] * 3)), part)
    summary = run_pseudo(tmp_path / "ds", tmp_path / "p", config(tiny_models), RunOptions(num_cpus=2))
    assert summary["images"] == 1 and summary["rejected"] == 2
    rej = {r["record"]: r for r in Dataset(tmp_path / "p").read_rejects().to_pylist()}
    assert "cannot decode" in rej["custom/2"]["detail"] and "missing.jpg" in rej["custom/3"]["detail"]
    assert {r["reason"] for r in rej.values()} == {"unreadable image"}
    # refilter never turns the unreadable images into records, whatever the filter keeps
    kept = refilter(tmp_path / "p", tmp_path / "rf", FilterConfig(drop_image_without_boxes=False, fused_threshold=2.0))
    assert kept["images"] == 1 and kept["rejected"] == 2


def test_a_cluster_with_a_gpu_gives_the_same_records(reference, tiny_models, tmp_path):
    """On a cluster with a GPU the model actor takes `rows_per_call` rows per call (Ray Data refuses whole blocks
    for GPU stages: found on an H200). A local Ray that declares a GPU runs that path here, on the CPU: the
    records equal the whole-block run's to float tolerance (batch companions never change a row's candidates)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=200 << 20,
             log_to_driver=False)
    try:
        assert ray.cluster_resources().get("GPU") == 1
        out = tmp_path / "gpu"
        summary = run_pseudo(EXAMPLES / "cc3m_sample", out, config(tiny_models),
                             RunOptions(device="cpu", batch_size=1))
    finally:
        ray.shutdown()
    assert summary["images_in"] == 8 and summary["rejected"] == 1
    got, ref = records(out), records(reference[0])
    assert [r["image_id"] for r in got] == [r["image_id"] for r in ref]
    for g, r in zip(got, ref):
        assert [x["phrase"] for x in g["regions"]] == [x["phrase"] for x in r["regions"]]
        for a, b in zip(g["regions"], r["regions"]):
            assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3) and a["score"] == pytest.approx(b["score"], abs=1e-5)
