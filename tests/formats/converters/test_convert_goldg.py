"""`ovlabel convert goldg`: MDETR annotations -> VG records, grounded as MMDetection's goldg2odvg.py grounds them."""

from __future__ import annotations

import json
import random

import pytest
from conftest import ROOT, run_cli
from converter_inputs import CAP0, mdetr_doc, span

from formats.converters.goldg import GoldGConvertConfig, convert_goldg
from formats.dataset import Dataset


def records(out) -> list[dict]:
    return Dataset(out).read().to_pylist()


def test_regions_spans_phrases_and_drops(tmp_path):
    p = tmp_path / "final_flickr_separateGT_train.json"
    p.write_text(json.dumps(mdetr_doc()))
    m = convert_goldg(p, tmp_path / "out", GoldGConvertConfig(source="flickr30k"))
    recs = records(tmp_path / "out")
    assert [r["image_id"] for r in recs] == ["flickr30k/0", "flickr30k/1"]
    r0 = recs[0]
    assert (r0["width"], r0["height"]) == (300, 200)  # string sizes cast
    regs = r0["regions"]
    assert [g["phrase"] for g in regs] == ["A man", "red hat", "a man", "blue coat"]
    assert regs[1]["tokens_positive"] == [span(CAP0, "red"), span(CAP0, "hat")]  # sorted
    assert regs[0]["tokens_positive"] == [span(CAP0, "A man")]
    assert regs[2]["tokens_positive"] == [span(CAP0, "a man")]  # its own mention, not the first one's
    assert regs[0]["bbox"] == [10, 20, 60, 80]
    assert regs[3]["bbox"] == [250, 150, 300, 200]  # clipped to the image
    for g in regs:  # every box is grounded to the words at its spans
        assert g["phrase"] == " ".join(CAP0[s:e] for s, e in g["tokens_positive"])
        assert g["origin"] == "gold"
    assert r0["sentence_id"] == 0 and r0["original_img_id"] == 1000
    assert r0["tokens_positive_eval"] == mdetr_doc()["images"][0]["tokens_positive_eval"]
    assert m.counts["dropped"] == {"area <= 0": 1, "crowd": 1, "image rejected": 1, "no overlap with image": 1,
                                   "side < 1 px": 1}
    assert m.counts["boxes_clipped"] == 1  # id 4
    assert m.counts["rejected"] == {"invalid width/height": 1, "overlapping spans": 1, "span outside the caption": 1,
                                    "unknown image_id": 1, "unsafe file_name": 1}
    rej = Dataset(tmp_path / "out").read_rejects().to_pylist()
    beyond = next(r for r in rej if r["reason"] == "span outside the caption")
    assert beyond["record"] == "annotations[7] id=8" and "[[40, 99]]" in beyond["detail"]
    assert all(r["file"] == str(p) for r in rej)


def test_fast_and_slow_paths_agree(tmp_path):
    doc = mdetr_doc()
    compact, pretty = tmp_path / "c.json", tmp_path / "p.json"
    compact.write_text(json.dumps(doc))  # "}, {": parsed window by window by duckdb
    pretty.write_text(json.dumps(doc, indent=2))  # element by element
    convert_goldg(compact, tmp_path / "c", GoldGConvertConfig(source="f"))
    convert_goldg(pretty, tmp_path / "p", GoldGConvertConfig(source="f"))
    assert records(tmp_path / "c") == records(tmp_path / "p")


def test_phrases_of_non_ascii_captions_across_balanced_parts(tmp_path):
    """Spans count characters: accents, CJK and emoji captions give the same words Python slicing gives;
    a span starting with an emoji (no word character) is trimmed to its word."""
    rng = random.Random(3)
    words = ["café", "naïve", "dog", "猫", "🐕pup", "straße", "ball", "東京", "red"]
    images, anns = [], []
    for i in range(40):
        cap = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        height = -1 if i % 9 == 4 else 100  # some captions rejected: parts are not one slice of the file
        images.append({"file_name": f"{i}.jpg", "height": height, "width": 100, "id": i, "caption": cap})
        starts = [0] + [k + 1 for k, ch in enumerate(cap) if ch == " "]
        for _ in range(rng.randint(1, 3)):
            picked = sorted(rng.sample(starts, rng.randint(1, min(2, len(starts)))))
            spans = [[s0, cap.find(" ", s0) if " " in cap[s0:] else len(cap)] for s0 in picked]
            anns.append({"id": len(anns) + 1, "image_id": i, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0,
                         "tokens_positive": spans})
    src = tmp_path / "unicode.json"
    src.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "o"}]},
                              ensure_ascii=False))
    m = convert_goldg(src, tmp_path / "out", GoldGConvertConfig(source="u", part_images=7))
    recs = records(tmp_path / "out")
    assert len(recs) == 40 - 4 and m.counts["boxes"] == sum(len(r["regions"]) for r in recs) > 40
    for r in recs:
        for g in r["regions"]:
            assert g["phrase"] == " ".join(r["caption"][s:e] for s, e in g["tokens_positive"])
            assert "🐕" not in g["phrase"]
    assert any("pup" in g["phrase"] for r in recs for g in r["regions"])
    sizes = [part["rows"] for part in m.parts]
    assert len(sizes) == 6 and max(sizes) - min(sizes) <= 1  # 36 images in at most 7 a part: 6 balanced parts


