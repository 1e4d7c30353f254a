"""The dataset directory: ``manifest.json`` + ``records/part-*.parquet`` + ``rejects/part-*.parquet``.

Every file is written whole or not at all (a temp name and a rename on a local disk, one upload on an object
store), so a crash never leaves a half file. A rerun with the same inputs and config skips the finished parts.
Reading needs no ovlabel: ``duckdb.sql("select * from 'DIR/records/*.parquet'")`` or pyarrow.

Recording a finished part costs the same at the 20,000th part as at the first. While a writer runs, each
finished part gets one small completion record, ``_done/records/<part name>.json`` (``{"key", "part"}``: the
run's resume fingerprint and the part's manifest entry), and each rejects file one in ``_done/rejects/``,
written after the part (or rejects) file itself. `DatasetWriter.finish` folds them into ``manifest.json``
(parts sorted by name) and then deletes ``_done/``; a writer that opens an unfinished dataset writes the
manifest with the records it finds folded in and leaves them for `finish` to delete. Rewriting the whole
manifest after every part, as before, wrote every earlier part's entry again each time (quadratic bytes; the
driver slowed as the run grew).

Rules, and why:

- A part is visible only once its completion record exists: readers (`Dataset`, so duckdb views, stats,
  exports) take ``manifest.json``'s parts plus, while the manifest says ``complete: false``, the records
  under ``_done/`` whose ``key`` is the manifest's ``_resume_key``; an unfinished dataset therefore reads
  the same before and after the fold. A finished manifest is complete on its own: records left by a crash
  between ``finish``'s manifest write and its cleanup are ignored (they repeat parts the manifest lists).
- A crash between a part file and its record leaves a part file nobody lists; the next writer deletes part
  and rejects files that are not recorded (and hidden temp files) and the rerun writes that part again.
  Records of another key, or unreadable ones, are ignored by readers and deleted by the next writer; so are
  records beside a complete manifest.
- A record is written once under a name unique to its part (a redone part rewrites the same content), so
  threads and processes never contend for one file and nothing needs a lock or a read-modify-write.

Where a dataset lives (`formats.storage.Folder`): a local directory, ``file://``, ``s3://bucket/prefix`` or
``gs://bucket/prefix``. Every file goes through the folder, which writes whole-or-nothing: on a local disk a temp
file, fsync and rename; on an object store (no atomic rename; issue 17 item 2) one PUT, or one upload of a
finished local temp file, under the file's final name. Nothing else changes: a part is visible only through its
completion record (one small object, written after the part, named for its part), records are found by a
prefix listing and deleted by deleting the prefix, and a crashed writer's part files that no record lists are
deleted by the next writer as on a local disk, so a rerun resumes the same way. ``manifest.json`` is replaced as
one object. Credentials are never written: manifests name a store by its URL without them (`formats.storage`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
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
from formats import storage
from formats.digest import sha256_file
from formats.faults import crash_point
from formats.storage import Folder, redact
from formats.storage import (
    atomic_path as atomic_path,  # re-exported: a temp path that becomes `path` (local or URL)
)

MANIFEST = "manifest.json"
RECORDS = "records"
REJECTS = "rejects"
DONE = "_done"  # completion records of an unfinished run: _done/records/<part>.json, _done/rejects/<part>.json
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` (a local path or an object-store URL) whole or not at all (`formats.storage`)."""
    storage.write_bytes(path, data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


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
        """The manifest of a parsed manifest.json; raises `DatasetError` when `d` is not an ovlabel manifest or
        its format_version is newer than this ovlabel reads."""
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
        "command": redact(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])),  # never a URL's credentials
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
                    provenance=provenance([{"path": storage.display(src.folder), "dataset": True}], **provenance_more))


def _root(folder: Folder) -> Path | Folder:
    """What `Dataset.root` / `DatasetWriter.root` hold: a `Path` for a local dataset (as ever), else the folder."""
    return Path(folder.path) if folder.is_local else folder


