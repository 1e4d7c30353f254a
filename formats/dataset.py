"""The dataset directory: ``manifest.json`` + ``records/part-*.parquet`` + ``rejects/part-*.parquet``.

Every file is written under a temporary name and renamed when complete, so a crash never leaves a
half file. The manifest lists the finished parts; a rerun with the same inputs and config skips them.
Reading needs no ovlabel: ``duckdb.sql("select * from 'DIR/records/*.parquet'")`` or pyarrow.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from formats import schema as S
from formats.digest import sha256_file

MANIFEST = "manifest.json"
RECORDS = "records"
REJECTS = "rejects"
TOOL_VERSION = "0.1.0"

REJECT_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string()),
        pa.field("record", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)


class DatasetError(ValueError):
    """A dataset directory is missing, incomplete, or does not match what was asked."""


def _tmp_name(path: Path) -> Path:
    """A temp name beside `path`, unique per process and thread (hidden, so globs skip it)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a temp file in the same folder and a rename."""
    path = Path(path)
    tmp = _tmp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


class atomic_path:
    """Context manager yielding a temp path beside `path`; renamed onto `path` only if the block succeeds."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp = _tmp_name(self.path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def input_entry(path: str | os.PathLike, sha256: str | None = None) -> dict:
    """Provenance entry for an input file: absolute path, size and sha256."""
    p = Path(path)
    return {"path": str(p.resolve()), "size": p.stat().st_size, "sha256": sha256 or sha256_file(p)}


@dataclass
class Manifest:
    """Dataset-level facts, stored once in manifest.json."""

    kind: str  # "od" or "vg"
    source: str
    image_root: str | None = None
    # the label map: [{"label", "name", "id" (the source's category id), LVIS "synonyms", "def", "frequency", ...}]
    categories: list[dict] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    parts: list[dict] = field(default_factory=list)
    reject_parts: list[str] = field(default_factory=list)
    complete: bool = False
    format: str = S.FORMAT_NAME
    format_version: int = S.FORMAT_VERSION

    def to_json(self) -> dict:
        return {
            "format": self.format,
            "format_version": self.format_version,
            "kind": self.kind,
            "source": self.source,
            "image_root": self.image_root,
            "complete": self.complete,
            "counts": self.counts,
            "parts": self.parts,
            "reject_parts": self.reject_parts,
            "extra_columns": self.extra_columns,
            "config": self.config,
            "provenance": self.provenance,
            "categories": self.categories,
        }

    @classmethod
    def from_json(cls, d: dict) -> Manifest:
        if d.get("format") != S.FORMAT_NAME:
            raise DatasetError(f"not an ovlabel dataset manifest (format={d.get('format')!r})")
        if int(d.get("format_version", 0)) > S.FORMAT_VERSION:
            raise DatasetError(f"manifest format_version {d['format_version']} is newer than this ovlabel supports")
        keys = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in keys})

    def label_map(self) -> dict[str, str]:
        """MMDetection's label map: label id (as a string) -> category name."""
        return {str(c["label"]): c["name"] for c in self.categories}

    def category_ids(self) -> dict[int, int]:
        """Label -> COCO category id: the source's ids when every category has a distinct integer ``id``
        (COCO, LVIS, Objects365 conversions), else ``label + 1`` (Open Images MIDs, VG data, ...)."""
        ids = {int(c["label"]): c.get("id") for c in self.categories}
        if all(isinstance(v, int) and not isinstance(v, bool) for v in ids.values()) and \
                len(set(ids.values())) == len(ids):
            return ids
        return {label: label + 1 for label in ids}

    def totals(self) -> dict[str, int]:
        """Images and boxes over the listed parts."""
        return {"images": sum(int(p["rows"]) for p in self.parts), "boxes": sum(int(p["boxes"]) for p in self.parts)}


def provenance(inputs: Iterable[dict], **more: Any) -> dict:
    """The how-it-was-made block: command line, inputs with checksums, tool version, time."""
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "inputs": list(inputs),
        "tool": "ovlabel",
        "tool_version": TOOL_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **more,
    }


def derived_manifest(src: Dataset, config: dict, *, extra_columns: list[str] | None = None,
                     **provenance_more: Any) -> Manifest:
    """The manifest of a dataset made from `src`: same kind, source, image root and label map."""
    m = src.manifest
    return Manifest(kind=m.kind, source=m.source, image_root=m.image_root, categories=m.categories,
                    extra_columns=m.extra_columns if extra_columns is None else extra_columns, config=config,
                    provenance=provenance([{"path": str(src.root.resolve()), "dataset": True}], **provenance_more))


