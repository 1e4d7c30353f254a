"""Image files for trainers that open paths: images kept inside img2dataset shards are written out.

Records of GRIT/CC3M datasets point into their shards (``tar://KEY.jpg::00000.tar``,
``parquet://KEY::00000.parquet``), which MMDetection, Open-GroundingDino and YOLO-World cannot open. An
export given an images folder writes each such image there once (``DIR/00000/KEY.jpg``, written under a
temp name and renamed, so a rerun skips what is there) and names it relative to that folder. A file already
there is reused only when its bytes equal the shard member's; a different file (another dataset with the
same shard and key names exported into the same folder) is an error naming the file and both sources,
never a record pointing at another dataset's picture (`ImagesDirConflict`). Images that
are files already are named by their absolute path, which those trainers' ``os.path.join(data_root, name)``
keeps as it is. The folder is then the trainer's data root. It may be a prefix on an object store
(``s3://bucket/images``), for trainers that read their data root from there.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from formats import paths as P
from formats.dataset import Dataset
from formats.images import read_image_bytes, split_parquet_url, split_tar_url, store_root
from formats.query import register_records
from formats.storage import Folder


def local_name(file_name: str) -> str | None:
    """Where a shard image goes, relative to the images folder (``00000/KEY.jpg``); None for plain files."""
    tar = split_tar_url(file_name)
    if tar is not None:
        member, shard = tar
    else:
        in_parquet = split_parquet_url(file_name)
        if in_parquet is None:
            return None
        key, shard = in_parquet
        member = key if PurePosixPath(key).suffix else f"{key}.jpg"  # img2dataset keeps the bytes in a `jpg` column
    folder = PurePosixPath(P.check_relative(shard))
    return P.check_relative(str(folder.with_suffix("") / P.check_relative(member)))


def write_images(ds: Dataset, names: list[str], images_dir: str | os.PathLike, *,
                 workers: int | None = None) -> tuple[pa.Table, dict]:
    """Writes the shard images among the dataset's file `names` under `images_dir`; returns (file_name ->
    exported name, counts).

    `images_dir` is a local folder (each image written under a temp name and renamed) or a prefix on an object
    store (``s3://bucket/images``: one object per image, ``PREFIX/00000/KEY.jpg``, each appearing whole with
    its single upload; each shard's folder is listed once to find what a rerun already wrote, and an object of
    the same size is read back to be compared). Raises `ImagesDirConflict`, `formats.images.ImageError`,
    `formats.storage.StorageError` (an unusable location)."""
    folder = Folder(images_dir)
    root = Path(folder.path) if folder.is_local else None
    image_root = ds.manifest.image_root or "."
    store = store_root(image_root)
    by_shard: dict[str, list[tuple[str, str]]] = defaultdict(list)
    exported: dict[str, str] = {}
    for name in names:
        local = local_name(name)
        if local is None:
            exported[name] = store.url_of(name) if store is not None else str(P.resolve(image_root, name))
        else:
            exported[name] = local
            by_shard[str(PurePosixPath(local).parent)].append((name, local))
    counts = {"images_written": 0, "images_present": 0}

    def conflict(where, name: str) -> ImagesDirConflict:
        return ImagesDirConflict(
            f"{where}: already holds a different image than {name} of {ds.root} (image root {image_root}) needs "
            "(another dataset with the same shard and key names was exported into this folder?); give each "
            "dataset its own --images-dir")

    def write_shard(items: list[tuple[str, str]]) -> tuple[int, int]:
        written = present = 0
        for name, local in items:
            dest = P.resolve(root, local)  # the folder exists by now; symlinks in it may not lead out
            data = read_image_bytes(image_root, name)
            if dest.exists():
                if dest.read_bytes() != data:
                    raise conflict(dest, name)
                present += 1
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
            written += 1
        return written, present

    def upload_shard(items: list[tuple[str, str]]) -> tuple[int, int]:
        written = present = 0
        sizes = {rel: size for rel, size, _ in folder.find_info(str(PurePosixPath(items[0][1]).parent))}
        for name, local in items:
            data = read_image_bytes(image_root, name)
            if local in sizes:
                if sizes[local] != len(data) or folder.read_bytes(local) != data:
                    raise conflict(folder.url_of(local), name)
                present += 1
                continue
            folder.write_bytes(local, data)
            written += 1
        return written, present

    if by_shard:
        folder.makedirs()
        with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1), thread_name_prefix="ovlabel-images") as pool:
            for written, present in pool.map(write_shard if folder.is_local else upload_shard, by_shard.values()):
                counts["images_written"] += written
                counts["images_present"] += present
    table = pa.table({"file_name": pa.array(list(exported), pa.string()),
                      "exported_name": pa.array(list(exported.values()), pa.string())})
    return table, counts


class ImagesDirConflict(ValueError):
    """A file in the images folder has the name a shard image needs but other bytes."""


class ShardImagesError(ValueError):
    """An export would name images inside shards (``tar://``, ``parquet://``) that no trainer opens."""


def refuse_shard_names(con: duckdb.DuckDBPyConnection, ds: Dataset, view: str = "records") -> None:
    """Raises ShardImagesError when records of `view` point inside img2dataset/webdataset shards."""
    n, example = con.execute(f"""SELECT count(*), min(file_name) FROM {view}
                                 WHERE file_name LIKE 'tar://%' OR file_name LIKE 'parquet://%'""").fetchall()[0]
    if n:
        raise ShardImagesError(
            f"{ds.root}: {n:,} images are inside img2dataset/webdataset shards (e.g. {example}), names no trainer "
            "opens; pass --images-dir DIR to write them out as files (the trainer's data root), or --tar-paths to "
            "write the shard names anyway")


def register_export_records(con: duckdb.DuckDBPyConnection, ds: Dataset, images_dir: str | os.PathLike | None, *,
                            with_order: bool = False, tar_paths: bool = False, where: str = "") -> dict:
    """View `records` for an export: as stored, or with file names pointing at `images_dir` (then it holds
    ``_ord`` and is ordered by it). Returns the image counts (empty without an images folder).

    Without `images_dir`, records inside shards are refused (`ShardImagesError`) unless `tar_paths`.
    `where` (SQL over the records, e.g. ``WHERE len(regions) > 0``): only the images of the records the export
    writes are written out and checked."""
    if images_dir is None:
        register_records(con, ds, with_order=with_order)
        if not tar_paths:
            con.execute(f"CREATE OR REPLACE TEMP VIEW exported_records AS SELECT * FROM records {where}")
            refuse_shard_names(con, ds, "exported_records")
        return {}
    register_records(con, ds, "stored_records", with_order=True)
    names = [n for (n,) in con.execute(f"SELECT DISTINCT file_name FROM stored_records {where} ORDER BY 1").fetchall()]
    exported, counts = write_images(ds, names, images_dir)
    con.register("exported_names", exported)
    con.execute("""CREATE OR REPLACE VIEW records AS
                   SELECT r.* REPLACE (coalesce(n.exported_name, r.file_name) AS file_name)
                   FROM stored_records r LEFT JOIN exported_names n USING (file_name) ORDER BY r._ord""")
    return counts


def with_exported_names(con: duckdb.DuckDBPyConnection, table: pa.Table) -> pa.Table:
    """`table` (records as stored) with the file names `register_export_records` gave them in the images folder
    (for exports that write the stored parts one by one rather than through the `records` view)."""
    names = con.table("exported_names").to_arrow_table()
    pos = pc.index_in(table.column("file_name"), value_set=names.column("file_name"))
    exported = pc.coalesce(pc.take(names.column("exported_name"), pos), table.column("file_name"))
    return table.set_column(table.schema.get_field_index("file_name"), "file_name", exported)
