"""A folder of images -> an OD dataset of images without boxes (`ovlabel convert images DIR --out DATASET`).

The folder is walked recursively; files whose extension (any case) is one of `EXTENSIONS` are images, other
files are counted (``other_files``) and left alone, hidden files and folders (``.name``) are skipped. Records
are in code-point order of their path relative to the folder, so the same folder always gives the same
records and parts. Sizes come from the image headers by the one image rule (`formats.images.image_size`:
EXIF orientation applied); a file whose header does not read (``unreadable image``) or that is over the
decoding cap (``image too large``, `formats.images.MAX_PIXELS`) is rejected with the reason. A path must stay
inside the folder once symlinks are resolved (`formats.paths.resolve`): a symlink to a file outside it is
rejected as ``outside the image root``; symlinked folders are not walked (a loop or an escape could hide
there) and are written to rejects as ``dropped: symlinked folder``.

Records: ``image_id = <source>/<relative path>``, ``file_name`` the relative POSIX path, ``width``/``height``
in pixels as displayed, ``caption`` null, ``regions`` empty; the manifest's ``image_root`` is the folder
(absolute) and its label map is empty. Each part's headers are read, its rejects and records written
atomically, and the part recorded in the manifest; a rerun with the same folder listing (paths, sizes in
bytes, modification times) and settings skips the finished parts.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from formats import paths as P
from formats import schema as S
from formats.converters.coco import ConversionError
from formats.dataset import DatasetWriter, Manifest, part_ranges, prior_run, provenance
from formats.images import MAX_PIXELS, ImageError, image_size_under
from formats.storage import Folder, display

log = logging.getLogger("ovlabel.image_folder")

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
WALK_REJECTS = "walk.parquet"  # rejects found while listing the folder (before any part)


@dataclass
class ImageFolderConvertConfig:
    """Settings of an image-folder conversion; recorded in the manifest."""

    source: str = "images"
    part_images: int = 100_000


@dataclass(frozen=True)
class Listing:
    """What walking the folder found: the images (relative POSIX paths, sorted), their (bytes, mtime_ns),
    files with other extensions (counted only) and the entries refused while walking (rejects rows)."""

    names: list[str]
    stats: list[tuple[int, int]]
    other_files: int
    rejects: list[dict]


def list_images(root: str | os.PathLike) -> Listing:
    """Walks `root` (symlinked folders not followed, hidden entries skipped); raises ConversionError when
    `root` is not a folder. Paths are checked against `root` with symlinks resolved."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConversionError(f"{root}: not a folder")
    found: list[tuple[str, int, int]] = []
    rejects: list[dict] = []
    other = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if (here / d).is_symlink():
                rel = (here / d).relative_to(root).as_posix()
                rejects.append({"file": str(root), "record": rel, "reason": "dropped: symlinked folder",
                                "detail": f"points to {os.path.realpath(here / d)}; folders are walked by their "
                                          "real path only"})
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (here / d).is_symlink())
        for f in filenames:
            if f.startswith("."):
                continue
            if not f.lower().endswith(EXTENSIONS):
                other += 1
                continue
            rel = (here / f).relative_to(root).as_posix()
            try:
                full = P.resolve(root, rel)
            except P.UnsafePathError as e:
                rejects.append({"file": str(root), "record": rel, "reason": "outside the image root", "detail": str(e)})
                continue
            try:
                st = full.stat()
            except OSError as e:  # a dangling symlink
                rejects.append({"file": str(root), "record": rel, "reason": "unreadable image", "detail": str(e)})
                continue
            found.append((rel, st.st_size, st.st_mtime_ns))
    found.sort(key=lambda t: t[0])
    rejects.sort(key=lambda r: r["record"])
    return Listing([n for n, _, _ in found], [(s, m) for _, s, m in found], other, rejects)


def list_store_images(root: Folder) -> Listing:
    """`list_images` for a folder on an object store (no symlinks there; the version is the object's ETag);
    raises ConversionError when nothing is under `root`."""
    found = root.find_info()
    if not found:
        raise ConversionError(f"{root.url}: not a folder (nothing under this prefix)")
    names, stats, other = [], [], 0
    for rel, size, version in found:
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if not rel.lower().endswith(EXTENSIONS):
            other += 1
            continue
        names.append(rel)
        stats.append((size, version))
    return Listing(names, stats, other, [])


