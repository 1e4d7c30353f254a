"""Reading and decoding images that records reference: plain files under the image root, members of
img2dataset webdataset shards (``tar://KEY.jpg::00000.tar``) or rows of img2dataset parquet shards
(``parquet://KEY::00000.parquet``), shards relative to the image root.

Decoding is capped (``MAX_PIXELS``) so a hostile file cannot exhaust memory. Every reader of pixels or
sizes goes through one rule (`to_rgb`, `image_size`): EXIF orientation applied, more than 8 bits mapped
to 8 by value range, transparency composited on white, other modes converted (docs/format.md, "Images").
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
from collections import OrderedDict
from pathlib import Path

import pyarrow as pa

from formats import paths as P

MAX_PIXELS = 64_000_000  # decoded size cap (PIL's decompression-bomb limit is set to it)
_ORIENTATION = 0x0112  # EXIF tag


class ImageError(ValueError):
    """An image could not be read or decoded; the message says why."""


def tar_url(member: str, shard: str) -> str:
    """The file_name of a shard member: ``tar://MEMBER::SHARD``."""
    return f"tar://{member}::{shard}"


def split_tar_url(name: str) -> tuple[str, str] | None:
    """(member, shard) of a ``tar://MEMBER::SHARD`` name, else None."""
    if not name.startswith("tar://") or "::" not in name:
        return None
    member, shard = name[len("tar://"):].split("::", 1)
    return member, shard


def parquet_url(key: str, shard: str) -> str:
    """The file_name of an image stored in an img2dataset parquet shard: ``parquet://KEY::SHARD``."""
    return f"parquet://{key}::{shard}"


def split_parquet_url(name: str) -> tuple[str, str] | None:
    """(key, shard) of a ``parquet://KEY::SHARD`` name, else None."""
    if not name.startswith("parquet://") or "::" not in name:
        return None
    key, shard = name[len("parquet://"):].split("::", 1)
    return key, shard


class _ParquetImages:
    """Images in img2dataset parquet shards: a key -> (row group, row) index per shard and the last row group's
    image column, so reading a shard's images in order decodes each row group once."""

    def __init__(self, size: int = 8):
        self.size = size
        self.index: OrderedDict[str, dict[str, tuple[int, int]]] = OrderedDict()
        self.groups: OrderedDict[tuple[str, int], list] = OrderedDict()
        self.lock = threading.Lock()

    def read(self, shard: Path, key: str) -> bytes:
        import pyarrow.parquet as pq

        name = str(shard)
        with self.lock:
            index = self.index.get(name)
        if index is None:
            f = pq.ParquetFile(shard)
            index, at = {}, 0
            for g in range(f.num_row_groups):
                keys = f.read_row_group(g, columns=["key"]).column("key").to_pylist()
                index.update({k: (g, i) for i, k in enumerate(keys)})
                at += len(keys)
            with self.lock:
                self.index[name] = index
                while len(self.index) > self.size:
                    self.index.popitem(last=False)
        if key not in index:
            raise ImageError(f"{key} is not in {shard}")
        g, i = index[key]
        with self.lock:
            column = self.groups.get((name, g))
        if column is None:
            column = pq.ParquetFile(shard).read_row_group(g, columns=["jpg"]).column("jpg").to_pylist()
            with self.lock:
                self.groups[(name, g)] = column
                while len(self.groups) > 2:
                    self.groups.popitem(last=False)
        data = column[i]
        if data is None:
            raise ImageError(f"{key} in {shard} has no image bytes")
        return data


class _TarIndex:
    """Member offsets of recently used shards (per process), so reading a member is one seek + read; a member
    name found more than once maps to None (read_image_bytes refuses it rather than pick one)."""

    def __init__(self, size: int = 16):
        self.size = size
        self.cache: OrderedDict[str, dict[str, tuple[int, int]]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, shard: Path) -> dict[str, tuple[int, int] | None]:
        key = str(shard)
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        index: dict[str, tuple[int, int] | None] = {}
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                if m.isfile():  # a name that is there twice names no one member (None)
                    index[m.name] = None if m.name in index else (m.offset_data, m.size)
        with self.lock:
            self.cache[key] = index
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)
        return index


_TARS = _TarIndex()
_PARQUET = _ParquetImages()


