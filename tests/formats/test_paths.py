"""Untrusted file names (formats.paths): what check_relative normalises and what it refuses, the cheap
pre-filter, and resolve() against symlinks that leave the image root."""

from __future__ import annotations

import os

import pytest

from formats.paths import UnsafePathError, check_relative, is_suspicious, resolve


@pytest.mark.parametrize("name, expected", [
    ("a.jpg", "a.jpg"),
    ("img/./0001.jpg", "img/0001.jpg"),
    ("img//0001.jpg", "img/0001.jpg"),
    ("img/sub/../0001.jpg", "img/0001.jpg"),  # `..` that stays inside is normalised away
    ("img\\0001.jpg", "img/0001.jpg"),  # Windows separators become POSIX ones
    ("./a.jpg", "a.jpg"),
    ("..a.jpg", "..a.jpg"),  # a name that merely starts with two dots is no escape
])
def test_check_relative_normalises_safe_names(name, expected):
    assert check_relative(name) == expected


@pytest.mark.parametrize("name, message", [
    ("", "empty file name"),
    (None, "empty file name"),
    ("a\x00.jpg", "NUL byte"),
    ("/etc/passwd", "absolute path '/etc/passwd'"),
    ("\\server\\share.jpg", "absolute path"),
    ("C:/x.jpg", "absolute path 'C:/x.jpg'"),
    ("c:x.jpg", "absolute path"),
    ("..", "escapes the image root"),
    ("../a.jpg", "escapes the image root"),
    ("img/../../a.jpg", "escapes the image root"),
    ("..\\a.jpg", "escapes the image root"),
    ("http://example.com/a.jpg", "URL 'http://example.com/a.jpg' where a path relative to the image root"),
    ("tar://a.jpg::/x/shard.tar", "URL"),
])
def test_check_relative_refuses_unsafe_names_saying_why(name, message):
    with pytest.raises(UnsafePathError, match=message.replace("\\", "\\\\").replace("(", r"\(")):
        check_relative(name)


def test_urls_pass_only_when_allowed_and_unchanged():
    url = "tar://0001.jpg::/data/shards/00000.tar"
    assert check_relative(url, allow_urls=True) == url
    with pytest.raises(UnsafePathError, match="escapes"):  # allow_urls does not let a path escape
        check_relative("../a.jpg", allow_urls=True)


def test_unsafe_path_error_is_a_value_error():
    assert issubclass(UnsafePathError, ValueError)


@pytest.mark.parametrize("name, suspicious", [
    ("img/0001.jpg", False), ("a.b.jpg", False), ("dir:x/a.jpg", False),  # ':' after the 3rd character
    ("", True), ("/a.jpg", True), ("\\a.jpg", True), ("a/../b.jpg", True), ("a..b.jpg", True),
    ("a\x00", True), ("C:/a.jpg", True), ("ab:c.jpg", True), ("a\\b.jpg", True),
])
def test_is_suspicious_flags_everything_check_relative_might_refuse(name, suspicious):
    assert is_suspicious(name) is suspicious


def test_every_name_check_relative_refuses_is_suspicious():
    # the pre-filter may pass a name only when check_relative would accept it
    for n in ["", "/a", "\\a", "..", "../a", "a/../../b", "C:/a", "c:a", "a\x00", "..\\a"]:
        with pytest.raises(UnsafePathError):
            check_relative(n)
        assert is_suspicious(n), n


def test_resolve_joins_inside_the_root(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(b"x")
    assert resolve(root, "sub/a.jpg") == (root / "sub" / "a.jpg").resolve()
    assert resolve(str(root), "sub/../sub/a.jpg") == (root / "sub" / "a.jpg").resolve()
    assert resolve(root, ".") == root.resolve()  # the root itself is inside


def test_resolve_refuses_a_symlink_that_leaves_the_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("s")
    os.symlink(tmp_path / "secret.txt", root / "link.jpg")
    with pytest.raises(UnsafePathError, match="'link.jpg' resolves outside the image root"):
        resolve(root, "link.jpg")
    with pytest.raises(UnsafePathError, match="escapes the image root"):
        resolve(root, "../secret.txt")


def test_resolve_refuses_a_sibling_folder_whose_name_starts_like_the_root(tmp_path):
    root = tmp_path / "img"
    root.mkdir()
    (tmp_path / "img2").mkdir()
    os.symlink(tmp_path / "img2", root / "other")
    with pytest.raises(UnsafePathError, match="resolves outside"):
        resolve(root, "other/a.jpg")
