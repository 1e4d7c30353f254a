"""The streaming JSON reader: window cuts are proved by parsing, odd inputs fall back, errors name bytes."""

from __future__ import annotations

import io
import json

import pytest

from formats.coco_read import COCO_SPECS
from formats.json_arrays import DuckParser
from formats.json_stream import JSONObjectStream, JSONStructureError, Window


def collect(data: bytes, window: int = 64, big=("annotations",)):
    """All elements of the big arrays (in order) and the small values, through a real duckdb parser."""
    parser = DuckParser(COCO_SPECS)
    items, small, windows = [], {}, []
    try:
        stream = JSONObjectStream(io.BytesIO(data), "t.json", big_arrays=set(big), fast_parse=parser,
                                  window_bytes=window)
        for it in stream:
            if isinstance(it, Window):
                windows.append(it)
                if it.objects is not None:
                    items += [o.get("id") if isinstance(o, dict) else o for o in it.objects]
                else:
                    # ids are read as raw JSON text (formats.ids): 3 -> "3", "03" -> '"03"'
                    items += [None if v is None else json.loads(v) for v in it.table.column("id").to_pylist()]
            else:
                small[it[0]] = it[1]
    finally:
        parser.close()
    return items, small, windows


def doc(anns, **more) -> dict:
    return {"images": [], "annotations": anns, "categories": [{"id": 1, "name": "a"}], **more}


@pytest.mark.parametrize("window", [16, 64, 300, 1 << 20])
@pytest.mark.parametrize("sep", [(", ", ": "), (",", ":")])
def test_every_element_once_in_order_whatever_the_window(window, sep):
    anns = [{"id": i, "image_id": 1, "category_id": 1, "bbox": [i, 2, 3, 4]} for i in range(200)]
    data = json.dumps(doc(anns), separators=sep).encode()
    ids, small, windows = collect(data, window)
    assert ids == list(range(200))
    assert small["categories"] == [{"id": 1, "name": "a"}]


def test_separators_inside_strings_and_nested_lists_are_not_cuts():
    tricky = ['a}, {"id": 99}', "x}]y", "},{", "}]}"]
    anns = [{"id": i, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "note": tricky[i % 4],
             "segmentation": {"counts": "}, {", "size": [1, 2]}, "parts": [{"a": 1}, {"b": "}, {"}]}
            for i in range(60)]
    ids, _, _ = collect(json.dumps(doc(anns)).encode(), window=97)
    assert ids == list(range(60))


def test_pretty_printed_file_falls_back_and_keeps_everything():
    anns = [{"id": i, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]} for i in range(30)]
    ids, _, windows = collect(json.dumps(doc(anns), indent=2).encode(), window=200)
    assert ids == list(range(30))


def test_nan_is_kept_as_nan_for_the_converter_to_reject():
    anns = [{"id": i, "image_id": 1, "category_id": 1, "bbox": [1, float("nan") if i == 3 else 2, 3, 4]}
            for i in range(10)]
    ids, _, windows = collect(json.dumps(doc(anns)).encode(), window=1 << 20)
    assert ids == list(range(10))
    boxes = [b for w in windows for b in (w.table.column("bbox").to_pylist() if w.objects is None
                                          else [o["bbox"] for o in w.objects])]
    assert boxes[3][1] != boxes[3][1] and boxes[4] == [1, 2, 3, 4]  # NaN survives, neighbours intact


@pytest.mark.parametrize("bad, message", [
    (b'{"images": [], "annotations": [{"id": 1}, {"id": }]}', "malformed JSON"),
    (b'{"images": [], "annotations": [{"id": 1}, {"id": 2}', "expected ',' or ']'"),
    (b'[1, 2, 3]', "a JSON object at the top level"),
    (b'{"images": [], "annotations": []} trailing', "trailing data"),
    (b'', "found end of file"),
])
def test_structural_errors_name_the_file_and_byte(bad, message):
    with pytest.raises(JSONStructureError) as e:
        collect(bad, window=8)
    assert "t.json" in str(e.value) and message in str(e.value) and "byte" in str(e.value)


def test_empty_arrays_and_unknown_keys():
    ids, small, windows = collect(b'{"info": {"a": [1, {"b": 2}]}, "annotations": [], "licenses": []}')
    assert ids == [] and small["info"] == {"a": [1, {"b": 2}]} and small["licenses"] == []


def test_checksum_is_of_the_file_while_windows_are_edited_in_place(tmp_path):
    """duckdb's parser edits each window in place; the recorded checksum must still be the file's bytes."""
    import hashlib

    from formats.json_arrays import read_tables

    anns = [{"id": i, "image_id": 1, "bbox": [i, 2, 3, 4]} for i in range(2000)]
    data = json.dumps(doc(anns)).encode()
    path = tmp_path / "t.json"
    path.write_bytes(data)
    got = read_tables(path, {"annotations": {"id": "BIGINT", "bbox": "DOUBLE[]"}}, window_bytes=4096)
    assert got.tables["annotations"].column("id").to_pylist() == list(range(2000))
    assert got.sha256 == hashlib.sha256(data).hexdigest()