def read_image_bytes(image_root: str | os.PathLike | None, file_name: str) -> bytes:
    """The encoded bytes a record's file_name points to (never outside the image root)."""
    root = image_root or "."
    tar = split_tar_url(file_name)
    try:
        if tar is None:
            in_parquet = split_parquet_url(file_name)
            if in_parquet is not None:
                return _PARQUET.read(P.resolve(root, in_parquet[1]), in_parquet[0])
            return P.resolve(root, file_name).read_bytes()
        member, shard = tar
        path = P.resolve(root, shard)
        index = _TARS.get(path)
        if member not in index:
            raise ImageError(f"{member} is not in {path}")
        if index[member] is None:
            raise ImageError(f"{member} is in {path} more than once: which one is the image is ambiguous")
        offset, size = index[member]
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)
    except (OSError, tarfile.TarError, pa.ArrowException) as e:
        raise ImageError(f"cannot read {file_name}: {e}") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed, from an image file's header without decoding the pixels.

    EXIF orientation is applied (a phone photo stored 4000x3000 with orientation 6 is 3000x4000), as
    `decode_image` applies it to the pixels, so sizes and pixels always agree."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return oriented_size(im)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a reason to report
        raise ImageError(f"{path}: cannot read the image header: {type(e).__name__}: {e}") from None


def header_size(f, name: str) -> tuple[int, int]:
    """`image_size` of an open binary file (a tar member): (width, height) as displayed, from the header."""
    from PIL import Image

    try:
        with Image.open(f) as im:
            return oriented_size(im)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a reason to report
        raise ImageError(f"{name}: cannot read the image header: {type(e).__name__}: {e}") from None


def exif_orientation(im) -> int:
    """The EXIF orientation tag (1-8) of an opened image; 1 when absent or unreadable."""
    try:
        value = int(im.getexif().get(_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block is no orientation
        return 1
    return value if 1 <= value <= 8 else 1


_TIFF_WIDTH, _TIFF_LENGTH = 256, 257  # TIFF tags: the stored (unrotated) size


def oriented_size(im) -> tuple[int, int]:
    """(width, height) of an opened image after its EXIF orientation (5-8 swap the sides of the stored size).

    The stored size is ``im.size``, except for TIFF: Pillow reports a TIFF's size already turned by its
    orientation (and turns the pixels on load) while still returning the tag, so its stored size is read
    from the TIFF's own ImageWidth/ImageLength tags; swapping ``im.size`` would turn it twice."""
    w, h = im.size
    tags = getattr(im, "tag_v2", None)
    if im.format == "TIFF" and tags is not None and _TIFF_WIDTH in tags and _TIFF_LENGTH in tags:
        w, h = int(tags[_TIFF_WIDTH]), int(tags[_TIFF_LENGTH])
    return (h, w) if exif_orientation(im) in (5, 6, 7, 8) else (w, h)


def to_rgb(im):
    """The one image rule: an opened PIL image -> 8-bit RGB as displayed.

    - EXIF orientation applied (``ImageOps.exif_transpose``), as browsers, FiftyOne and cv2 show the image;
    - 16-bit and 32-bit single-channel images (``I;16``, ``I``, ``F``) mapped to 8 bits by their value range:
      kept as they are when every value is already in 0..255, else ``min..max`` stretched to ``0..255``
      (PIL's own conversion clips, so a 16-bit photo decodes almost white);
    - transparency (RGBA, LA, PA, palette or L/RGB with a transparent colour) composited on white, as
      img2dataset does, not dropped to black;
    - CMYK, YCbCr, LAB, HSV, 1-bit, L, P converted by PIL.
    """
    from PIL import Image, ImageOps

    if exif_orientation(im) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im = _to_8bit(im)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _to_8bit(im):
    """A single-channel image of more than 8 bits -> mode L, by its value range (see `to_rgb`)."""
    import numpy as np
    from PIL import Image

    a = np.asarray(im)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("="))
    a = a.astype(np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if lo >= 0 and hi <= 255:
        out = a
    elif hi > lo:
        out = (a - lo) * (255.0 / (hi - lo))
    else:  # one value: keep its place in the 16-bit range
        out = np.full(a.shape, min(max(lo, 0.0), 65535.0) * 255.0 / 65535.0)
    return Image.fromarray(np.clip(np.nan_to_num(out), 0, 255).round().astype(np.uint8), mode="L")


def decode_image(data: bytes, name: str = "image"):
    """Decodes to an RGB PIL image by `to_rgb`'s rule, refusing files larger than MAX_PIXELS or that do not decode."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"{name}: {im.width}x{im.height} exceeds the {MAX_PIXELS:,}-pixel cap")
            im.load()
            return to_rgb(im)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is a reject with its reason
        raise ImageError(f"{name}: cannot decode: {type(e).__name__}: {e}") from None


def decode_rgb_array(data: bytes, name: str = "image"):
    """`decode_image` as an (height, width, 3) uint8 numpy array."""
    import numpy as np

    return np.asarray(decode_image(data, name))
