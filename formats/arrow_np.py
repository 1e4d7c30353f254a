"""numpy -> Arrow without pyarrow's pandas import.

``pa.array(numpy_array)`` asks pyarrow's pandas shim whether the array is a Series, which imports pandas
(about 0.3 s, more on a cold disk) in every process that converts a numpy column. Numeric and boolean
arrays are wrapped here from their buffers instead (zero copy for numbers); anything else goes to
``pa.array``. A process that needs Python-object conversions too either imports pandas on a thread
behind its I/O (`warm_pandas_import`) or, when it runs one pandas-free command, skips pyarrow's probe
(`skip_pandas_probe`).
"""

from __future__ import annotations

import contextlib
import sys
import threading

import numpy as np
import pyarrow as pa


def from_numpy(values: np.ndarray, type: pa.DataType | None = None) -> pa.Array:
    """An Arrow array of a 1-D numpy array (cast to `type` when given), without importing pandas.

    Numbers and booleans are wrapped from their buffers (numbers zero copy); other dtypes go to ``pa.array``.
    Raises ValueError for an array that is not 1-D, pyarrow's ArrowInvalid for a cast that would lose values."""
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
_probe_skipped = False


class _BlockPandas:
    """A meta-path finder that makes ``import pandas`` fail, as on a machine without pandas."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(f"{name} is not imported by this process (formats.arrow_np.skip_pandas_probe)")
        return None


def skip_pandas_probe() -> bool:
    """Tells pyarrow that this process has no pandas, sparing the import (about 0.6 s of CPU) it makes to
    ask whether Python objects are pandas objects. True when the probe was skipped.

    For processes that run one command and never hand pandas objects to pyarrow (the ``ovlabel convert``
    commands): pyarrow's shim tries the import once, while it is blocked, and remembers pandas as
    missing. Explicit pandas calls (``Table.to_pandas``) still import it as usual. Does nothing when
    pandas is already imported or pyarrow has already looked for it.
    """
    global _probe_skipped
    if _probe_skipped or _warming is not None or "pandas" in sys.modules:
        return _probe_skipped
    blocker = _BlockPandas()
    sys.meta_path.insert(0, blocker)
    try:
        pa.scalar(0)  # the shim's one import attempt
    finally:
        sys.meta_path.remove(blocker)
    _probe_skipped = "pandas" not in sys.modules
    return _probe_skipped


def warm_pandas_import() -> None:
    """Imports pandas in a background thread (once), so pyarrow's first Python-object conversion does not wait.

    pyarrow imports pandas on its first ``pa.scalar``/``pa.array`` of Python objects; a converter that
    starts by streaming a file (I/O and duckdb, both outside the GIL) hides that import behind the read.
    numpy, pyarrow and duckdb are fully imported before the thread starts, so no import lock is shared.
    """
    global _warming
    if _warming is not None or _probe_skipped or "pandas" in sys.modules:
        return
    _warming = threading.Thread(target=_import_pandas, name="ovlabel-warm-pandas")
    _warming.start()


def _import_pandas() -> None:
    with contextlib.suppress(ImportError):
        import pandas  # noqa: F401
