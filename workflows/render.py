"""Pictures without the App: boxes, phrases and scores drawn on sample images as PNG files."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pyarrow.parquet as pq

from formats.dataset import Dataset, atomic_path
from formats.images import ImageError, decode_image, read_image_bytes

GOLD_COLOUR = (40, 200, 80)
PSEUDO_COLOURS = [(255, 140, 0), (230, 60, 200), (60, 140, 255), (250, 220, 40)]


def choose(image_ids: list[str], n: int, seed: int) -> list[str]:
    """`n` image ids picked by a seeded hash (the same ones for the same seed), in that order."""
    ranked = sorted(image_ids, key=lambda i: hashlib.md5(f"{seed}:{i}".encode()).hexdigest())
    return ranked[:n] if n >= 0 else ranked


def render(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, *, pseudo_dirs: list = (), n: int = 16,
           seed: int = 0) -> list[Path]:
    """Draws gold (green) and each pseudo dataset's boxes (other colours) on `n` images; returns the PNG paths."""
    from PIL import ImageDraw

    base = Dataset(dataset_dir).require_complete()
    pseudos = [Dataset(p).require_complete() for p in pseudo_dirs]
    records = {r["image_id"]: r for p in base.part_paths for r in pq.read_table(p).to_pylist()}
    layers = [(GOLD_COLOUR, {i: [g for g in r["regions"] or [] if g["origin"] in ("gold", "review")]
                             for i, r in records.items()})]
    for k, d in enumerate(pseudos):
        regs = {}
        for p in d.part_paths:
            for r in pq.read_table(p).to_pylist():
                regs[r["image_id"]] = r["regions"] or []
                # pseudo images missing from the base dataset are drawn too
                records.setdefault(r["image_id"], {**r, "_root": d.manifest.image_root, "regions": []})
        layers.append((PSEUDO_COLOURS[k % len(PSEUDO_COLOURS)], regs))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for image_id in choose(sorted(records), n, seed):
        r = records[image_id]
        try:
            img = decode_image(read_image_bytes(r.get("_root", base.manifest.image_root), r["file_name"]), image_id)
        except ImageError:
            continue
        draw = ImageDraw.Draw(img)
        width = max(2, round(max(img.size) / 300))
        for colour, regs in layers:
            for g in regs.get(image_id, []):
                x1, y1, x2, y2 = g["bbox"]
                draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
                text = g.get("phrase") or g.get("category") or ""
                if g.get("score") is not None:
                    text += f" {g['score']:.2f}"
                tw = draw.textlength(text)
                draw.rectangle([x1, max(0, y1 - 12), x1 + tw + 4, max(12, y1)], fill=colour)
                draw.text((x1 + 2, max(0, y1 - 12)), text, fill=(0, 0, 0))
        if r.get("caption"):
            draw.text((4, img.height - 14), r["caption"][:120], fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", image_id)[-80:]
        path = out / f"{safe}-{hashlib.sha1(image_id.encode()).hexdigest()[:6]}.png"
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        written.append(path)
    return written
