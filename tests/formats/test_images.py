"""The one image rule (formats.images): real files in each mode, decoded as displayed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from formats.images import (
    MAX_PIXELS,
    ImageError,
    decode_image,
    decode_rgb_array,
    image_size,
    oriented_size,
)


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def sideways_jpeg(orientation: int) -> bytes:
    """A 40x20 stored JPEG: left half red, right half blue, with the given EXIF orientation."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(a), "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_rotates_pixels_and_sizes(tmp_path):
    data = sideways_jpeg(6)  # 6: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    assert image_size(path) == (20, 40)
    with Image.open(path) as im:
        assert im.size == (40, 20) and oriented_size(im) == (20, 40)
    a = decode_rgb_array(data)
    assert a.shape == (40, 20, 3)
    assert a[2, 10, 0] > 200 and a[2, 10, 2] < 60  # the stored left (red) half is on top once rotated
    assert a[37, 10, 2] > 200 and a[37, 10, 0] < 60


def test_orientation_1_and_no_exif_are_unchanged(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(sideways_jpeg(1))
    assert image_size(path) == (40, 20) and decode_image(path.read_bytes()).size == (40, 20)


def test_16_bit_grayscale_is_mapped_by_value_range():
    a = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)  # 12-bit data in a 16-bit PNG
    data = encode(Image.fromarray(a))
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode.startswith("I")
    out = decode_rgb_array(data)
    assert out[..., 0].tolist() == [[0, 64], [128, 255]]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_16_bit_with_8_bit_values_is_kept():
    data = encode(Image.fromarray(np.array([[3, 200]], dtype=np.uint16)))
    assert decode_rgb_array(data)[..., 0].tolist() == [[3, 200]]


def test_rgba_transparency_is_composited_on_white():
    a = np.zeros((2, 2, 4), np.uint8)
    a[0, 0] = (255, 0, 0, 255)  # opaque red
    a[0, 1] = (0, 0, 0, 0)  # fully transparent
    a[1, 0] = (0, 0, 255, 128)  # half blue
    a[1, 1] = (0, 255, 0, 0)
    out = decode_rgb_array(encode(Image.fromarray(a, "RGBA")))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255] and out[1, 1].tolist() == [255, 255, 255]
    assert out[1, 0].tolist() == pytest.approx([127, 127, 255], abs=1)


def test_palette_with_transparent_index_is_composited_on_white():
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    out = decode_rgb_array(encode(im, transparency=0))
    assert out[0].tolist() == [[255, 255, 255], [200, 10, 10]]


def test_la_is_composited_and_cmyk_converted():
    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], dtype=np.uint8), "LA")
    assert decode_rgb_array(encode(la))[0].tolist() == [[50, 50, 50], [255, 255, 255]]
    cmyk = Image.new("CMYK", (3, 2), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_rgb_array(encode(cmyk, "JPEG", quality=100))
    assert out.shape == (2, 3, 3) and out[0, 0, 0] > 240 and out[0, 0, 1] < 20 and out[0, 0, 2] < 20


def test_grayscale_and_1_bit_become_rgb():
    assert decode_rgb_array(encode(Image.new("L", (2, 2), 77)))[0, 0].tolist() == [77, 77, 77]
    assert decode_rgb_array(encode(Image.new("1", (2, 2), 1)))[0, 0].tolist() == [255, 255, 255]


def test_decoded_size_cap_and_garbage_are_image_errors(monkeypatch):
    import formats.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 3)
    with pytest.raises(ImageError, match="big.png: 2x2 exceeds the 3-pixel cap"):
        decode_image(encode(Image.new("RGB", (2, 2))), "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", MAX_PIXELS)
    with pytest.raises(ImageError, match="x.jpg: cannot decode"):
        decode_image(b"not an image", "x.jpg")


def test_check_images_compares_the_displayed_size(write_json, tmp_path):
    from formats.converters.coco import CocoConvertConfig, convert_coco
    from formats.dataset import Dataset

    root = tmp_path / "imgs"
    root.mkdir()
    (root / "phone.jpg").write_bytes(sideways_jpeg(6))
    (root / "raw.jpg").write_bytes(sideways_jpeg(8))
    doc = {"images": [{"id": 1, "file_name": "phone.jpg", "width": 20, "height": 40},
                      {"id": 2, "file_name": "raw.jpg", "width": 40, "height": 20}],
           "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    out = tmp_path / "ds"
    m = convert_coco(write_json(doc), out, CocoConvertConfig(image_root=str(root), check_images=True), overwrite=True)
    assert m.counts["images"] == 1
    (rej,) = Dataset(out).read_rejects().to_pylist()
    assert rej["record"] == "images[1] id=2" and rej["reason"] == "image size mismatch"
    assert rej["detail"].endswith("raw.jpg: header 20x40 as displayed, annotation 40x20 (EXIF orientation turns the "
                                  "stored image; the annotation has the stored, unturned size)")


@pytest.mark.parametrize("fmt, mode", [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "I;16"), ("TIFF", "RGB"),
                                       ("TIFF", "I;16"), ("WEBP", "RGB")])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_header_size_equals_decoded_size_for_every_format_and_orientation(tmp_path, fmt, mode, orientation):
    """Stored 40x20 with EXIF orientation 1-8: image_size/header_size == decode_image's size (5-8: 20x40).
    Pillow reports a TIFF's size already turned and still returns the tag: it must not be turned twice."""
    from formats.images import header_size

    im = Image.new("RGB", (40, 20), (10, 200, 30)) if mode == "RGB" else \
        Image.fromarray(np.arange(800, dtype=np.uint16).reshape(20, 40) * 80)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(im, fmt, exif=exif)
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(data)
    expected = (20, 40) if orientation >= 5 else (40, 20)
    assert image_size(path) == decode_image(data).size == expected
    assert header_size(io.BytesIO(data), "x") == expected


def test_image_sizes_under_a_local_root_never_read_outside_it(tmp_path):
    from PIL import Image

    from formats.images import image_size_under
    from formats.paths import UnsafePathError

    (tmp_path / "root").mkdir()
    Image.new("RGB", (7, 5)).save(tmp_path / "out.jpg")
    Image.new("RGB", (3, 2)).save(tmp_path / "root" / "in.jpg")
    assert image_size_under(tmp_path / "root", "in.jpg") == (3, 2)
    for name in ("../out.jpg", str(tmp_path / "out.jpg"), "a/../../out.jpg"):
        with pytest.raises(UnsafePathError):
            image_size_under(tmp_path / "root", name)
