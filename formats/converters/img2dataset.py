"""img2dataset output (CC3M, GRIT, any URL list) -> caption records, one part per shard.

img2dataset writes ``NNNNN.parquet`` (one row per URL: key, caption, status, error_message, width, height,
sha256, url and the columns it was asked to keep) beside ``NNNNN.tar`` (webdataset) or ``NNNNN/`` (files)
and ``NNNNN_stats.json``. Successful rows become records whose file_name points into the shard
(``tar://KEY.jpg::NNNNN.tar``); failed downloads go to rejects with img2dataset's error message.
Images stay where img2dataset put them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from formats import schema as S
from formats.dataset import DatasetWriter, Manifest, input_entry, prior_run, provenance
from formats.images import tar_url

log = logging.getLogger("ovlabel.img2dataset")

KEEP_COLUMNS = ("sha256", "url")


class Img2DatasetError(ValueError):
    """A folder is not img2dataset output, or a shard is unreadable."""


def is_img2dataset_dir(path: str | os.PathLike) -> bool:
    """True for a folder holding img2dataset shards (``NNNNN.parquet`` with ``NNNNN_stats.json``)."""
    p = Path(path)
    return p.is_dir() and any(p.glob("*_stats.json")) and any(p.glob("[0-9]*.parquet"))


def shards(raw_dir: str | os.PathLike) -> list[Path]:
    """The shard parquet files, in name order."""
    found = sorted(Path(raw_dir).glob("[0-9]*.parquet"))
    if not found:
        raise Img2DatasetError(f"{raw_dir}: no img2dataset shards (NNNNN.parquet)")
    return found


def shard_records(shard: Path, source: str) -> tuple[pa.Table, list[dict]]:
    """Records for the successful rows of one shard, and rejects for the failed ones."""
    try:
        t = pq.read_table(shard)
    except Exception as e:  # noqa: BLE001
        raise Img2DatasetError(f"{shard}: unreadable parquet: {e}") from None
    missing = [c for c in ("key", "caption", "status", "width", "height") if c not in t.column_names]
    if missing:
        raise Img2DatasetError(f"{shard}: not an img2dataset shard (missing {', '.join(missing)})")
    ok = pc.equal(t.column("status"), "success")
    failed = t.filter(pc.invert(ok))
    rejects = [{"file": str(shard), "record": f"key={k}", "reason": "download failed", "detail": err}
               for k, err in zip(failed.column("key").to_pylist(), failed.column("error_message").to_pylist())]
    t = t.filter(ok)
    bad_size = pc.or_(pc.is_null(t.column("width")), pc.less_equal(t.column("width"), 0))
    if pc.any(bad_size).as_py():
        rejects += [{"file": str(shard), "record": f"key={k}", "reason": "invalid width/height", "detail": None}
                    for k in t.filter(bad_size).column("key").to_pylist()]
        t = t.filter(pc.invert(bad_size))
    # keys sort in download order; records keep shard order by key for determinism
    t = t.sort_by("key")
    keys = t.column("key").to_pylist()
    webdataset = shard.with_suffix(".tar").exists()
    names = [tar_url(f"{k}.jpg", shard.with_suffix(".tar").name) if webdataset else f"{shard.stem}/{k}.jpg" for k in keys]
    n = t.num_rows
    cols = {
        "image_id": pa.array([f"{source}/{k}" for k in keys], pa.string()),
        "source": pa.repeat(pa.scalar(source), n),
        "file_name": pa.array(names, pa.string()),
        "width": t.column("width").cast(pa.int32()),
        "height": t.column("height").cast(pa.int32()),
        "caption": t.column("caption").cast(pa.string()),
        "regions": S.empty_regions(n),
    }
    for c in KEEP_COLUMNS:
        cols[c] = t.column(c).cast(pa.string()) if c in t.column_names else pa.nulls(n, pa.string())
    return pa.table(cols), rejects


EXTRA_FIELDS = [pa.field(c, pa.string()) for c in KEEP_COLUMNS]


@dataclass
class Img2DatasetConvertConfig:
    """Settings of an img2dataset conversion; recorded in the manifest."""

    source: str = "cc3m"


def convert_img2dataset(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: Img2DatasetConvertConfig, *,
                        overwrite: bool = False) -> Manifest:
    """Converts every shard of an img2dataset folder into a VG (caption) dataset; reruns skip finished shards."""
    raw = Path(raw_dir).resolve()
    parts = shards(raw)
    inputs = [input_entry(p) for p in parts]
    resume_key = {"config": asdict(cfg), "inputs": [(i["path"], i["sha256"]) for i in inputs]}
    done = prior_run(out_dir, resume_key, overwrite)
    if done is not None:
        return done
    manifest = Manifest(kind="vg", source=cfg.source, image_root=str(raw), config=asdict(cfg),
                        extra_columns=list(KEEP_COLUMNS), provenance=provenance(inputs))
    writer = DatasetWriter(out_dir, manifest, overwrite=overwrite, resume_key=resume_key)
    all_rejects = []
    for shard in parts:
        name = f"part-{shard.stem}.parquet"
        table, rejects = shard_records(shard, cfg.source)
        all_rejects += rejects
        if not writer.is_done(name):
            writer.write_part(name, S.conform(table, EXTRA_FIELDS), shard=shard.name)
    writer.write_rejects("part-00000.parquet", all_rejects)
    images = sum(p["rows"] for p in writer.manifest.parts)
    return writer.finish({"images_in": images + len(all_rejects), "images": images, "boxes": 0,
                          "rejected": _count(all_rejects)})


def _count(rejects: list[dict]) -> dict:
    out: dict[str, int] = {}
    for r in rejects:
        out[r["reason"]] = out.get(r["reason"], 0) + 1
    return out
