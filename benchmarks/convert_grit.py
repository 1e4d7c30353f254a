"""GRIT conversion throughput: rows per second per core, one process vs Ray tasks, in one run.

Generates img2dataset-shaped GRIT shards (``NNNNN.parquet`` with status, width/height, original size, url,
sha256 and GRIT's ``ref_exps`` / ``noun_chunks``; about 3 boxes a row, one download in 20 failed), then
times ``ovlabel convert grit`` (one process, one core) and the conversion ``pipelines/ingest.py`` runs (one Ray
task per shard on every core; Ray's start-up timed separately). Prints rows/s, rows/s per core and the Ray/one-process ratio per core.

Usage: python benchmarks/convert_grit.py [--shards 8] [--rows-per-shard 25000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert_o365 import measure  # noqa: E402

WORDS = "a man woman dog red blue hat street table ball girl boy jacket grass water bike car tree young old".split()


def write_shard(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    keys, caps, refs, chunks, status, errs, w, h, ow, oh = ([] for _ in range(10))
    for i in range(rows):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
        cap = " ".join(words)
        ok = rng.random() > 0.05
        keys.append(f"{path.stem}{i:05d}")
        caps.append(cap)
        status.append("success" if ok else "failed_to_download")
        errs.append(None if ok else "HTTP Error 404: Not Found")
        W, H = rng.randint(400, 1024), rng.randint(400, 1024)
        w.append(W if ok else None)
        h.append(H if ok else None)
        ow.append(W if ok else None)
        oh.append(H if ok else None)
        lst = []
        for _ in range(rng.randint(1, 5)):
            s = rng.randrange(0, max(1, len(cap) - 8))
            x1, y1 = rng.random() * 0.6, rng.random() * 0.6
            lst.append([s, s + rng.randint(3, 8), x1, y1, x1 + 0.3, y1 + 0.3, rng.random()])
        refs.append(lst)
        chunks.append(lst[:2])
    n = rows
    t = pa.table({"id": list(range(n)), "noun_chunks": chunks, "ref_exps": refs, "caption": caps,
                  "url": [f"http://example.com/{k}.jpg" for k in keys], "key": keys, "status": status,
                  "error_message": errs, "width": pa.array(w, pa.int64()), "height": pa.array(h, pa.int64()),
                  "original_width": pa.array(ow, pa.int64()), "original_height": pa.array(oh, pa.int64()),
                  "exif": [None] * n, "sha256": [f"{seed:08x}{i:056x}" for i in range(n)]})
    pq.write_table(t, path)
    path.with_name(f"{path.stem}_stats.json").write_text(json.dumps({"count": n}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--rows-per-shard", type=int, default=25_000)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ovlabel-bench-grit")
    a = ap.parse_args()
    raw = a.workdir / f"raw_{a.shards}x{a.rows_per_shard}"
    if not raw.exists():
        print(f"generating {raw} ...", file=sys.stderr)
        tmp = raw.with_name(raw.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for s in range(a.shards):
            write_shard(tmp / f"{s:05d}.parquet", a.rows_per_shard, s)
        tmp.rename(raw)
    rows = a.shards * a.rows_per_shard
    cores = os.cpu_count() or 1
    one = measure([sys.executable, "-m", "workflows.cli", "convert", "grit", str(raw), "--out",
                   str(a.workdir / "one"), "--overwrite"])
    # Ray: started first, so the conversion time excludes Ray's start-up (reported on its own)
    sys.path.insert(0, str(ROOT))
    from formats.converters.img2dataset import Img2DatasetConvertConfig, convert_img2dataset
    from workflows.ingest import ray_map
    from workflows.ray_runtime import init_ray

    t0 = time.perf_counter()
    init_ray()
    start = time.perf_counter() - t0
    t0 = time.perf_counter()
    convert_img2dataset(raw, a.workdir / "ray", Img2DatasetConvertConfig(source="grit", spans="ref_exps"),
                        overwrite=True, map_fn=ray_map)
    ray_s = time.perf_counter() - t0
    r1, rr = rows / one["wall_s"], rows / ray_s
    print(f"{rows:,} GRIT rows in {a.shards} shards, {cores} cores")
    print(f"ovlabel convert grit (1 process, whole command): {one['wall_s']:6.2f} s {r1:9,.0f} rows/s "
          f"{r1:9,.0f} rows/s/core")
    print(f"Ray tasks, one per shard (Ray started in {start:.1f} s): {ray_s:6.2f} s {rr:9,.0f} rows/s "
          f"{rr / cores:9,.0f} rows/s/core")
    print(f"Ray speed-up {one['wall_s'] / ray_s:.2f}x on {cores} cores")


if __name__ == "__main__":
    main()