class Dataset:
    """A dataset directory on disk: read its manifest and records."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise DatasetError(f"{self.root}: no {MANIFEST}; not an ovlabel dataset directory")
        try:
            self.manifest = Manifest.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise DatasetError(f"{path}: unreadable manifest: {e}") from e

    def require_complete(self) -> Dataset:
        """Raises unless every part was written (the writer finished)."""
        if not self.manifest.complete:
            raise DatasetError(f"{self.root}: dataset is incomplete (its writer did not finish); rerun it to resume")
        return self

    @property
    def part_paths(self) -> list[Path]:
        return [self.root / RECORDS / p["name"] for p in self.manifest.parts]

    @property
    def reject_paths(self) -> list[Path]:
        return [self.root / REJECTS / name for name in self.manifest.reject_parts]

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """All records as one table, in part order."""
        paths = self.part_paths
        if not paths:
            return S.record_schema().empty_table()
        return pa.concat_tables([S.upgrade(pq.read_table(p, columns=columns)) for p in paths])

    def iter_tables(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Records part by part (bounded memory), in the current layout (`formats.schema.upgrade`)."""
        for p in self.part_paths:
            yield S.upgrade(pq.read_table(p, columns=columns))

    def iter_keyed(self, columns: list[str]) -> Iterator[tuple[dict, list[str]]]:
        """Each record (`columns` plus image_id and regions) with the keys of its regions, part by part."""
        for t in self.iter_tables(list(dict.fromkeys(["image_id", "regions", *columns]))):
            keys = S.region_keys(t.column("image_id").combine_chunks(), t.column("regions").combine_chunks()).to_pylist()
            at = 0
            for r in t.to_pylist():
                n = len(r["regions"] or [])
                yield r, keys[at:at + n]
                at += n

    @property
    def has_scores(self) -> bool:
        """True when any region is pseudo or reviewed (they carry scores; gold, crowd and ignore regions do not)."""
        return any(o in ("pseudo", "review") for p in self.manifest.parts for o in p.get("origins", {}))

    def read_rejects(self) -> pa.Table:
        paths = self.reject_paths
        if not paths:
            return REJECT_SCHEMA.empty_table()
        return pa.concat_tables([pq.read_table(p) for p in paths])

    def parquet_glob(self) -> str:
        """A glob over the record parts for duckdb."""
        return str(self.root / RECORDS / "*.parquet")


def prior_run(root: str | os.PathLike, resume_key: dict, overwrite: bool) -> Manifest | None:
    """Checks an output folder before work starts.

    Returns the manifest of a complete dataset made from the same inputs and settings (nothing to do),
    None when the folder is free (absent, empty, an unfinished run of the same key, or `overwrite`), and
    raises DatasetError when it holds something else.
    """
    root = Path(root)
    if overwrite or not root.exists() or not any(root.iterdir()):
        return None
    if not (root / MANIFEST).is_file():
        raise DatasetError(f"{root} exists and is not an ovlabel dataset; choose an empty --out")
    m = Dataset(root).manifest
    if m.config.get("_resume_key") != _fingerprint(resume_key):
        raise DatasetError(f"{root} holds a dataset made from other inputs or settings; "
                           "pass --overwrite to start over, or choose another --out")
    return m if m.complete else None


