"""`ovlabel leakage`, `dedup` and `split` across dataset directories."""

from __future__ import annotations

import json

from conftest import EXAMPLES, coco_doc, run_cli

from formats.converters.coco import COCO80
from formats.dataset import Dataset

COCO_CATS = tuple(COCO80.items())


def goldg_file(path, images: list[dict]) -> None:
    anns = [{"id": k + 1, "image_id": im["id"], "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0,
             "tokens_positive": [[0, 3]]} for k, im in enumerate(images)]
    full = [{"height": 100, "width": 100, "caption": "a dog", **im} for im in images]
    path.write_text(json.dumps({"images": full, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}))


def ids(path) -> list[str]:
    return [r["image_id"] for r in Dataset(path).read(columns=["image_id"]).to_pylist()]


def test_leakage_coco_train_vs_refcoco_and_lvis_val(tmp_path, write_json):
    train = tmp_path / "coco_train"
    run_cli("convert", "coco", write_json(coco_doc(n_images=5, cats=COCO_CATS), "instances_train2017.json"), "--source", "coco2017",
            "--out", train)
    refcoco = tmp_path / "refcoco_val.json"  # RefCOCO val images live in COCO train: known by original_id
    goldg_file(refcoco, [{"id": 0, "file_name": "COCO_train2014_000000000002.jpg", "original_id": 2,
                          "dataset_name": "refcoco"}])
    run_cli("convert", "goldg", refcoco, "--source", "refcoco_val", "--out", tmp_path / "refcoco")
    lvis_val = tmp_path / "lvis_val.json"  # LVIS val images are COCO images too
    doc = coco_doc(n_images=4)
    doc["images"] = [dict(im, id=4, coco_url="http://images.cocodataset.org/train2017/000000000004.jpg")
                     for im in doc["images"][:1]]
    doc["annotations"] = [dict(a, image_id=4) for a in doc["annotations"][:1]]
    lvis_val.write_text(json.dumps(doc))
    run_cli("convert", "coco", lvis_val, "--source", "lvis_v1", "--out", tmp_path / "lvis")
    out = tmp_path / "clean"
    rep = json.loads(run_cli("leakage", train, "--against", tmp_path / "refcoco", tmp_path / "lvis", "--out", out).stdout)
    assert ids(out) == ["coco2017/1", "coco2017/3", "coco2017/5"]
    assert rep["removed"] == 2 and [e["records_removed"] for e in rep["per_eval"]] == [1, 1]
    assert rep["per_eval"][0]["images_matched_by"] == {"coco": 1}
    assert json.loads((out / "report.json").read_text()) == rep
    assert Dataset(out).manifest.categories == Dataset(train).manifest.categories
    # the kept records are unchanged
    kept = Dataset(out).read().to_pylist()
    assert kept == [r for r in Dataset(train).read().to_pylist() if r["image_id"] in ids(out)]


def test_leakage_flickr_train_vs_val(tmp_path):
    train, val = tmp_path / "flickr_train.json", tmp_path / "flickr_val.json"
    goldg_file(train, [{"id": i, "file_name": f"{fid}.jpg", "original_img_id": fid}
                       for i, fid in enumerate([1000, 1000, 1001, 1002])])
    goldg_file(val, [{"id": 0, "file_name": "1001.jpg", "original_img_id": 1001}])
    run_cli("convert", "goldg", train, "--source", "flickr30k", "--out", tmp_path / "tr")
    run_cli("convert", "goldg", val, "--source", "flickr30k_val", "--out", tmp_path / "va")
    rep = json.loads(run_cli("leakage", tmp_path / "tr", "--against", tmp_path / "va", "--out", tmp_path / "o").stdout)
    assert ids(tmp_path / "o") == ["flickr30k/0", "flickr30k/1", "flickr30k/3"] and rep["removed"] == 1


