"""duckdb over dataset directories (formats.query): views of records (stored order, `_ord` across parts,
older layouts upgraded, empty datasets), rejects, and the numbers of `ovlabel stats` on a hand-counted dataset."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from formats import schema as S
from formats.dataset import Dataset, DatasetWriter, Manifest
from formats.query import (
    connect,
    format_stats,
    register_records,
    register_rejects,
    sql_list,
    stats,
    upgrade_regions_sql,
)


def region(bbox, origin="gold", category="cat", phrase=None, score=None) -> dict:
    return {"region_id": None, "bbox": bbox, "label": 0 if category else None, "category": category,
            "phrase": phrase, "tokens_positive": None, "score": score, "det_score": score, "clip_score": score,
            "origin": origin, "round": None}


def records(rows: list[dict]) -> pa.Table:
    return S.conform(pa.Table.from_pylist(rows, schema=S.CORE_SCHEMA))


PART0 = [
    {"image_id": "t/a", "source": "t", "file_name": "a.jpg", "width": 100, "height": 100, "caption": "a cat",
     "regions": [region([0, 0, 10, 10]), region([0, 0, 50, 40]), region([0, 0, 100, 100], origin="crowd")]},
    {"image_id": "t/b", "source": "t", "file_name": "b.jpg", "width": 100, "height": 50, "caption": None,
     "regions": None},
]
PART1 = [
    {"image_id": "t/c", "source": "t", "file_name": "c.jpg", "width": 200, "height": 100, "caption": "dog",
     "regions": [region([10, 10, 110, 110], origin="gold", category=None, phrase="dog")]},
]


@pytest.fixture
def dataset(tmp_path) -> Dataset:
    w = DatasetWriter(tmp_path / "ds", Manifest(kind="vg", source="t", categories=[{"label": 0, "name": "cat"}]),
                      resume_key={"k": 1})
    w.write_part("part-0.parquet", records(PART0))
    w.write_part("part-1.parquet", records(PART1))
    w.write_rejects("part-0.parquet", [{"file": "f", "record": "1", "reason": "bad box", "detail": None},
                                       {"file": "f", "record": "2", "reason": "bad box", "detail": "x"},
                                       {"file": "f", "record": "3", "reason": "missing image", "detail": None}])
    w.finish({"dropped": 4, "rejected": 3, "images": 3})
    return Dataset(tmp_path / "ds")


def test_sql_list_quotes_every_path():
    assert sql_list([]) == "[]"
    assert sql_list(["a/b.parquet"]) == "['a/b.parquet']"
    assert sql_list(["it's", "x"]) == "['it''s', 'x']"
    con = duckdb.connect()
    literal = sql_list(["it's", "x"])
    assert con.execute(f"SELECT {literal}").fetchone()[0] == ["it's", "x"]  # read back as given


def test_connect_has_the_box_macros_and_the_thread_setting():
    con = connect(threads=2)
    assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 2
    assert con.execute("SELECT xyxy_to_xywh([1.0, 2.0, 4.0, 7.0])").fetchone()[0] == [1.0, 2.0, 3.0, 5.0]
    assert con.execute("SELECT xyxy_area([1.0, 2.0, 4.0, 7.0])").fetchone()[0] == 15.0
    assert con.execute("SELECT normalized_to_pixels([0.5, 0.25, 1.0, 1.0], 200, 100)").fetchone()[0] == [100.0, 25.0, 200.0, 100.0]


def test_records_in_stored_order_with_their_position_across_parts(dataset):
    con = connect()
    register_records(con, dataset)
    assert con.execute("SELECT image_id FROM records").fetchall() == [("t/a",), ("t/b",), ("t/c",)]
    assert "_ord" not in [d[0] for d in con.execute("SELECT * FROM records").description]
    register_records(con, dataset, "ordered", with_order=True)
    got = con.execute("SELECT image_id, _ord FROM ordered ORDER BY image_id DESC").fetchall()
    assert got == [("t/c", 2), ("t/b", 1), ("t/a", 0)]
    cols = [d[0] for d in con.execute("SELECT * FROM ordered").description]
    assert cols == [*S.CORE_COLUMNS, "_ord"]  # the reader's helper columns are not left in the view


def test_an_empty_dataset_gives_empty_views(tmp_path):
    w = DatasetWriter(tmp_path / "empty", Manifest(kind="od", source="t"), resume_key={"k": 2})
    w.finish()
    ds = Dataset(tmp_path / "empty")
    con = connect()
    register_records(con, ds)
    register_rejects(con, ds)
    assert con.execute("SELECT count(*) FROM records").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM rejects").fetchone()[0] == 0
    assert [d[0] for d in con.execute("SELECT * FROM rejects").description] == ["file", "record", "reason", "detail"]


def test_rejects_view(dataset):
    con = connect()
    register_rejects(con, dataset)
    assert con.execute("SELECT record, reason, detail FROM rejects ORDER BY record").fetchall() == [
        ("1", "bad box", None), ("2", "bad box", "x"), ("3", "missing image", None)]


def test_an_older_regions_layout_gets_its_missing_fields_as_nulls():
    assert upgrade_regions_sql(pa.schema([("image_id", pa.string())])) == ""
    assert upgrade_regions_sql(S.CORE_SCHEMA) == ""
    old = pa.struct([f for f in S.REGION_TYPE if f.name not in ("area", "source_id")])
    clause = upgrade_regions_sql(pa.schema([("regions", pa.list_(old))]))
    assert clause == (" REPLACE (list_transform(regions, lambda g: struct_insert(g, area := NULL::DOUBLE, "
                      "source_id := NULL::VARCHAR)) AS regions)")
    con = duckdb.connect()
    t = pa.table({"regions": pa.array([[{"bbox": [0.0, 0.0, 1.0, 1.0]}]], pa.list_(pa.struct([("bbox", pa.list_(pa.float64()))])))})
    con.register("t", t)
    upgraded = con.execute("SELECT * REPLACE (list_transform(regions, lambda g: struct_insert(g, area := NULL::DOUBLE)) "
                           "AS regions) FROM t").fetchone()[0]
    assert upgraded == [{"bbox": [0.0, 0.0, 1.0, 1.0], "area": None}]


def test_stats_of_a_hand_counted_dataset(dataset):
    s = stats(str(dataset.root))
    assert s["dataset"] == str(dataset.root)
    assert (s["kind"], s["source"], s["complete"]) == ("vg", "t", True)
    assert (s["images"], s["boxes"], s["images_without_boxes"], s["captions"], s["categories"]) == (3, 4, 1, 2, 1)
    # boxes per image 3, 0, 1: the 0.99 quantile interpolates 1 + 0.98 * (3 - 1)
    assert s["boxes_per_image"] == {"min": 0.0, "median": 1.0, "mean": 1.333, "p99": 2.96, "max": 3.0}
    assert s["top"] == [{"name": "cat", "boxes": 3}, {"name": "dog", "boxes": 1}]  # the crowd box counts too
    # areas 100, 2000, 10000, 10000 px²; relative 0.01, 0.2, 1.0, 0.5
    assert s["box_sizes"] == {"small (<32^2 px)": 1, "medium": 1, "large (>=96^2 px)": 2,
                              "relative_area_p10_p50_p90": [0.067, 0.35, 0.85]}
    assert s["origins"] == {"crowd": 1, "gold": 3}
    assert s["ignore_regions"] == {"crowd": 1}
    assert s["rejects"] == {"bad box": 2, "missing image": 1}
    assert s["drops_and_rejects_at_conversion"] == {"dropped": 4, "rejected": 3}
    assert stats(str(dataset.root), top=1)["top"] == [{"name": "cat", "boxes": 3}]


def test_format_stats_lines(dataset):
    text = format_stats(stats(str(dataset.root)))
    lines = text.splitlines()
    assert lines[0] == f"dataset  {dataset.root}  (vg, source t)"
    assert lines[1] == "images   3  (without boxes: 1; with captions: 2)"
    assert lines[2] == "boxes    4  categories 1"
    assert lines[3] == "boxes/image  min 0.0  median 1.0  mean 1.333  p99 2.96  max 3.0"
    assert lines[5] == "origins      crowd 1  gold 3"
    assert lines[6] == "ignore regions (evaluation only, never trained on)  crowd 1"
    assert lines[7:] == ["top categories/phrases:", "  cat   3", "  dog   1",
                         "rejects by reason:", "  bad box: 2", "  missing image: 1"]
