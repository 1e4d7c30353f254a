"""GoldG (MDETR) conversion against loading the file with json.load and grouping in Python, in one run.

Generates a Flickr30k-Entities-sized ``final_flickr_separateGT_train.json`` (about 150k captions and 640k
boxes, MDETR's field layout and compact separators), then times as separate processes:
  baseline: json.load + group annotations by image + phrases from spans (what goldg2odvg.py does, minus
            pycocotools and the writing);
  ovlabel:  ``ovlabel convert goldg`` (parse, validate, group, write the parquet dataset).
Prints the median wall time of interleaved runs, peak RSS and the ratio against the target (>= 5x faster),
then checks ovlabel's output against the baseline's records: every caption and every box (xyxy, sorted spans,
phrase) must match (the generated file has nothing to drop).

Usage: python benchmarks/convert_goldg.py [--captions 148915] [--boxes 640000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert_o365 import measure  # noqa: E402

WORDS = ("man woman child dog shirt red blue hat street table ball girl boy jacket grass water bike car tree "
         "young old small large white black green wooden two three standing sitting holding wearing").split()

BASELINE = r'''
import json, sys
from collections import defaultdict
doc = json.load(open(sys.argv[1]))
by_image = defaultdict(list)
for a in doc["annotations"]:
    by_image[a["image_id"]].append(a)
records = []
for im in doc["images"]:
    cap, regions = im["caption"], []
    for a in by_image.get(im["id"], []):
        x, y, w, h = a["bbox"]
        spans = sorted(a["tokens_positive"])
        regions.append({"bbox": [x, y, x + w, y + h], "phrase": " ".join(cap[s:e] for s, e in spans),
                        "tokens_positive": spans})
    records.append({"filename": im["file_name"], "height": int(im["height"]), "width": int(im["width"]),
                    "grounding": {"caption": cap, "regions": regions}})
print(len(records), sum(len(r["grounding"]["regions"]) for r in records))
'''


def generate(path: Path, captions: int, boxes: int, seed: int = 0) -> None:
    """Writes an MDETR-shaped file with `captions` captions and about `boxes` boxes."""
    rng = random.Random(seed)
    per = boxes / captions
    with open(path, "w") as f:
        f.write('{"info": {}, "licenses": [], "images": [')
        anns: list[str] = []
        aid = 0
        for i in range(captions):
            words = [rng.choice(WORDS) for _ in range(rng.randint(8, 16))]
            cap = " ".join(words) + " ."
            starts = [0]
            for w in words[:-1]:
                starts.append(starts[-1] + len(w) + 1)
            w_img, h_img = rng.randint(300, 500), rng.randint(300, 500)
            img = {"file_name": f"{3_000_000 + i // 5}.jpg", "height": str(h_img), "width": str(w_img), "id": i,
                   "caption": cap, "dataset_name": "flickr", "tokens_negative": [[0, len(cap)]],
                   "sentence_id": i % 5, "original_img_id": 3_000_000 + i // 5,
                   "tokens_positive_eval": [[[starts[0], starts[0] + len(words[0])]]]}
            f.write(("" if i == 0 else ", ") + json.dumps(img))
            n = int(per) + (rng.random() < per - int(per))
            for _ in range(n):
                k = rng.randrange(len(words) - 1)
                spans = [[starts[k], starts[k] + len(words[k])]]
                if rng.random() < 0.3:
                    spans.append([starts[k + 1], starts[k + 1] + len(words[k + 1])])
                x, y = rng.uniform(0, w_img - 20), rng.uniform(0, h_img - 20)
                bw, bh = rng.uniform(5, w_img - x), rng.uniform(5, h_img - y)
                aid += 1
                anns.append(json.dumps({"area": bw * bh, "iscrowd": 0, "image_id": i, "category_id": 1, "id": aid,
                                        "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                                        "tokens_positive": spans}))
        f.write('], "annotations": [')
        f.write(", ".join(anns))
        f.write('], "categories": [{"supercategory": "object", "id": 1, "name": "object"}]}')


def baseline_records(src: Path) -> list[dict]:
    """The baseline's records, computed in this process (the timed baseline script builds the same)."""
    scope: dict = {"SRC": str(src), "__name__": "baseline"}
    code = BASELINE.replace("doc = json.load(open(sys.argv[1]))", "doc = json.load(open(SRC))").replace("print(", "(")
    exec(code, scope)  # noqa: S102 - our own script text
    return scope["records"]


