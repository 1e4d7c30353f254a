"""Reading and decoding images that records reference: plain files under the image root, members of
img2dataset webdataset shards (``tar://KEY.jpg::00000.tar``) or rows of img2dataset parquet shards
(``parquet://KEY::00000.parquet``), shards relative to the image root.

Decoding is capped (``MAX_PIXELS``) so a hostile file cannot exhaust memory.
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
    """Member offsets of recently used shards (per process), so reading a member is one seek + read."""

    def __init__(self, size: int = 16):
        self.size = size
        self.cache: OrderedDict[str, dict[str, tuple[int, int]]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, shard: Path) -> dict[str, tuple[int, int]]:
        key = str(shard)
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        with tarfile.open(shard) as tf:
            index = {m.name: (m.offset_data, m.size) for m in tf.getmembers() if m.isfile()}
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
        offset, size = _TARS.get(path).get(member, (None, None))
        if offset is None:
            raise ImageError(f"{member} is not in {path}")
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)
    except (OSError, tarfile.TarError, pa.ArrowException) as e:
        raise ImageError(f"cannot read {file_name}: {e}") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from an image file's header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # noqa: BLE001 - any decoder failure is a reason to report
        raise ImageError(f"{path}: cannot read the image header: {type(e).__name__}: {e}") from None


def decode_image(data: bytes, name: str = "image"):
    """Decodes to an RGB PIL image, refusing files larger than MAX_PIXELS or that do not decode."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"{name}: {im.width}x{im.height} exceeds the {MAX_PIXELS:,}-pixel cap")
            return im.convert("RGB")
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is a reject with its reason
        raise ImageError(f"{name}: cannot decode: {type(e).__name__}: {e}") from None
