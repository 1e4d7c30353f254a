"""Building the FiftyOne review dataset at scale: 100,000 images with 1,000,000 pseudo boxes, in bulk batches.

Generates a caption dataset and a pseudo dataset (10 boxes an image, scores, phrases, region keys) and times
`build_review` on all of it. As a baseline in the same run, a subset is built three ways: bulk batches
(what ovlabel does: raw documents inserted in batches of 2,000), FiftyOne's public bulk path
(`add_samples(samples, validate=False)` with `Detection` objects) and one `add_sample` per image; the ratios
are printed.

Usage: python benchmarks/review_build.py [--images 100000] [--boxes-per-image 10] [--subset 2000] [--subset-only]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FIFTYONE_DATABASE_DIR", tempfile.mkdtemp(prefix="ovlabel-bench-fo-"))

from formats import schema as S  # noqa: E402
from formats.dataset import DatasetWriter, Manifest  # noqa: E402

PHRASES = ["a man", "a red car", "the dog", "a wooden table", "two children", "a street sign", "the sky"]


def make(root: Path, images: int, per: int, seed: int = 0) -> tuple[Path, Path]:
    """A caption dataset and its pseudo dataset, written part by part."""
    rng = np.random.default_rng(seed)
    base, pseudo = root / "captions", root / "pseudo"
    wb = DatasetWriter(base, Manifest(kind="vg", source="bench", image_root=str(root / "images")), overwrite=True)
    wp = DatasetWriter(pseudo, Manifest(kind="vg", source="bench", image_root=str(root / "images"),
                                        config={"round": None}), overwrite=True)
    step = 20_000
    for p, a in enumerate(range(0, images, step)):
        n = min(step, images - a)
        ids = pa.array([f"bench/{i:08d}" for i in range(a, a + n)])
        common = {"image_id": ids, "source": pa.repeat(pa.scalar("bench"), n),
                  "file_name": pa.array([f"{i:08d}.jpg" for i in range(a, a + n)]),
                  "width": pa.array(np.full(n, 640, np.int32)), "height": pa.array(np.full(n, 480, np.int32)),
                  "caption": pa.repeat(pa.scalar("a man and a red car near the dog on the street"), n)}
        wb.write_part(f"part-{p:05d}.parquet", pa.table({**common, "regions": S.empty_regions(n)}))
        m = n * per
        xy = rng.uniform(0, 300, (m, 2))
        wh = rng.uniform(10, 300, (m, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        owner = np.repeat(np.arange(a, a + n), per)
        rid = pa.array([f"bench/{o:08d}#r0c{k}" for o, k in zip(owner, np.tile(np.arange(per), n))])
        regions = S.regions_from_columns(np.arange(0, m + 1, per), boxes, region_id=rid,
                                         phrase=pa.array([PHRASES[k % len(PHRASES)] for k in range(m)]),
                                         score=rng.uniform(0, 1, m), det_score=rng.uniform(0, 1, m),
                                         clip_score=rng.uniform(0, 1, m), origin="pseudo")
        wp.write_part(f"part-{p:05d}.parquet", pa.table({**common, "regions": regions}))
    wb.finish()
    wp.finish()
    return base, pseudo


def _public_samples(base: Path, pseudo: Path) -> list:
    """The subset's samples as FiftyOne objects (public API: `Sample`, `Detections`, `Detection`)."""
    import fiftyone as fo

    from formats.dataset import Dataset
    from workflows.fiftyone_docs import detections_doc

    samples = []
    for r, keys in Dataset(pseudo).iter_keyed(["width", "height", "caption", "source"]):
        raw = detections_doc(r["regions"], keys, r["width"], r["height"])["detections"]
        dets = [fo.Detection(**{k: v for k, v in d.items() if k not in ("_id", "_cls", "tags", "attributes")})
                for d in raw]
        samples.append(fo.Sample(filepath=f"/nonexistent/{r['image_id']}.jpg", image_id=r["image_id"],
                                 caption=r["caption"], source=r["source"], width=r["width"], height=r["height"],
                                 pseudo=fo.Detections(detections=dets)))
    return samples


def public_bulk(base: Path, pseudo: Path, name: str) -> float:
    """FiftyOne's public bulk path: the same samples built as objects and added with
    ``add_samples(samples, validate=False)`` (the issue's candidate to replace the raw documents)."""
    import fiftyone as fo

    t0 = time.perf_counter()
    fds = fo.Dataset(name, overwrite=True)
    fds.add_samples(_public_samples(base, pseudo), validate=False, progress=False)
    return time.perf_counter() - t0


def one_at_a_time(base: Path, pseudo: Path, name: str) -> float:
    """The plain way: the same samples added with one `add_sample` call each."""
    import fiftyone as fo

    t0 = time.perf_counter()
    fds = fo.Dataset(name, overwrite=True)
    for sample in _public_samples(base, pseudo):
        fds.add_sample(sample)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--boxes-per-image", type=int, default=10)
    ap.add_argument("--subset", type=int, default=2_000)
    ap.add_argument("--subset-only", action="store_true", help="compare the three ways on the subset and stop")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ovlabel-bench-review")
    a = ap.parse_args()
    from workflows.review import build_review

    sub_base, sub_pseudo = make(a.workdir / "subset", a.subset, a.boxes_per_image)
    t0 = time.perf_counter()
    build_review(sub_base, [sub_pseudo], name="bench-subset-bulk", rebuild=True, evaluate=False)
    bulk = time.perf_counter() - t0
    public = public_bulk(sub_base, sub_pseudo, "bench-subset-public")
    single = one_at_a_time(sub_base, sub_pseudo, "bench-subset-single")
    print(f"subset {a.subset:,} images x {a.boxes_per_image} boxes: build_review (raw documents in bulk) {bulk:.1f} s; "
          f"public add_samples(validate=False) {public:.1f} s ({public / bulk:.2f}x); one add_sample per image "
          f"{single:.1f} s ({single / bulk:.2f}x)")
    print(f"public bulk path within 1.5x of the raw documents: {'yes' if public <= 1.5 * bulk else 'no'}")
    if a.subset_only:
        return

    base, pseudo = make(a.workdir / "full", a.images, a.boxes_per_image)
    t0 = time.perf_counter()
    fds = build_review(base, [pseudo], name="bench-full", rebuild=True, evaluate=False)
    full = time.perf_counter() - t0
    boxes = fds.count("pseudo.detections")
    print(f"full: {len(fds):,} images, {boxes:,} boxes built in {full:.1f} s "
          f"({len(fds) / full:,.0f} images/s, {boxes / full:,.0f} boxes/s), saved views included")


if __name__ == "__main__":
    main()
