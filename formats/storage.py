"""Where datasets live: one folder object over a local path or an object store (fsspec), used by every
reader and writer of a dataset directory (`formats.dataset`) and by the exports' output files.

Supported locations (`Folder`, `resolve_location`):

- local paths (``data/coco``, ``/mnt/x``) and ``file://`` URLs: plain files, exactly as before;
- ``s3://bucket/prefix`` (AWS S3 and S3-compatible stores, through ``s3fs``);
- ``gs://bucket/prefix`` / ``gcs://`` (Google Cloud Storage, through ``gcsfs`` when it is installed; without it
  a `StorageError` names the missing package).

Credentials come from each store's standard places, never from ovlabel's files: for S3 the AWS environment
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_DEFAULT_REGION``), ``~/.aws/credentials`` and ``~/.aws/config``, or an instance role; ``AWS_ENDPOINT_URL``
points at an S3-compatible store (MinIO, Ceph, moto). For GCS, Application Default Credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login``, or the instance's service
account); ``STORAGE_EMULATOR_HOST`` points at a GCS emulator, used without credentials. A URL with
credentials in it (``s3://KEY:SECRET@bucket/x``; a ``/`` in the secret as is or percent-encoded, ``%2F``)
and ``storage_options`` given in Python are used to connect, and never shown: a folder is displayed, logged,
written into manifests and named in errors by `Folder.url`, which carries neither (`redact` cleans a command
line the same way). Worker processes that reopen a folder from its URL see only the environment's credentials.

The commit rule (after datatrove's ``DataFolder`` and completion markers): on a local disk a file is written
under a hidden temp name beside its final one, fsynced and renamed, so it appears whole or not at all. An
object store has no rename, but an object appears whole when its single upload ends (one PUT, or the
completion of a multipart upload), so a file is written straight under its final name
(`Folder.write_bytes`) or uploaded from a local temp file when finished (`Folder.atomic_path`). What makes a
dataset part *visible* is its completion record (`formats.dataset`), written after the part; the part's name
is unique to the part, so writers never contend for one object.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote

from formats import paths as P

# protocol -> (canonical protocol, the package fsspec needs for it)
PROTOCOLS = {"s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"), "gs": ("gs", "gcsfs"), "gcs": ("gs", "gcsfs")}
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
# s3://KEY:SECRET@bucket/x where the secret holds a "/" (AWS secret keys often do): no bucket name has a ":", so
# a first segment with one starts credentials, which run to the first "@"
_STORE_USERINFO = re.compile(r"\b((?:s3a?|gcs|gs)://)[^/@:\s]*:[^@\s]*@", re.I)
_BUCKET = re.compile(r"^[A-Za-z0-9._-]{1,255}$")  # what botocore accepts (S3-compatible stores allow more than AWS)


class StorageError(ValueError):
    """A location ovlabel cannot use: an unknown scheme, a missing package, an unsafe name."""


class NotLocalError(StorageError):
    """Code that needs a local folder was given an object-store URL."""


def is_url(location: Any) -> bool:
    """True for ``scheme://...`` strings (object stores and ``file://``), False for plain paths."""
    return isinstance(location, str) and _URL.match(location) is not None


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it removed (``s3://KEY:SECRET@b/x`` -> ``s3://b/x``)."""
    return _USERINFO.sub(r"\1", _STORE_USERINFO.sub(r"\1", text))


def display(location: str | os.PathLike | Folder) -> str:
    """How a location is shown in output, logs and manifests: a local path made absolute, a URL without
    credentials."""
    if isinstance(location, Folder):
        return str(location.resolve())
    if is_url(str(location)):
        return Folder(str(location)).url
    return str(Path(location).resolve())


def _tmp_name(path: Path) -> Path:
    """A temp name beside `path`, unique per process and thread (hidden, so globs skip it)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


TMP_GLOB = ".*.tmp-*"  # what `_tmp_name` names: the leftovers of a crashed local writer


class Folder:
    """A folder on a filesystem: a local directory, or a prefix in an object-store bucket.

    ``Folder("s3://bucket/ds")``, ``Folder("data/ds")``, ``Folder(Path(...))``; `storage_options` go to the
    fsspec filesystem (e.g. ``{"key": ..., "secret": ...}``; prefer the environment). Names given to its
    methods are relative POSIX paths inside it; one that would leave it (``..``, absolute, a URL) raises
    `formats.paths.UnsafePathError`. Local folders use the os module directly (same files, same renames as
    without this layer); object stores go through fsspec.
    """

    def __init__(self, location: str | os.PathLike | Folder, storage_options: dict | None = None):
        if isinstance(location, Folder):
            self.protocol, self.path, self._options = location.protocol, location.path, dict(location._options)
            self._options.update(storage_options or {})
            self._fs = location._fs if not storage_options else None
            return
        self._fs = None
        self._options = dict(storage_options or {})
        text = os.fspath(location)
        m = _URL.match(text) if isinstance(text, str) else None
        if m is None:
            self.protocol, self.path = "file", text
            return
        scheme, rest = m.group(1).lower(), m.group(2)
        if scheme == "file":
            self.protocol, self.path = "file", rest if rest.startswith("/") else "/" + rest
            return
        if scheme not in PROTOCOLS:
            raise StorageError(f"{redact(text)}: unsupported storage scheme {scheme!r}; use a local path, "
                               "file://, s3:// or gs://")
        self.protocol = PROTOCOLS[scheme][0]
        bucket, _, prefix = rest.partition("/")
        userinfo = None
        if "@" in bucket:  # credentials in the URL: used to connect, never shown
            userinfo, _, bucket = bucket.rpartition("@")
        elif ":" in bucket and "@" in rest:  # a secret with a "/" in it, not percent-encoded
            userinfo, _, rest = rest.partition("@")
            bucket, _, prefix = rest.partition("/")
        if userinfo is not None:
            key, _, secret = userinfo.partition(":")
            if self.protocol != "s3":
                raise StorageError(f"{self.protocol}://{bucket}/{prefix}: credentials in a {scheme}:// URL are not "
                                   "supported; use the store's standard credentials")
            self._options = {"key": unquote(key), "secret": unquote(secret), **self._options}
        if not bucket:
            raise StorageError(f"{redact(text)}: no bucket name")
        if not _BUCKET.match(bucket):  # not echoed: it may hold a piece of credentials
            raise StorageError(f"{scheme}:// URL: invalid bucket name (letters, digits, '.', '-' and '_' only)")
        rel = posixpath.normpath(prefix.lstrip("/")) if prefix else "."
        if rel == ".." or rel.startswith("../"):
            raise StorageError(f"{scheme}://{bucket}/{prefix}: the prefix leaves the bucket")
        self.path = bucket if rel == "." else f"{bucket}/{rel}"

    # -- identity ------------------------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def url(self) -> str:
        """The folder as shown and recorded: a local path as given, ``s3://bucket/prefix`` (never credentials)."""
        return self.path if self.is_local else f"{self.protocol}://{self.path}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Folder({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Folder) and (self.protocol, self.path) == (other.protocol, other.path)

    def __hash__(self) -> int:
        return hash((self.protocol, self.path))

    def __fspath__(self) -> str:
        """The local path; an object-store folder raises `NotLocalError` (code that needs a local folder)."""
        if not self.is_local:
            raise NotLocalError(f"{self.url}: this step needs a local folder; object storage is not supported "
                                "here yet")
        return self.path

    @property
    def local(self) -> Path:
        """The folder as a `Path` (local folders only)."""
        return Path(os.fspath(self))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/")) if not self.is_local else Path(self.path).name

    def resolve(self) -> Folder:
        """The same folder with an absolute local path (object-store folders are absolute already)."""
        if not self.is_local:
            return self
        out = Folder(self)
        out.path = str(Path(self.path).resolve())
        return out

    def child(self, rel: str) -> Folder:
        """The subfolder `rel` (sharing this folder's connection)."""
        out = Folder(self)
        out.path = self._full(rel)
        return out

    def __truediv__(self, rel: str) -> Folder:
        return self.child(str(rel))

    @property
    def fs(self):
        """The fsspec filesystem (made on first use; credentials from the environment or `storage_options`).

        Raises `StorageError` when the scheme's fsspec package (s3fs, gcsfs) is not installed."""
        if self._fs is None:
            import fsspec

            try:
                if self.protocol == "gs":
                    from formats import gcs

                    self._fs = gcs.filesystem(self._options)
                else:
                    self._fs = fsspec.filesystem(self.protocol, **self._options)
            except ImportError:
                package = PROTOCOLS.get(self.protocol, (None, self.protocol))[1]
                raise StorageError(f"{self.url}: {self.protocol}:// needs the {package} package "
                                   f"(pip install {package})") from None
        return self._fs

    def _full(self, rel: str = "") -> str:
        """The path of `rel` inside the folder, as the filesystem names it; refuses names that leave it."""
        if rel in ("", "."):
            return self.path
        rel = P.check_relative(rel)
        if rel == ".":
            return self.path
        return os.path.join(self.path, rel) if self.is_local else f"{self.path}/{rel}"

    def url_of(self, rel: str = "") -> str:
        """`rel` as a location string: a local path, or ``s3://bucket/prefix/rel`` (what duckdb is given)."""
        full = self._full(rel)
        return full if self.is_local else f"{self.protocol}://{full}"

    # -- reading -------------------------------------------------------------------------------------------

    def exists(self, rel: str = "") -> bool:
        return self._test(rel, os.path.exists, "exists")

    def isfile(self, rel: str) -> bool:
        return self._test(rel, os.path.isfile, "isfile")

    def _test(self, rel: str, local_test, fs_method: str) -> bool:
        """A question about `rel`, asked of the store itself (s3fs's listing cache dropped first)."""
        full = self._full(rel)
        if self.is_local:
            return local_test(full)
        self.fs.invalidate_cache(full)
        with self._named(rel):  # a refused request is an error, not an answer (fsspec's isfile says False)
            try:
                info = self.fs.info(full)
            except FileNotFoundError:
                return False
        return fs_method == "exists" or info.get("type") == "file"

    @contextmanager
    def _named(self, rel: str = "") -> Iterator[None]:
        """A store's OSError (a missing bucket, refused credentials: s3fs says only ``Forbidden``) re-raised as one
        of the same type that names the location, ``s3://bucket/x: Forbidden`` (never credentials)."""
        try:
            yield
        except OSError as e:
            text = str(e)
            if self.is_local or "://" in text:
                raise
            if text in ("", self._full(rel)):
                text = "no such file"
            try:
                named = type(e)(f"{self.url_of(rel)}: {text}")
            except TypeError:  # an error class with another constructor
                named = OSError(f"{self.url_of(rel)}: {text}")
            raise named from e

    def read_bytes(self, rel: str) -> bytes:
        full = self._full(rel)
        if self.is_local:
            with open(full, "rb") as f:
                return f.read()
        with self._named(rel):
            return self.fs.cat_file(full)

    def open(self, rel: str, mode: str = "rb", block_size: int | None = None):
        """A file object (reading; write through `write_bytes` or `atomic_path`, which commit whole). On an
        object store, `block_size` is how much one read fetches ahead (fsspec's read-ahead cache; small for
        readers that seek to a header and stop, e.g. tar indexes and image headers)."""
        full = self._full(rel)
        if self.is_local:
            return open(full, mode)
        with self._named(rel):
            if block_size is None:
                return self.fs.open(full, mode)
            return self.fs.open(full, mode, block_size=block_size, cache_type="readahead")

    @contextmanager
    def local_copy(self, rel: str) -> Iterator[Path]:
        """A local path holding file `rel`: the file itself on a local disk, else a temp copy with the same
        base name (deleted after the block). Raises FileNotFoundError."""
        full = self._full(rel)
        if self.is_local:
            yield Path(full)
            return
        with tempfile.TemporaryDirectory(prefix="ovlabel-input-") as d:
            tmp = Path(d) / posixpath.basename(full)
            try:
                with self._named(rel):
                    self.fs.get_file(full, str(tmp))
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.url_of(rel)}: no such file") from None
            yield tmp

    def read_range(self, rel: str, start: int, size: int) -> bytes:
        """`size` bytes of file `rel` from byte `start` (one range request on an object store)."""
        full = self._full(rel)
        if self.is_local:
            with open(full, "rb") as f:
                f.seek(start)
                return f.read(size)
        with self._named(rel):
            return self.fs.cat_file(full, start=start, end=start + size)

    def list(self, rel: str = "") -> list[str]:
        """Names of the files directly in `rel`, sorted ([] when it does not exist)."""
        full = self._full(rel)
        if self.is_local:
            try:
                with os.scandir(full) as it:
                    return sorted(e.name for e in it if e.is_file())
            except (FileNotFoundError, NotADirectoryError):
                return []
        self.fs.invalidate_cache(full)
        try:
            with self._named(rel):
                entries = self.fs.ls(full, detail=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries
                      if e.get("type") == "file" and e["name"].rstrip("/") != full)

    def find(self, rel: str = "") -> list[str]:
        """Every file under `rel`, as paths relative to this folder, sorted."""
        full = self._full(rel)
        if self.is_local:
            root = Path(self.path)
            return sorted(str(p.relative_to(root).as_posix()) for p in Path(full).rglob("*") if p.is_file())
        self.fs.invalidate_cache(full)
        try:
            with self._named(rel):
                found = self.fs.find(full + "/")
        except FileNotFoundError:
            return []
        return sorted(f[len(self.path) + 1:] for f in found if f.startswith(self.path + "/"))

    def find_info(self, rel: str = "") -> list[tuple[str, int, Any]]:
        """`find` with each file's size and version: (path relative to this folder, bytes, a local file's mtime
        in ns or an object's ETag), sorted by path."""
        if self.is_local:
            out = []
            for name in self.find(rel):
                st = os.stat(self._full(name))
                out.append((name, st.st_size, st.st_mtime_ns))
            return out
        full = self._full(rel)
        self.fs.invalidate_cache(full)
        try:
            with self._named(rel):
                found = self.fs.find(full + "/", detail=True)
        except FileNotFoundError:
            return []
        return sorted((name[len(self.path) + 1:], int(info.get("size") or 0), _version(info))
                      for name, info in found.items() if name.startswith(self.path + "/"))

    def is_empty(self) -> bool:
        """True when the folder does not exist or holds nothing."""
        if self.is_local:
            return not os.path.exists(self.path) or not any(Path(self.path).iterdir())
        return not self.find()

    def read_parquet(self, rel: str, columns: list[str] | None = None):
        """A parquet file of the folder as a pyarrow Table."""
        return self._parquet("read_table", rel, columns=columns)

    def parquet_schema(self, rel: str):
        return self._parquet("read_schema", rel)

    def _parquet(self, function: str, rel: str, **kw):
        import pyarrow.parquet as pq

        full = self._full(rel)
        if not self.is_local:
            kw["filesystem"] = self.fs
            self.fs.invalidate_cache(full)  # pyarrow asks fsspec's `info`, which trusts an earlier listing
        with self._named(rel):
            return getattr(pq, function)(full, **kw)

    def register(self, con) -> None:
        """Lets duckdb connection `con` read this store's URLs (`url_of`) through fsspec."""
        if not self.is_local:
            con.register_filesystem(self.fs)

    # -- writing -------------------------------------------------------------------------------------------

    def makedirs(self, rel: str = "") -> None:
        """Creates `rel` on a local disk; object stores have no folders (nothing to do)."""
        if self.is_local:
            os.makedirs(self._full(rel), exist_ok=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Writes a whole file that appears whole or not at all: local temp file, fsync and rename; one PUT on
        an object store."""
        full = self._full(rel)
        if not self.is_local:
            with self._named(rel):
                self.fs.pipe_file(full, data)
            return
        path = Path(full)
        tmp = _tmp_name(path)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def write_json(self, rel: str, obj: Any) -> None:
        """Writes `obj` as indented JSON, whole or not at all."""
        self.write_bytes(rel, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())

    @contextmanager
    def atomic_path(self, rel: str) -> Iterator[Path]:
        """Yields a local temp path; when the block succeeds its file becomes `rel` (a rename beside it on a
        local disk, one upload to an object store), else it is deleted."""
        full = self._full(rel)
        if self.is_local:
            path = Path(full)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _tmp_name(path)
            try:
                yield tmp
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, path)
            return
        with tempfile.TemporaryDirectory(prefix="ovlabel-upload-") as d:
            tmp = Path(d) / posixpath.basename(full)
            yield tmp
            with self._named(rel):
                self.fs.put_file(str(tmp), full)

    def upload(self, rel: str, path: str | os.PathLike) -> None:
        """Copies the local file `path` to `rel`, whole or not at all (a temp file and a rename on a local disk,
        one upload to an object store)."""
        if self.is_local:
            with self.atomic_path(rel) as tmp:
                shutil.copyfile(path, tmp)
            return
        with self._named(rel):
            self.fs.put_file(os.fspath(path), self._full(rel))

    def download(self, rel: str, path: str | os.PathLike) -> None:
        """Copies file `rel` to the local `path` (its folder made), whole or not at all: written under a hidden
        temp name beside it (`TMP_GLOB`) and renamed. Raises FileNotFoundError naming the file's URL."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_name(path)
        try:
            if self.is_local:
                shutil.copyfile(self._full(rel), tmp)
            else:
                with self._named(rel):
                    self.fs.get_file(self._full(rel), str(tmp))
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise FileNotFoundError(f"{self.url_of(rel)}: no such file") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)

    def rm(self, rel: str) -> None:
        """Deletes one file (nothing when it is absent)."""
        full = self._full(rel)
        if self.is_local:
            Path(full).unlink(missing_ok=True)
            return
        with suppress(FileNotFoundError), self._named(rel):
            self.fs.rm_file(full)

    def rm_tree(self, rel: str = "") -> None:
        """Deletes `rel` and everything under it (on an object store: every object under the prefix; never
        the bucket)."""
        full = self._full(rel)
        if self.is_local:
            shutil.rmtree(full, ignore_errors=True)
            return
        files = [f"{self.path}/{f}" for f in self.find(rel)]
        if files:
            with self._named(rel):
                self.fs.rm(files)
        self.fs.invalidate_cache(full)


