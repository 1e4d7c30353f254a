"""sha256 of input files, on threads beside the work that reads them. Import-light (no numpy, no Arrow),
so a command can start hashing its input before it loads its libraries."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from concurrent.futures import Future


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks of `bufsize` bytes. Raises OSError when it cannot be read."""
    h = hashlib.sha256()
    buf = bytearray(bufsize)  # one buffer reused: no fresh allocation (and page faults) per chunk
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])  # releases the GIL: hashing on a thread runs beside the caller
    return h.hexdigest()


_prefetched: dict[tuple, Future] = {}
_prefetched_lock = threading.Lock()


def _file_key(path: str | os.PathLike) -> tuple:
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns


def prefetch_sha256(path: str | os.PathLike) -> None:
    """Starts hashing a file that a reader will ask `sha256_async` for (lets the hash run beside imports)."""
    with contextlib.suppress(OSError):  # a missing file is the reader's error to report
        key = _file_key(path)
        with _prefetched_lock:
            if key not in _prefetched:
                _prefetched[key] = _hash_on_thread(path)


def sha256_async(path: str | os.PathLike) -> Future:
    """The file's sha256 as a future, computed on a thread of its own (the prefetched one when unchanged).

    Raises OSError (FileNotFoundError) here when the file cannot be stat'ed; a read error is the future's."""
    with _prefetched_lock:
        fut = _prefetched.pop(_file_key(path), None)
    return fut if fut is not None else _hash_on_thread(path)


def _hash_on_thread(path: str | os.PathLike) -> Future:
    fut: Future = Future()

    def run() -> None:
        try:
            fut.set_result(sha256_file(path))
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
            fut.set_exception(e)

    # a daemon thread: a command that fails early does not wait for the hash of a large file at exit
    threading.Thread(target=run, name="ovlabel-sha256", daemon=True).start()
    return fut
