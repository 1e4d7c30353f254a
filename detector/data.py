"""Training examples from dataset directories: prompts, class labels and boxes as Grounding DINO's loss wants them.

The loss of transformers' Grounding DINO reads phrase boundaries from the prompt's special tokens, so every
example's prompt is ``"name one . name two . ..."`` (built by ``detector.prompts.join_prompt``, which blanks
a ``.`` or ``?`` inside a name in the prompt text) and ``class_labels`` index those names:

- OD records (detection data): the image's categories (positives) plus categories sampled from the label
  map (negatives) until the text limit or `negatives` is reached, shuffled, as GLIP and MM-Grounding-DINO
  train detection data;
- VG records (grounding and pseudo data): the image's distinct region phrases.

Names that differ only in case or whitespace (`formats.phrase_rules.phrase_key`, on the name's prompt form)
are one name, the first text seen: "dog", "Dog" and "DOG" are one group in the prompt and their boxes one
class, never each other's negatives.

Crowd and ignore regions (`formats.schema.IGNORE_ORIGINS`) are never trained on: only `TRAIN_ORIGINS` are read.
Boxes become normalised ``cx, cy, w, h``. Pseudo regions carry their score (for loss weighting) and the
example says whether it is pseudo (for classification-only training).
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field

import numpy as np

from detector.prompts import join_prompt, prompt_form
from formats.boxes import xyxy_to_cxcywh
from formats.dataset import Dataset
from formats.images import decode_image, read_image_bytes
from formats.phrase_rules import has_word, phrase_key
from formats.schema import TRAIN_ORIGINS

log = logging.getLogger("ovlabel.train")


@dataclass
class Example:
    """One image to train on."""

    image_root: str | None
    file_name: str
    width: int
    height: int
    names: list[str]  # OD: the image's categories; VG: its phrases
    labels: list[int]  # index into `names` per box
    boxes: np.ndarray  # (N, 4) xyxy pixels
    pseudo: bool = False
    score: float = 1.0  # mean region score (pseudo); 1 for gold
    od: bool = False
    image_id: str = ""
    region_keys: list[str] = field(default_factory=list)


def name_key(name: str, separators: frozenset[str] = frozenset()) -> str:
    """When two names are one prompt name: `phrase_key` of the name as prompted (`prompt_form`)."""
    return phrase_key(prompt_form(name, separators))


def promptable(name: str | None, separators: frozenset[str] = frozenset()) -> bool:
    """The inference rule (`detector.prompts.build_prompts`): a word character outside the separators."""
    return bool(name) and has_word(prompt_form(name, separators))


def distinct_names(names, separators: frozenset[str] = frozenset()) -> list[str]:
    """`names` that are promptable, one per `name_key` (the first text seen), in order."""
    out: dict[str, str] = {}
    for n in names:
        if promptable(n, separators):
            out.setdefault(name_key(n, separators), n)
    return list(out.values())


def load_examples(dataset_dir: str | os.PathLike, *, exclude_keys: set[str] = frozenset(),
                  min_score: float = 0.0, separators: frozenset[str] = frozenset()) -> tuple[list[Example], list[str]]:
    """Examples of a dataset directory (records with at least one box) and its category names (OD).

    `separators` are the tokenizer's separator texts (`detector.prompts.separator_chars`): a name is kept
    by the rule inference uses (`promptable`) and names are one when their `name_key` is.
    """
    ds = Dataset(dataset_dir).require_complete()
    od = ds.manifest.kind == "od"
    out, wordless = [], 0
    for r, ks in ds.iter_keyed(["file_name", "width", "height"]):
        regs = r["regions"] or []
        kept = [(g, k) for g, k in zip(regs, ks) if k not in exclude_keys and g["origin"] in TRAIN_ORIGINS and (
            g["origin"] != "pseudo" or (g["score"] if g["score"] is not None else 1.0) >= min_score)]
        if not kept:
            continue
        names: list[str] = []
        index: dict[str, int] = {}  # name_key -> index into names
        labels, boxes, scores, pseudo = [], [], [], False
        for g, _ in kept:
            name = (g["category"] if od else g["phrase"]) or g["category"] or g["phrase"]
            if not promptable(name, separators):  # no token would carry it (detector.prompts.build_prompts)
                wordless += bool(name)
                continue
            key = name_key(name, separators)
            if key not in index:
                index[key] = len(names)
                names.append(name)
            labels.append(index[key])
            boxes.append(g["bbox"])
            scores.append(g["score"] if g["score"] is not None else 1.0)
            pseudo = pseudo or g["origin"] == "pseudo"
        if not boxes:
            continue
        out.append(Example(ds.manifest.image_root, r["file_name"], r["width"], r["height"], names, labels,
                           np.asarray(boxes, dtype=np.float64), pseudo=pseudo,
                           score=float(np.mean(scores)) if pseudo else 1.0, od=od, image_id=r["image_id"],
                           region_keys=[k for _, k in kept]))
    if wordless:
        log.warning("%s: %d boxes left out: their name has no word character outside separators",
                    dataset_dir, wordless)
    return out, distinct_names((c["name"] for c in ds.manifest.categories), separators)


def prompt_for(ex: Example, all_names: list[str], negatives: int, rng: random.Random,
               count_tokens=None, max_tokens: int = 256) -> tuple[list[str], list[int]]:
    """The names in the prompt (positives and sampled negatives, shuffled) and each box's index into them."""
    names = list(ex.names)
    if ex.od and negatives > 0 and all_names:
        seps = getattr(count_tokens, "separators", frozenset())
        have = {name_key(n, seps) for n in names}
        pool = distinct_names((n for n in all_names if name_key(n, seps) not in have), seps)
        rng.shuffle(pool)
        names += pool[:negatives]
    order = list(range(len(names)))
    rng.shuffle(order)
    shuffled = [names[i] for i in order]
    if count_tokens is not None:  # drop negatives (never positives) until the prompt fits
        while len(shuffled) > len(ex.names) and _tokens(shuffled, count_tokens) > max_tokens:
            neg = [n for n in shuffled if n not in ex.names]
            shuffled.remove(neg[-1])
    where = {n: i for i, n in enumerate(shuffled)}
    return shuffled, [where[ex.names[k]] for k in ex.labels]


def _tokens(names: list[str], count_tokens) -> int:
    return 2 + sum(count_tokens(n) + 1 for n in names)


def prompt_text(names: list[str], separators: frozenset[str] = frozenset()) -> str:
    """``"a . b . c ."``: the separators are the phrase boundaries the model and its loss read."""
    return join_prompt(names, separators)[0]


def load_image(ex: Example):
    """The example's image as a PIL RGB image (capped decode)."""
    return decode_image(read_image_bytes(ex.image_root, ex.file_name), ex.file_name)


def target(ex: Example, labels: list[int]):
    """Grounding DINO's training target: class_labels and normalised cxcywh boxes."""
    import torch

    boxes = np.clip(xyxy_to_cxcywh(ex.boxes, float(ex.width), float(ex.height)), 0.0, 1.0)
    return {"class_labels": torch.as_tensor(labels, dtype=torch.long),
            "boxes": torch.as_tensor(boxes, dtype=torch.float32)}
