"""numpy -> Arrow without pandas (formats.arrow_np.from_numpy): values, types, bit order of booleans,
strided input, casts and the 1-D rule."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from formats.arrow_np import from_numpy


@pytest.mark.parametrize("dtype, arrow", [
    (np.int8, pa.int8()), (np.int16, pa.int16()), (np.int32, pa.int32()), (np.int64, pa.int64()),
    (np.uint8, pa.uint8()), (np.uint32, pa.uint32()), (np.uint64, pa.uint64()),
    (np.float16, pa.float16()), (np.float32, pa.float32()), (np.float64, pa.float64()),
])
def test_numbers_keep_their_type_and_values(dtype, arrow):
    a = np.array([0, 1, 2, 100], dtype=dtype)
    out = from_numpy(a)
    assert out.type == arrow
    assert out.null_count == 0
    assert out.to_pylist() == [0, 1, 2, 100]


def test_float_special_values_survive():
    out = from_numpy(np.array([1.5, -0.0, np.inf, np.nan], np.float64))
    got = out.to_pylist()
    assert got[:3] == [1.5, -0.0, float("inf")] and np.isnan(got[3])
    assert out.null_count == 0  # NaN stays a value, never a null


def test_booleans_are_bit_packed_in_arrow_order():
    # 11 values: more than one byte, so the little-endian bit order of the second byte matters too
    values = [True, False, False, True, True, False, True, False, False, True, True]
    out = from_numpy(np.array(values))
    assert out.type == pa.bool_()
    assert out.to_pylist() == values
    assert out.equals(pa.array(values))


def test_strided_and_reversed_views_give_their_own_values():
    base = np.arange(10, dtype=np.int64)
    assert from_numpy(base[::3]).to_pylist() == [0, 3, 6, 9]
    assert from_numpy(base[::-1]).to_pylist() == list(range(9, -1, -1))
    col = np.arange(12, dtype=np.float32).reshape(3, 4)[:, 1]  # a column of a C-ordered matrix
    assert from_numpy(col).to_pylist() == [1.0, 5.0, 9.0]


def test_empty_arrays_and_lists():
    assert from_numpy(np.zeros(0, np.int32)).to_pylist() == []
    assert from_numpy(np.zeros(0, np.int32)).type == pa.int32()
    assert from_numpy([1, 2, 3]).to_pylist() == [1, 2, 3]  # anything np.asarray takes


def test_a_requested_type_casts_and_equal_types_are_kept():
    assert from_numpy(np.array([1, 2], np.int64), pa.int32()).type == pa.int32()
    assert from_numpy(np.array([1, 2], np.int32), pa.float64()).to_pylist() == [1.0, 2.0]
    out = from_numpy(np.array([3, 4], np.int32), pa.int32())
    assert out.type == pa.int32() and out.to_pylist() == [3, 4]
    with pytest.raises(pa.ArrowInvalid):  # a cast that would lose values is refused, not wrapped
        from_numpy(np.array([300], np.int64), pa.int8())


def test_strings_and_objects_go_through_pa_array():
    assert from_numpy(np.array(["a", "bc"])).to_pylist() == ["a", "bc"]
    assert from_numpy(np.array(["a", None], dtype=object), pa.string()).to_pylist() == ["a", None]


def test_the_array_is_a_view_of_the_numbers_not_a_copy():
    a = np.array([1.0, 2.0, 3.0])
    out = from_numpy(a)
    a[0] = 9.0
    assert out.to_pylist()[0] == 9.0  # zero copy: the Arrow buffer is numpy's memory


@pytest.mark.parametrize("shape", [(), (2, 2), (1, 3)])
def test_only_1d_arrays(shape):
    with pytest.raises(ValueError, match=r"expected a 1-D array, got shape \(" ):
        from_numpy(np.zeros(shape, np.int32))
