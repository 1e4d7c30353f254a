"""ODinW: a suite of COCO-format detection sets, each prompted with its own class names and scored with the COCO
protocol; the suite's AP is the plain mean of the sets' APs, as GLIP reports it.

Sources: Li et al., "Grounded Language-Image Pre-training" (GLIP, CVPR 2022), ODinW (Object Detection in the
Wild); the 13-set list and its files as MMDetection evaluates them (``configs/odinw/
grounding_dino_swin-t_pretrain_odinw13.py``: each set's ``valid/annotations_without_background.json`` and
images, one ``CocoMetric`` per set); GLIP ``configs/odinw_13/*.yaml``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from detector.eval_gold import EvaluationError

_VALID = ("valid/annotations_without_background.json", "valid")
# name -> (folder under the ODinW root, annotation file, image folder), both relative to the folder
ODINW13: dict[str, tuple[str, str, str]] = {
    "AerialMaritimeDrone": ("AerialMaritimeDrone/large", *_VALID),
    "Aquarium": ("Aquarium/Aquarium Combined.v2-raw-1024.coco", *_VALID),
    "CottontailRabbits": ("CottontailRabbits", *_VALID),
    "EgoHands": ("EgoHands/generic", *_VALID),
    "NorthAmericaMushrooms": ("NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco", *_VALID),
    "Packages": ("Packages/Raw", *_VALID),
    "PascalVOC": ("PascalVOC", *_VALID),
    "pistols": ("pistols/export", "val_annotations_without_background.json", ""),
    "pothole": ("pothole", *_VALID),
    "Raccoon": ("Raccoon/Raccoon.v2-raw.coco", *_VALID),
    "ShellfishOpenImages": ("ShellfishOpenImages/raw", *_VALID),
    "thermalDogsAndPeople": ("thermalDogsAndPeople", *_VALID),
    "VehiclesOpenImages": ("VehiclesOpenImages/416x416", *_VALID),
}
PRESETS = {"odinw13": ODINW13}


def is_suite(path: str | os.PathLike) -> bool:
    """A suite file (JSON with ``datasets``) or a folder that is not an ovlabel dataset (an ODinW root)."""
    p = Path(path)
    if p.is_dir():
        return not (p / "manifest.json").exists()
    if p.suffix == ".json" and p.is_file():
        with p.open() as f:
            head = f.read(4096)
        return '"datasets"' in head and '"annotations"' not in head
    return False


def load_suite(path: str | os.PathLike, preset: str = "odinw13") -> list[dict]:
    """``[{name, gold, image_root}]`` of a suite: a JSON file ``{"datasets": [{name, ann_file, image_root}]}``
    (paths relative to the file) or an ODinW root folder laid out as `preset` (every set must be there:
    the suite's mean is over all of them). Raises `EvaluationError` naming what is missing."""
    p = Path(path)
    if p.is_file():
        try:
            entries = json.loads(p.read_text())["datasets"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise EvaluationError(f"{p}: a suite file is {{\"datasets\": [{{name, ann_file, image_root}}]}}: {e}") from None
        return [{"name": e["name"], "gold": str(p.parent / e["ann_file"]),
                 "image_root": str(p.parent / e.get("image_root", ""))} for e in entries]
    if preset not in PRESETS:
        raise EvaluationError(f"unknown ODinW preset {preset!r}; expected one of {', '.join(PRESETS)}")
    suite = [{"name": n, "gold": str(p / d / ann), "image_root": str(p / d / img)}
             for n, (d, ann, img) in PRESETS[preset].items()]
    missing = [s["gold"] for s in suite if not Path(s["gold"]).is_file()]
    if missing:
        raise EvaluationError(f"{p}: {len(missing)} of the {len(suite)} {preset} sets are missing, e.g. {missing[0]}")
    return suite


def odinw_ap(detector, suite: str | os.PathLike, *, preset: str = "odinw13", max_images: int | None = None) -> dict:
    """The suite's mean COCO AP (``AP``) and every set's COCO metrics under ``datasets``."""
    from detector.evaluate import evaluate_detector

    per = {}
    for s in load_suite(suite, preset):
        per[s["name"]] = evaluate_detector(detector, s["gold"], protocol="coco", image_root=s["image_root"],
                                           max_images=max_images)
    aps = [m["AP"] for m in per.values()]
    ap50 = [m["AP50"] for m in per.values()]
    return {"protocol": "odinw", "AP": sum(aps) / len(aps), "AP50": sum(ap50) / len(ap50),
            "sets": len(per), "datasets": per}
