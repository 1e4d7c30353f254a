"""CPU stages of the pseudo-labeling data path: order rows by canvas, read + decode + resize images.

Every image gets the detector processor's own size rule (``transformers.image_transforms.
get_size_with_aspect_ratio``). Images reach the model actor as uint8 HWC pixels at whichever size is
smaller: an image the processor would shrink is resized here with PIL and the processor's ``resample``
(exactly the processor's pixels); an image it would enlarge (a 500x375 CC3M photo becomes 1066x800) travels
at its decoded size and is enlarged on the device (``detector.device_ops.assemble_canvases``: bilinear, within
1/255 of PIL's), so neither the object store nor the CPUs carry the enlarged copy. Every image is padded to a
*canvas*: its resized size rounded up to ``canvas_multiple``. Batches hold one canvas, so an image's boxes
never depend on which images share its batch (padding to the batch's largest image changes the backbone's
input; on a tiny model that moved boxes by up to 231 px).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from formats.arrow_np import from_numpy
from formats.images import ImageError, decode_image, read_image_bytes
from labeling.stage import Resources, Stage

PIXEL_COLUMNS = ("pixels", "pixel_h", "pixel_w", "resized_h", "resized_w", "canvas_h", "canvas_w", "image_w",
                 "image_h", "error")
SIZE_COLUMNS = PIXEL_COLUMNS[1:-1]


@dataclass(frozen=True)
class ResizeRule:
    """The detector processor's resize (shortest/longest edge, resample) and the canvas rounding.

    ``shortest_edge``/``longest_edge`` in pixels (MM-Grounding-DINO: 800/1333); ``resample`` a PIL filter id
    (2 = bilinear, the processor's default); ``canvas_multiple`` pixels the padded canvas is rounded up to.
    """

    shortest_edge: int = 800
    longest_edge: int = 1333
    resample: int = 2
    canvas_multiple: int = 64

    def __post_init__(self):
        if self.canvas_multiple <= 0 or self.canvas_multiple % 8:
            raise ValueError(f"canvas_multiple must be a positive multiple of 8, got {self.canvas_multiple}")

    @classmethod
    def from_processor(cls, image_processor, canvas_multiple: int = 64) -> ResizeRule:
        """The rule of a transformers DETR-family image processor (``size``, ``resample``)."""
        size = image_processor.size
        get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
        short, long = get("shortest_edge"), get("longest_edge")
        if not short:
            raise ValueError(f"unsupported processor size {size!r}: expected shortest_edge/longest_edge")
        resample = int(getattr(image_processor, "resample", 2) or 2)
        return cls(int(short), int(long or short), resample, canvas_multiple)

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the processor's resize of a ``width x height`` image."""
        from transformers.image_transforms import get_size_with_aspect_ratio

        h, w = get_size_with_aspect_ratio((height, width), self.shortest_edge, self.longest_edge)
        return int(w), int(h)

    def canvas(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the padded canvas of a resized ``width x height`` image: both rounded up to
        ``canvas_multiple``, with at least ``GUARD_ROWS`` (8) padding rows below the image (the device crop
        sampler stacks a batch's canvases and relies on them)."""
        from detector.device_ops import GUARD_ROWS

        m = self.canvas_multiple
        return int(math.ceil(width / m) * m), int(math.ceil((height + GUARD_ROWS) / m) * m)

    def to_dict(self) -> dict:
        return asdict(self)


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
            except (ImageError, ValueError) as e:
                errors[i] = str(e)
                continue
            data, sizes = self.prepare(img)
            pixels[i] = data
            ints[:, i] = sizes
        out = batch.drop_columns([c for c in self.drops if c in batch.column_names])
        out = out.append_column("pixels", pa.array(pixels, pa.binary()))
        for name, col in zip(SIZE_COLUMNS, ints):
            out = out.append_column(name, from_numpy(col))
        return out.append_column("error", pa.array(errors, pa.string()))

    def prepare(self, img) -> tuple[bytes, tuple[int, ...]]:
        """(uint8 RGB bytes to ship, their sizes in ``SIZE_COLUMNS`` order) of a PIL RGB image: shrunk here
        when the processor shrinks it, else as decoded (enlarged on the device)."""
        iw, ih = img.size
        w, h = self.rule.resized(iw, ih)
        if w * h < iw * ih:
            img = img.resize((w, h), resample=self.rule.resample)
        cw, ch = self.rule.canvas(w, h)
        return img.tobytes(), (img.height, img.width, h, w, ch, cw, iw, ih)

    def resize(self, img) -> np.ndarray:
        """uint8 ``(h, w, 3)`` array of a PIL RGB image resized by the rule with PIL (the processor's pixels)."""
        w, h = self.rule.resized(img.width, img.height)
        if (w, h) != img.size:
            img = img.resize((w, h), resample=self.rule.resample)
        return np.asarray(img, dtype=np.uint8)


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
