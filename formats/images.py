"""Reading and decoding images that records reference: plain files under the image root, members of
img2dataset webdataset shards (``tar://KEY.jpg::00000.tar``) or rows of img2dataset parquet shards
(``parquet://KEY::00000.parquet``), shards relative to the image root.

Decoding is capped (``MAX_PIXELS``) so a hostile file cannot exhaust memory. Every reader of pixels or
sizes goes through one rule (`to_rgb`, `image_size`): EXIF orientation applied, more than 8 bits mapped
to 8 by value range, transparency composited on white, other modes converted (docs/format.md, "Images").
"""

from __future__ import annotations

import contextlib
import functools
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


def _split_member_url(name: str, scheme: str) -> tuple[str, str] | None:
    """(member, shard) of a ``SCHEME://MEMBER::SHARD`` name, else None."""
    prefix = f"{scheme}://"
    if not name.startswith(prefix) or "::" not in name:
        return None
    member, shard = name[len(prefix):].split("::", 1)
    return member, shard


def split_tar_url(name: str) -> tuple[str, str] | None:
    """(member, shard) of a ``tar://MEMBER::SHARD`` name, else None."""
    return _split_member_url(name, "tar")


def parquet_url(key: str, shard: str) -> str:
    """The file_name of an image stored in an img2dataset parquet shard: ``parquet://KEY::SHARD``."""
    return f"parquet://{key}::{shard}"


def split_parquet_url(name: str) -> tuple[str, str] | None:
    """(key, shard) of a ``parquet://KEY::SHARD`` name, else None."""
    return _split_member_url(name, "parquet")


class _ParquetImages:
    """Images in img2dataset parquet shards: a key -> (row group, row) index per shard and the last row group's
    image column, so reading a shard's images in order decodes each row group once."""

    def __init__(self, size: int = 8):
        self.size = size
        self.index: OrderedDict[str, dict[str, tuple[int, int]]] = OrderedDict()
        self.groups: OrderedDict[tuple[str, int], list] = OrderedDict()
        self.lock = threading.Lock()

    def read(self, shard: Path | str, key: str, opener=None) -> bytes:
        """`key`'s image bytes from the parquet shard `shard` (a local path, or a URL with `opener` returning a
        file object of it: only the key column and the one row group are read)."""
        import pyarrow.parquet as pq

        name = str(shard)
        source = opener if opener is not None else (lambda: shard)
        with self.lock:
            index = self.index.get(name)
        if index is None:
            f = pq.ParquetFile(source())
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
            column = pq.ParquetFile(source()).read_row_group(g, columns=["jpg"]).column("jpg").to_pylist()
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

    def get(self, shard: Path | str, opener=None) -> dict[str, tuple[int, int] | None]:
        """The member index of `shard` (a local path, or a URL with `opener` returning a file object of it)."""
        key = str(shard)
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        index: dict[str, tuple[int, int] | None] = {}
        with contextlib.ExitStack() as stack:
            if opener is None:
                tf = stack.enter_context(tarfile.open(shard))
            else:
                tf = stack.enter_context(tarfile.open(fileobj=stack.enter_context(opener()), mode="r:"))
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


@functools.lru_cache(maxsize=16)
def store_root(url: str):
    """The `formats.storage.Folder` of an image root on an object store, None for a local root (one per process:
    a worker reopens it from its URL, credentials from the environment)."""
    from formats.storage import Folder, is_url

    if not is_url(url):
        return None
    folder = Folder(url)
    return None if folder.is_local else folder


def read_image_bytes(image_root: str | os.PathLike | None, file_name: str) -> bytes:
    """The encoded bytes a record's file_name points to (never outside the image root).

    The image root may be on an object store (``s3://bucket/images``): a plain file name is then read as one
    object under it, the folder's name check refusing names that leave it (`formats.storage.Folder`); images
    inside shards are read without fetching whole shards: a ``tar://`` member by one range request once the
    shard's member index is built (its headers read once per process through a read-ahead of `SHARD_READ_AHEAD`
    bytes, then cached with the local shards' indexes), a ``parquet://`` row from its row group. Raises
    `ImageError` (a missing or ambiguous image, an unreadable shard), `formats.paths.UnsafePathError`."""
    root = image_root or "."
    store = store_root(root) if isinstance(root, str) else None
    if store is not None:
        try:
            return _read_from_store(store, file_name)
        except (OSError, tarfile.TarError, pa.ArrowException) as e:
            raise ImageError(f"cannot read {file_name}: {type(e).__name__}: {e}") from None
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


SHARD_READ_AHEAD = 1 << 20  # bytes one read of a shard on an object store fetches while indexing its members


def _read_from_store(store, file_name: str) -> bytes:
    """`read_image_bytes` under an image root on an object store (`formats.storage.Folder`)."""
    tar, in_parquet = split_tar_url(file_name), split_parquet_url(file_name)
    if tar is None and in_parquet is None:
        return store.read_bytes(P.check_relative(file_name))
    key, shard = in_parquet if in_parquet is not None else tar
    shard = P.check_relative(shard)
    url = store.url_of(shard)
    opener = functools.partial(store.open, shard, block_size=SHARD_READ_AHEAD)
    if in_parquet is not None:
        return _PARQUET.read(url, key, opener)
    index = _TARS.get(url, opener)
    if key not in index:
        raise ImageError(f"{key} is not in {url}")
    if index[key] is None:
        raise ImageError(f"{key} is in {url} more than once: which one is the image is ambiguous")
    offset, size = index[key]
    return store.read_range(shard, offset, size)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed, from an image file's header without decoding the pixels.

    EXIF orientation is applied (a phone photo stored 4000x3000 with orientation 6 is 3000x4000), as
    `decode_image` applies it to the pixels, so sizes and pixels always agree. Raises `ImageError` when the
    header cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return oriented_size(im)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a reason to report
        raise ImageError(f"{path}: cannot read the image header: {type(e).__name__}: {e}") from None


def image_size_under(image_root, file_name: str) -> tuple[int, int]:
    """`image_size` of the plain image file `file_name` under `image_root`, a local folder or a folder on an
    object store (``s3://bucket/images`` or its `formats.storage.Folder`: the header is read with small range requests, not the whole object).
    Raises `ImageError` (missing or unreadable file), `formats.paths.UnsafePathError` (a name leaving the
    root)."""
    from formats.storage import Folder

    if isinstance(image_root, Folder):
        store = None if image_root.is_local else image_root
        image_root = image_root.path
    else:
        store = store_root(image_root) if isinstance(image_root, str) else None
    if store is None:
        return image_size(Path(image_root) / P.check_relative(file_name))
    where = store.url_of(file_name)
    try:
        with store.open(file_name, block_size=1 << 16) as f:
            try:
                return header_size(f, where)
            except ImageError as e:  # PIL names the file object; name the image as a local path would be
                raise ImageError(str(e).replace(repr(f), repr(where))) from None
    except OSError as e:
        raise ImageError(f"{where}: cannot read the image header: {type(e).__name__}: {e}") from None


def header_size(f, name: str) -> tuple[int, int]:
    """`image_size` of an open binary file (a tar member): (width, height) as displayed, from the header.

    Raises `ImageError` (naming `name`) when the header cannot be read."""
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
    """Decodes to an RGB PIL image by `to_rgb`'s rule, refusing files larger than MAX_PIXELS or that do not decode.

    Raises `ImageError` (naming `name`) for an image over MAX_PIXELS or data that does not decode."""
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
