"""`ovlabel leakage`, `dedup` and `split` across dataset directories (formats/hygiene.py): through the CLI, and
the functions themselves (and `write_filtered`) on small datasets in tmp folders."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest
from conftest import EXAMPLES, coco_doc, run_cli

from formats import schema as S
from formats.converters.coco import COCO80
from formats.dataset import Dataset, DatasetError, DatasetWriter, Manifest
from formats.hygiene import SplitConfig, dedup, leakage, split, write_filtered
from formats.query import connect, register_records

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


# -- leakage, dedup, split and write_filtered called in-process on small datasets ----------------------------

def _dataset(path, parts: list[list[tuple]], source: str = "t", image_root: str = "/img") -> Dataset:
    """A VG dataset at `path` whose part k holds `parts[k]`: records (i, file_name, caption) with image id
    ``<source>/<i>`` and no regions."""
    w = DatasetWriter(path, Manifest(kind="vg", source=source, image_root=image_root))
    for k, rows in enumerate(parts):
        recs = [{"image_id": f"{source}/{i}", "source": source, "file_name": f, "width": 10, "height": 10,
                 "caption": c, "regions": []} for i, f, c in rows]
        w.write_part(f"part-{k}.parquet", S.conform(pa.Table.from_pylist(recs, schema=S.CORE_SCHEMA)))
    w.finish()
    return Dataset(path)


FIVE = [[(0, "a.jpg", "x"), (1, "b.jpg", "y"), (2, "c.jpg", "z")], [(3, "d.jpg", None), (4, "e.jpg", "w")]]


def test_write_filtered_keeps_the_chosen_records_part_by_part_in_stored_order(tmp_path):
    src = _dataset(tmp_path / "src", FIVE)
    con = connect()
    register_records(con, src, "src")
    m = write_filtered(src, tmp_path / "out", "SELECT image_id FROM src WHERE image_id IN ('t/4', 't/2', 't/0')",
                       con, {"op": "test"}, {"k": 1}, {"removed": 2})
    assert m.counts == {"images_in": 5, "images": 3, "removed": 2, "boxes": 0}
    assert [(p["name"], p["rows"]) for p in m.parts] == [("part-0.parquet", 2), ("part-1.parquet", 1)]
    out = Dataset(tmp_path / "out").require_complete()
    assert out.read().to_pylist() == [r for r in src.read().to_pylist() if r["image_id"] in ("t/0", "t/2", "t/4")]
    assert out.manifest.config["op"] == "test" and (out.manifest.kind, out.manifest.source) == ("vg", "t")
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == {"removed": 2}
    # a part left with no record stays, empty
    m = write_filtered(src, tmp_path / "one", "SELECT 't/4' AS image_id", con, {"op": "test"}, {"k": 2}, {})
    assert [(p["name"], p["rows"]) for p in m.parts] == [("part-0.parquet", 0), ("part-1.parquet", 1)]
    assert m.counts["removed"] == 0 and ids(tmp_path / "one") == ["t/4"]


def test_leakage_removes_training_records_sharing_an_image_with_any_evaluation_set(tmp_path):
    _dataset(tmp_path / "src", FIVE)
    _dataset(tmp_path / "ev1", [[(0, "c.jpg", "q"), (1, "zz.jpg", "q")]], source="e1")
    _dataset(tmp_path / "ev2", [[(0, "a.jpg", "q"), (1, "c.jpg", "q")]], source="e2")
    _dataset(tmp_path / "ev3", [[(0, "a.jpg", "q")]], source="e3", image_root="/elsewhere")  # another file
    rep = leakage(tmp_path / "src", [tmp_path / "ev1", tmp_path / "ev2", tmp_path / "ev3"], tmp_path / "clean",
                  examples=1)
    assert rep == {"train": str((tmp_path / "src").resolve()), "removed": 2, "examples": ["t/0"],
                   "per_eval": [{"eval": str((tmp_path / e).resolve()), "records_removed": n,
                                 "images_matched_by": by} for e, n, by in [("ev1", 1, {"file": 1}),
                                                                          ("ev2", 2, {"file": 2}), ("ev3", 0, {})]]}
    assert ids(tmp_path / "clean") == ["t/1", "t/3", "t/4"]
    assert Dataset(tmp_path / "clean").manifest.counts == {"images_in": 5, "images": 3, "removed": 2, "boxes": 0}
    # the same call again finds the finished run and returns its report
    assert leakage(tmp_path / "src", [tmp_path / "ev1", tmp_path / "ev2", tmp_path / "ev3"], tmp_path / "clean",
                   examples=1) == rep


def test_dedup_keeps_an_image_in_the_first_dataset_and_names_outputs_apart(tmp_path):
    _dataset(tmp_path / "x" / "ds", [[(0, "a.jpg", "x"), (1, "a.jpg", "x"), (2, "a.jpg", "other"), (3, "b.jpg", "y")]],
             source="a")
    _dataset(tmp_path / "y" / "ds", [[(0, "b.jpg", "y"), (1, "n.jpg", "y")]], source="b")
    out = tmp_path / "dd"
    rep = dedup([tmp_path / "x" / "ds", tmp_path / "y" / "ds"], out)
    assert rep == {"removed": 2, "inputs": [
        {"dataset": str((tmp_path / "x" / "ds").resolve()), "out": str(out / "ds"), "records": 4,
         "removed_seen_in_earlier_dataset": 0, "removed_repeated_within": 1},
        {"dataset": str((tmp_path / "y" / "ds").resolve()), "out": str(out / "ds-2"), "records": 2,
         "removed_seen_in_earlier_dataset": 1, "removed_repeated_within": 0}]}
    assert sorted(p.name for p in out.iterdir()) == ["ds", "ds-2", "report.json"]
    assert ids(out / "ds") == ["a/0", "a/2", "a/3"]  # a/1 repeats a/0's image and caption; a/2 has its own caption
    assert ids(out / "ds-2") == ["b/1"]  # b.jpg is in the first dataset
    assert json.loads((out / "report.json").read_text()) == rep


def test_split_takes_a_seeded_sample_in_stored_order_and_refuses_a_negative_count(tmp_path, caplog):
    _dataset(tmp_path / "src", FIVE)
    rep = split(tmp_path / "src", tmp_path / "s0", SplitConfig(n=2, seed=0))
    assert rep == {"dataset": str((tmp_path / "src").resolve()), "records": 5, "chosen": 2, "seed": 0, "removed": 3}
    assert ids(tmp_path / "s0") == ["t/2", "t/4"]
    split(tmp_path / "src", tmp_path / "s1", SplitConfig(n=2, seed=1))
    assert ids(tmp_path / "s1") == ["t/0", "t/1"]
    # the rule: the n smallest md5("<seed>:<image_id>"), written in stored order
    every = [f"t/{i}" for i in range(5)]
    for seed, got in ((0, ["t/2", "t/4"]), (1, ["t/0", "t/1"])):
        chosen = sorted(every, key=lambda i: hashlib.md5(f"{seed}:{i}".encode()).hexdigest())[:2]
        assert sorted(chosen) == got
    assert split(tmp_path / "src", tmp_path / "all", SplitConfig(n=-1))["chosen"] == 5
    assert ids(tmp_path / "all") == every
    with caplog.at_level("WARNING", logger="ovlabel.hygiene"):
        assert split(tmp_path / "src", tmp_path / "many", SplitConfig(n=9))["removed"] == 0
    assert "has 5 records; --n 9 takes them all" in caplog.text and ids(tmp_path / "many") == every
    with pytest.raises(DatasetError, match=r"^--n must be -1 \(all\) or a count, not -2$"):
        split(tmp_path / "src", tmp_path / "bad", SplitConfig(n=-2))
    assert not (tmp_path / "bad").exists()