def require_local(location: str | os.PathLike, why: str) -> Path:
    """`location` as a local `Path`, for steps that need local files; an object-store URL raises `NotLocalError`
    naming it (without credentials) and `why`."""
    text = os.fspath(location)
    if is_url(text):
        folder = Folder(text)
        if not folder.is_local:
            raise NotLocalError(f"{folder.url}: {why}")
        return Path(folder.path)
    return Path(location)


def split_location(location: str | os.PathLike) -> tuple[Folder, str]:
    """A file location as (its folder, its name): ``s3://b/x/out.jsonl`` -> (Folder(s3://b/x), out.jsonl).

    Raises `StorageError` for a bare bucket (``s3://b``), which names no file."""
    text = os.fspath(location)
    if is_url(text):
        f = Folder(text)
        if f.is_local:
            path = Path(f.path)
            return Folder(str(path.parent)), path.name
        parent, _, name = f.path.rpartition("/")
        if not parent:
            raise StorageError(f"{f.url}: names a bucket, not a file")
        out = Folder(f)
        out.path = parent
        return out, name
    path = Path(text)
    return Folder(path.parent), path.name


def sibling(location: str | os.PathLike, name: str) -> str | Path:
    """The file `name` beside `location` (a `Path` for local paths, a URL string, as given, for object stores)."""
    text = os.fspath(location)
    if is_url(text):
        split_location(text)  # checks it names a file
        return text.rstrip("/").rpartition("/")[0] + "/" + P.check_relative(name)
    return Path(location).with_name(name)


