"""Class lists for class-list pseudo-labeling (``ovlabel pseudo --classes FILE``): one parser for every form.

A vocabulary is a list of classes in file order; a class is its texts ``[name, synonym, ...]`` (at least the
name). The name is what the detector is prompted with and what CLIP scores crops against; a class's index in
the list is its ``label`` and the output's label map. Accepted files:

- text (UTF-8; a file that is not ``.json`` and does not start with ``[`` or ``{``): one class a line, ``name|synonym|...``; blank lines are skipped, texts stripped;
- a JSON list of names: ``["person", "forklift"]``;
- YOLO-World class texts: a JSON list of lists, the first text the name: ``[["person", "human"], ["car"]]``;
- a label map: MMDetection's ``{"0": "person", "1": "car"}`` (what ``export odvg`` writes; labels 0..N-1),
  a list of categories ``[{"label": 0, "name": "person", "synonyms": [...]}]`` (a manifest's ``categories``,
  docs/format.md), or a dataset directory (its manifest's label map).

Errors (`VocabularyError`) name the file and the line (text) or the JSON entry (``[3]``, ``"2"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from formats.phrase_rules import has_word, phrase_key


class VocabularyError(ValueError):
    """A class list that cannot be read; the message names the file and the line or entry."""


def read_vocabulary(path: str | os.PathLike) -> list[list[str]]:
    """The classes of a class-list file (see the module doc), in file order: ``[[name, synonym, ...], ...]``.

    Raises VocabularyError for a missing or unreadable file, invalid JSON (with its line and column), an
    entry of the wrong type, an empty or wordless name (it cannot be prompted), two classes whose names are
    the same up to case and spaces (`formats.phrase_rules.phrase_key`: one prompt name), or no class at all.
    """
    p = Path(path)
    if p.is_dir():
        return _from_manifest(p)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is no part of a name
    except FileNotFoundError:
        raise VocabularyError(f"{p}: no such class-list file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise VocabularyError(f"{p}: unreadable class list: {e}") from None
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise VocabularyError(f"{p}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
        entries = _from_json(p, data)
    else:
        entries = [(f"line {n}", line.split("|")) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    return _checked(p, entries)


def vocabulary_from_json(data: list | dict, where: str = "classes") -> list[list[str]]:
    """The classes of an already-parsed JSON class list or label map (e.g. ``classes`` in a config); errors
    name `where` in place of a file."""
    return _checked(Path(where), _from_json(Path(where), data))


def _from_json(p: Path, data) -> list[tuple[str, list]]:
    """(where, texts) per class of a JSON class list or label map."""
    if isinstance(data, dict):  # MMDetection's label map {"0": "person", ...}
        try:
            labels = sorted((int(k), k) for k in data)
        except ValueError:
            raise VocabularyError(f"{p}: a label map's keys are labels \"0\", \"1\", ...; got "
                                  f"{next(k for k in data if not _is_int(k))!r}") from None
        if [n for n, _ in labels] != list(range(len(labels))):
            raise VocabularyError(f"{p}: a label map's labels must be 0..{len(labels) - 1}, got "
                                  f"{[n for n, _ in labels]}")
        return [(f'"{k}"', [data[k]]) for _, k in labels]
    if not isinstance(data, list):
        raise VocabularyError(f"{p}: a class list is a JSON list or a label map object, not {type(data).__name__}")
    if data and all(isinstance(x, dict) for x in data):
        return _from_categories(p, data)
    out = []
    for i, x in enumerate(data):
        if isinstance(x, str):
            out.append((f"[{i}]", [x]))
        elif isinstance(x, list) and x:
            out.append((f"[{i}]", x))
        else:
            raise VocabularyError(f"{p}: [{i}]: a class is a name or a non-empty list of texts, got {json.dumps(x)}")
    return out


def _from_categories(p: Path, cats: list[dict]) -> list[tuple[str, list]]:
    """(where, [name, *synonyms]) per category of a label map's category list, in label order when every
    category has a label (they must be 0..N-1), else in list order."""
    if all("label" in c for c in cats):
        labels = [c["label"] for c in cats]
        if sorted(labels) != list(range(len(cats))):
            raise VocabularyError(f"{p}: the categories' labels must be 0..{len(cats) - 1}, got {labels}")
        order = sorted(range(len(cats)), key=lambda i: cats[i]["label"])
    else:
        order = list(range(len(cats)))
    out = []
    for i in order:
        c = cats[i]
        if "name" not in c:
            raise VocabularyError(f"{p}: [{i}]: a category has a \"name\"")
        syn = c.get("synonyms") or []
        if not isinstance(syn, list):
            raise VocabularyError(f"{p}: [{i}]: synonyms is a list of texts, got {json.dumps(syn)}")
        out.append((f"[{i}]", [c["name"], *[s for s in syn if isinstance(s, str) and s.strip() != c["name"]]]))
    return out


def _from_manifest(root: Path) -> list[list[str]]:
    manifest = root / "manifest.json"
    try:
        cats = json.loads(manifest.read_text()).get("categories") or []
    except (OSError, json.JSONDecodeError) as e:
        raise VocabularyError(f"{root}: not a dataset directory with a manifest.json: {e}") from None
    if not cats:
        raise VocabularyError(f"{manifest}: the dataset has no label map (categories is empty)")
    return _checked(manifest, _from_categories(manifest, cats))


def _is_int(k: str) -> bool:
    try:
        int(k)
    except ValueError:
        return False
    return True


def _checked(p: Path, entries: list[tuple[str, list]]) -> list[list[str]]:
    """Texts stripped, blank synonyms and repeats dropped; names checked (text with a word, distinct)."""
    out, seen = [], {}
    for where, texts in entries:
        if not all(isinstance(t, str) for t in texts):
            raise VocabularyError(f"{p}: {where}: class texts are strings, got {json.dumps(texts)}")
        name = texts[0].strip()
        if not name:
            raise VocabularyError(f"{p}: {where}: empty class name")
        if not has_word(name):
            raise VocabularyError(f"{p}: {where}: class name {name!r} has no word character; it cannot be prompted")
        key = phrase_key(name)
        if key in seen:
            raise VocabularyError(f"{p}: {where}: class {name!r} repeats {seen[key][0]} ({seen[key][1]!r})")
        seen[key] = (where, name)
        syn = [t.strip() for t in texts[1:] if t.strip()]
        out.append(list(dict.fromkeys([name, *syn])))
    if not out:
        raise VocabularyError(f"{p}: no classes")
    return out


def vocabulary_categories(vocabulary: list[list[str]]) -> list[dict]:
    """The label map of a class-list output: ``[{"label": i, "name": name}]`` in vocabulary order, with
    ``"synonyms": [name, synonym, ...]`` (LVIS's field, which ``export yolo-world`` reads) when a class has any."""
    return [{"label": i, "name": texts[0], **({"synonyms": list(texts)} if len(texts) > 1 else {})}
            for i, texts in enumerate(vocabulary)]


def class_keys(vocabulary: list[list[str]]) -> dict[str, int]:
    """Each text of each class (name and synonyms) by `formats.phrase_rules.phrase_key` -> the class's label.

    A class's name wins over another class's synonym (``person|man`` and ``man``: "man" is the class "man");
    a synonym that two classes share names the first of them (file order)."""
    keys = {phrase_key(texts[0]): label for label, texts in enumerate(vocabulary)}  # names are distinct
    for label, texts in enumerate(vocabulary):
        for t in texts[1:]:
            keys.setdefault(phrase_key(t), label)
    return keys


def phrases_as_classes(phrases: list[dict] | None, keys: dict[str, int]) -> dict[int, int]:
    """Vocabulary union: the caption phrases that *are* a class (their `phrase_key` is one of the class's
    texts, `class_keys`), as ``{phrase index: label}``. Such a phrase is not prompted on its own: the class's
    prompt finds its boxes, and those regions carry both the class (label, category) and the phrase's spans.
    Two phrases can name one class (``"dog"``, ``"Dog"`` are merged upstream; ``"person"``, ``"human"`` with
    ``person|human``): the first in caption order owns the class's regions, the other is left unprompted."""
    out: dict[int, int] = {}
    for i, p in enumerate(phrases or []):
        label = keys.get(phrase_key(p["phrase"]))
        if label is not None:
            out[i] = label
    return out


def class_owners(phrases: list[dict] | None, keys: dict[str, int]) -> dict[int, int]:
    """``{label: phrase index}``: the first phrase (caption order) that is each class (`phrases_as_classes`)."""
    owners: dict[int, int] = {}
    for i, label in phrases_as_classes(phrases, keys).items():
        owners.setdefault(label, i)
    return owners
