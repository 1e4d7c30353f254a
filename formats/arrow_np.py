"""numpy -> Arrow without pyarrow's pandas import.

``pa.array(numpy_array)`` asks pyarrow's pandas shim whether the array is a Series, which imports pandas
(about 0.3 s, more on a cold disk) in every process that converts a numpy column. Numeric and boolean
arrays are wrapped here from their buffers instead (zero copy for numbers); anything else goes to
``pa.array``.
"""

from __future__ import annotations

import contextlib
import sys
import threading

import numpy as np
import pyarrow as pa


def from_numpy(values: np.ndarray, type: pa.DataType | None = None) -> pa.Array:
    """An Arrow array of a 1-D numpy array (cast to `type` when given), without importing pandas."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {a.shape}")
    if a.dtype == np.bool_:
        out = pa.Array.from_buffers(pa.bool_(), len(a), [None, pa.py_buffer(np.packbits(a, bitorder="little"))])
    elif a.dtype.kind in "iuf":
        a = np.ascontiguousarray(a)
        out = pa.Array.from_buffers(pa.from_numpy_dtype(a.dtype), len(a), [None, pa.py_buffer(a)])
    else:
        return pa.array(a, type=type)
    return out if type is None or out.type == type else out.cast(type)


_warming: threading.Thread | None = None


def warm_pandas_import() -> None:
    """Imports pandas in a background thread (once), so pyarrow's first Python-object conversion does not wait.

    pyarrow imports pandas on its first ``pa.scalar``/``pa.array`` of Python objects; a converter that
    starts by streaming a file (I/O and duckdb, both outside the GIL) hides that import behind the read.
    numpy, pyarrow and duckdb are fully imported before the thread starts, so no import lock is shared.
    """
    global _warming
    if _warming is not None or "pandas" in sys.modules:
        return
    _warming = threading.Thread(target=_import_pandas, name="ovlabel-warm-pandas")
    _warming.start()


def _import_pandas() -> None:
    with contextlib.suppress(ImportError):
        import pandas  # noqa: F401
