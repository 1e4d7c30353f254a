"""Inputs of self-training and review runs: a self-training config with the test's tiny models
(test_selftrain.py, test_selftrain_store.py) and a round-1 pseudo dataset over a gold set (test_review.py,
test_storage_review.py)."""

from __future__ import annotations

import json
import tomllib

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import EXAMPLES, ROOT

from formats import schema as S
from formats.dataset import Dataset, DatasetWriter, Manifest


def write_config(path, tiny_models, **over) -> None:
    """examples/selftrain_tiny.toml with the test's tiny models and fewer steps."""
    cfg = tomllib.loads((EXAMPLES / "selftrain_tiny.toml").read_text())
    cfg.update(base_model=str(tiny_models["detector"]), clip=str(tiny_models["clip"]))
    for entry in cfg["gold"] + cfg["eval"]:
        entry["path"], entry["image_root"] = str(ROOT / entry["path"]), str(ROOT / entry["image_root"])
    cfg["pool"] = str(ROOT / cfg["pool"])
    cfg["train"]["steps"] = 30
    cfg["train"]["checkpoint_every"] = 10
    cfg.update(over)
    path.write_text(json.dumps(cfg))


def write_round1(src: Dataset, out) -> None:
    """A round-1 pseudo dataset at `out` (a path or URL) over `src`'s photos: each gold box moved a little, with
    scores, and candidates files holding every kept box plus one the filters dropped on the first image."""
    from formats.storage import Folder

    rows = []
    for r in src.read().to_pylist():
        regs = []
        for k, g in enumerate(r["regions"]):
            x1, y1, x2, y2 = g["bbox"]
            regs.append({"region_id": f"{r['image_id']}#r0c{k}", "bbox": [x1 + 3, y1 + 2, x2 - 1, y2 + 1],
                         "label": None, "category": None, "phrase": g["category"], "tokens_positive": None,
                         "score": 0.2 + 0.1 * (k % 7), "det_score": 0.9 if k % 2 else 0.2,
                         "clip_score": 0.3, "origin": "pseudo", "round": 1})
        rows.append({**{c: r[c] for c in S.CORE_COLUMNS if c != "regions"}, "regions": regs})
    m = Manifest(kind="vg", source="custom", image_root=src.manifest.image_root, config={"round": 1})
    w = DatasetWriter(out, m)
    w.write_part("part-00000.parquet", S.conform(pa.Table.from_pylist(rows, schema=S.CORE_SCHEMA)))
    w.finish()
    extra = {**rows[0]["regions"][0], "region_id": f"{rows[0]['image_id']}#r0c99", "score": 0.01}
    cands = [{"image_id": r["image_id"], "candidates": r["regions"] + ([extra] if i == 0 else [])}
             for i, r in enumerate(rows)]
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(cands, schema=pa.schema([("image_id", pa.string()),
                                                                 ("candidates", pa.list_(S.REGION_TYPE))])), buf)
    Folder(out).makedirs("candidates")
    Folder(out).write_bytes("candidates/part-00000.parquet", buf.getvalue().to_pybytes())
