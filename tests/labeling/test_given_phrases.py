"""Given phrases: records that carry phrases with spans (a `phrases` column, VG regions) are prompted with them
as they are, spaCy never runs; `--extract-phrases` forces extraction and is part of the resume key."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLES

from formats.converters.image_folder import ImageFolderConvertConfig, convert_image_folder
from formats.converters.odvg import OdvgConvertConfig, convert_odvg
from formats.dataset import Dataset, DatasetError
from labeling.fuse import FilterConfig
from labeling.stages import PHRASES_TYPE, given_phrases, load_units
from workflows.pseudo_label import PseudoConfig, RunOptions, build_stages, given_phrase_source, run_pseudo

CAP = "a cat of zq near a Cat"
IMAGES = EXAMPLES / "sample" / "images"


def test_given_phrases_from_the_column_are_kept_as_they_are():
    t = pa.table({"caption": [CAP, None, "ab"],
                  "phrases": pa.array([[{"phrase": "of zq", "tokens_positive": [[6, 11]]},
                                        {"phrase": "cat", "tokens_positive": [[19, 22], [2, 5]]},
                                        {"phrase": "far", "tokens_positive": [[20, 40]]},  # outside the caption
                                        {"phrase": " ", "tokens_positive": [[0, 1]]}],
                                       [{"phrase": "x", "tokens_positive": [[0, 1]]}], None], PHRASES_TYPE)})
    assert given_phrases(t, "column").to_pylist() == [
        [{"phrase": "of zq", "tokens_positive": [[6, 11]]}, {"phrase": "cat", "tokens_positive": [[19, 22], [2, 5]]}],
        [], []]


def test_given_phrases_from_regions_are_merged_per_caption():
    def region(phrase, spans):
        return {"bbox": [0.0, 0.0, 5.0, 5.0], "phrase": phrase, "tokens_positive": spans}
    t = pa.table({"caption": [CAP, "dog"], "regions": [
        [region("Cat", [[19, 22]]), region("of zq", [[6, 11]]), region("cat", [[2, 5]]), region("cat", [[2, 5]])],
        [{"bbox": [0.0, 0.0, 5.0, 5.0], "phrase": None, "tokens_positive": None}]]})
    assert given_phrases(t, "regions").to_pylist() == [
        [{"phrase": "Cat", "tokens_positive": [[2, 5], [19, 22]]}, {"phrase": "of zq", "tokens_positive": [[6, 11]]}],
        []]


def placeholder_lines(path) -> str:
    """Phrase-grounding bootstrap lines: captions, phrases with spans, placeholder boxes (no box yet)."""
    assert CAP[6:11] == "of zq" and CAP[2:5] == "cat"
    regions = [{"bbox": [0, 0, 1, 1], "phrase": "of zq", "tokens_positive": [[6, 11]]},
               {"bbox": [0, 0, 1, 1], "phrase": "cat", "tokens_positive": [[2, 5]]}]
    lines = [{"filename": name, "height": h, "width": w, "grounding": {"caption": CAP, "regions": regions}}
             for name, w, h in (("chelsea.jpg", 451, 300), ("coffee.jpg", 600, 400))]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


def test_where_the_phrases_come_from(tmp_path):
    convert_odvg(placeholder_lines(tmp_path / "a.jsonl"), tmp_path / "vg", OdvgConvertConfig(image_root=str(IMAGES)))
    assert given_phrase_source(Dataset(tmp_path / "vg")) == "column"
    # the same records without the phrases column, regions with spans instead: their phrases are given
    part = tmp_path / "vg" / "records" / "part-00000.parquet"
    t = pq.read_table(part)
    regions = pa.array([[{"bbox": [1.0, 1.0, 9.0, 9.0], "phrase": "cat", "tokens_positive": [[2, 5]], "origin": "gold"}]] * 2,
                       t.schema.field("regions").type)
    pq.write_table(t.drop_columns(["phrases"]).set_column(6, "regions", regions), part)
    assert given_phrase_source(Dataset(tmp_path / "vg")) == "regions"
    units = [{"unit": "u", "path": str(part), "start": 1, "stop": 2, "kind": "records", "image_root": str(IMAGES),
              "source": "odvg", "phrases": "regions"}]
    loaded = load_units(pa.Table.from_pylist(units))
    assert loaded.column("image_id").to_pylist() == ["odvg/2"]
    assert loaded.column("phrases").to_pylist() == [[{"phrase": "cat", "tokens_positive": [[2, 5]]}]]
    convert_image_folder(IMAGES, tmp_path / "imgs", ImageFolderConvertConfig())
    assert given_phrase_source(Dataset(tmp_path / "imgs")) is None


def test_no_phrase_stage_runs_on_given_phrases(tiny_models):
    cfg = PseudoConfig(detector=str(tiny_models["detector"]), clip=str(tiny_models["clip"]))
    names = [s.name for s in build_stages(cfg, RunOptions(), 0, "column")]
    assert "phrases" not in names and names[0] == "load-units"
    assert "phrases" in [s.name for s in build_stages(cfg, RunOptions(), 0, None)]


@pytest.mark.slow
def test_pseudo_prompts_with_exactly_the_given_phrases(tiny_models, tmp_path):
    """Through Ray with the tiny models: every candidate's phrase is one of the given phrases, with its spans
    ("of zq" starts with a preposition: spaCy's noun chunks never give it), and the choice is in the resume key."""
    convert_odvg(placeholder_lines(tmp_path / "a.jsonl"), tmp_path / "vg", OdvgConvertConfig(image_root=str(IMAGES)))
    low = FilterConfig(fused_threshold=0.0, image_threshold=-1.0, max_boxes_per_image=50).to_dict()
    cfg = PseudoConfig(detector=str(tiny_models["detector"]), clip=str(tiny_models["clip"]), box_threshold=0.0,
                       filter=low, images_per_part=2)
    summary = run_pseudo(tmp_path / "vg", tmp_path / "p", cfg, RunOptions(num_cpus=2))
    assert summary["images_in"] == 2 and summary["images"] == 2
    cands = pq.read_table(tmp_path / "p" / "candidates" / "part-part-00000-00000.parquet")
    got = {(c["phrase"], json.dumps(c["tokens_positive"])) for cs in cands.column("candidates").to_pylist() for c in cs}
    assert got == {("of zq", "[[6, 11]]"), ("cat", "[[2, 5]]")}
    # convert odvg orders a caption's given phrases by first span
    assert cands.column("phrases").to_pylist() == [[{"phrase": "cat", "tokens_positive": [[2, 5]]},
                                                    {"phrase": "of zq", "tokens_positive": [[6, 11]]}]] * 2
    with pytest.raises(DatasetError, match="other inputs or settings"):
        run_pseudo(tmp_path / "vg", tmp_path / "p", PseudoConfig(**{**cfg.__dict__, "extract_phrases": True}),
                   RunOptions(num_cpus=2))


def test_caption_lines_without_regions_carry_no_phrases(tmp_path):
    # ODVG caption lines with no region yet: the phrases column is there but empty everywhere, so spaCy cuts
    # the phrases (the union with --classes used to prompt the classes alone, and no class box had spans)
    lines = [{"filename": "chelsea.jpg", "height": 300, "width": 451, "grounding": {"caption": CAP, "regions": []}}]
    (tmp_path / "c.jsonl").write_text(json.dumps(lines[0]) + "\n")
    convert_odvg(tmp_path / "c.jsonl", tmp_path / "caps", OdvgConvertConfig(image_root=str(IMAGES)))
    assert given_phrase_source(Dataset(tmp_path / "caps")) is None
