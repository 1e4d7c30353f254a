"""The host side of the detector's image rule (detector.preprocess): resized sizes, canvases (rounded up,
guard rows below), the OWLv2 square rule, reading the rule off a processor, and prepare_image's pixels and sizes.
Sizes are (width, height) in pixels unless a name says otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from detector.device_ops import GUARD_ROWS
from detector.preprocess import SIZE_COLUMNS, ResizeRule, prepare_image


@pytest.mark.parametrize("size, resized, canvas", [
    ((500, 375), (1066, 800), (1088, 832)),  # enlarged: the short side to 800
    ((375, 500), (800, 1066), (832, 1088)),
    ((800, 800), (800, 800), (832, 832)),  # 800 + 8 guard rows round up to 832
    ((2000, 1000), (1333, 666), (1344, 704)),  # the long side capped at 1333
    ((1333, 100), (1333, 100), (1344, 128)),
])
def test_resized_and_canvas_sizes(size, resized, canvas):
    rule = ResizeRule()
    assert rule.resized(*size) == resized
    assert rule.canvas(*resized) == canvas


def test_the_canvas_keeps_guard_rows_below_the_image():
    rule = ResizeRule(canvas_multiple=64)
    assert GUARD_ROWS == 8
    assert rule.canvas(64, 56) == (64, 64)  # 56 + 8 fits 64 exactly
    assert rule.canvas(64, 57) == (64, 128)  # one more row needs the next multiple
    assert rule.canvas(65, 1) == (128, 64)  # the width has no guard columns
    assert ResizeRule(canvas_multiple=8).canvas(10, 10) == (16, 24)


@pytest.mark.parametrize("multiple", [0, -8, 12, 4])
def test_canvas_multiple_must_be_a_positive_multiple_of_8(multiple):
    with pytest.raises(ValueError, match=f"canvas_multiple must be a positive multiple of 8, got {multiple}"):
        ResizeRule(canvas_multiple=multiple)


def test_the_square_rule_scales_the_longest_side_and_has_one_canvas():
    rule = ResizeRule(960, 960, square=True)
    assert rule.resized(500, 375) == (960, 720)
    assert rule.resized(375, 500) == (720, 960)
    assert rule.resized(1920, 1080) == (960, 540)
    # every image gets the canvas of the square plus guard rows, whatever its own size
    assert rule.canvas(960, 720) == rule.canvas(10, 10) == (960, 1024)
    small = ResizeRule(10, 10, square=True, canvas_multiple=8)
    assert small.resized(4, 3) == (10, 8)  # 3 x 2.5 = 7.5 rounds half up
    assert small.resized(0, 0) == (0, 0)  # no division by zero


class _DetrProcessor:
    def __init__(self, size, resample=3):
        self.size, self.resample = size, resample


class Owlv2ImageProcessor:  # the rule is chosen by the class name, as transformers names it
    def __init__(self, size, resample=2):
        self.size, self.resample = size, resample


class _SizeDict:  # transformers' SizeDict: attributes rather than keys
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_from_processor_reads_sizes_and_resample():
    assert ResizeRule.from_processor(_DetrProcessor({"shortest_edge": 800, "longest_edge": 1333})) == ResizeRule(800, 1333, 3, 64)
    assert ResizeRule.from_processor(_DetrProcessor(_SizeDict(shortest_edge=600, longest_edge=1000), None), 32) == \
        ResizeRule(600, 1000, 2, 32)  # no resample: bilinear (2)
    assert ResizeRule.from_processor(_DetrProcessor({"shortest_edge": 512})) == ResizeRule(512, 512, 3, 64)
    assert ResizeRule.from_processor(Owlv2ImageProcessor({"height": 960, "width": 960})) == \
        ResizeRule(960, 960, 2, 64, square=True)


def test_from_processor_refuses_sizes_it_cannot_follow():
    with pytest.raises(ValueError, match="unsupported processor size .*expected shortest_edge/longest_edge"):
        ResizeRule.from_processor(_DetrProcessor({"height": 800, "width": 800}))
    with pytest.raises(ValueError, match="unsupported OWLv2 processor size .*expected a square"):
        ResizeRule.from_processor(Owlv2ImageProcessor({"height": 960, "width": 768}))


def _image(w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_prepare_image_shrinks_with_the_processors_resample():
    img = _image(2000, 1000)
    data, sizes = prepare_image(img, ResizeRule())
    assert dict(zip(SIZE_COLUMNS, sizes)) == {"pixel_h": 666, "pixel_w": 1333, "resized_h": 666, "resized_w": 1333,
                                              "canvas_h": 704, "canvas_w": 1344, "image_w": 2000, "image_h": 1000}
    assert data == img.resize((1333, 666), resample=2).tobytes()
    assert len(data) == 666 * 1333 * 3


def test_prepare_image_ships_an_image_to_enlarge_as_decoded():
    img = _image(500, 375)
    data, sizes = prepare_image(img, ResizeRule())
    assert sizes == (375, 500, 800, 1066, 832, 1088, 500, 375)
    assert data == img.tobytes()  # enlarged on the device, never here


def test_prepare_image_refuses_an_image_too_thin_to_resize():
    with pytest.raises(ValueError, match=r"4000x1 is too thin for the detector's resize \(to 1333x0\)"):
        prepare_image(_image(4000, 1), ResizeRule())
