"""CPU image stages (labeling.image_stages) on small tables, without Ray: rows ordered by predicted canvas,
images read, decoded and resized with their sizes and errors, and the model's batches cut by canvas."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from PIL import Image

from detector.preprocess import SIZE_COLUMNS, ResizeRule
from labeling.image_stages import PIXEL_COLUMNS, LoadImages, OrderByCanvas, canvas_groups


def test_rows_are_ordered_by_canvas_stably():
    # canvases (w, h) under the default rule: 500x375 and 600x450 -> (1088, 832), 2000x1000 -> (1344, 704),
    # 375x500 -> (832, 1088), a 0x0 record is taken as 1x1 -> (832, 832)
    t = pa.table({"image_id": ["a", "b", "c", "d", "e"], "width": [500, 2000, 375, 600, 0],
                  "height": [375, 1000, 500, 450, 0]})
    out = OrderByCanvas(ResizeRule())(t)
    assert out.column("image_id").to_pylist() == ["e", "c", "a", "d", "b"]
    assert out.column_names == t.column_names and out.num_rows == 5
    one = t.slice(1, 1)
    assert OrderByCanvas(ResizeRule())(one) is one


def test_canvas_groups_leave_out_errors_and_cut_at_the_batch_size():
    t = pa.table({"canvas_h": [832, 704, 832, 832, 832, 704], "canvas_w": [1088, 1344, 1088, 1088, 1088, 1344],
                  "error": [None, None, "bad", None, None, None]})
    groups = canvas_groups(t, 2)
    assert [g.tolist() for g in groups] == [[0, 3], [4], [1, 5]]  # canvases in order of their first row
    assert all(g.dtype == np.int64 for g in groups)
    assert [g.tolist() for g in canvas_groups(t, 8)] == [[0, 3, 4], [1, 5]]
    assert canvas_groups(t.slice(2, 1), 4) == []


def _save(path, w, h, seed):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    img.save(path)
    return img


def test_load_images_sizes_pixels_and_errors(tmp_path):
    big = _save(tmp_path / "big.png", 40, 30, 0)
    small = _save(tmp_path / "small.png", 10, 5, 1)
    rule = ResizeRule(shortest_edge=16, longest_edge=32, canvas_multiple=8)
    t = pa.table({"image_id": ["t/1", "t/2", "t/3", "t/4"], "image_root": [str(tmp_path)] * 4,
                  "file_name": ["big.png", "small.png", "missing.png", "../big.png"], "caption": ["a", "b", "c", "d"]})
    out = LoadImages(rule, rows_per_block=2)(t)
    assert out.column_names == ["image_id", "file_name", "caption", *PIXEL_COLUMNS]  # image_root dropped
    sizes = {c: out.column(c).to_pylist() for c in SIZE_COLUMNS}
    # big: 30 -> 16 rows, 40 * 16 / 30 -> 21 columns, shrunk here; small: enlarged to 32x16 on the device,
    # shipped as decoded (10x5); failed rows get zeros
    assert sizes == {"pixel_h": [16, 5, 0, 0], "pixel_w": [21, 10, 0, 0], "resized_h": [16, 16, 0, 0],
                     "resized_w": [21, 32, 0, 0], "canvas_h": [24, 24, 0, 0], "canvas_w": [24, 32, 0, 0],
                     "image_w": [40, 10, 0, 0], "image_h": [30, 5, 0, 0]}
    assert all(out.column(c).type == pa.int32() for c in SIZE_COLUMNS)
    pixels = out.column("pixels").to_pylist()
    assert pixels[0] == big.resize((21, 16), resample=2).tobytes()
    assert pixels[1] == small.tobytes()
    assert pixels[2:] == [None, None]
    errors = out.column("error").to_pylist()
    assert errors[:2] == [None, None]
    assert errors[2].startswith("cannot read missing.png: ")  # a message naming the file gets no prefix
    assert errors[3] == "path '../big.png' escapes the image root"  # never read, never an exception
    assert [g.tolist() for g in canvas_groups(out, 4)] == [[0], [1]]  # two canvases, the failed rows in none


def test_an_undecodable_file_is_an_error_of_its_row(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    t = pa.table({"image_id": ["t/1"], "image_root": [str(tmp_path)], "file_name": ["bad.jpg"]})
    out = LoadImages(ResizeRule())(t)
    assert out.column("pixels").to_pylist() == [None]
    assert out.column("error").to_pylist()[0].startswith("bad.jpg")