def inside(location: str | os.PathLike, name: str) -> str | Path:
    """The file `name` inside the folder `location` (a `Path` for local paths, a URL string, as given, for
    object stores). Raises `formats.paths.UnsafePathError` for a name that would leave it."""
    text = os.fspath(location)
    if is_url(text):
        Folder(text)  # checks the scheme
        return text.rstrip("/") + "/" + P.check_relative(name)
    return Path(location) / P.check_relative(name)


def shown(location: str | os.PathLike) -> str | Path:
    """A file location as results report it: a local path as a `Path` (as given), a URL without credentials."""
    text = os.fspath(location)
    if is_url(text):
        folder, name = split_location(text)
        return folder.url_of(name)
    return Path(location)


def write_bytes(location: str | os.PathLike, data: bytes) -> None:
    """`Folder.write_bytes` for a file location (local path or URL)."""
    folder, name = split_location(location)
    folder.write_bytes(name, data)


@contextmanager
def atomic_path(location: str | os.PathLike) -> Iterator[Path]:
    """`Folder.atomic_path` for a file location (local path or URL)."""
    folder, name = split_location(location)
    with folder.atomic_path(name) as tmp:
        yield tmp


class FileInfo(NamedTuple):
    """What identifies an input file in a resume key and the provenance."""

    location: str  # a local file's absolute path, an object's URL (no credentials)
    size: int
    version: Any  # a local file's mtime in ns, an object's ETag (or modification time)


