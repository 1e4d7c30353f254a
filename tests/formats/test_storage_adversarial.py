"""Object-storage locations given on purpose in awkward shapes (issue 17): credentials whose secret holds a "/",
bucket names botocore refuses, prefixes whose ``..`` leave the bucket, and store errors (a missing bucket, refused
credentials). Each must end in a one-line error naming the location without its credentials, never a traceback,
another bucket or a leaked secret."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import coco_doc

from formats import storage
from formats.storage import Folder, StorageError

ROOT = Path(__file__).resolve().parents[2]

# an AWS-shaped secret: AWS secret access keys are base64-like and often hold "/" (and "+")
KEY, SECRET = "AKIDSLASH0000", "wJalr/XUtnFEMI+K7MDENG"


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workflows.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("url", [f"s3://{KEY}:{SECRET}@bucket/ds", f"s3://{KEY}:{SECRET.replace('/', '%2F')}@bucket/ds"])
def test_a_secret_with_a_slash_is_used_and_never_shown(url):
    f = Folder(url)
    assert f.url == "s3://bucket/ds" and f._options == {"key": KEY, "secret": SECRET}
    line = storage.redact(f"ovlabel convert coco a.json --out {url} --image-root {url}/img")
    assert line == "ovlabel convert coco a.json --out s3://bucket/ds --image-root s3://bucket/ds/img"
    assert storage.display(url) == "s3://bucket/ds"


@pytest.mark.parametrize("url", [f"s3://{KEY}:{SECRET}", "s3://my bucket/ds", "s3://b*cket/ds"])
def test_a_bad_bucket_name_is_a_storage_error_that_shows_no_credentials(url):
    with pytest.raises(StorageError, match="invalid bucket name") as e:
        Folder(url)
    assert SECRET.split("/")[0] not in str(e.value) and SECRET.split("/")[1] not in str(e.value)


def test_convert_to_a_url_whose_secret_has_a_slash_never_writes_or_prints_it(s3, tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco_doc(n_images=2)))
    env = {k: v for k, v in s3.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    url = f"s3://{KEY}:{SECRET}@{s3.bucket}/ds"
    proc = cli("-v", "convert", "coco", str(ann), "--source", "custom", "--out", url, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = s3.fs.cat_file(f"{s3.bucket}/ds/manifest.json").decode()
    for text in (manifest, proc.stdout, proc.stderr):
        assert KEY not in text and "wJalr" not in text and "XUtnFEMI" not in text
    assert json.loads(proc.stdout)["dataset"] == f"{s3.url}/ds"
    bad = cli("stats", f"s3://{KEY}:{SECRET}", env=env)  # no "@": the secret is no bucket name, and not echoed
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "XUtnFEMI" not in bad.stderr
    assert "invalid bucket name" in bad.stderr


@pytest.mark.parametrize("url", ["s3://bucket/../other/ds", "s3://bucket/..", "s3://bucket/a/../../other",
                                 "s3://bucket//../other"])
def test_a_prefix_whose_dots_leave_the_bucket_is_refused(url):
    """``..`` in a prefix is normalised inside the bucket, never into another bucket (s3://b/../other/ds once meant
    s3://other/ds: a convert wrote there, an overwrite deleted there)."""
    with pytest.raises(StorageError, match="leaves the bucket"):
        Folder(url)
    assert Folder("s3://bucket/a/../ds").url == "s3://bucket/ds" and Folder("s3://bucket/a/..").url == "s3://bucket"


def test_a_missing_bucket_is_a_one_line_error_naming_the_url(s3, tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco_doc(n_images=2)))
    missing = f"{s3.bucket}-missing"
    for args in (["convert", "coco", str(ann), "--source", "custom", "--out", f"s3://{KEY}:x@{missing}/ds"],
                 ["export", "odvg", f"s3://{missing}/ds", "--out", str(tmp_path / "o.jsonl")]):
        proc = cli(*args, env=s3.env)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"ovlabel: error: s3://{missing}/ds" in proc.stderr and KEY not in proc.stderr, proc.stderr
    if proc.stdout:
        assert KEY not in proc.stdout


def test_refused_credentials_are_an_error_naming_the_url_not_a_missing_dataset(s3, monkeypatch):
    """fsspec's `isfile` answers False on any error: a 403 read as "no manifest.json; not an ovlabel dataset"."""
    from formats.dataset import Dataset, DatasetError

    url = f"{s3.url}/ds"
    f = Folder(url)
    f.write_bytes("manifest.json", b"{}")
    with pytest.raises(DatasetError, match="no manifest.json"):  # a folder without one still says so
        Dataset(f"{s3.url}/other")

    def refused(*args, **kw):
        raise PermissionError("Forbidden")

    monkeypatch.setattr(f.fs, "info", refused)
    monkeypatch.setattr(f.fs, "cat_file", refused)
    with pytest.raises(PermissionError, match=rf"^{url}/manifest.json: Forbidden$"):
        Dataset(f)
    with pytest.raises(PermissionError, match=rf"^{url}/x: Forbidden$"):
        f.exists("x")
    with pytest.raises(PermissionError, match=rf"^{url}/manifest.json: Forbidden$"):
        f.read_bytes("manifest.json")
