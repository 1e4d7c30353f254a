"""`ovlabel convert openimages`: unsorted CSVs, group-of handling, sizes from a file or from image headers."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from converter_inputs import CLASSES, HEADER, write_inputs

from formats.converters.openimages import OpenImagesConvertConfig, convert_openimages
from formats.dataset import Dataset


def test_unsorted_csv_gives_one_record_per_image(tmp_path):
    ann, images, _ = write_inputs(tmp_path)
    out = tmp_path / "oi"
    s = json.loads(run_cli("convert", "openimages", ann, "--image-root", images, "--out", out).stdout)
    recs = Dataset(out).read().to_pylist()
    assert [r["image_id"] for r in recs] == ["openimages_v6/000a1249af2bc5f0", "openimages_v6/0b6f22bf3b586889",
                                             "openimages_v6/1111111111111111"]
    a, b, c = recs
    assert a["file_name"] == "000a1249af2bc5f0.jpg" and (a["width"], a["height"]) == (400, 300)
    assert [(g["label"], g["category"]) for g in a["regions"]] == [(0, "Person"), (1, "Car")]  # CSV order kept
    assert a["regions"][1]["bbox"] == pytest.approx([100, 150, 300, 300])
    assert [g["category"] for g in b["regions"]] == ["Car", "Cat"]
    assert len(c["regions"]) == 1  # group-of kept by default
    assert Dataset(out).manifest.label_map() == {"0": "Person", "1": "Car", "2": "Cat"}
    assert s["rejected"] == {"invalid ImageID": 1, "invalid box": 1, "unknown LabelName": 1}
    rej = {r["reason"]: r for r in Dataset(out).read_rejects().to_pylist()}
    assert rej["unknown LabelName"]["record"] == "line 7" and "/m/zzzz" in rej["unknown LabelName"]["detail"]


def test_group_of_drop_and_sizes_file(tmp_path):
    ann, images, sizes = write_inputs(tmp_path, header_in_classes=True)
    m = convert_openimages(ann, tmp_path / "oi", OpenImagesConvertConfig(sizes=str(sizes), group_of="drop"))
    recs = Dataset(tmp_path / "oi").read().to_pylist()
    assert [r["image_id"].split("/")[1] for r in recs] == ["000a1249af2bc5f0", "0b6f22bf3b586889"]
    assert [g["category"] for g in recs[1]["regions"]] == ["Car"]
    assert m.counts["dropped"] == {"group-of": 2, "no box left": 1}  # the all-group-of image is not a negative


def test_missing_images_are_rejected_not_fatal(tmp_path):
    ann, images, _ = write_inputs(tmp_path)
    (images / "1111111111111111.jpg").unlink()
    m = convert_openimages(ann, tmp_path / "oi", OpenImagesConvertConfig(image_root=str(images)))
    assert m.counts["images"] == 2 and m.counts["rejected"]["no image size"] == 1


def test_wrong_csv_fails_clearly(tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "x-train-annotations-bbox.csv").write_text("a,b\n1,2\n")
    (ann / "class-descriptions-boxable.csv").write_text(CLASSES)
    (tmp_path / "sizes.csv").write_text("ImageID,width,height\n")
    proc = run_cli("convert", "openimages", ann, "--sizes", tmp_path / "sizes.csv", "--out", tmp_path / "o", check=False)
    assert proc.returncode == 1 and "not an Open Images box CSV" in proc.stderr


def test_coordinates_outside_0_1_are_clipped_and_counted(tmp_path):
    ann, images, sizes = write_inputs(tmp_path)
    csv = ann / "oidv6-train-annotations-bbox.csv"
    csv.write_text(HEADER + "\n"
                   "000a1249af2bc5f0,xclick,/m/01g317,1,-0.01,0.5,0.2,1.002,0,0,0,0,0\n"  # a little outside: clipped
                   "000a1249af2bc5f0,xclick,/m/0k4j,1,1.1,1.3,0.1,0.2,0,0,0,0,0\n"  # wholly outside: dropped
                   "000a1249af2bc5f0,xclick,/m/0k4j,1,0.1,0.2,0.1,nan,0,0,0,0,0\n")  # not a number: rejected
    m = convert_openimages(ann, tmp_path / "oi", OpenImagesConvertConfig(sizes=str(sizes)))
    (rec,) = Dataset(tmp_path / "oi").read().to_pylist()
    assert [g["bbox"] for g in rec["regions"]] == [pytest.approx([0.0, 60.0, 200.0, 300.0])]
    assert m.counts["boxes_clipped"] == 1 and m.counts["boxes"] == 1
    assert m.counts["dropped"] == {"no overlap with image": 1} and m.counts["rejected"] == {"invalid box": 1}
    rej = {r["reason"]: r["record"] for r in Dataset(tmp_path / "oi").read_rejects().to_pylist()}
    assert rej == {"dropped: no overlap with image": "line 3", "invalid box": "line 4"}


def test_malformed_lines_are_rejected_with_line_numbers_and_the_rest_converts(tmp_path):
    ann, images, sizes = write_inputs(tmp_path)
    good = "0b6f22bf3b586889,xclick,/m/0k4j,1,0.1,0.5,0.2,0.6,0,0,0,0,0"
    (ann / "oidv6-train-annotations-bbox.csv").write_bytes(
        (HEADER + "\n" + good + "\n"
         "000a1249af2bc5f0,xclick,/m/01g317,1,0.0,0.5\n"  # line 3: fields missing
         + good + "\n").encode()
        + b"1111111111111111,xclick,/m/01yrx,1,0.1,0.9,0.1,0.9,0,0,\xff,0,0\n"  # line 5: not UTF-8
        + b"000a1249af2bc5f0,xclick,/m/zzzz,1,0.1,0.2,0.1,0.2,0,0,0,0,0\n"  # line 6: unknown class (line kept right)
        + b"000a1249af2bc5f0,xclick,/m/01g317,1,0.1,0.2,0.1,0.2,0,0,0,0,0,7\n")  # line 7: a field too many
    m = convert_openimages(ann, tmp_path / "oi", OpenImagesConvertConfig(sizes=str(sizes)))
    recs = Dataset(tmp_path / "oi").read().to_pylist()
    assert [(r["image_id"], len(r["regions"])) for r in recs] == [("openimages_v6/0b6f22bf3b586889", 2)]
    rej = [(r["record"], r["reason"], r["detail"]) for r in Dataset(tmp_path / "oi").read_rejects().to_pylist()]
    assert [x[:2] for x in rej] == [("line 3", "malformed CSV line"), ("line 5", "malformed CSV line"),
                                    ("line 7", "malformed CSV line"), ("line 6", "unknown LabelName"),
                                    ("ImageID=000a1249af2bc5f0", "dropped: no box left")]
    assert rej[0][2].startswith("missing columns: Expected Number of Columns: 13")
    assert rej[1][2].startswith("invalid encoding") and rej[2][2].startswith("too many columns")
    assert m.counts["rejected"] == {"malformed CSV line": 3, "unknown LabelName": 1}
    assert m.counts["boxes_in"] == 6


def test_a_file_with_no_readable_line_is_one_clear_line(tmp_path):
    ann, images, sizes = write_inputs(tmp_path)
    (ann / "oidv6-train-annotations-bbox.csv").write_bytes((HEADER + "\n").encode() + b"a,b\n" * 3)
    proc = run_cli("convert", "openimages", ann, "--sizes", sizes, "--out", tmp_path / "o", check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) <= 2 and "oidv6-train-annotations-bbox.csv" in lines[-1] and "line 2" in lines[-1]


def test_line_numbers_are_physical_after_blank_lines_and_quoted_newlines(tmp_path):
    ann, images, sizes = write_inputs(tmp_path)
    good = "0b6f22bf3b586889,xclick,/m/0k4j,1,0.1,0.5,0.2,0.6,0,0,0,0,0"
    (ann / "oidv6-train-annotations-bbox.csv").write_text(
        HEADER + "\n" + good + "\n"  # lines 1, 2
        "\n\n"  # lines 3, 4: blank (duckdb skips them)
        "0b6f22bf3b586889,xclick,/m/0k4j,1,0.6,0.4,0.1,0.2,0,0,0,0,0\n"  # line 5: inverted box
        '0b6f22bf3b586889,"x\nclick",/m/0k4j,1,0.1,0.5,0.2,0.6,0,0,0,0,0\n'  # lines 6-7: a quoted newline
        "000a1249af2bc5f0,xclick,/m/01g317,1,0.0,0.5\n"  # line 8: fields missing
        "000a1249af2bc5f0,xclick,/m/zzzz,1,0.1,0.2,0.1,0.2,0,0,0,0,0\n"  # line 9: unknown class
        "\n"  # line 10
        "0b6f22bf3b586889,xclick,/m/0k4j,1,0.6,0.4,0.1,0.2,0,0,0,0,0\n")  # line 11: inverted box
    m = convert_openimages(ann, tmp_path / "oi", OpenImagesConvertConfig(sizes=str(sizes)))
    (rec,) = Dataset(tmp_path / "oi").read().to_pylist()
    assert len(rec["regions"]) == 2
    rej = [r["record"] + " " + r["reason"] for r in Dataset(tmp_path / "oi").read_rejects().to_pylist()]
    assert rej == ["line 8 malformed CSV line", "line 9 unknown LabelName", "line 5 invalid box",
                   "line 11 invalid box", "ImageID=000a1249af2bc5f0 dropped: no box left"]
    assert m.counts["rejected"] == {"invalid box": 2, "malformed CSV line": 1, "unknown LabelName": 1}


def test_class_descriptions_with_a_utf8_bom_keep_their_header_out_of_the_classes(tmp_path):
    ann, images, sizes = write_inputs(tmp_path)
    (ann / "class-descriptions-boxable.csv").write_bytes(b"\xef\xbb\xbfLabelName,DisplayName\n" + CLASSES.encode())
    (ann / "oidv6-train-annotations-bbox.csv").write_bytes(
        b"\xef\xbb\xbf" + (HEADER + "\n0b6f22bf3b586889,xclick,/m/0k4j,1,0.1,0.5,0.2,0.6,0,0,0,0,0\n").encode())
    convert_openimages(ann, tmp_path / "oi", OpenImagesConvertConfig(sizes=str(sizes)))
    assert Dataset(tmp_path / "oi").manifest.label_map() == {"0": "Person", "1": "Car", "2": "Cat"}
    (rec,) = Dataset(tmp_path / "oi").read().to_pylist()
    assert [(g["label"], g["category"]) for g in rec["regions"]] == [(1, "Car")]
