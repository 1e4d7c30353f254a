"""A Hugging Face ``datasets`` dataset with declared features, loadable with ``datasets.load_dataset(DIR)``.

Records are written as parquet shards under ``DIR/data/`` whose schema carries the ``datasets`` features
(boxes, phrases, spans, scores), plus a dataset card. Images stay referenced (``file_name`` + image root),
not embedded: as the other exports, a dataset whose images are inside img2dataset/webdataset shards
(``tar://KEY.jpg::SHARD``) is refused unless an images folder is given (`formats.export.images`: the shard
images are written there and named relative to it) or shard names are asked for (`tar_paths`).

``datasets`` caches a local folder by its name and the card's ``data_files`` patterns (not the files), so a
folder re-written with other records could be served from the stale cache. Shard names and the card's
pattern carry a fingerprint of the exported dataset (``data/train-<fingerprint>-*.parquet``) and shards of
an earlier export are removed, so a re-export of other records changes the cache key;
``load_dataset(DIR, download_mode="force_redownload")`` reads a folder fresh in any case.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from formats.dataset import Dataset
from formats.export.images import register_export_records, with_exported_names
from formats.query import connect
from formats.storage import Folder, NotLocalError, display, shown


def hf_features(schema: pa.Schema):
    """`datasets.Features` for a record schema (core columns plus extras)."""
    from datasets import Features, List, Value

    region = {
        "region_id": Value("string"), "bbox": List(Value("float64"), length=4), "label": Value("int32"),
        "category": Value("string"), "phrase": Value("string"),
        "tokens_positive": List(List(Value("int32"), length=2)),
        "score": Value("float32"), "det_score": Value("float32"), "clip_score": Value("float32"),
        "origin": Value("string"), "round": Value("int16"), "area": Value("float64"),
        "source_id": Value("string"),
    }
    feats = {"image_id": Value("string"), "source": Value("string"), "file_name": Value("string"),
             "width": Value("int32"), "height": Value("int32"), "caption": Value("string"), "regions": List(region)}
    extra = pa.schema([f for f in schema if f.name not in feats])
    feats.update(Features.from_arrow_schema(extra))  # datasets' public mapping of Arrow types
    return Features(feats)


def export_fingerprint(ds: Dataset, images_dir: str | os.PathLike | None = None) -> str:
    """8 hex digits identifying the exported records (parts, their sizes, when and where they were made, and
    the images folder their file names point into)."""
    m = ds.manifest
    key = {"root": str(ds.root.resolve()), "parts": m.parts, "created": m.provenance.get("created"),
           "resume": m.config.get("_resume_key"), "images_dir": None if images_dir is None else display(images_dir)}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]


def export_hf(dataset_dir: str | os.PathLike, out: str | os.PathLike, push_to_hub: str | None = None,
              private: bool = True, *, images_dir: str | os.PathLike | None = None, tar_paths: bool = False) -> dict:
    """Writes DIR/data/train-*.parquet with declared features and a README; optionally uploads to the Hub.

    `images_dir`: write images kept inside img2dataset shards there and name them relative to it
    (`formats.export.images`); without it such datasets are refused (`ShardImagesError`) unless `tar_paths`.
    `out` may be a local folder or an object-store URL (`formats.storage`); uploading to the Hub needs a local
    folder (`formats.storage.NotLocalError` otherwise, before anything is written). Raises
    `formats.dataset.DatasetError` (no complete dataset), `formats.storage.StorageError` (an unusable
    location)."""
    folder = Folder(out)
    if push_to_hub and not folder.is_local:
        raise NotLocalError(f"{folder.url}: --push-to-hub uploads a local folder (huggingface_hub's upload_folder); "
                            "export to a local folder to push it")
    ds = Dataset(dataset_dir).require_complete()
    con = connect()
    image_counts = register_export_records(con, ds, images_dir, tar_paths=tar_paths)
    folder.makedirs("data")
    n = len(ds.part_paths)
    fp = export_fingerprint(ds, images_dir)
    features = None
    rows = 0
    written = set()
    for i, table in enumerate(ds.iter_tables()):
        if features is None:
            features = hf_features(table.schema)
        if images_dir is not None:
            table = with_exported_names(con, table)
        table = table.select(list(features.keys())).cast(features.arrow_schema)
        name = f"train-{fp}-{i:05d}-of-{n:05d}.parquet"
        with folder.atomic_path(f"data/{name}") as tmp:
            pq.write_table(table, tmp, compression="zstd")
        written.add(name)
        rows += table.num_rows
    for old in fnmatch.filter(folder.list("data"), "train-*.parquet"):  # an earlier export's: read with these
        if old not in written:
            folder.rm(f"data/{old}")
    m = ds.manifest
    where = f"the image root `{m.image_root}`"
    if images_dir is not None:
        where = f"`{display(images_dir)}` (images from shards written there; others by absolute path or URL)"
    elif tar_paths:
        where = f"the image root `{m.image_root}`; `tar://KEY.jpg::SHARD` names an image inside a shard"
    card = f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-{fp}-*.parquet
---
# {ds.root.name}

ODVG records made by ovlabel ({m.kind.upper()} data from `{m.source}`): {rows} images,
{sum(int(p['boxes']) for p in m.parts)} boxes. Boxes are absolute-pixel `[x1, y1, x2, y2]`; `tokens_positive`
are `[start, end)` character spans into `caption`. Regions of `origin` `crowd` or `ignore` are for evaluation
only (the source's `iscrowd` / `ignore` annotations): leave them out when training. Images are referenced by
`file_name` relative to {where}, not embedded.

Load it with `datasets.load_dataset("{folder.url}", split="train")`; after re-exporting into this folder, add
`download_mode="force_redownload"` to be sure no cached copy of an earlier export is served.
"""
    folder.write_bytes("README.md", card.encode())
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(push_to_hub, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder.path), repo_id=push_to_hub, repo_type="dataset")
    return {"dir": shown(out), "rows": rows, "shards": n, "fingerprint": fp, "pushed_to": push_to_hub, **image_counts}
