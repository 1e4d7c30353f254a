"""`ovlabel convert images`: a folder of images -> an OD dataset of images without boxes."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli
from converter_inputs import image_files

from formats.converters.image_folder import ImageFolderConvertConfig, convert_image_folder
from formats.dataset import MANIFEST, Dataset, DatasetError


@pytest.fixture
def folder(tmp_path):
    """A folder with every case: `image_files`, symlinks inside and outside the folder, a symlinked folder."""
    from PIL import Image

    root = image_files(tmp_path / "imgs")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (3, 3)).save(outside)
    (root / "escape.png").symlink_to(outside)
    (root / "inside.png").symlink_to(root / "sub" / "b.png")
    (root / "linked").symlink_to(tmp_path)
    return root


def test_records_rejects_and_counts(folder, tmp_path):
    m = convert_image_folder(folder, tmp_path / "ds", ImageFolderConvertConfig())
    recs = Dataset(tmp_path / "ds").require_complete().read().to_pylist()
    assert [(r["image_id"], r["file_name"], r["width"], r["height"]) for r in recs] == [
        ("images/A.JPG", "A.JPG", 451, 300),
        ("images/c.TiF", "c.TiF", 5, 7),
        ("images/inside.png", "inside.png", 30, 20),
        ("images/sub/b.png", "sub/b.png", 30, 20),
        ("images/sub/turned.jpeg", "sub/turned.jpeg", 10, 40),
    ]
    assert all(r["source"] == "images" and r["caption"] is None and r["regions"] == [] for r in recs)
    assert m.kind == "od" and m.categories == [] and m.image_root == str(folder.resolve())
    assert m.counts == {"images_in": 7, "images": 5, "boxes": 0, "other_files": 1,
                        "dropped": {"symlinked folder": 1},
                        "rejected": {"outside the image root": 1, "unreadable image": 1}}
    rej = {r["record"]: r for r in Dataset(tmp_path / "ds").read_rejects().to_pylist()}
    assert sorted(rej) == ["broken.webp", "escape.png", "linked"]
    assert rej["escape.png"]["reason"] == "outside the image root" and "outside the image root" in rej["escape.png"]["detail"]
    assert rej["broken.webp"]["reason"] == "unreadable image" and "cannot read the image header" in rej["broken.webp"]["detail"]
    assert rej["linked"]["reason"] == "dropped: symlinked folder"


def test_same_order_every_run_and_rerun_is_a_no_op(folder, tmp_path):
    cfg = ImageFolderConvertConfig(part_images=2)
    m1 = convert_image_folder(folder, tmp_path / "a", cfg)
    convert_image_folder(folder, tmp_path / "b", ImageFolderConvertConfig(part_images=2))
    assert [p["name"] for p in m1.parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert Dataset(tmp_path / "a").read().equals(Dataset(tmp_path / "b").read())
    before = (tmp_path / "a" / MANIFEST).read_text()
    convert_image_folder(folder, tmp_path / "a", ImageFolderConvertConfig(part_images=2))
    assert (tmp_path / "a" / MANIFEST).read_text() == before
    (folder / "new.png").write_bytes((folder / "sub" / "b.png").read_bytes())
    with pytest.raises(DatasetError, match="other inputs or settings"):
        convert_image_folder(folder, tmp_path / "a", ImageFolderConvertConfig(part_images=2))


def test_an_interrupted_run_resumes_with_the_missing_parts(folder, tmp_path):
    out = tmp_path / "ds"
    convert_image_folder(folder, out, ImageFolderConvertConfig(part_images=2))
    whole = Dataset(out).read()
    # as after a crash while part 2 was being written: the manifest lists parts 0 and 1, not complete
    doc = json.loads((out / MANIFEST).read_text())
    doc["parts"], doc["complete"] = doc["parts"][:2], False
    (out / MANIFEST).write_text(json.dumps(doc))
    (out / "records" / "part-00002.parquet").unlink()
    stamp = os.stat(out / "records" / "part-00000.parquet").st_mtime_ns
    m = convert_image_folder(folder, out, ImageFolderConvertConfig(part_images=2))
    assert m.complete and os.stat(out / "records" / "part-00000.parquet").st_mtime_ns == stamp  # not rewritten
    assert Dataset(out).read().equals(whole) and m.counts["images"] == 5


def test_cli_convert_then_stats_and_export(folder, tmp_path):
    out = tmp_path / "ds"
    summary = json.loads(run_cli("convert", "images", folder, "--out", out).stdout)
    assert summary["images"] == 5 and summary["rejected"] == {"outside the image root": 1, "unreadable image": 1}
    stats = json.loads(run_cli("stats", out, "--json").stdout)
    assert stats["images"] == 5 and stats["boxes"] == 0
    run_cli("export", "odvg", out, "--out", tmp_path / "x.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert lines[0] == {"filename": "A.JPG", "height": 300, "width": 451, "detection": {"instances": []}}
    assert len(lines) == 5 and json.loads((tmp_path / "x.label_map.json").read_text()) == {}
    assert run_cli("convert", "images", tmp_path / "nowhere", "--out", tmp_path / "n", check=False).returncode == 1