def test_dedup_across_and_within_sources(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_cli("convert", "cc3m", EXAMPLES / "cc3m_sample", "--out", a)
    run_cli("convert", "cc3m", EXAMPLES / "cc3m_sample", "--source", "mirror", "--out", b)  # the same images again
    g = tmp_path / "g.json"
    goldg_file(g, [{"id": 0, "file_name": "x.jpg"}, {"id": 1, "file_name": "x.jpg"},
                   {"id": 2, "file_name": "x.jpg", "caption": "a cat"}])
    run_cli("convert", "goldg", g, "--source", "g", "--out", tmp_path / "gd")
    out = tmp_path / "dedup"
    rep = json.loads(run_cli("dedup", a, b, tmp_path / "gd", "--out", out).stdout)
    assert len(ids(out / "a")) == 7 and ids(out / "b") == []
    assert ids(out / "gd") == ["g/0", "g/2"]  # same image and caption repeated: dropped; another caption: kept
    assert [(r["removed_seen_in_earlier_dataset"], r["removed_repeated_within"]) for r in rep["inputs"]] == [
        (0, 0), (7, 0), (0, 1)]
    # rerun: nothing rewritten, same answer
    assert json.loads(run_cli("dedup", a, b, tmp_path / "gd", "--out", out).stdout) == rep


def test_split_is_deterministic_and_handles_all_and_too_many(tmp_path, write_json):
    src = tmp_path / "src"
    run_cli("convert", "coco", write_json(coco_doc(n_images=20)), "--source", "custom", "--out", src)
    run_cli("split", src, "--n", "5", "--seed", "1", "--out", tmp_path / "s1")
    run_cli("split", src, "--n", "5", "--seed", "1", "--out", tmp_path / "s1b")
    run_cli("split", src, "--n", "5", "--seed", "2", "--out", tmp_path / "s2")
    s1 = ids(tmp_path / "s1")
    assert len(s1) == 5 and s1 == ids(tmp_path / "s1b") and s1 != ids(tmp_path / "s2")
    order = ids(src)
    assert s1 == sorted(s1, key=order.index)  # stored order kept
    run_cli("split", src, "--n", "-1", "--out", tmp_path / "all")
    proc = run_cli("split", src, "--n", "100", "--out", tmp_path / "many")
    assert ids(tmp_path / "all") == order == ids(tmp_path / "many") and "takes them all" in proc.stderr
    assert run_cli("split", src, "--n", "-5", "--out", tmp_path / "bad", check=False).returncode == 1


# -- identity keys (formats.hygiene.key_sql / primary_key_sql) on records in memory ---------------------------

def _keys(source: str, rows: list[dict], extra: tuple = (), primary: bool = False) -> list[tuple]:
    from types import SimpleNamespace

    import duckdb
    import pyarrow as pa

    from formats.hygiene import key_sql, primary_key_sql

    ds = SimpleNamespace(manifest=SimpleNamespace(extra_columns=list(extra), image_root="/img's", source=source),
                         root=None)
    con = duckdb.connect()
    con.register("v", pa.Table.from_pylist(rows))
    sql = primary_key_sql(ds, "v") if primary else key_sql(ds, "v")
    return sorted(con.execute(sql).fetchall(), key=lambda r: [str(x) for x in r])


def test_coco_keys_come_from_file_names_and_coco_image_ids():
    rows = [{"image_id": "coco2017/139", "file_name": "val2017/000000000139.jpg"},
            {"image_id": "x/1", "file_name": "COCO_train2014_000000000009.jpg"},
            {"image_id": "x/2", "file_name": "train2017/0.jpg"},
            {"image_id": "x/3", "file_name": "mytrain2017/5.jpg"},  # the pattern is anchored at the end only
            {"image_id": "x/4", "file_name": "COCO_val2014_12.png"}]  # not a .jpg: no coco key
    assert _keys("other", rows) == [
        ("coco2017/139", "coco:139"), ("coco2017/139", "file:/img's/val2017/000000000139.jpg"),
        ("x/1", "coco:9"), ("x/1", "file:/img's/COCO_train2014_000000000009.jpg"),
        ("x/2", "coco:0"), ("x/2", "file:/img's/train2017/0.jpg"),
        ("x/3", "coco:5"), ("x/3", "file:/img's/mytrain2017/5.jpg"),
        ("x/4", "file:/img's/COCO_val2014_12.png")]
    # a COCO source's image id is a key too, whatever its file is called
    assert ("lvis/42", "coco:42") in _keys("LVIS_v1", [{"image_id": "lvis/42", "file_name": "a.jpg"}])


def test_sha256_original_ids_and_flickr_keys():
    rows = [{"image_id": "g/1", "file_name": "1.jpg", "sha256": "ab", "original_id": 7, "data_source": "vg",
             "dataset_name": None, "original_img_id": None},
            {"image_id": "g/2", "file_name": "2.jpg", "sha256": None, "original_id": 8, "data_source": None,
             "dataset_name": "RefCOCOg", "original_img_id": None},
            {"image_id": "g/3", "file_name": "36979.jpg", "sha256": None, "original_id": 9, "data_source": None,
             "dataset_name": "flickr", "original_img_id": 36979}]
    keys = _keys("flickr30k_mdetr", rows, ("sha256", "original_id", "data_source", "dataset_name", "original_img_id"))
    assert keys == [
        ("g/1", "file:/img's/1.jpg"), ("g/1", "flickr:1"), ("g/1", "sha256:ab"), ("g/1", "vg:7"),
        ("g/2", "coco:8"), ("g/2", "file:/img's/2.jpg"), ("g/2", "flickr:2"),
        ("g/3", "file:/img's/36979.jpg"), ("g/3", "flickr:36979"), ("g/3", "flickr:36979")]


def test_the_primary_key_is_the_sha256_where_known_else_the_file():
    rows = [{"image_id": "a", "file_name": "a.jpg", "sha256": "ff", "caption": "c", "_ord": 0},
            {"image_id": "b", "file_name": "b.jpg", "sha256": None, "caption": None, "_ord": 1}]
    assert _keys("cc3m", rows, ("sha256",), primary=True) == [
        ("a", "sha256:ff", "c", 0), ("b", "file:/img's/b.jpg", None, 1)]
    assert _keys("cc3m", rows, (), primary=True) == [
        ("a", "file:/img's/a.jpg", "c", 0), ("b", "file:/img's/b.jpg", None, 1)]