def convert_image_folder(root: str | os.PathLike, out_dir: str | os.PathLike, cfg: ImageFolderConvertConfig, *,
                         overwrite: bool = False) -> Manifest:
    """Converts a folder of images into an OD dataset of images without boxes; returns its manifest.

    `root` and `out_dir` may be local paths or object-store URLs (`formats.storage`): a folder on a store is
    listed by prefix and its image headers read with range requests. Raises ConversionError when `root` is
    not a folder, DatasetError when `out_dir` holds another dataset, `formats.storage.StorageError` for an
    unusable location."""
    if not isinstance(cfg.part_images, int) or cfg.part_images < 1:
        raise ConversionError(f"--part-images must be a positive integer, got {cfg.part_images!r}")
    folder = Folder(root)
    if folder.is_local:
        root = Path(folder.path).resolve()
        listing = list_images(root)
        where, file_of = str(root), lambda name: str(root / name)
    else:
        root = folder
        listing = list_store_images(folder)
        where, file_of = folder.url, folder.url_of
    resume_key = {"config": asdict(cfg), "root": where,
                  "listing": [[n, s, m] for n, (s, m) in zip(listing.names, listing.stats)]}
    existing = prior_run(out_dir, resume_key, overwrite)
    if existing is not None:
        log.info("%s: already converted from the same folder and settings; nothing to do", display(out_dir))
        return existing
    manifest = Manifest(kind="od", source=cfg.source, image_root=where, config=asdict(cfg),
                        provenance=provenance([{"path": where, "folder": True, "images": len(listing.names)}]))
    writer = DatasetWriter(out_dir, manifest, overwrite=overwrite, resume_key=resume_key)
    writer.write_rejects(WALK_REJECTS, listing.rejects)
    with ThreadPoolExecutor(8) as pool:
        for p, (a, b) in enumerate(part_ranges(len(listing.names), cfg.part_images)):
            name = f"part-{p:05d}.parquet"
            if writer.is_done(name):
                continue
            names = listing.names[a:b]
            sizes = list(pool.map(lambda n: _size(root, n), names))
            ok = [i for i, s in enumerate(sizes) if isinstance(s, tuple)]
            writer.write_rejects(name, [{"file": file_of(names[i]), "record": names[i], "reason": sizes[i][0],
                                         "detail": sizes[i][1]} for i, s in enumerate(sizes) if isinstance(s, list)])
            table = pa.table({
                "image_id": pa.array([f"{cfg.source}/{names[i]}" for i in ok], pa.string()),
                "source": pa.array([cfg.source] * len(ok), pa.string()),
                "file_name": pa.array([names[i] for i in ok], pa.string()),
                "width": pa.array([sizes[i][0] for i in ok], pa.int32()),
                "height": pa.array([sizes[i][1] for i in ok], pa.int32()),
                "caption": pa.nulls(len(ok), pa.string()),
                "regions": S.empty_regions(len(ok)),
            })
            reasons: dict[str, int] = {}
            for s in sizes:
                if isinstance(s, list):
                    reasons[s[0]] = reasons.get(s[0], 0) + 1
            writer.write_part(name, S.conform(table, []), images_in=len(names), rejected=dict(sorted(reasons.items())))
    parts = writer.manifest.parts
    rejected: dict[str, int] = {}
    for r in listing.rejects:
        if not r["reason"].startswith("dropped: "):
            rejected[r["reason"]] = rejected.get(r["reason"], 0) + 1
    for p in parts:
        for reason, n in (p.get("rejected") or {}).items():
            rejected[reason] = rejected.get(reason, 0) + int(n)
    return writer.finish({
        "images_in": len(listing.names) + sum(1 for r in listing.rejects if not r["reason"].startswith("dropped: ")),
        "images": sum(int(p["rows"]) for p in parts), "boxes": 0, "other_files": listing.other_files,
        "dropped": {"symlinked folder": n} if (n := sum(r["reason"] == "dropped: symlinked folder"
                                                       for r in listing.rejects)) else {},
        "rejected": dict(sorted(rejected.items())),
    })


def _size(root: Path | Folder, name: str) -> tuple[int, int] | list[str]:
    """(width, height) as displayed of ``root/name`` (a local folder or an object-store URL), or [reason,
    detail] when it is no usable image."""
    try:
        w, h = image_size_under(root, name)
    except ImageError as e:
        return ["unreadable image", str(e)]
    where = root / name if isinstance(root, Path) else root.url_of(name)
    if w <= 0 or h <= 0:
        return ["unreadable image", f"{where}: header size {w}x{h}"]
    if w * h > MAX_PIXELS:
        return ["image too large", f"{where}: {w}x{h} exceeds the {MAX_PIXELS:,}-pixel decoding cap"]
    return w, h
