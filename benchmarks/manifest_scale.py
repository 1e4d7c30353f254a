"""Recording finished parts at scale: the dataset writer's cost per part at the start and at the end of a run.

Simulates a run of 100,000 parts through the real writer API: each part gets a small fake part file (written
outside the timing) and `DatasetWriter.add_part` with an entry like a pseudo-labeling part's (counts, origins,
drop reasons). Prints the milliseconds per part over the first and the last block of parts (their ratio should
be about 1), the driver's memory (RSS growth and the peak), what reading the unfinished dataset, resuming it
(a new writer folding every record into manifest.json) and `finish` (manifest.json written, the records
deleted) cost, and the bytes written for bookkeeping.

As a baseline in the same run, the writer before completion records (``git show REV:formats/dataset.py``, which
rewrote manifest.json after every part) records a smaller run; its cost per part grows with the parts before it,
and the script extrapolates the straight line through its first and last block to the full run.

Usage: python benchmarks/manifest_scale.py [--parts 100000] [--block 1000] [--old-parts 3000] [--old-rev 282c476]
    [--dir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from formats.dataset import DONE, MANIFEST, Dataset, DatasetWriter, Manifest  # noqa: E402


def entry(i: int) -> dict:
    """A part's manifest entry as pseudo-labeling records it (about 250 bytes of JSON)."""
    return {"name": f"part-{i:06d}.parquet", "rows": 1000, "boxes": 4000 + i % 97, "origins": {"pseudo": 4000 + i % 97},
            "images_in": 1000, "rejected": i % 3, "candidates": 9000 + i % 101,
            "images_dropped": {"below_image_threshold": i % 5, "no_box_kept": i % 7}}


