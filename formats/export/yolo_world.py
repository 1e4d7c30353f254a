"""The files YOLO-World's datasets read.

- ``class_texts.json`` for ``MultiModalDataset``: one list of names per class in label order, e.g.
  ``[["aerosol can", "spray can"], ["cabinet", "shelf"], ...]`` (LVIS synonyms; Objects365 names split at "/").
- for VG data, ``grounding.json``: the COCO file with ``caption``/``tokens``/``tokens_positive`` that
  ``YOLOv5MixedGroundingDataset`` and ``YOLOv5GeneralGroundingDataset`` read.
"""

from __future__ import annotations

import os
from pathlib import Path

from formats.dataset import Dataset, atomic_write_json
from formats.export.coco import coco_categories, export_coco
from formats.query import connect, register_records


def class_texts(category: dict) -> list[str]:
    """Prompt names of one category: LVIS synonyms (underscores to spaces) or the name split at '/'."""
    syn = category.get("synonyms")
    if isinstance(syn, list) and syn:
        names = [str(s).replace("_", " ").strip() for s in syn]
    else:
        names = [part.strip().lower() for part in str(category["name"]).split("/")]
    seen: list[str] = []
    for n in names:
        if n and n not in seen:
            seen.append(n)
    return seen


def export_yolo_world(dataset_dir: str | os.PathLike, out: str | os.PathLike, *,
                      images_dir: str | os.PathLike | None = None, tar_paths: bool = False) -> dict:
    """Writes class_texts.json (and grounding.json for VG data) into the folder `out`; `images_dir` as for
    `export_coco`."""
    ds = Dataset(dataset_dir).require_complete()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if ds.manifest.kind == "od":
        texts = [class_texts(c) for c in ds.manifest.categories]
        result = {"class_texts": out / "class_texts.json", "classes": len(texts)}
    else:
        con = connect()
        register_records(con, ds)
        texts = [[c["name"]] for c in coco_categories(ds, con)]
        result = {"class_texts": out / "class_texts.json", "classes": len(texts),
                  **{f"grounding_{k}": v for k, v in export_coco(dataset_dir, out / "grounding.json",
                                                                         images_dir=images_dir,
                                                                         tar_paths=tar_paths).items()}}
    atomic_write_json(out / "class_texts.json", texts)
    return result
