"""Safe image paths: nothing named by an annotation file may escape its image root."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path


class UnsafePathError(ValueError):
    """A file name from untrusted data points outside its image root."""


def check_relative(name: str, *, allow_urls: bool = False) -> str:
    """Returns the normalised relative POSIX path, or raises UnsafePathError saying why it is unsafe.

    URLs (``tar://member::/shard.tar``) are accepted only with `allow_urls`, for records that ovlabel
    itself made from img2dataset shards; annotation files from elsewhere never name URLs.
    """
    if not isinstance(name, str) or not name:
        raise UnsafePathError("empty file name")
    if "\x00" in name:
        raise UnsafePathError("file name contains a NUL byte")
    if "://" in name:
        if allow_urls:
            return name
        raise UnsafePathError(f"URL {name!r} where a path relative to the image root was expected")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafePathError(f"absolute path {name!r}")
    norm = posixpath.normpath(norm)
    if norm == ".." or norm.startswith("../"):
        raise UnsafePathError(f"path {name!r} escapes the image root")
    return norm


def is_suspicious(name: str) -> bool:
    """Cheap pre-filter: True when `name` might be unsafe and deserves check_relative()."""
    return (not name) or name.startswith(("/", "\\")) or ".." in name or "\x00" in name or ":" in name[:3] or "\\" in name


def resolve(image_root: str | os.PathLike, name: str) -> Path:
    """Joins a checked relative name to its root and verifies the result (symlinks resolved) stays inside.

    Raises UnsafePathError for a name `check_relative` refuses or one that resolves outside the root."""
    rel = check_relative(name)
    root = Path(image_root).resolve()
    full = (root / rel).resolve()
    if full != root and root not in full.parents:
        raise UnsafePathError(f"path {name!r} resolves outside the image root {root}")
    return full
