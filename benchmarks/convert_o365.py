"""Objects365-sized COCO -> ODVG: ovlabel against the field's straightforward converter, in one run.

Runs each tool as its own process (as a user would), measures wall time and peak RSS (``wait4``), checks the
outputs agree, and prints ratios against the targets:
  convert >= 5x faster than the baseline, peak memory <= 1/3 of it, convert + export odvg >= 2.5x faster.

Usage: python benchmarks/convert_o365.py [--images 609000] [--boxes-per-image 15.8] [--workdir DIR]
Inputs come from ../shared/bench (gen_o365.py, baseline_coco2odvg.py); the generated file is cached in --workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Runs `cmd`; returns wall seconds and the child's peak RSS in MB."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def compare(ours: Path, base: Path, skip_ids: set[int], limit: int = 20000) -> int:
    """Compares the first `limit` records of both JSONL files (the baseline keeps O365's broken images)."""
    n = 0
    with open(ours) as a, open(base) as b:
        for line_b in b:
            rb = json.loads(line_b)
            image_no = int(Path(rb["filename"]).stem.split("_")[-1])
            if image_no in skip_ids:
                continue
            ra = json.loads(next(a))
            ia, ib = ra["detection"]["instances"], rb["detection"]["instances"]
            assert ra["filename"] == rb["filename"] and len(ia) == len(ib), (ra["filename"], rb["filename"])
            for x, y in zip(ia, ib):
                assert x["label"] == y["label"] and x["category"] == y["category"]
                assert max(abs(p - q) for p, q in zip(x["bbox"], y["bbox"])) < 0.01
            n += 1
            if n >= limit:
                break
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=609_000)
    ap.add_argument("--boxes-per-image", type=float, default=15.8)
    ap.add_argument("--workdir", default=os.environ.get("OVLABEL_BENCH_DIR", "/tmp/ovlabel-bench"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    shared = Path(a.shared)
    src = work / f"o365_{a.images}_{a.boxes_per_image}.json"
    if not src.exists():
        print(f"generating {src} ...", file=sys.stderr)
        subprocess.run([sys.executable, str(shared / "gen_o365.py"), str(src.with_suffix(".tmp")), str(a.images),
                        str(a.boxes_per_image)], check=True)
        src.with_suffix(".tmp").rename(src)
    py = sys.executable
    print(f"input {src} ({src.stat().st_size / 1e9:.2f} GB)", file=sys.stderr)
    base = measure([py, str(shared / "baseline_coco2odvg.py"), str(src), str(work / "baseline.jsonl")])
    print(f"baseline            {base}", file=sys.stderr)
    conv = measure([py, "-m", "workflows.cli", "-q", "convert", "coco", str(src), "--source", "o365v1",
                    "--out", str(work / "ds"), "--overwrite"])
    print(f"ovlabel convert     {conv}", file=sys.stderr)
    exp = measure([py, "-m", "workflows.cli", "-q", "export", "odvg", str(work / "ds"), "--out", str(work / "ovlabel.jsonl")])
    print(f"ovlabel export odvg {exp}", file=sys.stderr)
    checked = compare(work / "ovlabel.jsonl", work / "baseline.jsonl", {6, 19, 23})
    ratios = {
        "convert_speedup": round(base["wall_s"] / conv["wall_s"], 2),
        "convert_peak_memory_fraction": round(conv["peak_rss_mb"] / base["peak_rss_mb"], 3),
        "convert_plus_export_speedup": round(base["wall_s"] / (conv["wall_s"] + exp["wall_s"]), 2),
    }
    targets = {"convert_speedup": (">=", 5.0), "convert_peak_memory_fraction": ("<=", 1 / 3),
               "convert_plus_export_speedup": (">=", 2.5)}
    result = {"images": a.images, "input_gb": round(src.stat().st_size / 1e9, 2), "baseline": base,
              "convert": conv, "export_odvg": exp, "records_compared": checked, "ratios": ratios}
    for k, v in ratios.items():
        op, t = targets[k]
        ok = v >= t if op == ">=" else v <= t
        print(f"{k:32s} {v:8.3f}   target {op} {t:.3f}   {'PASS' if ok else 'MISS'}")
    print(f"records compared with the baseline: {checked} (identical labels, categories, boxes within 0.01 px)")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
