"""Reading and decoding images that records reference: plain files under the image root, or members of
img2dataset webdataset shards (``tar://KEY.jpg::00000.tar``, the shard relative to the image root).

Decoding is capped (``MAX_PIXELS``) so a hostile file cannot exhaust memory.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
from collections import OrderedDict
from pathlib import Path

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


def read_image_bytes(image_root: str | os.PathLike | None, file_name: str) -> bytes:
    """The encoded bytes a record's file_name points to (never outside the image root)."""
    root = image_root or "."
    tar = split_tar_url(file_name)
    try:
        if tar is None:
            return P.resolve(root, file_name).read_bytes()
        member, shard = tar
        path = P.resolve(root, shard)
        offset, size = _TARS.get(path).get(member, (None, None))
        if offset is None:
            raise ImageError(f"{member} is not in {path}")
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)
    except (OSError, tarfile.TarError) as e:
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
