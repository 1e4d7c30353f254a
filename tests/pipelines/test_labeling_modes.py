"""Every labeling mode end to end as a user runs it (issue #16 item 6), through Ray with the tiny models: the
input converted or prepared by the CLI, pseudo-labeled by `ovlabel pseudo` or pipelines/cc3m_pseudo.py, one run
killed with SIGKILL mid-way and rerun (it must equal an uninterrupted run), then exported.

- an image folder + a class list -> an OD dataset whose label map is the class list -> ODVG OD and COCO;
- captions with given phrases (`ovlabel phrases`) -> a VG dataset whose regions are the given phrases;
- an ODVG OD file + its label map -> `--classes` the converted dataset -> an OD dataset with that label map.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, label_twice, run_cli

from formats.dataset import Dataset

pytestmark = pytest.mark.slow
OVLABEL = [sys.executable, "-m", "workflows.cli"]
PIPELINE = [sys.executable, str(ROOT / "pipelines" / "cc3m_pseudo.py")]


def model_args(tiny_models) -> list:
    """Tiny models, every candidate kept, two images a part (several parts to kill a run between)."""
    return ["--detector", tiny_models["detector"], "--clip", tiny_models["clip"], "--box-threshold", "0",
            "--fused-threshold", "0", "--image-threshold", "-1", "--images-per-part", "2", "--num-cpus", "2"]


def regions_of(ds: Dataset) -> dict[str, list[dict]]:
    return {r["image_id"]: r["regions"] for r in ds.read(["image_id", "regions"]).to_pylist()}


def test_an_image_folder_with_a_class_list(tiny_models, tmp_path):
    """convert images (real photos, subfolders, PNG and JPEG, one grayscale) -> pseudo --classes (CLI) ->
    OD dataset labelled with the class list -> ODVG OD (its label map file is the class list) and COCO."""
    import skimage.data
    from pycocotools.coco import COCO

    data = Path(skimage.data.__file__).parent
    photos = tmp_path / "photos"
    for src, dst in (("astronaut.png", "space/astronaut.png"), ("rocket.jpg", "space/rocket.jpg"),
                     ("chelsea.png", "chelsea.png"), ("coffee.png", "coffee.png"), ("camera.png", "camera.png"),
                     ("motorcycle_left.png", "garage/motorcycle.png")):
        (photos / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data / src, photos / dst)
    imgs = tmp_path / "imgs"
    conv = json.loads(run_cli("convert", "images", photos, "--out", imgs).stdout)
    assert conv["images"] == 6 and conv["rejected"] == {}
    ids = ["images/camera.png", "images/chelsea.png", "images/coffee.png", "images/garage/motorcycle.png",
           "images/space/astronaut.png", "images/space/rocket.jpg"]
    assert Dataset(imgs).read(["image_id"]).column("image_id").to_pylist() == ids
    classes = tmp_path / "classes.txt"
    classes.write_text("person|astronaut\ncat\ncup|coffee cup\nrocket\nmotorcycle|motorbike\ncamera\n")
    vocab = ["person", "cat", "cup", "rocket", "motorcycle", "camera"]

    summary, log, ds = label_twice([*OVLABEL, "pseudo", "--input", imgs, "--classes", classes, *model_args(tiny_models)],
                              tmp_path, parts=3)
    assert summary["units"] == 3 and summary["images_in"] == 6 and summary["images"] == 6 and summary["boxes"] > 0
    assert "a class list of 6 classes" in log
    m = ds.manifest
    assert m.kind == "od" and m.label_map() == {str(i): n for i, n in enumerate(vocab)}
    assert m.categories[0] == {"label": 0, "name": "person", "synonyms": ["person", "astronaut"]}
    regions = regions_of(ds)
    assert sorted(regions) == ids
    boxes = [g for regs in regions.values() for g in regs]
    assert len(boxes) == summary["boxes"]
    assert all(vocab[g["label"]] == g["category"] and g["phrase"] is None and g["origin"] == "pseudo" for g in boxes)
    assert len({g["region_id"] for g in boxes}) == len(boxes)
    assert all(g["region_id"].startswith(i + "#") for i, regs in regions.items() for g in regs)

    run_cli("export", "odvg", tmp_path / "ref", "--out", tmp_path / "od.jsonl")
    assert json.loads((tmp_path / "od.label_map.json").read_text()) == {str(i): n for i, n in enumerate(vocab)}
    lines = [json.loads(x) for x in (tmp_path / "od.jsonl").read_text().splitlines()]
    assert sorted(x["filename"] for x in lines) == sorted(i.removeprefix("images/") for i in ids)
    inst = [i for x in lines for i in x["detection"]["instances"]]
    assert len(inst) == len(boxes) and all(vocab[i["label"]] == i["category"] for i in inst)
    run_cli("export", "coco", tmp_path / "ref", "--out", tmp_path / "coco.json")
    coco = COCO(str(tmp_path / "coco.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == vocab
    assert len(coco.getImgIds()) == 6 and len(coco.getAnnIds()) == len(boxes)


def test_captions_with_given_phrases(tiny_models, tmp_path):
    """convert cc3m -> ovlabel phrases -> pseudo (CLI): prompted with the dataset's own phrases (spaCy is not
    run again), every region is one of its caption's given phrases with its spans; a VG dataset."""
    run_cli("convert", "cc3m", EXAMPLES / "cc3m_sample", "--out", tmp_path / "caps")
    run_cli("phrases", tmp_path / "caps", "--out", tmp_path / "phr", "--workers", "1")
    given = {r["image_id"]: {(p["phrase"], json.dumps(p["tokens_positive"])) for p in r["phrases"]}
             for r in Dataset(tmp_path / "phr").read(["image_id", "phrases"]).to_pylist()}
    assert len(given) == 7 and all(given.values())

    summary, log, ds = label_twice([*OVLABEL, "pseudo", "--input", tmp_path / "phr", *model_args(tiny_models)],
                              tmp_path, parts=4)
    assert summary["units"] == 4 and summary["images_in"] == 7 and summary["images"] == 7  # the dead URL: convert's
    assert "phrases: the input's own (column)" in log
    assert ds.manifest.kind == "vg" and ds.manifest.categories == []
    regions = regions_of(ds)
    assert sorted(regions) == sorted(given)
    for image_id, regs in regions.items():
        got = {(g["phrase"], json.dumps(g["tokens_positive"])) for g in regs}
        assert regs and got <= given[image_id], image_id
    # the given phrases are part of the resume key: spaCy's instead is another run
    again = run_cli("pseudo", "--input", tmp_path / "phr", "--out", tmp_path / "ref", "--extract-phrases",
                    *model_args(tiny_models), check=False)
    assert again.returncode == 1 and "other inputs or settings" in again.stderr
    run_cli("export", "odvg", tmp_path / "ref", "--out", tmp_path / "vg.jsonl", "--images-dir", tmp_path / "files")
    lines = [json.loads(x) for x in (tmp_path / "vg.jsonl").read_text().splitlines()]
    assert len(lines) == 7 and all("grounding" in x and "detection" not in x for x in lines)
    assert sum(len(x["grounding"]["regions"]) for x in lines) == summary["boxes"]