def test_prefetched_checksum_is_used_once_and_never_for_a_changed_file(tmp_path):
    import hashlib
    import os

    from formats.digest import prefetch_sha256, sha256_async

    p = tmp_path / "a.json"
    p.write_bytes(b'{"images": []}')
    prefetch_sha256(p)
    prefetch_sha256(tmp_path / "missing.json")  # the reader reports a missing file, not the prefetch
    assert sha256_async(p).result() == hashlib.sha256(b'{"images": []}').hexdigest()
    prefetch_sha256(p)
    p.write_bytes(b'{"images": [1]}')  # changed after the prefetch started: size (and mtime) differ
    os.utime(p, ns=(1, 1))
    assert sha256_async(p).result() == hashlib.sha256(b'{"images": [1]}').hexdigest()


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 1 << 20])
def test_separator_search_in_steps_finds_every_candidate(step):
    """The separator search scans in steps; a `}, {` split across two steps must still be found."""
    import re

    import numpy as np

    from formats.json_arrays import _separator_commas

    anns = [{"id": i, "note": "}, {" if i % 3 else "},{", "b": [{"x": 1}, {"y": 2}]} for i in range(40)]
    data = json.dumps(anns)[1:-1].encode() + b"},{}"  # also a candidate ending at the very last bytes
    expected = [m.start() + 1 for m in re.finditer(rb"\}(?=,\{|, \{)", data)]
    got = _separator_commas(np.frombuffer(data, dtype=np.uint8), step=step).tolist()
    assert got == expected and len(expected) > 100


@pytest.mark.parametrize("window", [100, 257, 1000, 1 << 20])
def test_adjacent_arrays_and_elements_of_mixed_shapes_are_read_whole(window, caplog):
    """Windows crossing from one array into the next are cut at the array's end (guessed from the elements'
    first keys, proved by parsing); arrays whose elements start with different keys are read whole too."""
    images = [{"file_name": f"{i}.jpg", "id": i, "height": 5, "width": 5} for i in range(50)]
    anns = [({"id": 100 + i, "image_id": i % 50, "bbox": [1, 2, 3, 4], "parts": [{"a": "}]"}]} if i % 2 else
             {"bbox": [1, 2, 3, 4], "parts": [{"b": 1}], "image_id": 0, "id": 100 + i}) for i in range(80)]
    data = json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}).encode()
    with caplog.at_level("INFO", logger="ovlabel.json"):
        ids, small, windows = collect(data, window, big=("images", "annotations"))
    assert ids == list(range(50)) + list(range(100, 180))
    assert small == {"categories": [{"id": 1, "name": "a"}]}
    assert "slow path" not in caplog.text  # every window was cut and parsed fast


def test_window_crossing_into_the_next_array_is_cut_at_its_end_first_time():
    """The array's end is tried before the last separator when the elements change shape: no refused parse."""
    from formats.json_stream import FastParseError

    images = [{"file_name": f"{i}.jpg", "id": i, "height": 5, "width": 5} for i in range(30)]
    anns = [{"area": 1.0, "id": 100 + i, "image_id": i % 30, "bbox": [1, 2, 3, 4]} for i in range(200)]
    data = json.dumps({"images": images, "annotations": anns, "categories": []}).encode()
    parser, refused, ids = DuckParser(COCO_SPECS), [], []

    def counting(key, window):
        try:
            return parser(key, window)
        except FastParseError:
            refused.append(key)
            raise

    try:
        stream = JSONObjectStream(io.BytesIO(data), "t.json", big_arrays={"images", "annotations"},
                                  fast_parse=counting, window_bytes=len(json.dumps(images)) + 500)
        ids = [json.loads(i) for it in stream if isinstance(it, Window) for i in it.table.column("id").to_pylist()]
    finally:
        parser.close()
    assert ids == list(range(30)) + list(range(100, 300)) and refused == []


def test_elements_holding_lists_of_objects_cost_a_bounded_number_of_parses():
    """`}]` closes every element's inner list: the array's end is not tried at each of them (one parse each)."""
    anns = [{"id": i, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "attributes": [{"k": i}]}
            for i in range(400)]
    data = json.dumps({"annotations": anns, "categories": [{"id": 1, "name": "a"}]}).encode()
    parser, calls = DuckParser(COCO_SPECS), []

    def counting(key, window):
        calls.append(len(window))
        return parser(key, window)

    try:
        stream = JSONObjectStream(io.BytesIO(data), "t.json", big_arrays={"annotations"}, fast_parse=counting,
                                  window_bytes=1 << 20)
        ids = [i for it in stream if isinstance(it, Window)
               for i in ([json.loads(v) for v in it.table.column("id").to_pylist()] if it.objects is None else [o["id"] for o in it.objects])]
    finally:
        parser.close()
    assert ids == list(range(400)) and len(calls) <= 8
