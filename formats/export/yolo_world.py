"""The files YOLO-World's datasets read.

- ``class_texts.json`` for ``MultiModalDataset``: one list of names per class in label order, e.g.
  ``[["aerosol can", "spray can"], ["cabinet", "shelf"], ...]`` (LVIS synonyms; Objects365 names split at "/").
  A synonym with a parenthesised qualifier gives the bare name first, then the name with the qualifier as
  words, as YOLO-World's own ``data/texts/lvis_v1_class_texts.json`` writes it: ``arctic_(type_of_shoe)`` ->
  ``"arctic"``, ``"arctic type of shoe"``. YOLO-World's evaluation and ``generate_text_prompts.py`` use the
  first text of each class.
- for VG data, ``grounding.json``: the COCO file with ``caption``/``tokens``/``tokens_positive`` that
  ``YOLOv5MixedGroundingDataset`` and ``YOLOv5GeneralGroundingDataset`` read (training data: crowd and
  ignore regions left out; only regions with caption spans, since that reader reads every annotation's
  ``tokens_positive``).
- for VG data with a label map (the vocabulary union of ``ovlabel pseudo --classes`` on captions): the
  grounding file of its phrase regions, ``detection.json`` (COCO, the label map's categories) of its class
  regions, and ``class_texts.json`` of the classes, for a ``MultiModalDataset`` over ``detection.json``.
"""

from __future__ import annotations

import os
import re

from formats.dataset import Dataset, atomic_write_json
from formats.export.coco import coco_categories, export_coco
from formats.query import connect, register_records
from formats.storage import Folder, inside, shown

_QUALIFIED = re.compile(r"^(?P<bare>.+?)[_\s]*\((?P<qualifier>[^()]+)\)")


def synonym_texts(synonym: str) -> list[str]:
    """One synonym's texts by YOLO-World's rule: underscores to spaces; ``bat_(animal)`` -> ``bat``, ``bat animal``.

    As in YOLO-World's ``lvis_v1_class_texts.json``: a ``/`` inside the qualifier reads ``or``
    (``wiper_(for_windshield/screen)`` -> ``wiper for windshield or screen``) and words after the qualifier
    are left out (LVIS's ``monitor_(computer_equipment) computer_monitor`` -> ``monitor``,
    ``monitor computer equipment``). With this, 1,202 of LVIS v1's 1,203 classes get exactly YOLO-World's
    texts; the other is its spelling fix of ``speaker_(stero_equipment)``."""
    s = str(synonym).strip()
    m = _QUALIFIED.match(s)
    if m is None:
        return [" ".join(s.replace("_", " ").split())]
    bare = " ".join(m["bare"].replace("_", " ").split())
    qualifier = " ".join(m["qualifier"].replace("_", " ").replace("/", " or ").split())
    return [bare, f"{bare} {qualifier}"] if bare else [qualifier]


def class_texts(category: dict) -> list[str]:
    """Prompt names of one category: LVIS synonyms (`synonym_texts`) or, when they give no text (none, or
    only blank ones), the name split at '/' (lower case). Never empty for a named category: YOLO-World reads
    each class's first text."""
    syn = category.get("synonyms")
    names = [t for s in syn for t in synonym_texts(s) if t] if isinstance(syn, list) else []
    if not names:
        names = [t for part in str(category["name"]).split("/") for t in synonym_texts(part.strip().lower())]
    seen: list[str] = []
    for n in names:
        if n and n not in seen:
            seen.append(n)
    return seen


def export_yolo_world(dataset_dir: str | os.PathLike, out: str | os.PathLike, *,
                      images_dir: str | os.PathLike | None = None, tar_paths: bool = False) -> dict:
    """Writes class_texts.json (and grounding.json for VG data, detection.json too for VG data with a label
    map) into the folder `out` (a local folder or an object-store URL, `formats.storage`); `images_dir` as for
    `export_coco`. Raises `formats.dataset.DatasetError` (no complete dataset), `ShardImagesError` (shard
    images without `images_dir` or `tar_paths`), `formats.storage.StorageError` (an unusable location)."""
    ds = Dataset(dataset_dir).require_complete()
    Folder(out).makedirs()
    if ds.manifest.kind == "od" or ds.manifest.categories:
        texts = [class_texts(c) for c in ds.manifest.categories]
    else:
        con = connect()
        register_records(con, ds, with_order=True)
        texts = [[c["name"]] for c in coco_categories(ds, con)]
    result = {"class_texts": shown(inside(out, "class_texts.json")), "classes": len(texts)}
    if ds.manifest.kind == "vg":
        grounding = export_coco(dataset_dir, inside(out, "grounding.json"), images_dir=images_dir,
                                tar_paths=tar_paths, training=True, view="vg")
        result |= {f"grounding_{k}": v for k, v in grounding.items()}
        if ds.manifest.categories:
            det = export_coco(dataset_dir, inside(out, "detection.json"), images_dir=images_dir,
                              tar_paths=tar_paths, training=True, view="od")
            result |= {f"detection_{k}": v for k, v in det.items()}
    atomic_write_json(inside(out, "class_texts.json"), texts)
    return result
