"""`make demo`: the main job on the bundled sample, as a user would run it.

1. converts the hand-labelled gold sample (COCO) and the img2dataset sample (CC3M-style captions);
2. pseudo-labels the captions with the default models (MM-Grounding-DINO-T + CLIP B/32, downloaded on first
   use) through pipelines/cc3m_pseudo.py on a local Ray; exports ODVG and COCO; prints stats;
3. class-list mode: converts the sample's image folder (no captions) and pseudo-labels it with the class list
   examples/sample/classes.txt (`ovlabel pseudo --classes`); exports ODVG OD (with its label map) and COCO.

Offline (the Hugging Face Hub unreachable) and with no --detector/--clip given, it says so and runs the same
pipeline with tiny random-weight models (`ovlabel models tiny`) and zero thresholds: every step runs, but
those boxes are meaningless. Point --detector/--clip at local model folders to run offline for real.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
OVLABEL = [PY, "-m", "workflows.cli"]


def run(cmd: list[str]) -> None:
    print("+ " + " ".join(str(c) for c in cmd).replace(PY + " -m workflows.cli", "ovlabel"), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def hub_reachable(model_id: str) -> bool:
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(model_id)
        return True
    except Exception as e:  # noqa: BLE001 - any failure means: not available here
        print(f"note: cannot load {model_id} ({type(e).__name__}); the Hugging Face Hub looks unreachable", flush=True)
        return False


def main() -> None:
    from detector.models import DEFAULT_CLIP, DEFAULT_DETECTOR

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--detector", default=None)
    ap.add_argument("--clip", default=None)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(exist_ok=True)
    run(OVLABEL + ["convert", "coco", "examples/sample/gold.json", "--source", "custom", "--image-root",
                   "examples/sample/images", "--check-images", "--out", out / "gold", "--overwrite"])
    run(OVLABEL + ["convert", "cc3m", "examples/cc3m_sample", "--out", out / "cc3m", "--overwrite"])
    detector, clip, extra = a.detector, a.clip, []
    if detector is None and clip is None and not hub_reachable(DEFAULT_DETECTOR):
        print("\n*** Offline: running the pipeline with TINY RANDOM-WEIGHT models and zero thresholds. ***\n"
              "*** Every stage runs for real, but these boxes mean nothing. Pass --detector/--clip    ***\n"
              "*** (local folders) or run where the Hub is reachable for real pseudo labels.          ***\n", flush=True)
        run(OVLABEL + ["models", "tiny", "--out", out / "models_tiny"])
        detector, clip = out / "models_tiny" / "detector", out / "models_tiny" / "clip"
        extra = ["--box-threshold", "0", "--fused-threshold", "0", "--image-threshold", "-1"]
    run([PY, "pipelines/cc3m_pseudo.py", "--input", "examples/cc3m_sample", "--out", out / "cc3m_pseudo",
         "--detector", detector or DEFAULT_DETECTOR, "--clip", clip or DEFAULT_CLIP, "--images-per-part", "4",
         "--overwrite", *extra])
    run(OVLABEL + ["export", "odvg", out / "cc3m_pseudo", "--out", out / "cc3m_pseudo.jsonl",
                   "--images-dir", out / "cc3m_images"])  # CC3M images live inside shards: written out as files
    run(OVLABEL + ["export", "coco", out / "cc3m_pseudo", "--out", out / "cc3m_pseudo_coco.json",
                   "--images-dir", out / "cc3m_images"])  # CC3M-Lite style COCO, the same image files
    run(OVLABEL + ["stats", out / "cc3m_pseudo"])
    run(OVLABEL + ["render", out / "cc3m", "--pseudo", out / "cc3m_pseudo", "--out", out / "pictures", "-n", "8"])
    # class-list mode: a folder of images without captions, labelled with the classes of a text file
    run(OVLABEL + ["convert", "images", "examples/sample/images", "--out", out / "photos", "--overwrite"])
    run(OVLABEL + ["pseudo", "--input", out / "photos", "--classes", "examples/sample/classes.txt",
                   "--out", out / "photos_pseudo", "--detector", detector or DEFAULT_DETECTOR,
                   "--clip", clip or DEFAULT_CLIP, "--images-per-part", "4", "--overwrite", *extra])
    run(OVLABEL + ["export", "odvg", out / "photos_pseudo", "--out", out / "photos_pseudo.jsonl"])  # + label map
    run(OVLABEL + ["export", "coco", out / "photos_pseudo", "--out", out / "photos_pseudo_coco.json"])
    run(OVLABEL + ["stats", out / "photos_pseudo"])
    print(f"\ndone: pseudo labels in {out / 'cc3m_pseudo'} (ODVG {out / 'cc3m_pseudo.jsonl'}, "
          f"COCO {out / 'cc3m_pseudo_coco.json'}, pictures in {out / 'pictures'}); gold sample in {out / 'gold'}\n"
          f"class-list labels of the image folder in {out / 'photos_pseudo'} (ODVG OD {out / 'photos_pseudo.jsonl'} "
          f"with {out / 'photos_pseudo.label_map.json'}, COCO {out / 'photos_pseudo_coco.json'})\n"
          f"look at them in FiftyOne: ovlabel review open {out / 'cc3m'} --pseudo {out / 'cc3m_pseudo'}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