def rss_mb() -> float:
    """The process's resident memory now, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def record_parts(module: ModuleType, root: Path, parts: int, block: int) -> tuple[object, list[float], list[float]]:
    """Opens `module`'s DatasetWriter at `root` and records `parts` parts; returns it and the wall and the CPU
    milliseconds per part of each block of `block` parts."""
    w = module.DatasetWriter(root, module.Manifest(kind="vg", source="bench"), resume_key={"bench": 1})
    records = root / "records"
    wall, cpu, t_wall, t_cpu = [], [], 0.0, 0.0
    for i in range(parts):
        e = entry(i)
        (records / e["name"]).write_bytes(b"")  # the part file itself: the same in both writers, not timed
        t, c = time.perf_counter(), time.process_time()
        w.add_part(e)
        t_wall += time.perf_counter() - t
        t_cpu += time.process_time() - c
        if (i + 1) % block == 0:
            wall.append(t_wall / block * 1000)
            cpu.append(t_cpu / block * 1000)
            t_wall = t_cpu = 0.0
    return w, wall, cpu


def spread(blocks: list[float]) -> dict:
    """The first and last block, and the min and median block of the first and the last tenth of the run (a
    shared machine's busy spells move single blocks; the tenths' minimum shows the trend without them)."""
    k = max(1, len(blocks) // 10)
    return {"first": round(blocks[0], 3), "last": round(blocks[-1], 3),
            "first_tenth_min": round(min(blocks[:k]), 3), "last_tenth_min": round(min(blocks[-k:]), 3),
            "first_tenth_median": round(median(blocks[:k]), 3), "last_tenth_median": round(median(blocks[-k:]), 3),
            "median": round(median(blocks), 3)}


def describe(name: str, d: dict, parts: int, block: int) -> str:
    return (f"  {name:4} ms/part: parts 1-{block:,} {d['first']:.3f}, parts {parts - block + 1:,}-{parts:,} "
            f"{d['last']:.3f} (ratio {d['last'] / d['first']:.2f}); min of first/last tenth {d['first_tenth_min']:.3f}"
            f" / {d['last_tenth_min']:.3f} (ratio {d['last_tenth_min'] / d['first_tenth_min']:.2f}); median "
            f"{d['first_tenth_median']:.3f} / {d['last_tenth_median']:.3f}; all blocks' median {d['median']:.3f}")


def old_module(rev: str) -> ModuleType | None:
    """The writer as of `rev` (before completion records), imported beside the current one; None without git."""
    try:
        src = subprocess.run(["git", "show", f"{rev}:formats/dataset.py"], cwd=ROOT, capture_output=True,
                             check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"baseline skipped: {e}", file=sys.stderr)
        return None
    path = Path(tempfile.mkdtemp(prefix="ovlabel-bench-old-")) / "old_dataset.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_dataset", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_dataset"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=100_000)
    ap.add_argument("--block", type=int, default=1000)
    ap.add_argument("--old-parts", type=int, default=3000, help="parts for the baseline writer (0: skip it)")
    ap.add_argument("--old-rev", default="282c476", help="git revision of the writer that rewrote the manifest")
    ap.add_argument("--dir", help="where to write (default: a temp folder, deleted afterwards)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ovlabel-bench-manifest-", dir=args.dir))
    out: dict = {"parts": args.parts, "block": args.block}
    try:
        root = work / "new"
        rss0 = rss_mb()
        t0 = time.perf_counter()
        w, wall, cpu = record_parts(sys.modules["formats.dataset"], root, args.parts, args.block)
        out["record_s"] = round(time.perf_counter() - t0, 1)
        out["wall"], out["cpu"] = spread(wall), spread(cpu)
        out["wall_blocks_ms"], out["cpu_blocks_ms"] = [round(x, 3) for x in wall], [round(x, 3) for x in cpu]
        out["rss_growth_mb"] = round(rss_mb() - rss0, 1)
        out["peak_rss_recording_mb"] = round(peak_rss_mb(), 1)
        out["bookkeeping_bytes"] = dir_bytes(root / DONE) + (root / MANIFEST).stat().st_size
        del w  # the run dies here; what follows is a reader and a rerun
        t = time.perf_counter()
        n = len(Dataset(root).manifest.parts)
        out["read_unfinished_s"] = round(time.perf_counter() - t, 2)
        assert n == args.parts
        t = time.perf_counter()
        w = DatasetWriter(root, Manifest(kind="vg", source="bench"), resume_key={"bench": 1})
        out["resume_fold_s"] = round(time.perf_counter() - t, 2)
        assert w.is_done(entry(args.parts - 1)["name"])
        t = time.perf_counter()
        m = w.finish()
        out["finish_s"] = round(time.perf_counter() - t, 2)
        assert not (root / DONE).exists()
        out["manifest_bytes"] = (root / MANIFEST).stat().st_size
        assert m.totals()["images"] == 1000 * args.parts
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
        print(f"{args.parts:,} parts recorded in {out['record_s']} s (add_part only)")
        print(describe("wall", out["wall"], args.parts, args.block))
        print(describe("CPU", out["cpu"], args.parts, args.block))
        print(f"driver memory: RSS +{out['rss_growth_mb']} MB over the run (the parts' entries), peak RSS "
              f"{out['peak_rss_recording_mb']} MB while recording, {out['peak_rss_mb']} MB after resume and finish; "
              f"bookkeeping written while recording: {out['bookkeeping_bytes']:,} bytes")
        print(f"reading the unfinished dataset {out['read_unfinished_s']} s, resuming it (read "
              f"{args.parts:,} records, write manifest.json) {out['resume_fold_s']} s, finish (write it, delete the "
              f"records) {out['finish_s']} s; "
              f"manifest.json {out['manifest_bytes']:,} bytes")
        old = old_module(args.old_rev) if args.old_parts else None
        if old is not None:
            n = args.old_parts
            root = work / "old"
            t = time.perf_counter()
            _, old_wall, old_cpu = record_parts(old, root, n, args.block)
            out["old_parts"], out["old_record_s"] = n, round(time.perf_counter() - t, 1)
            out["old_wall"], out["old_cpu"] = spread(old_wall), spread(old_cpu)
            # ms per part grows about linearly with the parts already listed: extrapolate to the full run
            slope = (old_wall[-1] - old_wall[0]) / (n - args.block)
            at_end = old_wall[0] + slope * (args.parts - args.block)
            out["old_extrapolated_last_block_ms"] = round(at_end, 1)
            out["old_extrapolated_total_h"] = round((old_wall[0] + at_end) / 2 * args.parts / 1000 / 3600, 2)
            # the manifest grows by one entry per part: the rewrites wrote about n times half its final size
            out["old_bytes_written"] = n * (root / MANIFEST).stat().st_size // 2
            print(f"baseline ({args.old_rev}: manifest.json rewritten after each part), {n:,} parts in "
                  f"{out['old_record_s']} s")
            print(describe("wall", out["old_wall"], n, args.block))
            print(describe("CPU", out["old_cpu"], n, args.block))
            print(f"  extrapolated to part {args.parts:,}: {at_end:.1f} ms/part, {out['old_extrapolated_total_h']} h "
                  f"for the whole run; about {out['old_bytes_written']:,} bytes of manifest written for {n:,} parts")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
