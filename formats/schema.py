"""The ODVG record model: one Arrow schema for every dataset, gold or pseudo, OD or VG.

A record is one image. Its boxes are `regions`, a list of structs. Boxes are absolute-pixel
``x1 y1 x2 y2`` (``bbox`` here always means xyxy pixels; other conventions are converted in
``formats.boxes`` at the edges). Converters may add source-specific columns after the core ones
(COCO-format ``source_image_id`` and ``coco_url``, LVIS ``neg_labels``, MDETR ``sentence_id``, img2dataset
``sha256``...); they are listed in the manifest.

A region's ``origin`` says what it is: ``gold`` / ``review`` boxes are ground truth, ``pseudo`` boxes machine
labels, and ``crowd`` / ``ignore`` regions (a source's ``iscrowd`` / ``ignore`` annotations) are kept only
for evaluation: never trained on, never exported for training, ignored when scoring (`IGNORE_ORIGINS`).

Format versions: 1 had no region ``area`` / ``source_id``, no ``crowd`` / ``ignore`` origins (such annotations
were dropped) and no ``source_image_id`` / ``coco_url`` columns. Version-1 parts are read as version 2
(`upgrade`): the missing region fields are null.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from formats.arrow_np import from_numpy

FORMAT_NAME = "ovlabel-odvg"
FORMAT_VERSION = 2

GOLD_ORIGINS = ("gold", "review")  # ground-truth boxes: trained on and scored
IGNORE_ORIGINS = ("crowd", "ignore")  # kept for evaluation only: never trained on, ignored when scoring
TRAIN_ORIGINS = ("gold", "pseudo", "review")  # what training and training exports read
ORIGINS = ("gold", "pseudo", "review", "crowd", "ignore")

SPAN_TYPE = pa.list_(pa.int32(), 2)
# a caption's phrases with their character spans (``ovlabel phrases``, given phrases, `convert odvg`)
PHRASES_TYPE = pa.list_(pa.struct([pa.field("phrase", pa.string()), pa.field("tokens_positive", pa.list_(SPAN_TYPE))]))
REGION_TYPE = pa.struct(
    [
        pa.field("region_id", pa.string()),
        pa.field("bbox", pa.list_(pa.float64(), 4)),
        pa.field("label", pa.int32()),
        pa.field("category", pa.string()),
        pa.field("phrase", pa.string()),
        pa.field("tokens_positive", pa.list_(SPAN_TYPE)),
        pa.field("score", pa.float32()),
        pa.field("det_score", pa.float32()),
        pa.field("clip_score", pa.float32()),
        pa.field("origin", pa.string()),
        pa.field("round", pa.int16()),
        pa.field("area", pa.float64()),  # the source annotation's own area, px² (COCO `area`); null: the box's
        # the source annotation's own id as JSON text, type kept (``5678``, ``"a-17"``; `formats.ids.json_texts`);
        # null for regions no source annotation gave (pseudo boxes, reviewers' edits, sources without ids)
        pa.field("source_id", pa.string()),
    ]
)
REGION_FIELDS = tuple(f.name for f in REGION_TYPE)

CORE_FIELDS = [
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("file_name", pa.string(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("caption", pa.string()),
    pa.field("regions", pa.list_(REGION_TYPE)),
]
CORE_SCHEMA = pa.schema(CORE_FIELDS)
CORE_COLUMNS = tuple(f.name for f in CORE_FIELDS)


class SchemaError(ValueError):
    """A table does not follow the ODVG record model."""


def record_schema(extra: list[pa.Field] | None = None) -> pa.Schema:
    """The core schema followed by source-specific extra columns; raises `SchemaError` when an extra column
    has a core column's name."""
    fields = list(CORE_FIELDS)
    for f in extra or []:
        if f.name in CORE_COLUMNS:
            raise SchemaError(f"extra column {f.name!r} shadows a core column")
        fields.append(f)
    return pa.schema(fields)