def check_output(src: Path, out: Path) -> int:
    """Compares every record of the converted dataset with the baseline's; returns the boxes compared."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from formats.dataset import Dataset

    expected = baseline_records(src)
    got = Dataset(out).read(["file_name", "height", "width", "caption", "regions"]).to_pylist()
    assert len(got) == len(expected), (len(got), len(expected))
    boxes = 0
    for g, e in zip(got, expected):
        assert (g["file_name"], g["height"], g["width"]) == (e["filename"], e["height"], e["width"]), (g, e)
        assert g["caption"] == e["grounding"]["caption"]
        assert len(g["regions"]) == len(e["grounding"]["regions"]), g["file_name"]
        for rg, re_ in zip(g["regions"], e["grounding"]["regions"]):
            assert rg["phrase"] == re_["phrase"] and [list(s) for s in rg["tokens_positive"]] == re_["tokens_positive"]
            assert max(abs(a - b) for a, b in zip(rg["bbox"], re_["bbox"])) < 0.01, (rg["bbox"], re_["bbox"])  # ovlabel clips to the image
            boxes += 1
    return boxes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=int, default=148_915)
    ap.add_argument("--boxes", type=int, default=640_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side; the median is reported")
    ap.add_argument("--no-check", action="store_true", help="skip comparing the output with the baseline's records")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ovlabel-bench-goldg")
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    src = a.workdir / f"flickr_{a.captions}_{a.boxes}.json"
    if not src.exists():
        print(f"generating {src} ...", file=sys.stderr)
        generate(src, a.captions, a.boxes)
    print(f"input: {src.stat().st_size / 1e6:.0f} MB, {a.captions:,} captions, ~{a.boxes:,} boxes")
    script = a.workdir / "baseline.py"
    script.write_text(BASELINE)
    runs = {"base": [], "ours": []}
    for _ in range(a.repeat):  # interleaved, so a slow spell of the machine hits both sides
        runs["base"].append(measure([sys.executable, str(script), str(src)]))
        runs["ours"].append(measure([sys.executable, "-m", "workflows.cli", "convert", "goldg", str(src),
                                     "--source", "flickr30k", "--out", str(a.workdir / "out"), "--overwrite"]))
    base, ours = (sorted(runs[k], key=lambda r: r["wall_s"])[len(runs[k]) // 2] for k in ("base", "ours"))
    print(f"median of {a.repeat} runs each; all walls: baseline {[r['wall_s'] for r in runs['base']]}, "
          f"ovlabel {[r['wall_s'] for r in runs['ours']]}")
    ratio = base["wall_s"] / ours["wall_s"]
    print(f"baseline json.load + group: {base['wall_s']:7.2f} s  peak {base['peak_rss_mb']:7.0f} MB")
    print(f"ovlabel convert goldg:      {ours['wall_s']:7.2f} s  peak {ours['peak_rss_mb']:7.0f} MB")
    print(f"speed-up {ratio:.2f}x (target >= 5x: {'PASS' if ratio >= 5 else 'MISS'}); "
          f"memory {ours['peak_rss_mb'] / base['peak_rss_mb']:.2f} of the baseline")
    if not a.no_check:
        print(f"output checked against the baseline's records: {check_output(src, a.workdir / 'out'):,} boxes match "
              "(caption, file, size, sorted spans, phrase; xyxy within 0.01 px, ovlabel clipping to the image)")


if __name__ == "__main__":
    main()