class Dataset:
    """A dataset directory, local or on an object store (`formats.storage.Folder`): read its manifest and records.

    `root` is a `Path` for a local dataset and the `Folder` (shown as its URL) for one on an object store;
    `folder` is the `Folder` in both cases. Opening one raises `DatasetError` when the folder has no
    manifest.json or an unreadable one (not JSON, not an ovlabel manifest, a newer format version)."""

    def __init__(self, root: str | os.PathLike | Folder):
        self.folder = Folder(root)
        self.root = _root(self.folder)
        if not self.folder.isfile(MANIFEST):
            raise DatasetError(f"{self.root}: no {MANIFEST}; not an ovlabel dataset directory")
        try:
            self.manifest = Manifest.from_json(json.loads(self.folder.read_bytes(MANIFEST)))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{self.folder.url_of(MANIFEST)}: unreadable manifest: {e}") from e
        self._stale_commits: list[str] = []  # records that list nothing (another key, unreadable): for the writer
        if not self.manifest.complete:  # a run in progress or interrupted: its parts are recorded under _done/
            _fold(self.manifest, *_list_commits(self.folder, self.manifest.config.get("_resume_key"),
                                                self._stale_commits))

    def require_complete(self) -> Dataset:
        """Raises unless every part was written (the writer finished)."""
        if not self.manifest.complete:
            raise DatasetError(f"{self.root}: dataset is incomplete (its writer did not finish); rerun it to resume")
        return self

    @property
    def part_paths(self) -> list:
        """The record parts' locations: `Path`s for a local dataset, URLs (``s3://...``) on an object store
        (read those through `read_part` or a duckdb connection given `folder.register`)."""
        return [self._location(f"{RECORDS}/{p['name']}") for p in self.manifest.parts]

    @property
    def reject_paths(self) -> list:
        """The rejects files' locations (as `part_paths`)."""
        return [self._location(f"{REJECTS}/{name}") for name in self.manifest.reject_parts]

    def _location(self, rel: str):
        return self.root / rel if self.folder.is_local else self.folder.url_of(rel)

    def read_part(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """One records part as stored (use `iter_tables` for the current layout)."""
        return self.folder.read_parquet(f"{RECORDS}/{name}", columns=columns)

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """All records as one table, in part order."""
        if not self.manifest.parts:
            return S.record_schema().empty_table()
        return pa.concat_tables(list(self.iter_tables(columns)))

    def iter_tables(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Records part by part (bounded memory), in the current layout (`formats.schema.upgrade`)."""
        for p in self.manifest.parts:
            yield S.upgrade(self.read_part(p["name"], columns=columns))

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
        names = self.manifest.reject_parts
        if not names:
            return REJECT_SCHEMA.empty_table()
        return pa.concat_tables([self.folder.read_parquet(f"{REJECTS}/{n}") for n in names])

    def parquet_glob(self) -> str:
        """A glob over the record parts for duckdb (a URL on an object store: register `folder` first)."""
        return str(self._location(RECORDS)) + "/*.parquet"


def _nothing_done(m: Manifest) -> str:
    """A note for the refusal to reuse an output: an unfinished run that recorded no part loses nothing."""
    return "" if m.complete or m.parts or m.reject_parts else " (an unfinished run that recorded no part)"


def prior_run(root: str | os.PathLike, resume_key: dict, overwrite: bool) -> Manifest | None:
    """Checks an output folder before work starts.

    Returns the manifest of a complete dataset made from the same inputs and settings (nothing to do),
    None when the folder is free (absent, empty, an unfinished run of the same key, or `overwrite`), and
    raises DatasetError when it holds something else.
    """
    root = Folder(root)
    if overwrite or root.is_empty():
        return None
    if not root.isfile(MANIFEST):
        raise DatasetError(f"{root} exists and is not an ovlabel dataset; choose an empty --out")
    m = Dataset(root).manifest
    if m.config.get("_resume_key") != _fingerprint(resume_key):
        raise DatasetError(f"{root} holds a dataset made from other inputs or settings{_nothing_done(m)}; "
                           "pass --overwrite to start over, or choose another --out")
    return m if m.complete else None


class DatasetWriter:
    """Writes a dataset directory part by part; resumes when the manifest's config and inputs match.

    ``with DatasetWriter(out, manifest, overwrite=...) as w: w.write_part(name, table) ...; w.finish(counts)``

    A finished part is recorded by one completion record (see the module docstring), so recording costs the
    same whatever the number of parts before it; ``manifest.json`` is written when the writer opens (with the
    parts of an earlier run folded in) and by `finish`. Safe to call from several threads.
    """

    def __init__(self, root: str | os.PathLike | Folder, manifest: Manifest, *, overwrite: bool = False,
                 resume_key: dict | None = None):
        self.folder = Folder(root)
        self.root = _root(self.folder)  # a Path for a local dataset, else the Folder (see `Dataset`)
        self._manifest = manifest
        self.resume_key = resume_key if resume_key is not None else {
            "config": manifest.config,
            "inputs": [(i.get("path"), i.get("sha256")) for i in manifest.provenance.get("inputs", [])],
        }
        self._key = _fingerprint(self.resume_key)
        manifest.config = {**manifest.config, "_resume_key": self._key}
        self._done: dict[str, dict] = {}
        self._rejects_base: list[str] = list(manifest.reject_parts)  # as folded when the writer opened
        self._rejects_new: set[str] = set()  # recorded by this writer; listed after the base, sorted
        self._changed = True  # parts or rejects recorded since `manifest` last sorted them
        self._finished = False
        self._lock = threading.Lock()
        self._open(overwrite)

    @property
    def manifest(self) -> Manifest:
        """The manifest as `finish` will write it: every recorded part, sorted by name, and every rejects file.

        Built when read, not when a part is recorded, so recording stays O(1) per part.
        """
        with self._lock:
            self._sync()
        return self._manifest

    def _sync(self) -> None:
        """Brings the manifest's parts and rejects lists up to date (the caller holds the lock)."""
        if self._changed:
            self._manifest.parts = sorted(self._done.values(), key=lambda p: p["name"])
            self._manifest.reject_parts = self._rejects_base + sorted(self._rejects_new - set(self._rejects_base))
            self._changed = False

    def _open(self, overwrite: bool) -> None:
        folder = self.folder
        if folder.exists(MANIFEST):
            if overwrite:
                folder.rm_tree()
            else:
                ds = Dataset(folder)
                old = ds.manifest  # with the parts an unfinished run recorded under _done/
                if old.config.get("_resume_key") != self._key:
                    raise DatasetError(
                        f"{self.root} holds a dataset made from other inputs or settings{_nothing_done(old)}; "
                        "pass --overwrite to start over, or choose another --out"
                    )
                self._done = {p["name"]: p for p in old.parts}
                self._rejects_base = list(old.reject_parts)
                self._manifest.counts = dict(old.counts)
                if old.complete:  # records beside a complete manifest repeat it (finish died before deleting them)
                    _clear_commits(folder)
                for rel in ds._stale_commits:
                    folder.rm(rel)
        elif not folder.is_empty():
            if not overwrite:
                raise DatasetError(f"{self.root} exists and is not an ovlabel dataset; choose an empty --out")
            folder.rm_tree()
        folder.makedirs(RECORDS)
        folder.makedirs(REJECTS)
        self._sweep()
        with self._lock:
            self._save()  # an earlier run's records stay until `finish` (deleting them costs as much as writing them)
        folder.makedirs(f"{DONE}/{RECORDS}")
        folder.makedirs(f"{DONE}/{REJECTS}")

    def _sweep(self) -> None:
        """Deletes what a crashed writer left: hidden temp files anywhere in the dataset (records, candidates...;
        local disks only: object stores get no temp names) and part or rejects files that no record lists
        (written, then the process died before recording them; the rerun writes them again)."""
        if self.folder.is_local:
            for stale in self.root.rglob(storage.TMP_GLOB):
                stale.unlink(missing_ok=True)
        for sub, listed in ((RECORDS, self._done.keys()), (REJECTS, set(self._rejects_base))):
            for name in self.folder.list(sub):
                if name not in listed:
                    self.folder.rm(f"{sub}/{name}")

    def is_done(self, name: str) -> bool:
        return name in self._done

    def write_part(self, name: str, table: pa.Table, *, validate: bool = True, **meta: Any) -> dict:
        """Writes one records part atomically and records it as finished."""
        return self.add_part(write_part_file(self.root, name, table, validate=validate), **meta)

    def add_part(self, entry: dict, **meta: Any) -> dict:
        """Records a part written by `write_part_file` (possibly in another process) as finished: one
        completion record, written after the part file, so a part is never listed before it is whole."""
        entry = {**entry, **meta}
        self._check_open()
        _commit(self.folder, f"{DONE}/{RECORDS}/{entry['name']}.json", {"key": self._key, "part": entry})
        with self._lock:
            self._done[entry["name"]] = entry
            self._changed = True
        crash_point("part")  # tests: die here, after the record (formats.faults)
        return entry

    def write_rejects(self, name: str, rows: pa.Table | list[dict]) -> None:
        """Writes rejected records or boxes with their reasons (file, record, reason, detail)."""
        if write_rejects_file(self.root, name, rows):
            self.add_rejects(name)

    def add_rejects(self, name: str) -> None:
        """Records a rejects file written by `write_rejects_file` (one completion record; once per name)."""
        self._check_open()
        with self._lock:
            if name in self._rejects_new or name in self._rejects_base:
                return
        _commit(self.folder, f"{DONE}/{REJECTS}/{name}.json", {"key": self._key, "rejects": name})
        with self._lock:
            self._rejects_new.add(name)
            self._changed = True

    def finish(self, counts: dict | None = None) -> Manifest:
        """Marks the dataset complete with its final counts: folds every record into ``manifest.json``, then
        deletes them (a crash in between leaves records a complete manifest already lists; readers ignore them)."""
        m = self.manifest
        if counts is not None:
            m.counts = counts
        for k, v in m.totals().items():
            m.counts.setdefault(k, v)
        m.complete = True
        with self._lock:
            self._finished = True
            self._save()
        _clear_commits(self.folder)
        return m

    def _check_open(self) -> None:
        if self._finished:
            raise DatasetError(f"{self.root}: the writer has finished; open a new DatasetWriter to add parts")

    def _save(self) -> None:
        """Writes ``manifest.json`` whole (the caller holds the lock): when the writer opens and in `finish` only."""
        self._sync()
        self.folder.write_json(MANIFEST, self._manifest.to_json())

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        return None


def _commit(folder: Folder, rel: str, record: dict) -> None:
    """Makes one completion record visible, whole or not at all (`Folder.write_bytes`: a temp file, fsync and
    rename on a local disk; one PUT of the object on an object store)."""
    folder.write_bytes(rel, json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode())


def _list_commits(folder: Folder, key: str | None, stale: list[str] | None = None) -> tuple[dict[str, dict], list[str]]:
    """The parts (name -> manifest entry) and rejects files (sorted) recorded under ``_done/`` for `key`.

    Temp files, unreadable records and records of another key (an earlier run's leftovers) are skipped: what
    they name is not finished for this run. The last two are added to `stale` (paths relative to `folder`).
    """
    parts: dict[str, dict] = {}
    rejects: list[str] = []
    for sub in (RECORDS, REJECTS):
        where = f"{DONE}/{sub}"
        names = [n for n in folder.list(where) if n.endswith(".json") and not n.startswith(".")]
        for file in names:
            name = file.removesuffix(".json")
            try:
                rec = json.loads(folder.read_bytes(f"{where}/{file}"))
            except (OSError, ValueError):
                rec = None
            if not isinstance(rec, dict) or rec.get("key") != key:
                pass
            elif sub == RECORDS and isinstance(rec.get("part"), dict) and rec["part"].get("name") == name:
                parts[name] = rec["part"]
                continue
            elif sub == REJECTS and rec.get("rejects") == name:
                rejects.append(name)
                continue
            if stale is not None:
                stale.append(f"{where}/{file}")
    return parts, rejects


def _fold(m: Manifest, parts: dict[str, dict], rejects: list[str]) -> None:
    """Adds recorded parts and rejects files to manifest `m`: parts sorted by name (as `DatasetWriter` lists
    them), rejects files after those already listed, sorted."""
    if parts:
        merged = {p["name"]: p for p in m.parts} | parts
        m.parts = sorted(merged.values(), key=lambda p: p["name"])
    listed = set(m.reject_parts)
    m.reject_parts = [*m.reject_parts, *(r for r in rejects if r not in listed)]


def _clear_commits(folder: Folder) -> None:
    """Deletes every completion record (after they were folded into ``manifest.json``)."""
    folder.rm_tree(DONE)


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
    with Folder(root).atomic_path(f"{RECORDS}/{name}") as tmp:
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
    with Folder(root).atomic_path(f"{REJECTS}/{name}") as tmp:
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