def empty_regions(n: int) -> pa.ListArray:
    """`n` empty region lists (an image without boxes)."""
    offsets = from_numpy(np.zeros(n + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array([], type=REGION_TYPE))


def regions_from_columns(
    offsets: np.ndarray,
    bbox_xyxy: np.ndarray,
    *,
    region_id: pa.Array | None = None,
    label: np.ndarray | None = None,
    category: pa.Array | None = None,
    phrase: pa.Array | None = None,
    tokens_positive: pa.Array | None = None,
    score: np.ndarray | None = None,
    det_score: np.ndarray | None = None,
    clip_score: np.ndarray | None = None,
    origin: str | pa.Array = "gold",
    round: int | np.ndarray | None = None,
    area: np.ndarray | None = None,
    source_id: pa.Array | None = None,
) -> pa.ListArray:
    """Builds the `regions` list column from flat per-box columns and per-image offsets (len = images + 1).

    `bbox_xyxy` is (N, 4) absolute pixels; `area` the source's own areas in px² (NaN or None: unknown);
    `source_id` the source annotations' ids as JSON text (`formats.ids.json_texts`; None: no source id)."""
    n = int(len(bbox_xyxy))
    boxes = np.ascontiguousarray(bbox_xyxy, dtype=np.float64).reshape(-1)
    bbox = pa.FixedSizeListArray.from_arrays(from_numpy(boxes), 4)

    def col(value, typ):
        if value is None:
            return pa.nulls(n, typ)
        if isinstance(value, pa.ChunkedArray):
            value = value.combine_chunks()
        if isinstance(value, pa.Array):
            return value.cast(typ) if value.type != typ else value
        if np.isscalar(value) or isinstance(value, str):
            return pa.repeat(pa.scalar(value, typ), n)
        return from_numpy(value, typ) if isinstance(value, np.ndarray) else pa.array(value, type=typ)

    children = [
        col(region_id, pa.string()),
        bbox,
        col(label, pa.int32()),
        col(category, pa.string()),
        col(phrase, pa.string()),
        col(tokens_positive, pa.list_(SPAN_TYPE)),
        col(score, pa.float32()),
        col(det_score, pa.float32()),
        col(clip_score, pa.float32()),
        col(origin, pa.string()),
        col(round, pa.int16()),
        col(area, pa.float64()) if area is None else _nan_as_null(area),
        col(source_id, pa.string()),
    ]
    structs = pa.StructArray.from_arrays(children, fields=list(REGION_TYPE))
    return pa.ListArray.from_arrays(from_numpy(np.asarray(offsets, dtype=np.int32)), structs)


def _nan_as_null(values: np.ndarray) -> pa.Array:
    """float64 Arrow array of `values` with NaN as null."""
    arr = from_numpy(np.asarray(values, dtype=np.float64))
    return pc.if_else(pc.is_nan(arr), pa.scalar(None, pa.float64()), arr)


def upgrade(table: pa.Table) -> pa.Table:
    """A records table of an older format version in the current layout: regions gain the fields they lack
    (null). Tables already in the current layout are returned as they are."""
    if "regions" not in table.column_names:
        return table
    i = table.schema.get_field_index("regions")
    if table.schema.field(i).type == pa.list_(REGION_TYPE):
        return table
    return table.set_column(i, "regions", table.column("regions").cast(pa.list_(REGION_TYPE)))


def missing_region_fields(regions_type: pa.DataType) -> list[pa.Field]:
    """The region fields an older layout's `regions` type (list<struct>) lacks, in the current order."""
    have = {f.name for f in regions_type.value_type} if pa.types.is_list(regions_type) else set()
    return [f for f in REGION_TYPE if f.name not in have]


def region_keys(image_ids: pa.Array, regions: pa.ListArray) -> pa.Array:
    """One key per region: its `region_id`, else ``<image_id>#<position>`` (gold boxes are keyed by position)."""
    regions = regions.combine_chunks() if isinstance(regions, pa.ChunkedArray) else regions
    image_ids = image_ids.combine_chunks() if isinstance(image_ids, pa.ChunkedArray) else image_ids
    lengths = pc.list_value_length(regions).fill_null(0).to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(len(regions)), lengths)
    starts = np.repeat(regions.offsets.to_numpy()[:-1] - regions.offsets.to_numpy()[0], lengths)
    position = np.arange(len(owner)) - starts
    positional = pc.binary_join_element_wise(image_ids.take(from_numpy(owner)), pc.cast(from_numpy(position), pa.string()), "#")
    return pc.coalesce(regions.flatten().field("region_id"), positional)