def file_identity(location: str | os.PathLike) -> FileInfo:
    """An input file's `FileInfo` (local path or URL). Raises FileNotFoundError."""
    text = os.fspath(location)
    if not is_url(text) or Folder(text).is_local:
        path = Path(Folder(text).path if is_url(text) else text)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        st = path.stat()
        return FileInfo(str(path.resolve()), st.st_size, st.st_mtime_ns)
    folder, name = split_location(text)
    try:
        with folder._named(name):
            info = folder.fs.info(folder._full(name))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder.url_of(name)}: no such file") from None
    if info.get("type") != "file":
        raise FileNotFoundError(f"{folder.url_of(name)}: no such file")
    return FileInfo(folder.url_of(name), int(info.get("size") or 0), _version(info))


def _version(info: dict) -> str:
    """An object's version from its fsspec info: the ETag, else its modification time."""
    version = info.get("ETag") or info.get("etag") or str(info.get("LastModified") or info.get("mtime") or "")
    return str(version).strip('"')


@contextmanager
def local_file(location: str | os.PathLike) -> Iterator[Path]:
    """A local path holding the file at `location`: the file itself when local, else a temp copy (deleted
    after the block) for readers that need a local file (memory maps, streaming parsers, duckdb's CSV reader)."""
    folder, name = split_location(location)
    with folder.local_copy(name) as path:
        yield path


