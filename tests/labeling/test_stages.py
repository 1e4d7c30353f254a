"""The pseudo-labeling row stages (labeling.stages) on small tables, without Ray: units loaded from parts,
given phrases checked against their captions and merged, phrases extracted by spaCy (the model
tests/labeling/test_phrases.py uses), and the assemble stage's per-row fixes."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq

from formats import schema as S
from labeling.stages import (
    PHRASES_TYPE,
    ROW_COLUMNS,
    AddPhrases,
    AssembleCandidates,
    CaptionPhrases,
    LoadUnits,
    _decoded_sizes,
    _no_caption_no_image_score,
    _part_captions,
    add_phrases,
    given_phrases,
    load_units,
)

CAPTION = "a red car and a dog"  # "a red car" [0, 9), "a dog" [14, 19)


def test_given_phrases_from_the_column_keep_only_phrases_inside_their_caption():
    t = pa.table({"caption": [CAPTION, None, "cat"],
                  "phrases": [[{"phrase": "a red car", "tokens_positive": [[0, 9]]},
                               {"phrase": "  ", "tokens_positive": [[9, 10]]},  # blank text
                               {"phrase": "dog", "tokens_positive": [[16, 20]]},  # past the caption's end
                               {"phrase": "car", "tokens_positive": [[6, 6]]},  # empty span
                               {"phrase": "red", "tokens_positive": []},  # no span
                               {"phrase": "a dog", "tokens_positive": [[14, 19]]}],
                              [{"phrase": "x", "tokens_positive": [[0, 1]]}],  # no caption: nothing
                              None]})
    out = given_phrases(t, "column")
    assert out.type == PHRASES_TYPE
    assert out.to_pylist() == [[{"phrase": "a red car", "tokens_positive": [[0, 9]]},
                                {"phrase": "a dog", "tokens_positive": [[14, 19]]}], [], []]


def test_given_phrases_from_regions_are_merged_per_caption_in_order_of_first_span():
    regions = [[{"phrase": "A dog", "tokens_positive": [[14, 19]]},
                {"phrase": "a red car", "tokens_positive": [[0, 9]]},
                {"phrase": "a  dog", "tokens_positive": [[14, 19], [0, 1]]},  # same key: spans united
                {"phrase": "car", "tokens_positive": [[-1, 3]]}],  # a negative start: left out
               None]
    t = pa.table({"caption": [CAPTION, "x"],
                  "regions": pa.array(regions, pa.list_(pa.struct([("phrase", pa.string()),
                                                                   ("tokens_positive", pa.list_(pa.list_(pa.int32())))])))})
    assert given_phrases(t, "regions").to_pylist() == [
        [{"phrase": "A dog", "tokens_positive": [[0, 1], [14, 19]]},
         {"phrase": "a red car", "tokens_positive": [[0, 9]]}],
        []]


def _part(path, n: int, phrases: bool = False) -> None:
    rows = [{"image_id": f"s/{i}", "source": "s", "file_name": f"{i}.jpg", "width": 10 + i, "height": 20,
             "caption": f"cap {i}", "regions": None} for i in range(n)]
    t = S.conform(pa.Table.from_pylist(rows, schema=S.CORE_SCHEMA))
    if phrases:
        t = t.append_column("phrases", pa.array([[{"phrase": "cap", "tokens_positive": [[0, 3]]}]] * n, PHRASES_TYPE))
    pq.write_table(t, path)


def test_load_units_slices_parts_and_numbers_rows_within_the_unit(tmp_path):
    _part(tmp_path / "p0.parquet", 5)
    units = pa.table({"unit": [7, 8], "path": [str(tmp_path / "p0.parquet")] * 2, "start": [1, 4], "stop": [4, 5],
                      "kind": ["records", "records"], "image_root": ["/a", "/b"], "source": ["s", "s"],
                      "phrases": [None, None]})
    out = LoadUnits()(units)
    assert out.column_names == [*ROW_COLUMNS, "image_root"]
    assert out.column("unit").to_pylist() == [7, 7, 7, 8]
    assert out.column("row").to_pylist() == [0, 1, 2, 0]
    assert out.column("row").type == pa.int32()
    assert out.column("image_id").to_pylist() == ["s/1", "s/2", "s/3", "s/4"]
    assert out.column("width").to_pylist() == [11, 12, 13, 14]
    assert out.column("image_root").to_pylist() == ["/a", "/a", "/a", "/b"]


def test_load_units_with_given_phrases_from_the_column(tmp_path):
    _part(tmp_path / "p0.parquet", 2, phrases=True)
    units = pa.table({"unit": [0], "path": [str(tmp_path / "p0.parquet")], "start": [0], "stop": [2],
                      "kind": ["records"], "image_root": ["/a"], "source": ["s"], "phrases": ["column"]})
    stage = LoadUnits(given_phrases=True)
    assert stage.adds[-1] == "phrases" and "phrases" not in LoadUnits.adds  # declared per instance
    out = stage(units)
    assert out.column("phrases").to_pylist() == [[{"phrase": "cap", "tokens_positive": [[0, 3]]}]] * 2
    assert load_units(units).column_names == out.column_names


def test_part_captions_of_detection_records_are_nulls(tmp_path):
    pq.write_table(pa.table({"image_id": ["a", "b", "c"]}), tmp_path / "od.parquet")
    _part(tmp_path / "vg.parquet", 2)
    od = _part_captions(str(tmp_path / "od.parquet"))
    assert od.to_pylist() == [None, None, None] and od.type == pa.string()
    assert _part_captions(str(tmp_path / "vg.parquet")).to_pylist() == ["cap 0", "cap 1"]


def test_rows_without_caption_text_get_no_image_score():
    t = pa.table({"caption": ["a dog", None, "", "  \t", "x"],
                  "image_score": pa.array([0.5, 0.6, 0.7, 0.8, 0.9], pa.float32())})
    got = _no_caption_no_image_score(t).column("image_score").to_pylist()
    assert got[0] == 0.5 and math.isclose(got[4], 0.9, rel_tol=1e-6)
    assert all(math.isnan(v) for v in got[1:4])
    assert _no_caption_no_image_score(t).column("image_score").type == pa.float32()
    no_score = pa.table({"caption": [None]})
    assert _no_caption_no_image_score(no_score) is no_score


def test_readable_rows_take_the_decoded_size():
    t = pa.table({"width": pa.array([100, 100], pa.int32()), "height": pa.array([50, 50], pa.int32()),
                  "image_w": pa.array([50, 0], pa.int32()), "image_h": pa.array([100, 0], pa.int32()),
                  "error": [None, "cannot read"]})
    out = _decoded_sizes(t)
    assert out.column("width").to_pylist() == [50, 100]  # EXIF-rotated row: its decoded size
    assert out.column("height").to_pylist() == [100, 50]  # the failed row keeps its record's size
    assert out.column_names == t.column_names
    no_error = _decoded_sizes(t.drop_columns(["error"]))
    assert no_error.column("width").to_pylist() == [50, 0]


def test_assemble_candidates_declares_what_it_reads_per_mode():
    assert "phrases" in AssembleCandidates().reads
    assert "phrases" in AssembleCandidates(vocabulary=[["car"]], with_phrases=True).reads
    vocab_only = AssembleCandidates(vocabulary=[["car", "auto"]], with_phrases=False)
    assert "phrases" not in vocab_only.reads and vocab_only.vocabulary == [["car", "auto"]]
    assert AssembleCandidates(with_phrases=False).with_phrases  # no vocabulary: phrases are all there is


def test_add_phrases_appends_the_noun_phrases_of_each_caption_with_their_spans():
    t = pa.table({"image_id": ["a", "b", "c", "d"],
                  "caption": ["The old man and his dog.", None, "", "a red car near a red car"]})
    out = add_phrases(t, {})
    assert out.column_names == ["image_id", "caption", "phrases"] and out.column("phrases").type == PHRASES_TYPE
    assert out.column("image_id").to_pylist() == ["a", "b", "c", "d"]
    assert out.column("phrases").to_pylist() == [
        [{"phrase": "old man", "tokens_positive": [[4, 11]]}, {"phrase": "dog", "tokens_positive": [[20, 23]]}],
        [], [],  # no caption, an empty caption: no phrases
        [{"phrase": "red car", "tokens_positive": [[2, 9], [17, 24]]}]]  # repeated: one phrase, both spans
    # the config holds PhraseConfig's fields; a list value (extra_abstract) is accepted too
    kept = add_phrases(t.slice(0, 1), {"strip_determiners": False}).column("phrases").to_pylist()
    assert kept == [[{"phrase": "The old man", "tokens_positive": [[0, 11]]},
                     {"phrase": "his dog", "tokens_positive": [[16, 23]]}]]
    no_dog = add_phrases(t.slice(0, 1), {"extra_abstract": ["dog"]}).column("phrases").to_pylist()
    assert no_dog == [[{"phrase": "old man", "tokens_positive": [[4, 11]]}]]
    stage = AddPhrases({})
    assert (stage.reads, stage.adds) == (("caption",), ("phrases",))
    assert stage(t.slice(0, 1)).column("phrases").to_pylist() == out.column("phrases").to_pylist()[:1]


def test_caption_phrases_gives_one_row_per_caption_of_each_unit(tmp_path):
    pq.write_table(pa.table({"image_id": ["a", "b", "c"], "caption": ["a red car", None, "The old man and his dog."]}),
                   tmp_path / "vg.parquet")
    pq.write_table(pa.table({"image_id": ["x", "y"]}), tmp_path / "od.parquet")  # detection records: no captions
    units = pa.table({"path": [str(tmp_path / "vg.parquet"), str(tmp_path / "od.parquet")],
                      "name": ["part-0.parquet", "part-1.parquet"], "start": [1, 0], "stop": [3, 2]})
    out = CaptionPhrases({})(units)
    assert out.schema == pa.schema([("part", pa.string()), ("row", pa.int64()), ("phrases", PHRASES_TYPE)])
    assert out.to_pylist() == [
        {"part": "part-0.parquet", "row": 1, "phrases": []},  # the unit starts at row 1; row 1 has no caption
        {"part": "part-0.parquet", "row": 2, "phrases": [{"phrase": "old man", "tokens_positive": [[4, 11]]},
                                                         {"phrase": "dog", "tokens_positive": [[20, 23]]}]},
        {"part": "part-1.parquet", "row": 0, "phrases": []},
        {"part": "part-1.parquet", "row": 1, "phrases": []}]