def conform(table: pa.Table, extra: list[pa.Field] | None = None) -> pa.Table:
    """Casts and orders `table`'s columns to the record schema (core columns first); raises SchemaError."""
    schema = record_schema(extra if extra is not None else [f for f in table.schema if f.name not in CORE_COLUMNS])
    missing = [n for n in schema.names if n not in table.column_names and n != "caption"]
    if missing:
        raise SchemaError(f"missing columns: {', '.join(missing)}")
    cols = []
    for field in schema:
        if field.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        if col.type != field.type:
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SchemaError(f"column {field.name!r}: cannot cast {col.type} to {field.type}: {e}") from e
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def validate(table: pa.Table) -> None:
    """Checks the record invariants a writer must guarantee; raises SchemaError naming the first bad record."""
    if table.num_rows == 0:
        return
    for name in ("image_id", "file_name", "width", "height", "source"):
        nulls = table.column(name).null_count
        if nulls:
            idx = _first_true(pc.is_null(table.column(name)))
            raise SchemaError(f"record {_record_name(table, idx)}: {name} is null")
    bad = pc.or_(pc.less_equal(table.column("width"), 0), pc.less_equal(table.column("height"), 0))
    if pc.any(bad).as_py():
        idx = _first_true(bad)
        raise SchemaError(f"record {_record_name(table, idx)}: width and height must be positive")
    regions = table.column("regions").combine_chunks()
    flat = regions.flatten()
    if len(flat) == 0:
        return
    boxes = flat.field("bbox").flatten().to_numpy(zero_copy_only=False).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    ordered = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
    ok = finite & ordered
    if not ok.all():
        box = int(np.argmin(ok))
        owner = int(np.searchsorted(regions.offsets.to_numpy(), box, side="right") - 1)
        raise SchemaError(f"record {_record_name(table, owner)}: box {boxes[box].tolist()} is not a finite x1<=x2, y1<=y2 box")
    origins = pc.unique(flat.field("origin")).to_pylist()
    unknown = [o for o in origins if o not in ORIGINS]
    if unknown:
        raise SchemaError(f"unknown region origin(s) {unknown}; expected one of {ORIGINS}")
    captions = table.column("caption")
    spans = flat.field("tokens_positive")
    if spans.null_count < len(spans):
        _validate_spans(table, regions, captions)


def _validate_spans(table: pa.Table, regions: pa.ListArray, captions: pa.ChunkedArray) -> None:
    lengths = pc.utf8_length(captions.combine_chunks()).to_numpy(zero_copy_only=False)
    offsets = regions.offsets.to_numpy()
    flat = regions.flatten()
    span_lists = flat.field("tokens_positive")
    span_offsets = span_lists.offsets.to_numpy()
    pairs = span_lists.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, 2)
    if len(pairs) == 0:
        return
    region_of_pair = np.repeat(np.arange(len(span_offsets) - 1), np.diff(span_offsets))
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))[region_of_pair]
    cap_len = lengths[owner]
    bad = (pairs[:, 0] < 0) | (pairs[:, 1] <= pairs[:, 0]) | (pairs[:, 1] > np.nan_to_num(cap_len, nan=-1))
    if bad.any():
        i = int(np.argmax(bad))
        raise SchemaError(
            f"record {_record_name(table, int(owner[i]))}: span {pairs[i].tolist()} is outside its caption"
        )


def _first_true(mask) -> int:
    arr = mask.to_numpy(zero_copy_only=False) if hasattr(mask, "to_numpy") else np.asarray(mask)
    return int(np.argmax(np.asarray(arr, dtype=bool)))


def _record_name(table: pa.Table, idx: int) -> str:
    image_id = table.column("image_id")[idx].as_py()
    return f"#{idx} (image_id={image_id!r})"
