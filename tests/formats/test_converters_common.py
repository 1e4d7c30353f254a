"""formats.converters.common: the image checks, box grouping and part writing every converter shares."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from formats.converters.common import (
    MaskRejects,
    Rejects,
    reject_bad_image_files,
    reject_bad_image_ids,
    slot_offsets,
    write_parts_pipelined,
)
from formats.ids import MISSING, parse_json_ids


def test_image_checks_reject_each_image_once_under_the_first_reason():
    ids = parse_json_ids(pa.array(["1", "2", "2", "null", "5", "6", "7"]))
    codes = np.array([1, 2, 2, MISSING, 5, 6, 7])
    names = pa.array(["a.jpg", "b.jpg", "c.jpg", None, None, "../x.jpg", "g.jpg"])
    rej = Rejects("ann.json")
    reject = MaskRejects(rej, "images", np.arange(7), ids, {})
    shared = reject_bad_image_ids(reject, codes, np.arange(7), ids, names, owned="boxes")
    safe = reject_bad_image_files(reject, names, np.array([10, 10, 10, 10, 10, 10, 0]), np.full(7, 10),
                                  name_missing="no file")
    assert reject.keep.tolist() == [True, False, False, False, False, False, False]
    assert dict(rej.rejected) == {"duplicate image id": 2, "invalid id": 1, "missing file_name": 1,
                                  "unsafe file_name": 1, "invalid width/height": 1}
    by_record = {r["record"]: (r["reason"], r["detail"]) for r in rej.rows}
    assert by_record["images[1] id=2"] == ("duplicate image id", "images[1] id=2 file_name='b.jpg' and images[2] "
                                           "id=2 file_name='c.jpg' have the same id: which one its boxes belong to "
                                           "is ambiguous; none is kept")
    assert by_record["images[3]"] == ("invalid id", "null is not an integer or a string")  # not also missing file_name
    assert by_record["images[4] id=5"] == ("missing file_name", "no file")
    assert by_record["images[6] id=7"] == ("invalid width/height", "width and height must be positive integers")
    assert set(shared) == {1, 2} and len(safe) == 7 and safe[0].as_py() == "a.jpg"


def test_slot_offsets_group_boxes_by_image():
    counts, offsets = slot_offsets(np.array([2, 0, 2, 2]), 4)
    assert counts.tolist() == [1, 0, 3, 0] and offsets.tolist() == [0, 1, 1, 4, 4]
    counts, offsets = slot_offsets(np.zeros(0, np.int64), 0)
    assert counts.tolist() == [] and offsets.tolist() == [0]


def test_parts_are_written_in_order_and_a_write_error_is_raised():
    class Writer:
        def __init__(self, fail_on=None):
            self.names, self.fail_on = [], fail_on

        def write_part(self, name, table):
            if name == self.fail_on:
                raise OSError(f"disk full writing {name}")
            self.names.append(name)

    parts = [(f"part-{i:05d}.parquet", pa.table({"x": [i]})) for i in range(5)]
    w = Writer()
    write_parts_pipelined(w, iter(parts))
    assert w.names == [p[0] for p in parts]
    with pytest.raises(OSError, match="disk full writing part-00003.parquet"):
        write_parts_pipelined(Writer(fail_on="part-00003.parquet"), iter(parts))