def read_bytes(location: str | os.PathLike) -> bytes:
    """The bytes of a file (local path or URL). Raises FileNotFoundError (OSError) when it cannot be read."""
    folder, name = split_location(location)
    return folder.read_bytes(name)


def open_file(location: str | os.PathLike, block_size: int | None = None):
    """A binary file object for reading the file at `location` (local path or URL; `Folder.open`)."""
    folder, name = split_location(location)
    return folder.open(name, block_size=block_size)


def _file(location: str | os.PathLike) -> tuple[Folder, str] | None:
    """(folder, name) of an object-store file location, None for a local one (a path or ``file://``)."""
    text = os.fspath(location)
    if not is_url(text) or Folder(text).is_local:
        return None
    return split_location(text)


def _local_path(location: str | os.PathLike) -> str:
    text = os.fspath(location)
    return Folder(text).path if is_url(text) else text


def read_parquet(location: str | os.PathLike, columns: list[str] | None = None):
    """A parquet file (local path or URL) as a pyarrow Table; object stores through their fsspec filesystem
    (credentials from the environment, as every worker process that reopens a location from its URL)."""
    import pyarrow.parquet as pq

    at = _file(location)
    if at is None:
        return pq.read_table(_local_path(location), columns=columns)
    return at[0].read_parquet(at[1], columns=columns)


def parquet_schema(location: str | os.PathLike):
    """The schema of a parquet file (local path or URL)."""
    import pyarrow.parquet as pq

    at = _file(location)
    if at is None:
        return pq.read_schema(_local_path(location))
    return at[0].parquet_schema(at[1])


def parquet_rows(location: str | os.PathLike) -> int:
    """The number of rows of a parquet file (local path or URL), from its footer."""
    import pyarrow.parquet as pq

    at = _file(location)
    if at is None:
        return pq.ParquetFile(_local_path(location)).metadata.num_rows
    with at[0].open(at[1]) as f:
        return pq.ParquetFile(f).metadata.num_rows