def test_an_odvg_file_and_its_label_map_through_the_pipeline_script(sample_gold, tiny_models, tmp_path):
    """An ODVG OD file with its label map (here `export odvg` of the gold sample) -> convert odvg ->
    pipelines/cc3m_pseudo.py --classes DATASET (the script users submit with `ray job submit`): the pseudo
    labels use the dataset's own label map."""
    run_cli("export", "odvg", sample_gold, "--out", tmp_path / "gold.jsonl")
    label_map = json.loads((tmp_path / "gold.label_map.json").read_text())
    assert list(label_map.values())[:3] == ["box", "camera", "cat"] and len(label_map) == 13
    run_cli("convert", "odvg", tmp_path / "gold.jsonl", "--label-map", tmp_path / "gold.label_map.json",
            "--image-root", EXAMPLES / "sample" / "images", "--out", tmp_path / "od")
    assert Dataset(tmp_path / "od").manifest.label_map() == label_map

    summary, log, ds = label_twice([*PIPELINE, "--input", tmp_path / "od", "--classes", tmp_path / "od",
                               *model_args(tiny_models)], tmp_path, parts=4)
    assert summary["units"] == 4 and summary["images_in"] == 7 and summary["images"] == 7
    assert ds.manifest.kind == "od" and ds.manifest.label_map() == label_map
    boxes = [g for regs in regions_of(ds).values() for g in regs]
    assert boxes and all(label_map[str(g["label"])] == g["category"] and g["origin"] == "pseudo" for g in boxes)
    run_cli("export", "odvg", tmp_path / "ref", "--out", tmp_path / "pseudo.jsonl")
    assert json.loads((tmp_path / "pseudo.label_map.json").read_text()) == label_map
