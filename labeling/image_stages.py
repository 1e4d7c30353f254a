"""CPU stages of the pseudo-labeling data path: order rows by canvas, read + decode + resize images.

The rule (the detector processor's resize, images shrunk here and enlarged on the device, canvases that make
results independent of batch companions) lives in ``detector.preprocess``; these stages apply it to rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector.preprocess import SIZE_COLUMNS, ResizeRule, prepare_image
from formats.arrow_np import from_numpy
from formats.images import ImageError, decode_image, read_image_bytes
from labeling.stage import Resources, Stage

PIXEL_COLUMNS = ("pixels", *SIZE_COLUMNS, "error")


class OrderByCanvas(Stage):
    """Orders a unit's rows by the canvas their recorded size predicts (stable), so consecutive rows share a
    canvas and the model's batches are full. Only an efficiency step: results do not depend on it."""

    name = "order-by-canvas"
    resources = Resources(cpus=0.25)
    reads = ("width", "height")

    def __init__(self, rule: ResizeRule):
        self.rule = rule

    def process(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows < 2:
            return batch
        w = batch.column("width").to_numpy(zero_copy_only=False)
        h = batch.column("height").to_numpy(zero_copy_only=False)
        keys = []
        for wi, hi in zip(w.tolist(), h.tolist()):
            keys.append(self.rule.canvas(*self.rule.resized(max(int(wi), 1), max(int(hi), 1))))
        order = sorted(range(len(keys)), key=lambda i: keys[i])  # stable: row order within a canvas
        return batch.take(from_numpy(np.asarray(order, dtype=np.int64)))


class LoadImages(Stage):
    """Reads each row's image bytes, decodes them (``formats.images.decode_image``: the project's one image
    rule and its size cap) and resizes them with the detector's rule.

    Adds ``pixels`` (binary: ``pixel_h x pixel_w x 3`` uint8, row-major RGB), ``pixel_h``/``pixel_w`` (the
    size shipped: the resized size, or the decoded size when the processor would enlarge the image),
    ``resized_h``/``resized_w`` (the processor's size), ``canvas_h``/``canvas_w``, ``image_w``/``image_h``
    (decoded size: boxes are mapped back to it) and ``error`` (null, or why the image could not be read).
    Drops ``image_root``.
    """

    name = "load-images"
    resources = Resources(cpus=1.0)
    reads = ("image_root", "file_name", "image_id")
    adds = PIXEL_COLUMNS
    drops = ("image_root",)

    def __init__(self, rule: ResizeRule, rows_per_block: int | None = None):
        self.rule = rule
        self.rows_per_block = rows_per_block

    def process(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        pixels: list = [None] * n
        ints = np.zeros((len(SIZE_COLUMNS), n), np.int32)
        errors: list = [None] * n
        roots = batch.column("image_root").to_pylist()
        names = batch.column("file_name").to_pylist()
        ids = batch.column("image_id").to_pylist()
        for i in range(n):
            try:
                img = decode_image(read_image_bytes(roots[i], names[i]), ids[i])
                data, sizes = self.prepare(img)
            except (ImageError, ValueError) as e:
                errors[i] = f"{names[i]}: {e}" if names[i] not in str(e) else str(e)
                continue
            pixels[i] = data
            ints[:, i] = sizes
        out = batch.drop_columns([c for c in self.drops if c in batch.column_names])
        out = out.append_column("pixels", pa.array(pixels, pa.binary()))
        for name, col in zip(SIZE_COLUMNS, ints):
            out = out.append_column(name, from_numpy(col))
        return out.append_column("error", pa.array(errors, pa.string()))

    def prepare(self, img) -> tuple[bytes, tuple[int, ...]]:
        """``detector.preprocess.prepare_image`` with this stage's rule."""
        return prepare_image(img, self.rule)


def canvas_groups(batch: pa.Table, batch_size: int) -> list[np.ndarray]:
    """Row indices of the model's batches: rows of one canvas (in row order), at most `batch_size` each.

    Rows whose image failed to load (``error`` set) are left out.
    """
    ok = pc.is_null(batch.column("error")).to_numpy(zero_copy_only=False)
    ch = batch.column("canvas_h").to_numpy(zero_copy_only=False)
    cw = batch.column("canvas_w").to_numpy(zero_copy_only=False)
    groups: dict[tuple[int, int], list[int]] = {}
    for i in np.flatnonzero(ok).tolist():
        groups.setdefault((int(ch[i]), int(cw[i])), []).append(i)
    out = []
    for rows in groups.values():
        out += [np.asarray(rows[k:k + batch_size], dtype=np.int64) for k in range(0, len(rows), batch_size)]
    return out
