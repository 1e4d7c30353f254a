"""GRIT and CC3M: URL list -> `ovlabel download` (img2dataset against a local http.server) -> `ovlabel convert`."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLES, ROOT, run_cli
from PIL import Image

from formats.dataset import Dataset
from formats.images import read_image_bytes

pytestmark = pytest.mark.slow

GRIT_ROWS = [
    # name, caption, ref_exps [start, end, x1, y1, x2, y2, score], noun_chunks
    ("astronaut.jpg", "an astronaut holding a helmet, near the flag.",
     [[0, 12, 0.1, 0.05, 0.9, 1.0, 0.8], [21, 29, 0.5, 0.5, 0.7, 0.7, 0.3], [30, 99, 0.1, 0.1, 0.2, 0.2, 0.9]],
     [[0, 12, 0.1, 0.05, 0.9, 1.0, 0.8]]),
    ("coffee.jpg", 'a "flat white" café coffee on a table', [[0, 37, 0.0, 0.0, 1.0, 1.0, 0.6]],
     [[18, 22, 0.2, 0.2, 0.8, 0.8, 0.7], [30, 37, 0.0, 0.5, 1.0, 1.0, 0.4]]),
    ("rocket.jpg", "a rocket on the launch pad", [[2, 8, 0.4, 0.1, 0.6, 0.9, 0.9]], []),
    ("gone.jpg", "a photo that is gone", [[2, 7, 0.1, 0.1, 0.5, 0.5, 0.9]], []),
    ("corrupt.jpg", "bytes that do not decode", [[0, 5, 0.1, 0.1, 0.5, 0.5, 0.9]], []),
]


def grit_metadata(path, base: str) -> None:
    rows = {"key": [f"{i:09d}" for i in range(len(GRIT_ROWS))], "clip_similarity_vitb32": [0.3] * len(GRIT_ROWS),
            "clip_similarity_vitl14": [0.31] * len(GRIT_ROWS), "id": list(range(100, 100 + len(GRIT_ROWS))),
            "url": [f"{base}/{r[0]}" for r in GRIT_ROWS], "caption": [r[1] for r in GRIT_ROWS],
            "width": [999] * len(GRIT_ROWS), "height": [999] * len(GRIT_ROWS),
            "noun_chunks": [r[3] for r in GRIT_ROWS], "ref_exps": [r[2] for r in GRIT_ROWS]}
    pq.write_table(pa.table(rows), path)


def download_args(kind: str, src, out) -> list:
    return ["download", kind, src, "--out", out, "--image-size", "64", "--shard-size", "3", "--threads", "4",
            "--timeout", "5"]


def test_grit_download_and_convert(tmp_path, image_server):
    meta = tmp_path / "grit.parquet"
    grit_metadata(meta, image_server)
    raw = tmp_path / "grit_raw"
    s = json.loads(run_cli(*download_args("grit", meta, raw)).stdout)
    assert s["shards"] == 2 and s["count"] == 5 and s["successes"] == 3
    out = tmp_path / "grit"
    s = json.loads(run_cli("convert", "grit", raw, "--out", out, "--min-score", "0.35").stdout)
    assert s["images"] == 3 and s["images_in"] == 5
    # the dead link and the bytes that do not decode both fail in img2dataset, with its error message
    assert s["rejected"] == {"download failed": 2, "span outside the caption": 1}
    assert s["dropped"] == {"under min_score": 1} and s["boxes_clipped"] == 0
    ds = Dataset(out)
    recs = {r["caption"]: r for r in ds.read().to_pylist()}
    assert len(ds.manifest.parts) == 2  # every shard converted
    for name, caption, refs, _ in GRIT_ROWS[:3]:
        r = recs[caption]
        img = Image.open(io.BytesIO(read_image_bytes(ds.manifest.image_root, r["file_name"])))
        assert (r["width"], r["height"]) == img.size and min(img.size) == 64  # the stored, resized image (keep_ratio: shorter side)
        kept = [c for c in refs if c[1] <= len(caption) and c[6] >= 0.35]
        assert [g["phrase"] for g in r["regions"]] == [caption[c[0]:c[1]] for c in kept]
        for g, c in zip(r["regions"], kept):
            w, h = img.size
            assert g["bbox"] == pytest.approx([c[2] * w, c[3] * h, c[4] * w, c[5] * h])
            assert g["tokens_positive"] == [[c[0], c[1]]] and g["origin"] == "pseudo"
            assert g["score"] == pytest.approx(c[6])
        assert r["sha256"] and r["url"].endswith(name)
    rej = ds.read_rejects().to_pylist()
    failed = sorted(r["detail"] for r in rej if r["reason"] == "download failed")
    assert len(failed) == 2 and any("404" in d for d in failed) and all(d for d in failed)
    # noun chunks instead of referring expressions
    s2 = json.loads(run_cli("convert", "grit", raw, "--out", tmp_path / "nc", "--spans", "noun_chunks").stdout)
    assert s2["boxes"] == 3
    # a rerun of both steps changes nothing and duplicates nothing
    run_cli(*download_args("grit", meta, raw))
    assert json.loads(run_cli("convert", "grit", raw, "--out", out, "--min-score", "0.35").stdout)["images"] == 3
    assert len(Dataset(out).read()) == 3 and len(list(raw.glob("*.tar"))) == 2


def test_grit_parquet_output_format(tmp_path, image_server):
    meta = tmp_path / "grit.parquet"
    grit_metadata(meta, image_server)
    raw = tmp_path / "raw"
    run_cli(*download_args("grit", meta, raw), "--output-format", "parquet")
    assert not list(raw.glob("*.tar"))
    s = json.loads(run_cli("convert", "grit", raw, "--out", tmp_path / "g").stdout)
    assert s["images"] == 3
    ds = Dataset(tmp_path / "g")
    for r in ds.read().to_pylist():
        assert r["file_name"].startswith("parquet://")
        img = Image.open(io.BytesIO(read_image_bytes(ds.manifest.image_root, r["file_name"])))
        assert img.size == (r["width"], r["height"])
    # an ODVG export that trainers can open: the images written out of the parquet shard
    images = tmp_path / "images"
    run_cli("export", "odvg", tmp_path / "g", "--out", tmp_path / "g.jsonl", "--images-dir", images)
    lines = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    for line, r in zip(lines, ds.read().to_pylist()):
        assert line["filename"].endswith(".jpg") and not line["filename"].startswith("/")
        assert (images / line["filename"]).read_bytes() == read_image_bytes(ds.manifest.image_root, r["file_name"])


def test_grit_shards_convert_in_parallel_on_ray(tmp_path, image_server):
    meta = tmp_path / "grit.parquet"
    grit_metadata(meta, image_server)
    raw = tmp_path / "raw"
    run_cli(*download_args("grit", meta, raw))
    out = tmp_path / "ray_out"
    cmd = [sys.executable, "pipelines/ingest.py", "--num-cpus", "2", "convert", "grit", str(raw), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_cli("convert", "grit", raw, "--out", tmp_path / "local")
    assert Dataset(out).read().equals(Dataset(tmp_path / "local").read())
    # a crash after the first shard: the rerun converts only what is missing
    m = json.loads((out / "manifest.json").read_text())
    m["parts"], m["complete"] = m["parts"][:1], False
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "records" / "part-00001.parquet").unlink()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 shards, 1 to convert" in proc.stderr
    assert Dataset(out).read().equals(Dataset(tmp_path / "local").read())


def test_cc3m_from_headerless_tsv(tmp_path, image_server):
    tsv = tmp_path / "Train_GCC-training.tsv"
    lines = [("a man holding a cup", "coffee.jpg"), ('the "rocket" launches', "rocket.jpg"),
             ("a cat, sleeping", "chelsea.jpg"), ("a dead link", "nothing-here.jpg")]
    tsv.write_text("".join(f"{c}\t{image_server}/{n}\n" for c, n in lines))
    raw = tmp_path / "raw"
    s = json.loads(run_cli(*download_args("cc3m", tsv, raw)).stdout)
    assert s["count"] == 4 and s["successes"] == 3
    out = tmp_path / "cc3m"
    s = json.loads(run_cli("convert", "cc3m", raw, "--out", out).stdout)
    assert s["images"] == 3 and s["rejected"] == {"download failed": 1}
    recs = Dataset(out).read().to_pylist()
    assert sorted(r["caption"] for r in recs) == sorted(c for c, _ in lines[:3])
    assert all(len(r["sha256"]) == 64 and r["regions"] == [] for r in recs)


def test_cc3m_from_a_datasets_folder(tmp_path, image_server):
    import datasets

    datasets.Dataset.from_dict({"image_url": [f"{image_server}/camera.jpg", f"{image_server}/gone.jpg"],
                                "caption": ["a man with a camera", "gone"]}).save_to_disk(str(tmp_path / "hf"))
    raw = tmp_path / "raw"
    s = json.loads(run_cli(*download_args("cc3m", tmp_path / "hf", raw)).stdout)
    assert s["count"] == 2 and s["successes"] == 1


def test_bad_url_lists_fail_clearly(tmp_path):
    bad = tmp_path / "meta.parquet"
    pq.write_table(pa.table({"link": ["x"]}), bad)
    proc = run_cli("download", "grit", bad, "--out", tmp_path / "o", check=False)
    assert proc.returncode == 1 and "missing url, caption" in proc.stderr and str(bad) in proc.stderr


def test_sample_shard_converts(tmp_path):
    s = json.loads(run_cli("convert", "cc3m", EXAMPLES / "cc3m_sample", "--out", tmp_path / "o").stdout)
    assert s["images"] == 7 and s["rejected"] == {"download failed": 1}
