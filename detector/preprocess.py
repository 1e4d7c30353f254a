"""The detector's image preprocessing rule on the host: the processor's resize and the padded canvas.

Every image gets the detector processor's own size rule (``transformers.image_transforms.
get_size_with_aspect_ratio``). An image the processor would shrink is resized here with PIL and the
processor's ``resample`` (exactly the processor's pixels); one it would enlarge (a 500x375 CC3M photo becomes
1066x800) is kept at its decoded size and enlarged on the device (``detector.device_ops.assemble_canvases``),
so neither the object store nor the CPUs carry the enlarged copy. Each image is padded to a *canvas*: its
resized size rounded up to ``canvas_multiple``; batches hold one canvas, so an image's boxes never depend on
which images share its batch.

OWLv2 (``ResizeRule.square``) has another rule, transformers' ``Owlv2ImageProcessor``: pad the image to a
square at the bottom/right, then resize the square to ``size x size``. Here that is: scale by
``size / max(w, h)`` (shrunk on the host, enlarged on the device, as above) and place at the top-left of a
fixed canvas; the detector fills the square's padding itself (``detector.owlv2``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# the sizes of a prepared image, in this order (LoadImages writes them as columns)
SIZE_COLUMNS = ("pixel_h", "pixel_w", "resized_h", "resized_w", "canvas_h", "canvas_w", "image_w", "image_h")


@dataclass(frozen=True)
class ResizeRule:
    """The detector processor's resize (shortest/longest edge, resample) and the canvas rounding.

    ``shortest_edge``/``longest_edge`` in pixels (MM-Grounding-DINO: 800/1333); ``resample`` a PIL filter id
    (2 = bilinear, the processor's default); ``canvas_multiple`` pixels the padded canvas is rounded up to.
    Raises ValueError when ``canvas_multiple`` is not a positive multiple of 8.
    """

    shortest_edge: int = 800
    longest_edge: int = 1333
    resample: int = 2
    canvas_multiple: int = 64
    square: bool = False  # OWLv2: longest side to `longest_edge`, one fixed canvas holding the padded square

    def __post_init__(self):
        if self.canvas_multiple <= 0 or self.canvas_multiple % 8:
            raise ValueError(f"canvas_multiple must be a positive multiple of 8, got {self.canvas_multiple}")

    @classmethod
    def from_processor(cls, image_processor, canvas_multiple: int = 64) -> ResizeRule:
        """The rule of a transformers DETR-family image processor (``size``, ``resample``), or of an OWLv2 one
        (``Owlv2ImageProcessor``: pad to a square, resize to ``size["height"]``; a `square` rule).

        Raises ValueError for a size without ``shortest_edge`` (DETR family) or a non-square OWLv2 size."""
        size = image_processor.size
        get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
        if type(image_processor).__name__.startswith("Owlv2"):
            side = int(get("height"))
            if int(get("width")) != side:
                raise ValueError(f"unsupported OWLv2 processor size {size!r}: expected a square")
            return cls(side, side, int(getattr(image_processor, "resample", 2) or 2), canvas_multiple, square=True)
        short, long = get("shortest_edge"), get("longest_edge")
        if not short:
            raise ValueError(f"unsupported processor size {size!r}: expected shortest_edge/longest_edge")
        resample = int(getattr(image_processor, "resample", 2) or 2)
        return cls(int(short), int(long or short), resample, canvas_multiple)

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the processor's resize of a ``width x height`` image; for a `square` rule both
        sides scaled by ``longest_edge / max(width, height)``, rounded half up (the image's part of the square)."""
        from transformers.image_transforms import get_size_with_aspect_ratio

        if self.square:
            scale = self.longest_edge / max(width, height, 1)
            return int(math.floor(width * scale + 0.5)), int(math.floor(height * scale + 0.5))

        h, w = get_size_with_aspect_ratio((height, width), self.shortest_edge, self.longest_edge)
        return int(w), int(h)

    def canvas(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the padded canvas of a resized ``width x height`` image: both rounded up to
        ``canvas_multiple``, with at least ``GUARD_ROWS`` (8) padding rows below the image (the device crop
        sampler stacks a batch's canvases and relies on them). A `square` rule has one canvas for every image:
        the ``longest_edge`` square (the model's input, its top-left) plus those rows, rounded up the same way."""
        from detector.device_ops import GUARD_ROWS

        m = self.canvas_multiple
        if self.square:
            width = height = self.longest_edge
        return int(math.ceil(width / m) * m), int(math.ceil((height + GUARD_ROWS) / m) * m)

    def to_dict(self) -> dict:
        return asdict(self)


def prepare_image(img, rule: ResizeRule) -> tuple[bytes, tuple[int, ...]]:
    """(uint8 RGB bytes to ship, their sizes in ``SIZE_COLUMNS`` order) of a PIL RGB image: shrunk here when
    the processor shrinks it, else as decoded (enlarged on the device). Sizes in pixels: shipped (h, w),
    resized (h, w), canvas (h, w), original (w, h). Raises ValueError for an image so thin that the
    processor's rule makes one side 0 (4000x1)."""
    iw, ih = img.size
    w, h = rule.resized(iw, ih)
    if w < 1 or h < 1:
        raise ValueError(f"{iw}x{ih} is too thin for the detector's resize (to {w}x{h})")
    if w * h < iw * ih:
        img = img.resize((w, h), resample=rule.resample)
    cw, ch = rule.canvas(w, h)
    return img.tobytes(), (img.height, img.width, h, w, ch, cw, iw, ih)

