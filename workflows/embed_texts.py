"""`ovlabel embed-texts`: the N x D CLIP text-embedding array YOLO-World's prompt tuning takes.

One row per class in label-map order. ``--synonyms first`` (the default) embeds each class's first text, as
YOLO-World's ``tools/generate_text_prompts.py`` and its evaluation do (the bare name: ``bat`` for
``bat_(animal)``, `formats.export.yolo_world.class_texts`); ``--synonyms mean`` takes the normalised mean of
every synonym's embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from formats.dataset import Dataset, atomic_path
from formats.export.yolo_world import class_texts


def load_class_texts(source: str | Path) -> list[list[str]]:
    """Class names (with synonyms): a dataset directory's label map (YOLO-World's class texts of it), a
    class-texts JSON file (``[["cat"], ["tv", "monitor"]]``), or a text class list as ``pseudo --classes``
    reads it (one class a line, ``name|synonym``; `labeling.vocabulary.read_vocabulary`).

    Raises ValueError naming the file: missing, invalid JSON, or not a list of lists of names."""
    p = Path(source)
    if p.is_dir():
        return [class_texts(c) for c in Dataset(p).manifest.categories]
    if p.suffix.lower() != ".json":
        from labeling.vocabulary import read_vocabulary

        return read_vocabulary(p)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, list) or not all(isinstance(x, list) and x and all(isinstance(s, str) for s in x) for x in data):
        raise ValueError(f"{p}: expected a JSON list of lists of names, e.g. [[\"cat\"], [\"tv\", \"monitor\"]]")
    return data


SYNONYM_MODES = ("first", "mean")


def embed_texts(source: str | Path, model: str, out: str | Path, synonyms: str = "first") -> dict:
    """Writes the (classes, dim) float32 array to `out` (.npy); returns its shape. `synonyms`: "first" or "mean"."""
    from detector.clip_scorer import RegionScorer

    if synonyms not in SYNONYM_MODES:
        raise ValueError(f"--synonyms {synonyms!r}: expected one of {', '.join(SYNONYM_MODES)}")
    classes = load_class_texts(source)
    if synonyms == "first":
        classes = [names[:1] for names in classes]
    scorer = RegionScorer(model)
    flat = [t for names in classes for t in names]
    emb = scorer.embed_texts(flat)
    rows, at = [], 0
    for names in classes:
        v = emb[at:at + len(names)].mean(0)
        rows.append(v / max(np.linalg.norm(v), 1e-12))
        at += len(names)
    arr = np.stack(rows).astype(np.float32)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)
    return {"file": str(out), "shape": list(arr.shape), "classes": len(classes), "synonyms": synonyms}
