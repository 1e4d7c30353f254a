"""Image and annotation ids as the source file wrote them: type and text kept, never merged.

The rule (docs/format.md, "Ids"):

- a JSON integer is an integer id (``3``; an integral float such as ``3.0`` is the integer 3, as
  Python's ``json`` + ``int`` reading of COCO files makes it); its text is its decimal form;
- a JSON string is a string id and stays exactly as written: ``"03"`` is not ``"3"`` and not ``3``,
  ``"2008_000123"`` is an ordinary id; the empty string is not an id;
- anything else (``null``, a boolean, a list, an object, a fractional number) is an invalid id: its
  record is rejected with the reason;
- a reference (an annotation's ``image_id``) names the image whose id has the same text. Integer
  ``3`` and string ``"3"`` in one ``images`` array could both be meant by a reference, so a file holding
  both is refused with an error naming the two records (``AmbiguousIdError``).

The readers ask duckdb for id columns as ``JSON`` (the raw JSON text of the value: ``3``, ``"03"``),
so the type survives the fast parser; `parse_json_ids` turns that text into an `Ids`.
For matching, ids are turned into int64 *codes* (`codes`): the integers themselves when every id is an
integer that fits (the common case, no dictionary), else positions in a dictionary of image id texts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MISSING = np.iinfo(np.int64).min  # code of a missing or invalid id
ABSENT = -2  # code of a valid reference that names no image (dictionary codes are >= 0)

_INT = r"^-?[0-9]+$"
_INTEGRAL_FLOAT = r"^-?[0-9]+\.0*$"


class AmbiguousIdError(ValueError):
    """Two ids differ only in JSON type (``3`` and ``"3"``): a reference could mean either."""


@dataclass
class Ids:
    """One id column: canonical text (null where missing or invalid), whether the file wrote a string,
    and why an id present in the file is not valid (position -> reason)."""

    text: pa.Array
    is_str: np.ndarray
    invalid: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.text)

    @property
    def valid(self) -> np.ndarray:
        return self.text.is_valid().to_numpy(zero_copy_only=False)

    def display(self, positions=None) -> list:
        """The ids at `positions` (all by default) as the file wrote them (int or str), `MISSING` where invalid."""
        pos = np.arange(len(self.text)) if positions is None else np.asarray(positions, dtype=np.int64).reshape(-1)
        text = self.text.take(pa.array(pos, pa.int64())).to_pylist()
        return [MISSING if t is None else (t if s else int(t)) for t, s in zip(text, self.is_str[pos].tolist())]

    def why(self, positions) -> list[str]:
        """The reason each listed id is invalid (``missing`` where the file has no value)."""
        return [self.invalid.get(int(i), "missing") for i in positions]


def parse_json_ids(raw: pa.Array | pa.ChunkedArray) -> Ids:
    """Ids from the raw JSON text of each value (duckdb's ``JSON`` column type; null where absent)."""
    raw = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
    if raw.type != pa.string():
        raw = raw.cast(pa.string())
    n = len(raw)
    is_int = _mask(pc.match_substring_regex(raw, _INT))
    if bool(is_int.all()):  # the usual case: every id an integer
        return Ids(raw, np.zeros(n, dtype=bool))
    is_str = _mask(pc.starts_with(raw, '"'))
    plain_str = is_str & ~_mask(pc.match_substring(raw, "\\"))
    # integers as they are, strings without escapes unquoted: vectorised; the rest one by one
    text = pc.if_else(pa.array(plain_str), pc.utf8_slice_codeunits(raw, 1, -1), raw)
    text = pc.if_else(pa.array(is_int | plain_str), text, pa.nulls(n, pa.string()))
    invalid: dict[int, str] = {}
    rest = np.flatnonzero(~(is_int | plain_str) & raw.is_valid().to_numpy(zero_copy_only=False))
    if len(rest):
        fixed = text.to_pylist()
        for i in rest.tolist():
            t = raw[i].as_py()
            if pc.match_substring_regex(pa.array([t]), _INTEGRAL_FLOAT)[0].as_py():
                fixed[i] = str(int(float(t)))
            elif t.startswith('"'):
                fixed[i] = json.loads(t)
            else:
                invalid[i] = f"{t[:40]} is not an integer or a string"
        text = pa.array(fixed, pa.string())
    empty = _mask(pc.equal(pc.utf8_trim_whitespace(text), ""))
    for i in np.flatnonzero(empty).tolist():
        invalid[i] = "an empty string is not an id"
    if empty.any():
        text = pc.if_else(pa.array(empty), pa.nulls(n, pa.string()), text)
    return Ids(text, is_str & text.is_valid().to_numpy(zero_copy_only=False), invalid)


def ids_from_values(values: list) -> Ids:
    """Ids from Python values (what ``json.loads`` gives), by the same rule as `parse_json_ids`."""
    raw = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
    return parse_json_ids(pa.array(raw, pa.string()))


def json_texts(ids: Ids, positions=None) -> pa.Array:
    """The ids at `positions` (all by default) as canonical JSON text: ``3`` for an integer, ``"03"`` for a
    string (what ``json.loads`` turns back into the id with its type; null where invalid). Datasets keep
    the source's image ids so (``source_image_id``) and exports write them back as they were."""
    pos = pa.array(np.arange(len(ids.text)) if positions is None else np.asarray(positions, dtype=np.int64), pa.int64())
    text = ids.text.take(pos)
    is_str = ids.is_str[pos.to_numpy()]
    if not is_str.any():
        return text
    values = text.to_pylist()
    return pa.array([json.dumps(t, ensure_ascii=False) if s and t is not None else t
                     for t, s in zip(values, is_str.tolist())], pa.string())


def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _int_codes(ids: Ids) -> np.ndarray | None:
    """The ids as int64 when all are integers that fit, else None."""
    if ids.is_str.any():
        return None
    try:
        return np.asarray(pc.cast(ids.text, pa.int64()).fill_null(MISSING).to_numpy(zero_copy_only=False),
                          dtype=np.int64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def codes(images: Ids, *refs: Ids) -> tuple[np.ndarray, ...]:
    """int64 codes of `images` and of each reference column: equal codes = same id text.

    Missing or invalid ids get `MISSING`; a reference to no image gets a code no image has."""
    as_ints = [_int_codes(c) for c in (images, *refs)]
    if all(c is not None for c in as_ints):
        return tuple(as_ints)
    uniq = pc.unique(images.text.drop_null())
    out = []
    for c in (images, *refs):
        idx = pc.index_in(c.text, value_set=uniq)
        code = np.asarray(idx.fill_null(ABSENT).to_numpy(zero_copy_only=False), dtype=np.int64)
        code[~c.valid] = MISSING
        out.append(code)
    return tuple(out)


def self_codes(ids: Ids) -> np.ndarray:
    """int64 codes of one column on its own (duplicates share a code), `MISSING` where invalid."""
    return codes(ids)[0]


def type_collision(ids: Ids, index: np.ndarray, array: str = "images") -> str | None:
    """A message naming two records whose ids differ only in JSON type (``3`` and ``"3"``), else None."""
    strs = ids.is_str
    ints = ids.valid & ~strs
    if not (strs.any() and ints.any()):
        return None
    text = ids.text.to_pylist()
    first_int: dict[str, int] = {}
    for i in np.flatnonzero(ints).tolist():
        first_int.setdefault(text[i], i)
    for j in np.flatnonzero(strs).tolist():
        i = first_int.get(text[j])
        if i is not None:
            return (f"{array}[{int(index[i])}] id={text[i]} and {array}[{int(index[j])}] id={text[j]!r} differ only "
                    "in JSON type (number vs string): a reference to either could mean both; make the ids distinct")
    return None


def format_id(value) -> str:
    """An id for messages: integers bare, strings quoted (``3``, ``'03'``)."""
    return repr(value) if isinstance(value, str) else str(value)
