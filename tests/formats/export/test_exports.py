"""Exports: ODVG lines exactly as MMDetection documents them, COCO via pycocotools, HF datasets, YOLO-World."""

from __future__ import annotations

import json

import pytest
from conftest import coco_doc

from formats.converters.coco import CocoConvertConfig, convert_coco
from formats.export.coco import export_coco
from formats.export.hf import export_hf
from formats.export.odvg import export_odvg
from formats.export.yolo_world import class_texts, export_yolo_world


def lines(path):
    return [json.loads(x) for x in open(path)]


@pytest.fixture
def coco_ds(write_json, tmp_path):
    doc = {
        "images": [{"id": 391895, "file_name": "000000391895.jpg", "height": 360, "width": 640},
                   {"id": 7, "file_name": "empty.jpg", "height": 10, "width": 20}],
        "annotations": [
            {"id": 1, "image_id": 391895, "category_id": 4, "bbox": [359.17, 146.17, 112.45, 213.57], "area": 1.0},
            {"id": 2, "image_id": 391895, "category_id": 1, "bbox": [339.88, 22.16, 153.88, 300.73], "area": 1.0},
            {"id": 3, "image_id": 391895, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 1.0, "iscrowd": 1},
        ],
        "categories": [{"id": i, "name": n} for i, n in
                       [(1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle")]],
    }
    out = tmp_path / "ds"
    convert_coco(write_json(doc), out, CocoConvertConfig(source="custom", part_images=1))
    return out


def test_odvg_golden(coco_ds, tmp_path):
    r = export_odvg(coco_ds, tmp_path / "train.jsonl")
    got = lines(tmp_path / "train.jsonl")
    assert got == [
        {"filename": "000000391895.jpg", "height": 360, "width": 640, "detection": {"instances": [
            {"bbox": [359.17, 146.17, 359.17 + 112.45, 146.17 + 213.57], "label": 3, "category": "motorcycle"},
            {"bbox": [339.88, 22.16, 339.88 + 153.88, 22.16 + 300.73], "label": 0, "category": "person"}]}},
        {"filename": "empty.jpg", "height": 10, "width": 20, "detection": {"instances": []}},
    ]
    assert json.load(open(tmp_path / "train.label_map.json")) == {"0": "person", "1": "bicycle", "2": "car",
                                                                  "3": "motorcycle"}
    assert r["lines"] == 2 and r["label_map"] == tmp_path / "train.label_map.json"


def test_coco_export_loads_in_pycocotools_and_round_trips(coco_ds, tmp_path):
    from pycocotools.coco import COCO

    export_coco(coco_ds, tmp_path / "c.json")
    c = COCO(str(tmp_path / "c.json"))
    assert sorted(c.imgs) == [7, 391895] and len(c.anns) == 3  # the source's image ids; the crowd kept
    assert [c.cats[i]["name"] for i in sorted(c.cats)] == ["person", "bicycle", "car", "motorcycle"]
    a = c.anns[1]
    assert a["category_id"] == 4 and a["bbox"] == pytest.approx([359.17, 146.17, 112.45, 213.57])
    assert a["area"] == 1.0 and a["iscrowd"] == 0  # the source's own area, not the box's
    assert (c.anns[3]["iscrowd"], c.anns[3]["image_id"], c.anns[3]["area"]) == (1, 391895, 1.0)
    assert c.imgs[391895]["ovlabel_id"] == "custom/391895"
    # convert -> export coco -> convert coco -> export odvg: the same records
    convert_coco(tmp_path / "c.json", tmp_path / "again", CocoConvertConfig(source="custom"))
    export_odvg(coco_ds, tmp_path / "a.jsonl")
    export_odvg(tmp_path / "again", tmp_path / "b.jsonl")
    a_lines, b_lines = lines(tmp_path / "a.jsonl"), lines(tmp_path / "b.jsonl")
    assert len(a_lines) == len(b_lines)
    for x, y in zip(a_lines, b_lines):
        xi, yi = x.pop("detection")["instances"], y.pop("detection")["instances"]
        assert x == y
        assert [(i["label"], i["category"]) for i in xi] == [(i["label"], i["category"]) for i in yi]
        for i, j in zip(xi, yi):
            assert i["bbox"] == pytest.approx(j["bbox"], abs=1e-6)


def test_round_trip_on_generated_o365(write_json, tmp_path):
    doc = coco_doc(n_images=30)
    convert_coco(write_json(doc), tmp_path / "a", CocoConvertConfig(source="o365v1", part_images=7))
    export_coco(tmp_path / "a", tmp_path / "a.json")
    convert_coco(tmp_path / "a.json", tmp_path / "b", CocoConvertConfig(source="custom"))
    export_odvg(tmp_path / "a", tmp_path / "a.jsonl")
    export_odvg(tmp_path / "b", tmp_path / "b.jsonl")
    a, b = lines(tmp_path / "a.jsonl"), lines(tmp_path / "b.jsonl")
    assert [x["filename"] for x in a] == [x["filename"] for x in b] == [i["file_name"] for i in doc["images"] if i["id"] not in (6, 19, 23)]
    for x, y in zip(a, b):
        assert len(x["detection"]["instances"]) == len(y["detection"]["instances"]) > 0
        for i, j in zip(x["detection"]["instances"], y["detection"]["instances"]):
            assert (i["label"], i["category"]) == (j["label"], j["category"])
            assert i["bbox"] == pytest.approx(j["bbox"], abs=1e-6)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A `datasets` cache of this test's own (the shared one can serve another test's folder of the same name)."""
    import datasets

    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def test_hf_export_declares_features_and_loads(coco_ds, tmp_path, hf_cache):
    import datasets

    export_hf(coco_ds, tmp_path / "hf")
    d = datasets.load_dataset(str(tmp_path / "hf"), split="train", cache_dir=str(hf_cache))
    assert d.num_rows == 2
    assert d.features["regions"].feature["bbox"] == datasets.List(datasets.Value("float64"), length=4)
    assert d[0]["regions"][0]["category"] == "motorcycle"
    assert d[0]["regions"][0]["bbox"] == pytest.approx([359.17, 146.17, 471.62, 359.74])


def test_yolo_world_class_texts(write_json, tmp_path):
    assert class_texts({"name": "Cabinet/shelf"}) == ["cabinet", "shelf"]
    assert class_texts({"name": "aerosol_can", "synonyms": ["aerosol_can", "spray_can"]}) == ["aerosol can", "spray can"]
    doc = coco_doc(n_images=2)
    convert_coco(write_json(doc), tmp_path / "ds", CocoConvertConfig(source="o365v1"))
    r = export_yolo_world(tmp_path / "ds", tmp_path / "yw")
    assert json.load(open(r["class_texts"])) == [["person"], ["car"], ["cabinet", "shelf"]]


def test_images_dir_writes_shard_images_once_and_points_the_exports_at_them(sample_gold, tmp_path):
    """GRIT/CC3M records point inside img2dataset shards; with --images-dir the exports name real files."""
    from conftest import EXAMPLES, run_cli
    from PIL import Image
    from pycocotools.coco import COCO

    from formats.dataset import Dataset
    from formats.images import read_image_bytes

    ds_dir = tmp_path / "cc3m"
    run_cli("convert", "cc3m", EXAMPLES / "cc3m_sample", "--out", ds_dir)
    ds = Dataset(ds_dir)
    stored = ds.read(["file_name", "width", "height"]).to_pylist()
    assert all(r["file_name"].startswith("tar://") for r in stored)
    images = tmp_path / "images"
    summary = json.loads(run_cli("export", "odvg", ds_dir, "--out", tmp_path / "cc3m.jsonl",  # captions only:
                                 "--images-dir", images, "--keep-empty").stdout)  # no region in any record
    assert summary["images_written"] == len(stored) and summary["images_present"] == 0
    exported = lines(tmp_path / "cc3m.jsonl")
    assert len(exported) == len(stored)
    for rec, orig in zip(exported, stored):  # record order kept
        path = images / rec["filename"]
        assert not rec["filename"].startswith("/") and path.is_file()
        assert path.read_bytes() == read_image_bytes(ds.manifest.image_root, orig["file_name"])
        assert Image.open(path).size == (orig["width"], orig["height"]) == (rec["width"], rec["height"])
    before = {p: p.stat().st_mtime_ns for p in images.rglob("*.jpg")}
    again = export_coco(ds_dir, tmp_path / "cc3m.json", images_dir=images)  # a rerun writes nothing
    assert again["images_written"] == 0 and again["images_present"] == len(stored)
    assert {p: p.stat().st_mtime_ns for p in images.rglob("*.jpg")} == before
    coco = COCO(str(tmp_path / "cc3m.json"))
    assert [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)] == [r["filename"] for r in exported]
    # images that are files already: absolute paths, nothing copied
    plain = export_odvg(sample_gold, tmp_path / "gold.jsonl", images_dir=tmp_path / "gold_images")
    assert plain["images_written"] == 0 and not (tmp_path / "gold_images").exists()
    for rec in lines(tmp_path / "gold.jsonl"):
        assert rec["filename"].startswith("/") and (images / rec["filename"]).is_file()  # join keeps absolute paths


@pytest.mark.parametrize("name", ["tar://../../evil.jpg::00000.tar", "tar://a.jpg::../../00000.tar",
                                  "parquet://../x::00000.parquet", "tar:///etc/passwd::00000.tar"])
def test_images_dir_never_writes_outside_it(name):
    from formats.export.images import local_name
    from formats.paths import UnsafePathError

    with pytest.raises(UnsafePathError):
        local_name(name)


def vg_dataset(path, file_names: list[str], boxes: list[int]):
    """A small VG dataset: one record per file name with the given number of regions (0 = a caption without boxes)."""
    import pyarrow as pa

    from formats import schema as S
    from formats.dataset import DatasetWriter, Manifest

    rows = []
    for i, (name, n) in enumerate(zip(file_names, boxes)):
        regs = [{"region_id": None, "bbox": [1.0, 2.0, 3.0 + k, 4.0], "label": None, "category": None, "phrase": "dog",
                 "tokens_positive": [[2, 5]], "score": None, "det_score": None, "clip_score": None, "origin": "gold",
                 "round": None} for k in range(n)]
        rows.append({"image_id": f"t/{i}", "source": "t", "file_name": name, "width": 10, "height": 10,
                     "caption": "a dog", "regions": regs})
    w = DatasetWriter(path, Manifest(kind="vg", source="t", image_root=str(path)))
    w.write_part("part-00000.parquet", S.conform(pa.Table.from_pylist(rows, schema=S.CORE_SCHEMA)))
    w.finish()
    return path


def test_odvg_leaves_out_grounding_records_without_regions(tmp_path):
    ds = vg_dataset(tmp_path / "vg", ["a.jpg", "b.jpg", "c.jpg"], [1, 0, 2])
    r = export_odvg(ds, tmp_path / "vg.jsonl")
    assert r["lines"] == 2 and r["left_out_empty"] == 1
    assert [(x["filename"], len(x["grounding"]["regions"])) for x in lines(tmp_path / "vg.jsonl")] == [("a.jpg", 1),
                                                                                                     ("c.jpg", 2)]
    r = export_odvg(ds, tmp_path / "all.jsonl", keep_empty=True)
    assert r["lines"] == 3 and r["left_out_empty"] == 0
    assert lines(tmp_path / "all.jsonl")[1]["grounding"] == {"caption": "a dog", "regions": []}


def test_exports_of_shard_backed_images_need_images_dir_or_tar_paths(tmp_path):
    from conftest import run_cli

    from formats.export.images import ShardImagesError

    ds = vg_dataset(tmp_path / "vg", ["tar://k1.jpg::00000.tar", "a.jpg"], [1, 1])
    for export in (lambda: export_odvg(ds, tmp_path / "x.jsonl"), lambda: export_coco(ds, tmp_path / "x.json"),
                   lambda: export_yolo_world(ds, tmp_path / "yw"), lambda: export_hf(ds, tmp_path / "hf")):
        with pytest.raises(ShardImagesError, match=r"1 images are inside img2dataset/webdataset shards "
                                                   r"\(e.g. tar://k1.jpg::00000.tar\).*--images-dir DIR.*--tar-paths"):
            export()
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "x.json").exists() and not (tmp_path / "hf").exists()
    r = export_odvg(ds, tmp_path / "x.jsonl", tar_paths=True)
    assert [x["filename"] for x in lines(r["records"])] == ["tar://k1.jpg::00000.tar", "a.jpg"]
    p = run_cli("export", "coco", ds, "--out", tmp_path / "c.json", check=False)
    assert p.returncode == 1 and "--images-dir" in p.stderr and "--tar-paths" in p.stderr
    run_cli("export", "coco", ds, "--out", tmp_path / "c.json", "--tar-paths")
    assert [i["file_name"] for i in json.load(open(tmp_path / "c.json"))["images"]] == ["tar://k1.jpg::00000.tar",
                                                                                       "a.jpg"]


@pytest.mark.parametrize("synonyms, texts", [  # as in YOLO-World's data/texts/lvis_v1_class_texts.json
    (["arctic_(type_of_shoe)", "galosh", "golosh", "rubber_(type_of_shoe)", "gumshoe"],
     ["arctic", "arctic type of shoe", "galosh", "golosh", "rubber", "rubber type of shoe", "gumshoe"]),
    (["bat_(animal)"], ["bat", "bat animal"]),
    (["bicycle", "bike_(bicycle)"], ["bicycle", "bike", "bike bicycle"]),
    (["bottle_cap", "cap_(container_lid)"], ["bottle cap", "cap", "cap container lid"]),
    (["cash_register", "register_(for_cash_transactions)"], ["cash register", "register", "register for cash transactions"]),
    (["Band_Aid"], ["Band Aid"]),
    (["football_(American)"], ["football", "football American"]),
    (["windshield_wiper", "wiper_(for_windshield/screen)"], ["windshield wiper", "wiper", "wiper for windshield or screen"]),
    (["monitor_(computer_equipment) computer_monitor"], ["monitor", "monitor computer equipment"]),
])
def test_yolo_world_class_texts_split_parenthesised_qualifiers(synonyms, texts):
    assert class_texts({"name": synonyms[0], "synonyms": synonyms}) == texts


def test_embed_texts_first_synonym_by_default_or_mean(tiny_models, tmp_path):
    import numpy as np

    from workflows.embed_texts import embed_texts

    texts = tmp_path / "t.json"
    texts.write_text(json.dumps([["tv", "monitor"], ["cat"]]))
    (tmp_path / "tv.json").write_text(json.dumps([["tv"], ["cat"]]))
    first = embed_texts(texts, tiny_models["clip"], tmp_path / "first.npy")
    assert first["synonyms"] == "first"
    embed_texts(tmp_path / "tv.json", tiny_models["clip"], tmp_path / "tv.npy", synonyms="mean")
    embed_texts(texts, tiny_models["clip"], tmp_path / "mean.npy", synonyms="mean")
    a, tv, mean = (np.load(tmp_path / f"{n}.npy") for n in ("first", "tv", "mean"))
    assert a == pytest.approx(tv, abs=1e-6)  # the first text only
    assert not np.allclose(mean[0], a[0]) and mean[1] == pytest.approx(a[1], abs=1e-6)
    with pytest.raises(ValueError, match="--synonyms 'all'"):
        embed_texts(texts, tiny_models["clip"], tmp_path / "x.npy", synonyms="all")


def test_hf_reexport_into_the_same_folder_is_not_served_stale(write_json, tmp_path, hf_cache):
    """A second export of other records into the same folder, within the same second, loads the new records."""
    import datasets

    a, b = coco_doc(n_images=3), coco_doc(n_images=1, cats=((1, "dog"), (2, "cat"), (3, "eel")))
    convert_coco(write_json(a, "a.json"), tmp_path / "a", CocoConvertConfig(source="custom", part_images=2))
    convert_coco(write_json(b, "b.json"), tmp_path / "b", CocoConvertConfig(source="custom"))
    ra = export_hf(tmp_path / "a", tmp_path / "hf")
    first = datasets.load_dataset(str(tmp_path / "hf"), split="train", cache_dir=str(hf_cache))
    assert first.num_rows == 3 and ra["shards"] == 2
    rb = export_hf(tmp_path / "b", tmp_path / "hf")
    assert sorted(p.name for p in (tmp_path / "hf" / "data").iterdir()) == [
        f"train-{rb['fingerprint']}-00000-of-00001.parquet"]  # the first export's shards are gone
    again = datasets.load_dataset(str(tmp_path / "hf"), split="train", cache_dir=str(hf_cache))
    assert again.num_rows == 1 and again[0]["regions"][0]["category"] == "cat"
    assert ra["fingerprint"] != rb["fingerprint"]


def wds_dataset(tmp_path, name: str, color, w: int = 16, h: int = 8):
    """A tar-only webdataset folder (00000.tar, key 000000001) converted as cc3m; returns the dataset folder."""
    from converter_inputs import image_bytes, write_tar

    from formats.converters.img2dataset import Img2DatasetConvertConfig, convert_img2dataset

    raw = tmp_path / f"raw_{name}"
    raw.mkdir()
    write_tar(raw / "00000.tar", [("000000001.jpg", image_bytes(w, h, color=color)), ("000000001.txt", b"a thing")])
    convert_img2dataset(raw, tmp_path / name, Img2DatasetConvertConfig(source="cc3m"))
    return tmp_path / name


def test_hf_export_of_shard_backed_images_needs_images_dir_and_then_names_real_files(tmp_path, hf_cache):
    """`export hf` references images as the other exports do: refused for shard-backed data without --images-dir
    (the message names the flag), shard images written out and named relative to the folder with it."""
    import datasets
    from conftest import run_cli

    from formats.images import read_image_bytes

    ds = wds_dataset(tmp_path, "wds", (200, 30, 30))
    p = run_cli("export", "hf", ds, "--out", tmp_path / "hf", check=False)
    assert p.returncode == 1 and "--images-dir" in p.stderr and "--tar-paths" in p.stderr
    assert "tar://000000001.jpg::00000.tar" in p.stderr and not (tmp_path / "hf").exists()
    images = tmp_path / "images"
    r = json.loads(run_cli("export", "hf", ds, "--out", tmp_path / "hf", "--images-dir", images).stdout)
    assert (r["rows"], r["images_written"], r["images_present"]) == (1, 1, 0)
    d = datasets.load_dataset(str(tmp_path / "hf"), split="train", cache_dir=str(hf_cache))
    assert d[0]["file_name"] == "00000/000000001.jpg" and d[0]["image_id"] == "cc3m/000000001"
    assert (images / d[0]["file_name"]).read_bytes() == read_image_bytes(tmp_path / "raw_wds",
                                                                        "tar://000000001.jpg::00000.tar")
    assert str(images.resolve()) in (tmp_path / "hf" / "README.md").read_text()
    paths = export_hf(ds, tmp_path / "hf", tar_paths=True)  # shard names on request; a new cache key
    assert paths["fingerprint"] != r["fingerprint"]
    d = datasets.load_dataset(str(tmp_path / "hf"), split="train", cache_dir=str(hf_cache))
    assert d[0]["file_name"] == "tar://000000001.jpg::00000.tar"


def test_images_dir_never_reuses_another_datasets_image_of_the_same_name(tmp_path):
    """Two datasets with the same shard and key names, different pictures, one --images-dir: the second export
    is refused naming the file and both sources, never pointed at the first dataset's picture."""
    from conftest import run_cli

    from formats.export.images import ImagesDirConflict

    red, blue = wds_dataset(tmp_path, "red", (200, 30, 30)), wds_dataset(tmp_path, "blue", (30, 30, 200))
    images = tmp_path / "images"
    first = export_odvg(red, tmp_path / "red.jsonl", images_dir=images, keep_empty=True)
    assert (first["images_written"], first["images_present"]) == (1, 0)
    red_bytes = (images / "00000" / "000000001.jpg").read_bytes()
    with pytest.raises(ImagesDirConflict, match=r"00000/000000001\.jpg: already holds a different image than "
                                                r"tar://000000001\.jpg::00000\.tar of .*blue"):
        export_odvg(blue, tmp_path / "blue.jsonl", images_dir=images, keep_empty=True)
    assert not (tmp_path / "blue.jsonl").exists()
    p = run_cli("export", "odvg", blue, "--out", tmp_path / "blue.jsonl", "--keep-empty", "--images-dir", images,
                check=False)
    assert p.returncode == 1 and "already holds a different image" in p.stderr and "raw_blue" in p.stderr
    assert (images / "00000" / "000000001.jpg").read_bytes() == red_bytes  # the first dataset's file is untouched
    again = export_odvg(red, tmp_path / "red2.jsonl", images_dir=images, keep_empty=True)  # equal bytes: reused
    assert (again["images_written"], again["images_present"]) == (0, 1)
    other = export_odvg(blue, tmp_path / "blue.jsonl", images_dir=tmp_path / "blue_images", keep_empty=True)
    assert other["images_written"] == 1
    assert lines(tmp_path / "blue.jsonl")[0]["filename"] == "00000/000000001.jpg"


def test_odvg_without_keep_empty_writes_only_the_images_of_exported_records(tmp_path):
    from converter_inputs import image_bytes, write_tar

    raw = tmp_path / "raw"
    raw.mkdir()
    write_tar(raw / "00000.tar", [(f"k{i}.jpg", image_bytes(8, 8, color=(i * 40, 0, 0))) for i in range(4)])
    ds = vg_dataset(tmp_path / "vg", [f"tar://k{i}.jpg::00000.tar" for i in range(4)], [0, 1, 0, 0])
    ds_manifest = json.loads((ds / "manifest.json").read_text())
    ds_manifest["image_root"] = str(raw)
    (ds / "manifest.json").write_text(json.dumps(ds_manifest))
    images = tmp_path / "images"
    r = export_odvg(ds, tmp_path / "vg.jsonl", images_dir=images)
    assert (r["lines"], r["left_out_empty"], r["images_written"], r["images_present"]) == (1, 3, 1, 0)
    assert sorted(p.name for p in images.rglob("*.jpg")) == ["k1.jpg"]
    assert [x["filename"] for x in lines(tmp_path / "vg.jsonl")] == ["00000/k1.jpg"]
    r = export_odvg(ds, tmp_path / "all.jsonl", images_dir=images, keep_empty=True)
    assert (r["lines"], r["left_out_empty"], r["images_written"], r["images_present"]) == (4, 0, 3, 1)
    # shard names of records left out are no reason to refuse an export without --images-dir
    only_empty_in_shards = vg_dataset(tmp_path / "vg2", ["tar://k0.jpg::00000.tar", "a.jpg"], [0, 1])
    assert [x["filename"] for x in lines(export_odvg(only_empty_in_shards, tmp_path / "x.jsonl")["records"])] == ["a.jpg"]


@pytest.mark.parametrize("category, texts", [
    ({"name": "tv", "synonyms": ["", "_"]}, ["tv"]),  # synonyms with no word: the name's texts, never []
    ({"name": "Traffic_Light/Signal", "synonyms": [" "]}, ["traffic light", "signal"]),
    ({"name": "tv", "synonyms": ["", "tv_set"]}, ["tv set"]),
])
def test_yolo_world_class_texts_never_empty(category, texts):
    """YOLO-World and `embed-texts --synonyms first` read each class's first text: a class needs one."""
    assert class_texts(category) == texts


def union_dataset(root):
    """A hand-made vocabulary-union dataset (VG with a label map): a class region with its caption phrase, a
    class region without, a phrase region."""
    import pyarrow as pa

    from formats import schema as S
    from formats.dataset import DatasetWriter, Manifest, provenance

    cap = "a man near a launch pad"
    regions = [{"bbox": [1.0, 1.0, 9.0, 9.0], "label": 0, "category": "person", "phrase": "man",
                "tokens_positive": [[2, 5]], "score": 0.5, "origin": "pseudo"},
               {"bbox": [2.0, 2.0, 8.0, 8.0], "label": 1, "category": "camera", "score": 0.4, "origin": "pseudo"},
               {"bbox": [3.0, 3.0, 7.0, 7.0], "phrase": "launch pad", "tokens_positive": [[13, 23]], "score": 0.3,
                "origin": "pseudo"}]
    m = Manifest(kind="vg", source="t", image_root=str(root), config={},
                 categories=[{"label": 0, "name": "person", "synonyms": ["person", "man"]}, {"label": 1, "name": "camera"}],
                 provenance=provenance([]))
    w = DatasetWriter(root / "u", m, overwrite=True)
    w.write_part("part-00000.parquet", pa.Table.from_pylist(
        [{"image_id": "t/1", "source": "t", "file_name": "a.jpg", "width": 10, "height": 10, "caption": cap,
          "regions": regions}], schema=S.record_schema([])))
    w.finish({})
    return root / "u"


def test_coco_views_from_the_cli(tmp_path):
    from conftest import run_cli

    ds = union_dataset(tmp_path)
    for view, cats, n in (("od", ["person", "camera"], 2), ("vg", ["person", "camera", "launch pad"], 2),
                          (None, ["person", "camera", "launch pad"], 3)):
        out = tmp_path / f"{view}.json"
        run_cli("export", "coco", ds, "--out", out, *(["--view", view] if view else []))
        doc = json.loads(out.read_text())
        assert [c["name"] for c in doc["categories"]] == cats and len(doc["annotations"]) == n
    # a vg view of an OD dataset has no region in it: refused, not an empty file
    od = tmp_path / "od.jsonl"
    od.write_text(json.dumps({"filename": "a.jpg", "height": 10, "width": 10, "detection": {"instances": [
        {"bbox": [1, 1, 9, 9], "label": 0, "category": "cat"}]}}) + "\n")
    run_cli("convert", "odvg", od, "--image-root", tmp_path, "--out", tmp_path / "od")
    proc = run_cli("export", "coco", tmp_path / "od", "--out", tmp_path / "x.json", "--view", "vg", check=False)
    assert proc.returncode == 1 and "no 'vg' view of this OD dataset" in proc.stderr
    assert not (tmp_path / "x.json").exists()
