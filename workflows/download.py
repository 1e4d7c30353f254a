"""Image downloads for web caption sources (GRIT, CC3M) through img2dataset, with the right defaults.

The URL list is first normalised to one parquet file (``url``, ``caption`` and the columns worth keeping)
under ``RAW_DIR/_ovlabel_input/``, written once and reused, so a rerun gives img2dataset the same input
and its incremental mode skips the shards it already finished.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from formats.dataset import atomic_path
from workflows.stdio import stdout_to_stderr

log = logging.getLogger("ovlabel.download")

GRIT_KEEP = ("id", "noun_chunks", "ref_exps", "clip_similarity_vitb32", "clip_similarity_vitl14")
CC3M_HUB = "google-research-datasets/conceptual_captions"
INPUT_DIR = "_ovlabel_input"


class DownloadError(ValueError):
    """The URL list cannot be read."""


@dataclass
class DownloadConfig:
    """img2dataset settings; defaults suit detection data (aspect kept, no padding, no crop)."""

    output_format: str = "webdataset"  # or "parquet" (image bytes in the shard parquet) or "files"
    image_size: int = 1024
    resize_mode: str = "keep_ratio"  # "no" keeps the original bytes; border/center_crop would break boxes
    processes: int = 1
    threads: int = 16
    timeout: int = 10
    retries: int = 0
    shard_size: int = 10_000
    distributor: str = "multiprocessing"  # "ray" inside a Ray job


def grit_input(metadata: str | os.PathLike) -> pa.Table:
    """GRIT metadata parquet (file or folder) -> url, caption and the GRIT columns worth keeping."""
    p = Path(metadata)
    files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise DownloadError(f"{metadata}: no GRIT metadata parquet file(s)")
    tables = []
    for f in files:
        try:
            t = pq.read_table(f)
        except Exception as e:  # noqa: BLE001
            raise DownloadError(f"{f}: unreadable parquet: {e}") from None
        missing = [c for c in ("url", "caption") if c not in t.column_names]
        if missing:
            raise DownloadError(f"{f}: not GRIT metadata (missing {', '.join(missing)})")
        tables.append(t.select(["url", "caption"] + [c for c in GRIT_KEEP if c in t.column_names]))
    return pa.concat_tables(tables, promote_options="default")


def cc3m_input(source: str | os.PathLike, split: str = "train") -> pa.Table:
    """CC3M URLs: a headerless ``caption<TAB>url`` TSV, a `datasets` folder, or a hub dataset id."""
    p = Path(source)
    if p.is_file():
        import duckdb

        try:
            t = duckdb.sql(f"""SELECT url, caption FROM read_csv('{p}', delim='\\t', header=false, quote='',
                                columns={{'caption': 'VARCHAR', 'url': 'VARCHAR'}})""").to_arrow_table()
        except duckdb.Error as e:
            raise DownloadError(f"{p}: not a caption<TAB>url TSV: {e}") from None
        return t
    import datasets

    try:
        ds = datasets.load_from_disk(str(p)) if p.is_dir() else datasets.load_dataset(str(source), split=split)
    except Exception as e:  # noqa: BLE001 - the hub or the folder says why
        raise DownloadError(f"{source}: cannot load the URL list with datasets: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[split]
    url = "image_url" if "image_url" in ds.column_names else "url"
    if url not in ds.column_names or "caption" not in ds.column_names:
        raise DownloadError(f"{source}: expected columns image_url (or url) and caption, found {ds.column_names}")
    t = ds.data.table.select([url, "caption"])
    return t.rename_columns(["url", "caption"])


def download(kind: str, source: str | os.PathLike, out: str | os.PathLike, cfg: DownloadConfig) -> dict:
    """Downloads the images of a GRIT or CC3M URL list into img2dataset shards under `out`; resumes."""
    out = Path(out)
    staged = out / INPUT_DIR / "urls.parquet"
    if not staged.exists():
        table = grit_input(source) if kind == "grit" else cc3m_input(source)
        staged.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(staged) as tmp:
            pq.write_table(table, tmp)
        log.info("%s: %d URLs staged in %s", source, table.num_rows, staged)
    keep = [c for c in pq.read_schema(staged).names if c not in ("url", "caption")]
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset import download as img2dataset_download

    with stdout_to_stderr():  # img2dataset (and its worker processes) print progress on stdout
        img2dataset_download(
            url_list=str(staged), input_format="parquet", url_col="url", caption_col="caption",
            save_additional_columns=keep or None, output_folder=str(out), output_format=cfg.output_format,
            image_size=cfg.image_size, resize_mode=cfg.resize_mode, resize_only_if_bigger=True,
            processes_count=cfg.processes, thread_count=cfg.threads, timeout=cfg.timeout, retries=cfg.retries,
            number_sample_per_shard=cfg.shard_size, distributor=cfg.distributor, incremental_mode="incremental",
            enable_wandb=False, compute_hash="sha256",
        )
    return summary(out) | {"config": asdict(cfg)}


def summary(raw_dir: str | os.PathLike) -> dict:
    """Totals of img2dataset's per-shard stats files."""
    total = {"shards": 0, "count": 0, "successes": 0, "failed_to_download": 0, "failed_to_resize": 0}
    for f in sorted(Path(raw_dir).glob("*_stats.json")):
        st = json.loads(f.read_text())
        total["shards"] += 1
        for k in ("count", "successes", "failed_to_download", "failed_to_resize"):
            total[k] += int(st.get(k, 0))
    return {"raw_dir": str(Path(raw_dir).resolve()), **total}
