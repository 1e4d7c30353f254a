"""Input digests (formats.digest): sha256 of a file in chunks, on a thread, prefetched by file identity."""

from __future__ import annotations

import hashlib
import os

import pytest

from formats import digest
from formats.digest import prefetch_sha256, sha256_async, sha256_file

EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 test vector


def test_known_digests(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "empty") == EMPTY
    assert sha256_file(str(tmp_path / "abc")) == ABC


@pytest.mark.parametrize("bufsize", [1, 7, 64, 1 << 22])
def test_any_buffer_size_hashes_every_byte_once(tmp_path, bufsize):
    data = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: not a multiple of any buffer size here
    p = tmp_path / "f"
    p.write_bytes(data)
    assert sha256_file(p, bufsize=bufsize) == hashlib.sha256(data).hexdigest()


def test_async_digest_and_its_errors(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert sha256_async(p).result(timeout=10) == ABC
    with pytest.raises(FileNotFoundError):  # stat of a missing file fails in the caller
        sha256_async(tmp_path / "missing")


def test_a_thread_error_reaches_whoever_waits(tmp_path):
    fut = digest._hash_on_thread(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        fut.result(timeout=10)


def test_a_prefetch_of_a_missing_file_is_silent(tmp_path):
    prefetch_sha256(tmp_path / "missing")
    assert all(k[0] != os.path.realpath(tmp_path / "missing") for k in digest._prefetched)


def test_a_prefetched_digest_is_handed_out_once_then_recomputed(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    prefetch_sha256(p)
    prefetch_sha256(p)  # a second prefetch of the same file starts no second hash
    key = digest._file_key(p)
    first = digest._prefetched[key]
    assert sha256_async(p) is first and first.result(timeout=10) == ABC
    assert key not in digest._prefetched
    again = sha256_async(p)
    assert again is not first and again.result(timeout=10) == ABC


def test_a_file_changed_after_its_prefetch_is_hashed_again(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    prefetch_sha256(p)
    digest._prefetched[digest._file_key(p)].result(timeout=10)
    p.write_bytes(b"abcd")  # another size: another identity
    os.utime(p, ns=(1, 1))
    assert sha256_async(p).result(timeout=10) == hashlib.sha256(b"abcd").hexdigest()
