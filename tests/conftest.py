"""Shared fixtures: small COCO files written by the tests, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# property-based tests (tests/test_properties.py) try the same examples on every run and machine
settings.register_profile("ovlabel", derandomize=True, database=None, print_blob=True)
settings.load_profile("ovlabel")

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def coco_doc(n_images: int = 3, cats=((1, "person"), (2, "car"), (3, "Cabinet/shelf")), boxes=None) -> dict:
    """A small valid COCO document; `boxes` maps image id -> list of (category_id, [x, y, w, h])."""
    images = [{"id": i, "file_name": f"img/{i:04d}.jpg", "width": 640, "height": 480} for i in range(1, n_images + 1)]
    if boxes is None:
        boxes = {i: [(1 + (i + k) % len(cats), [10.0 * k + 1, 20.0, 30.5, 40.25]) for k in range(i)]
                 for i in range(1, n_images + 1)}
    anns, aid = [], 1
    for img, lst in boxes.items():
        for cat, bb in lst:
            anns.append({"id": aid, "image_id": img, "category_id": cat, "bbox": bb,
                         "area": bb[2] * bb[3], "iscrowd": 0})
            aid += 1
    return {"info": {"year": 2026}, "images": images, "annotations": anns,
            "categories": [{"id": c, "name": n, "supercategory": "x"} for c, n in cats]}


@pytest.fixture
def write_json(tmp_path):
    def write(doc, name="ann.json", indent=None) -> Path:
        p = tmp_path / name
        p.write_text(json.dumps(doc, indent=indent))
        return p
    return write


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `python -m workflows.cli ARGS` as a user would; returns the completed process."""
    proc = subprocess.run([sys.executable, "-m", "workflows.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"ovlabel {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stderr}")
    return proc


EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight detector and CLIP, saved and loaded back like real checkpoints."""
    from detector.tiny import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def sample_gold(tmp_path_factory):
    """The bundled sample's hand-drawn gold boxes as a dataset directory (read-only for tests)."""
    out = tmp_path_factory.mktemp("sample_gold") / "gold"
    run_cli("convert", "coco", EXAMPLES / "sample" / "gold.json", "--source", "custom",
            "--image-root", EXAMPLES / "sample" / "images", "--out", out)
    return out


@pytest.fixture
def sample_images():
    from PIL import Image

    return [Image.open(EXAMPLES / "sample" / "images" / n).convert("RGB") for n in ("coffee.jpg", "rocket.jpg")]


@pytest.fixture(scope="session")
def image_server(tmp_path_factory):
    """A local http.server on 127.0.0.1 serving the sample photos, plus `corrupt.jpg` (bytes that do not decode)."""
    import functools
    import http.server
    import shutil
    import threading

    root = tmp_path_factory.mktemp("www")
    for p in (EXAMPLES / "sample" / "images").glob("*.jpg"):
        shutil.copy(p, root / p.name)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(__import__("http.server").server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass
