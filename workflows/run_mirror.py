"""A run directory on an object store, worked in through a local mirror (`selftrain run --out s3://...`,
`train --out s3://...`).

torch and transformers save and resume checkpoints as local files, and self-training rounds run from them, so a
run whose home is ``s3://bucket/prefix`` (or ``gs://``) works in a local directory that mirrors it:

- The work directory: the one given (``--work-dir``), else ``$OVLABEL_CACHE/<kind>/<first 12 hex digits of the
  sha1 of the URL>`` (``OVLABEL_CACHE`` defaults to ``~/.cache/ovlabel``; the URL as `Folder.url` shows it, so
  credentials in it change nothing). A work directory mirrors one home; another is refused.
- `RunMirror.pull` (when the run opens) downloads every file the store holds that the mirror lacks, or holds in
  another version than the one it last synced, so a run resumes on a fresh machine from what the store has.
- `RunMirror.push` (after every recorded step, after every checkpoint) uploads the files that are new or changed
  since they were last synced, deletes from the store the files this mirror synced that are gone locally
  (rotated checkpoints), and uploads the run's commit record (``run.json``) last: a step is done on the store
  only once the record there says so, and everything the record names is there before it.

Order: a file that marks its folder complete (a dataset's ``manifest.json``, a checkpoint's
``trainer_state.json``: `MARKERS`) is uploaded and downloaded after the other files and deleted before them, so a
sync cut short never leaves a folder that looks complete and is not. Files are compared through an index,
``.ovlabel-mirror.json`` in the work directory: for each file, its local size and content hash (mtime for files
over 1 MiB) and the store's version (ETag) when it was last synced. Hidden files and folders (temp files, the index) are never synced.

Paths: results recorded in the commit record name files by where they live on the store (`shown`: a path under the
work directory becomes the URL under the home) and are turned back into local paths before use (`local`), so a
run resumed elsewhere, with another work directory, finds them, and the record on the store names the store.

A local location is its own work directory: `pull` and `push` do nothing and `shown` / `local` return what they
are given. Credentials are never written or shown: the home is recorded and named by its URL alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from formats.paths import check_relative
from formats.storage import Folder, StorageError, is_url

log = logging.getLogger("ovlabel.mirror")

INDEX = ".ovlabel-mirror.json"
MARKERS = ("manifest.json", "trainer_state.json")  # formats.dataset.MANIFEST, detector.train.STATE


def cache_dir() -> Path:
    """ovlabel's cache: ``$OVLABEL_CACHE``, default ``~/.cache/ovlabel``."""
    return Path(os.environ.get("OVLABEL_CACHE") or Path.home() / ".cache" / "ovlabel")


def default_work_dir(url: str, kind: str) -> Path:
    """Where the run at `url` (a store URL, shown without credentials) is mirrored by default."""
    return cache_dir() / kind / hashlib.sha1(url.encode()).hexdigest()[:12]


class RunMirror:
    """The local work directory of a run directory (`location`: a local path, ``file://``, ``s3://`` or
    ``gs://``). `root` is the local directory steps read and write; `home` names the run (the local path as
    given, or the store URL without credentials). `record` is the commit record's name (uploaded last).

    Raises `formats.storage.StorageError` for an unknown scheme or a work directory that mirrors another home."""

    def __init__(self, location: str | os.PathLike, work_dir: str | os.PathLike | None = None, *, kind: str,
                 record: str | None = None):
        text = os.fspath(location)
        folder = Folder(text) if is_url(text) else None
        self.record = record
        if folder is None or folder.is_local:
            self.remote: Folder | None = None
            self.root = Path(folder.path) if folder is not None else Path(location)
            self.home = str(self.root)
            return
        self.remote, self.home = folder, folder.url
        self.root = Path(work_dir if work_dir is not None else default_work_dir(folder.url, kind)).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._index = self._read_index()

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    # -- paths -------------------------------------------------------------------------------------------------

    def shown(self, obj: Any) -> Any:
        """`obj` (JSON-like) with every path under the work directory made the URL under the home."""
        return obj if self.remote is None else _rebase(obj, str(self.root), self.home)

    def local(self, obj: Any) -> Any:
        """`obj` (JSON-like) with every URL under the home made the path under the work directory."""
        return obj if self.remote is None else _rebase(obj, self.home, str(self.root))

    # -- sync --------------------------------------------------------------------------------------------------

    def pull(self) -> list[str]:
        """Downloads what the store holds and the mirror lacks or holds in another version than it last synced
        (a local file changed since, with the store's unchanged, is newer: kept, and `push` uploads it). Returns
        the names downloaded."""
        if self.remote is None:
            return []
        got = []
        for rel, _size, version in sorted(self._store(), key=lambda f: self._order(f[0])):
            check_relative(rel)  # a key that would land outside the work directory raises
            synced = self._index.get(rel)
            if synced is not None and synced[2] == version and (self.root / rel).is_file():
                continue
            self.remote.download(rel, self.root / rel)
            self._remember(rel, version)
            got.append(rel)
        if got:
            self._save_index()
            log.info("%s: %d files downloaded into %s", self.home, len(got), self.root)
        return got

    def push(self) -> list[str]:
        """Uploads the files that are new or changed since last synced (markers after the others, the commit
        record last), then deletes from the store the files last synced that are gone locally (markers first).
        Returns the names uploaded."""
        if self.remote is None:
            return []
        store = {rel: version for rel, _size, version in self._store()}
        changed = []
        for rel in self._local_files():
            synced = self._index.get(rel)
            if synced is None or synced[:2] != _stamp(self.root / rel) or store.get(rel) != synced[2]:
                changed.append(rel)
        changed.sort(key=self._order)
        for rel in changed:
            self.remote.upload(rel, self.root / rel)
        gone = sorted((rel for rel in self._index if not (self.root / rel).is_file()),
                      key=lambda rel: (rel.rpartition("/")[2] not in MARKERS, rel))
        for rel in gone:
            self.remote.rm(rel)
            del self._index[rel]
        if changed:
            versions = {rel: version for rel, _size, version in self._store()}
            for rel in changed:
                self._remember(rel, versions.get(rel))
        if changed or gone:
            self._save_index()
            log.info("%s: %d files uploaded, %d deleted", self.home, len(changed), len(gone))
        return changed

    # -- internals ---------------------------------------------------------------------------------------------

    def _order(self, rel: str) -> tuple[int, str]:
        """Upload and download order: plain files, then folder markers, then the commit record."""
        if rel == self.record:
            return 2, rel
        return (1 if rel.rpartition("/")[2] in MARKERS else 0), rel

    def _store(self) -> list[tuple[str, int, Any]]:
        return [f for f in self.remote.find_info() if not _hidden(f[0])]

    def _local_files(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            out += [name if rel_dir == "." else f"{rel_dir}/{name}" for name in filenames if not name.startswith(".")]
        return sorted(out)

    def _remember(self, rel: str, version: Any) -> None:
        self._index[rel] = [*_stamp(self.root / rel), version]

    def _read_index(self) -> dict[str, list]:
        path = self.root / INDEX
        if not path.exists():
            return {}
        data = json.loads(path.read_text())
        if data.get("home") != self.home:
            raise StorageError(f"{self.root}: this work directory mirrors {data.get('home')}, not {self.home}; "
                               "give another --work-dir")
        return data["files"]

    def _save_index(self) -> None:
        from formats.dataset import atomic_write_json

        atomic_write_json(self.root / INDEX, {"home": self.home, "files": self._index})


SMALL = 1 << 20  # files up to this size are compared by content (a JSON record rewritten within one clock tick)


def _stamp(path: Path) -> list:
    """What tells whether a local file changed: [size, sha1 of the content] for a small file, [size, mtime in ns]
    for a big one (written once under a new name, or replaced by a rename)."""
    st = path.stat()
    if st.st_size <= SMALL:
        return [st.st_size, hashlib.sha1(path.read_bytes()).hexdigest()]
    return [st.st_size, st.st_mtime_ns]


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _rebase(obj: Any, src: str, dst: str) -> Any:
    if isinstance(obj, str):
        return dst + obj[len(src):] if obj == src or obj.startswith(src + "/") else obj
    if isinstance(obj, dict):
        return {k: _rebase(v, src, dst) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rebase(v, src, dst) for v in obj]
    return obj
