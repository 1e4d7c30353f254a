"""Webdataset shards without a side parquet (NNNNN.tar of KEY.jpg + KEY.txt + KEY.json): same code as img2dataset."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from converter_inputs import image_bytes, meta, write_tar

from formats.converters.img2dataset import (
    Img2DatasetConvertConfig,
    Img2DatasetError,
    convert_img2dataset,
    is_img2dataset_dir,
    shard_records,
    shards,
)
from formats.dataset import Dataset
from formats.images import decode_image, read_image_bytes


@pytest.fixture
def wds(tmp_path):
    """Two tar-only shards: good samples, a failed download, a sample without image, a caption not UTF-8."""
    raw = tmp_path / "wds"
    raw.mkdir()
    write_tar(raw / "00000.tar", [
        ("000000000.jpg", image_bytes(32, 24)), ("000000000.json", meta("000000000", width=32, height=24)),
        ("000000000.txt", b"a red square on a table"),
        ("000000001.png", image_bytes(20, 10, "PNG")), ("000000001.txt", "a café sign".encode()),  # no .json
        ("000000002.json", meta("000000002", status="failed_to_download", error_message="HTTP Error 404")),
        ("000000003.json", meta("000000003")), ("000000003.txt", b"no image here"),
        ("000000004.jpg", image_bytes(8, 8)), ("000000004.txt", b"\xff\xfe bad"),
    ])
    write_tar(raw / "00001.tar", [
        ("000010000.jpg", image_bytes(40, 20)),
        ("000010000.json", meta("000010000", caption="a dog near a cat", width=999, height=999,
                                ref_exps=[[2, 5, 0.0, 0.0, 0.5, 1.0, 0.9], [13, 16, 0.5, 0.5, 1.0, 1.0, 0.2]])),
    ])
    return raw


def test_tar_only_folder_is_img2dataset_output(wds, tmp_path):
    assert is_img2dataset_dir(wds) and [p.name for p in shards(wds)] == ["00000.tar", "00001.tar"]
    assert not is_img2dataset_dir(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Img2DatasetError, match="no img2dataset shards .* nor webdataset shards"):
        shards(tmp_path / "empty")


def test_shard_records_of_a_tar(wds):
    table, rejects = shard_records(wds / "00000.tar", "cc3m")
    rows = table.to_pylist()
    assert [(r["image_id"], r["file_name"], r["width"], r["height"], r["caption"]) for r in rows] == [
        ("cc3m/000000000", "tar://000000000.jpg::00000.tar", 32, 24, "a red square on a table"),
        ("cc3m/000000001", "tar://000000001.png::00000.tar", 20, 10, "a café sign"),
    ]
    assert rows[0]["url"] == "http://x/000000000.jpg" and rows[1]["url"] is None
    assert sorted((r["record"], r["reason"]) for r in rejects) == [
        ("key=000000002", "download failed"), ("key=000000003", "no image member"),
        ("key=000000004", "invalid caption text")]
    assert next(r["detail"] for r in rejects if r["record"] == "key=000000002") == "HTTP Error 404"
    # one reason per kind (the manifest counts by reason); the members found are the detail
    assert next(r["detail"] for r in rejects if r["record"] == "key=000000003") == "no image member: found json, txt"
    img = decode_image(read_image_bytes(wds, rows[1]["file_name"]))
    assert img.size == (20, 10)


def test_convert_cc3m_and_grit_from_tar_only_shards(wds, tmp_path):
    m = convert_img2dataset(wds, tmp_path / "cc3m", Img2DatasetConvertConfig(source="cc3m"))
    assert m.counts["images"] == 3 and m.counts["images_in"] == 6
    assert m.counts["rejected"] == {"download failed": 1, "invalid caption text": 1,
                                    "no image member": 1}
    g = convert_img2dataset(wds, tmp_path / "grit", Img2DatasetConvertConfig(source="grit", spans="ref_exps",
                                                                             min_score=0.5))
    rec = next(r for r in Dataset(tmp_path / "grit").read().to_pylist() if r["image_id"] == "grit/000010000")
    # boxes scale by the stored image's own size (40x20), not the .json's 999x999
    assert (rec["width"], rec["height"]) == (40, 20)
    assert [(x["phrase"], x["bbox"]) for x in rec["regions"]] == [("dog", [0.0, 0.0, 20.0, 20.0])]
    assert g.counts["dropped"] == {"under min_score": 1} and g.counts["boxes_clipped"] == 0


def test_pseudo_plan_reads_tar_only_shards(wds):
    from workflows.pseudo_label import plan_input

    plan = plan_input(wds, images_per_part=1)
    assert [u["unit"] for u in plan.units] == ["00000-00000", "00000-00001", "00001-00000"]
    assert sorted(r["record"] for r in plan.rejects["00000-00000"]) == ["key=000000002", "key=000000003",
                                                                      "key=000000004"]


def test_cli_convert_cc3m_on_tar_only_shards(wds, tmp_path):
    s = json.loads(run_cli("convert", "cc3m", wds, "--out", tmp_path / "out").stdout)
    assert s["images"] == 3 and s["images_in"] == 6


@pytest.fixture
def wds_dup(tmp_path):
    """The same key in two shards (different pictures), a key twice inside one tar, a sample with only a .jpg."""
    raw = tmp_path / "wdsC"
    raw.mkdir()
    write_tar(raw / "00000.tar", [
        ("sample1.jpg", image_bytes(16, 8)), ("sample1.txt", b"a red thing"),
        ("000000005.jpg", image_bytes(40, 20)), ("000000005.txt", b"first"),
        ("000000005.jpg", image_bytes(80, 10)), ("000000005.txt", b"second dup"),
        ("000000006.jpg", image_bytes(12, 12)),  # no .txt, no .json
        ("000000007.jpg", image_bytes(10, 12)), ("000000007.png", image_bytes(30, 30, "PNG")),
        ("000000007.txt", b"two images"),
    ])
    write_tar(raw / "00001.tar", [
        ("sample1.jpg", image_bytes(24, 24, color=(30, 30, 200))), ("sample1.txt", b"a blue thing"),
        ("sample2.jpg", image_bytes(8, 8)), ("sample2.txt", b"only here"),
    ])
    return raw


def test_same_key_in_two_shards_is_rejected_naming_both(wds_dup, tmp_path):
    m = convert_img2dataset(wds_dup, tmp_path / "cc3m", Img2DatasetConvertConfig(source="cc3m"))
    recs = Dataset(tmp_path / "cc3m").read().to_pylist()
    assert [(r["image_id"], r["file_name"], r["width"], r["height"], r["caption"]) for r in recs] == [
        ("cc3m/sample1", "tar://sample1.jpg::00000.tar", 16, 8, "a red thing"),
        ("cc3m/sample2", "tar://sample2.jpg::00001.tar", 8, 8, "only here")]
    assert m.counts["images"] == 2 and m.counts["images_in"] == 6
    assert m.counts["rejected"] == {"duplicate key": 1, "duplicate member": 2, "no caption": 1}
    rejects = Dataset(tmp_path / "cc3m").read_rejects().to_pylist()
    dup = next(r for r in rejects if r["reason"] == "duplicate key")
    assert dup["record"] == "key=sample1" and dup["file"].endswith("00001.tar")
    assert "sample1 of 00001.tar is also in 00000.tar" in dup["detail"]
    # GRIT and pseudo --input read shards through the same code
    convert_img2dataset(wds_dup, tmp_path / "grit", Img2DatasetConvertConfig(source="grit", spans="ref_exps"))
    assert [r["image_id"] for r in Dataset(tmp_path / "grit").read().to_pylist()] == ["grit/sample1", "grit/sample2"]
    from workflows.pseudo_label import plan_input

    plan = plan_input(wds_dup, images_per_part=10)
    assert [(u["unit"], u["stop"]) for u in plan.units] == [("00000-00000", 1), ("00001-00000", 1)]
    assert [r["record"] for r in plan.rejects["00001-00000"]] == ["key=sample1"]
    import pyarrow as pa

    from labeling.stages import load_units

    rows = load_units(pa.Table.from_pylist(plan.units)).to_pylist()
    assert [(r["image_id"], r["file_name"]) for r in rows] == [("cc3m/sample1", "tar://sample1.jpg::00000.tar"),
                                                               ("cc3m/sample2", "tar://sample2.jpg::00001.tar")]


def test_duplicate_members_of_one_key_reject_the_sample(wds_dup):
    table, rejects = shard_records(wds_dup / "00000.tar", "cc3m", duplicates={})
    assert table.column("image_id").to_pylist() == ["cc3m/sample1"]
    assert sorted((r["record"], r["reason"], r["detail"]) for r in rejects) == [
        ("key=000000005", "duplicate member", "000000005.jpg, 000000005.txt: more than one member of this kind "
                                              "for the key; its image, size and caption would not agree"),
        ("key=000000006", "no caption", "no .txt and no caption in the .json"),
        ("key=000000007", "duplicate member", "000000007.png: more than one member of this kind for the key; "
                                              "its image, size and caption would not agree")]
    from formats.images import ImageError

    with pytest.raises(ImageError, match=r"000000005\.jpg is in .*00000\.tar more than once"):
        read_image_bytes(wds_dup, "tar://000000005.jpg::00000.tar")


def test_duplicate_key_inside_one_parquet_shard_is_rejected(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(pa.table({"key": ["a", "b", "a"], "caption": ["x", "y", "z"], "status": ["success"] * 3,
                             "width": [4, 4, 4], "height": [4, 4, 4]}), raw / "00000.parquet")
    table, rejects = shard_records(raw / "00000.parquet", "cc3m")
    assert table.column("image_id").to_pylist() == ["cc3m/b"]
    assert [(r["record"], r["reason"], r["detail"]) for r in rejects] == [
        ("key=a", "duplicate key", "key a is in 00000.parquet 2 times")] * 2


def test_a_malformed_json_field_rejects_its_sample_only(tmp_path):
    """GRIT samples whose .json has a field of the wrong type are rejected (shard, key, field); the rest convert."""
    raw = tmp_path / "wds"
    raw.mkdir()
    ok = [[2, 5, 0.0, 0.0, 0.5, 1.0, 0.9]]
    members = [("000000000.jpg", image_bytes(40, 20)),  # first sample: no ref_exps at all
               ("000000000.json", meta("000000000", caption="a cat"))]
    for k, refs in ((1, "notalist"), (2, [[2, 5, 0.0, 0.0, 0.5, 1.0, "0.9"]]),
                    (3, [[2, 5, 0.0, 0.0, 0.5, 1.0, 0.9, "x"]]), (4, [5]), (5, ok)):
        key = f"00000000{k}"
        members += [(f"{key}.jpg", image_bytes(40, 20)), (f"{key}.json", meta(key, caption="a dog", ref_exps=refs))]
    members += [("000000006.jpg", image_bytes(40, 20)),
                ("000000006.json", meta("000000006", caption="a dog", url=7, original_width="640"))]
    write_tar(raw / "00000.tar", members)
    g = convert_img2dataset(raw, tmp_path / "grit", Img2DatasetConvertConfig(source="grit", spans="ref_exps"))
    assert g.counts["images"] == 2 and g.counts["images_in"] == 7
    assert g.counts["rejected"] == {"invalid json field": 5}
    rej = Dataset(tmp_path / "grit").read_rejects().to_pylist()
    assert [(r["file"], r["record"], r["detail"]) for r in rej] == [
        (str(raw / "00000.tar"), "key=000000001", "invalid json field: ref_exps is not a list ('notalist')"),
        (str(raw / "00000.tar"), "key=000000002", "invalid json field: ref_exps[0][6] is not a number ('0.9')"),
        (str(raw / "00000.tar"), "key=000000003", "invalid json field: ref_exps[0][7] is not a number ('x')"),
        (str(raw / "00000.tar"), "key=000000004", "invalid json field: ref_exps[0] is not a list (5)"),
        (str(raw / "00000.tar"), "key=000000006", "invalid json field: url is not a string (7)")]
    recs = {r["image_id"]: r for r in Dataset(tmp_path / "grit").read().to_pylist()}
    assert recs["grit/000000000"]["regions"] == []
    assert [(x["phrase"], x["bbox"]) for x in recs["grit/000000005"]["regions"]] == [("dog", [0.0, 0.0, 20.0, 20.0])]