def test_data_source_coco_and_odvg_export(tmp_path):
    p = tmp_path / "final_mixed_train.json"
    p.write_text(json.dumps(mdetr_doc(mixed=True)))
    out = tmp_path / "coco_only"
    proc = run_cli("convert", "goldg", p, "--source", "mixed", "--data-source", "coco", "--out", out)
    summary = json.loads(proc.stdout)
    assert summary["images"] == 1 and summary["dropped"]["data_source is not coco"] == 2
    (r,) = records(out)
    assert r["data_source"] == "coco" and r["original_id"] == 500
    run_cli("export", "odvg", out, "--out", tmp_path / "goldg.jsonl")
    (line,) = [json.loads(x) for x in (tmp_path / "goldg.jsonl").read_text().splitlines()]
    assert set(line) == {"filename", "height", "width", "grounding"}
    cap = line["grounding"]["caption"]
    for reg in line["grounding"]["regions"]:
        assert len(reg["bbox"]) == 4 and all(isinstance(v, (int, float)) for v in reg["bbox"])
        assert reg["phrase"] == " ".join(cap[s:e] for s, e in reg["tokens_positive"])


@pytest.mark.parametrize("text, why", [
    ('{"images": [{"id": 1, "file_name": "a.jpg", "height": 1, "width": 1, "caption": "x"}], "annotations": [',
     "truncated"),
    ('{"annotations": []}', "no 'images' list"),
])
def test_malformed_files_fail_clearly(tmp_path, text, why):
    p = tmp_path / "bad.json"
    p.write_text(text)
    proc = run_cli("convert", "goldg", p, "--source", "x", "--out", tmp_path / "o", check=False)
    assert proc.returncode == 1
    assert str(p) in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_convert_process_skips_pandas_and_pandas_still_works_after(tmp_path):
    """The convert commands spare pyarrow's pandas import; explicit pandas calls afterwards must still work."""
    import subprocess
    import sys

    p = tmp_path / "flickr.json"
    p.write_text(json.dumps(mdetr_doc()))
    script = (
        "import sys\n"
        "from formats.arrow_np import skip_pandas_probe\n"
        "from formats.converters.goldg import GoldGConvertConfig, convert_goldg\n"
        "assert skip_pandas_probe()\n"
        f"m = convert_goldg({str(p)!r}, {str(tmp_path / 'out')!r}, GoldGConvertConfig(source='flickr30k'))\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
        "import pyarrow as pa\n"
        "df = pa.table({'a': [1, 2]}).to_pandas()\n"
        "print(m.counts['boxes'], list(df['a']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr
    boxes, values = proc.stdout.split(" ", 1)
    assert int(boxes) == convert_goldg(p, tmp_path / "in_process", GoldGConvertConfig(source="flickr30k")).counts["boxes"]
    assert values.strip() == "[1, 2]"


def test_progress_reports_every_byte_read(tmp_path):
    p = tmp_path / "flickr.json"
    p.write_text(json.dumps(mdetr_doc()))
    seen: list[int] = []
    convert_goldg(p, tmp_path / "out", GoldGConvertConfig(source="flickr30k"), progress=seen.append)
    assert sum(seen) == p.stat().st_size


def test_spans_are_trimmed_and_wordless_spans_rejected(tmp_path):
    """A span over " " or "." grounds no word: rejected with its reason, never a class text " " or "."."""
    cap = "  A dog .  and a  ball!"
    images = [{"file_name": "1.jpg", "height": 100, "width": 100, "id": 1, "caption": cap}]
    a = [
        (1, [[0, 5]]),  # "  A d" -> "A d" [2, 5]
        (2, [[0, 7]]),  # "  A dog" -> "A dog" [2, 7]
        (3, [[7, 8]]),  # " ": rejected
        (4, [[8, 9]]),  # ".": rejected
        (5, [[6, 9], [17, 23]]),  # "g ." and "ball!" -> "g" [6, 7], "ball" [18, 22]
        (6, [[7, 9], [16, 23]]),  # " ." (left out) and " ball!" -> "ball" [18, 22]
    ]
    anns = [{"id": i, "image_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0, "tokens_positive": sp}
            for i, sp in a]
    p = tmp_path / "mdetr.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "o"}]}))
    m = convert_goldg(p, tmp_path / "out", GoldGConvertConfig(source="t"))
    (r,) = records(tmp_path / "out")
    got = [(g["phrase"], g["tokens_positive"]) for g in r["regions"]]
    assert got == [("A d", [[2, 5]]), ("A dog", [[2, 7]]), ("g ball", [[6, 7], [18, 22]]), ("ball", [[18, 22]])]
    assert m.counts["rejected"] == {"no word character in spans": 2} and m.counts["boxes"] == 4
    rej = Dataset(tmp_path / "out").read_rejects().to_pylist()
    assert [(x["record"], x["reason"], x["detail"]) for x in rej] == [
        ("annotations[2] id=3", "no word character in spans", "spans [[7, 8]] cover [' ']"),
        ("annotations[3] id=4", "no word character in spans", "spans [[8, 9]] cover ['.']")]
    run_cli("export", "yolo-world", tmp_path / "out", "--out", tmp_path / "yw")
    texts = json.loads((tmp_path / "yw" / "class_texts.json").read_text())
    assert sorted(t for (t,) in texts) == ["A d", "A dog", "ball", "g ball"]


def test_a_possessive_ending_at_a_span_start_is_cut(tmp_path):
    """GoldG spans starting at "'s" or at the "s" after the apostrophe ground the possessed noun alone."""
    caps = ["a woman's hand holding a cup.", "the dog\u2019s collar"]
    images = [{"file_name": f"{i}.jpg", "height": 100, "width": 100, "id": i, "caption": c} for i, c in enumerate(caps)]
    a = [(1, 0, [[7, 14]]),  # "'s hand" -> "hand" [10, 14]
         (2, 0, [[8, 14]]),  # "s hand" -> "hand" [10, 14]
         (3, 0, [[7, 9]]),  # "'s": rejected
         (4, 0, [[2, 14]]),  # "woman's hand" stays
         (5, 1, [[7, 16]]),  # "’s collar" -> "collar" [10, 16]
         (6, 1, [[8, 16]])]  # "s collar" -> "collar" [10, 16]
    anns = [{"id": i, "image_id": im, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0, "tokens_positive": sp}
            for i, im, sp in a]
    p = tmp_path / "mdetr.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "o"}]}))
    m = convert_goldg(p, tmp_path / "out", GoldGConvertConfig(source="t"))
    got = [[(g["phrase"], g["tokens_positive"]) for g in r["regions"]] for r in records(tmp_path / "out")]
    assert got == [[("hand", [[10, 14]]), ("hand", [[10, 14]]), ("woman's hand", [[2, 14]])],
                   [("collar", [[10, 16]]), ("collar", [[10, 16]])]]
    assert m.counts["rejected"] == {"no word character in spans": 1}
    (rej,) = Dataset(tmp_path / "out").read_rejects().to_pylist()
    assert (rej["record"], rej["detail"]) == ("annotations[2] id=3", "spans [[7, 9]] cover [\"'s\"]")


def test_combining_accents_stay_in_phrases(tmp_path):
    """A decomposed "é" (e + U+0301) keeps its accent: spans end after the mark, on both the byte and text paths."""
    cap = "cafe\u0301 au lait"
    images = [{"file_name": "1.jpg", "height": 100, "width": 100, "id": 1, "caption": cap}]
    anns = [{"id": i, "image_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0, "tokens_positive": sp}
            for i, sp in ((1, [[0, 5]]), (2, [[0, 4]]), (3, [[0, 13]]))]
    p = tmp_path / "mdetr.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "o"}]}))
    convert_goldg(p, tmp_path / "out", GoldGConvertConfig(source="t"))
    (r,) = records(tmp_path / "out")
    assert [(g["phrase"], g["tokens_positive"]) for g in r["regions"]] == [
        ("cafe\u0301", [[0, 5]]), ("cafe\u0301", [[0, 5]]), ("cafe\u0301 au lait", [[0, 13]])]