class DatasetWriter:
    """Writes a dataset directory part by part; resumes when the manifest's config and inputs match.

    ``with DatasetWriter(out, manifest, overwrite=...) as w: w.write_part(name, table) ...``
    """

    def __init__(self, root: str | os.PathLike, manifest: Manifest, *, overwrite: bool = False,
                 resume_key: dict | None = None):
        self.root = Path(root)
        self.manifest = manifest
        self.resume_key = resume_key if resume_key is not None else {
            "config": manifest.config,
            "inputs": [(i.get("path"), i.get("sha256")) for i in manifest.provenance.get("inputs", [])],
        }
        self.manifest.config = {**manifest.config, "_resume_key": _fingerprint(self.resume_key)}
        self._done: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._open(overwrite)

    def _open(self, overwrite: bool) -> None:
        path = self.root / MANIFEST
        if path.exists():
            if overwrite:
                shutil.rmtree(self.root)
            else:
                old = Dataset(self.root).manifest
                if old.config.get("_resume_key") != self.manifest.config["_resume_key"]:
                    raise DatasetError(
                        f"{self.root} holds a dataset made from other inputs or settings; "
                        "pass --overwrite to start over, or choose another --out"
                    )
                self._done = {p["name"]: p for p in old.parts}
                self.manifest.reject_parts = list(old.reject_parts)
                self.manifest.counts = dict(old.counts)
        elif self.root.exists() and any(self.root.iterdir()):
            if not overwrite:
                raise DatasetError(f"{self.root} exists and is not an ovlabel dataset; choose an empty --out")
            shutil.rmtree(self.root)
        (self.root / RECORDS).mkdir(parents=True, exist_ok=True)
        (self.root / REJECTS).mkdir(parents=True, exist_ok=True)
        for stale in self.root.rglob(".*.tmp-*"):  # left by a crash anywhere in the dataset (records, candidates...)
            stale.unlink(missing_ok=True)
        self.manifest.parts = [p for p in self._done.values()]
        self._save()

    def is_done(self, name: str) -> bool:
        return name in self._done

    def write_part(self, name: str, table: pa.Table, *, validate: bool = True, **meta: Any) -> dict:
        """Writes one records part atomically and records it in the manifest."""
        return self.add_part(write_part_file(self.root, name, table, validate=validate), **meta)

    def add_part(self, entry: dict, **meta: Any) -> dict:
        """Records a part written by `write_part_file` (possibly in another process) in the manifest."""
        entry = {**entry, **meta}
        with self._lock:
            self._done[entry["name"]] = entry
            self.manifest.parts = sorted(self._done.values(), key=lambda p: p["name"])
            self._save()
        return entry

    def write_rejects(self, name: str, rows: pa.Table | list[dict]) -> None:
        """Writes rejected records or boxes with their reasons (file, record, reason, detail)."""
        if write_rejects_file(self.root, name, rows):
            self.add_rejects(name)

    def add_rejects(self, name: str) -> None:
        """Records a rejects file written by `write_rejects_file` in the manifest."""
        with self._lock:
            if name not in self.manifest.reject_parts:
                self.manifest.reject_parts.append(name)
                self._save()

    def finish(self, counts: dict | None = None) -> Manifest:
        """Marks the dataset complete with its final counts."""
        if counts is not None:
            self.manifest.counts = counts
        for k, v in self.manifest.totals().items():
            self.manifest.counts.setdefault(k, v)
        self.manifest.complete = True
        with self._lock:
            self._save()
        return self.manifest

    def _save(self) -> None:
        atomic_write_json(self.root / MANIFEST, self.manifest.to_json())

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        return None


_DICT_COLUMNS = ["source", "regions.list.element.category", "regions.list.element.origin",
                 "regions.list.element.phrase"]
_STAT_COLUMNS = ["image_id", "source", "width", "height"]


def part_ranges(n: int, max_rows: int) -> list[tuple[int, int]]:
    """[start, end) row ranges splitting `n` rows into the fewest parts of at most `max_rows`, sizes balanced."""
    parts = max(1, -(-n // max(1, max_rows)))
    bounds = [n * p // parts for p in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def write_part_file(root: str | os.PathLike, name: str, table: pa.Table, *, validate: bool = True) -> dict:
    """Writes one records part of the dataset at `root` atomically; returns its manifest entry.

    Safe in worker processes: the manifest is left to the writer (`DatasetWriter.add_part`).
    """
    if validate:
        S.validate(table)
    with atomic_path(Path(root) / RECORDS / name) as tmp:
        write_parquet(table, tmp)
    return {"name": name, "rows": table.num_rows, **_region_counts(table)}


def write_rejects_file(root: str | os.PathLike, name: str, rows: pa.Table | list[dict]) -> bool:
    """Writes a rejects file (file, record, reason, detail) atomically; False when there is nothing to write."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(
        [{k: (None if r.get(k) is None else str(r.get(k))) for k in REJECT_SCHEMA.names} for r in rows],
        schema=REJECT_SCHEMA,
    )
    if table.num_rows == 0:
        return False
    with atomic_path(Path(root) / REJECTS / name) as tmp:
        pq.write_table(table.cast(REJECT_SCHEMA), tmp, compression="zstd")
    return True


def write_parquet(table: pa.Table, path: str | os.PathLike) -> None:
    """Writes records as parquet: zstd, dictionaries only where values repeat, statistics on top-level keys."""
    names = set(table.column_names)
    pq.write_table(
        table, path, compression="zstd", row_group_size=64 * 1024,
        use_dictionary=[c for c in _DICT_COLUMNS if c.split(".")[0] in names],
        write_statistics=[c for c in _STAT_COLUMNS if c in names],
    )


def _region_counts(table: pa.Table) -> dict:
    """Boxes in a records table and how many of each origin."""
    origins = pa.chunked_array([c.flatten().field("origin") for c in table.column("regions").chunks],
                               type=pa.string())
    counts = {d["values"]: d["counts"] for d in pc.value_counts(origins).to_pylist() if d["values"] is not None}
    return {"boxes": len(origins), "origins": dict(sorted(counts.items()))}


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
