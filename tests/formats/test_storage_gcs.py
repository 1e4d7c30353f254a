"""Datasets on Google Cloud Storage (issue 17): ``gs://`` through gcsfs against a local GCS emulator
(gcp-storage-emulator, a subprocess on 127.0.0.1 that gcsfs finds through ``STORAGE_EMULATOR_HOST``, as Google's
own clients do): convert / stats / export on ``gs://`` equal the same commands on a local disk, a convert killed
mid-run and rerun gives the dataset of an uninterrupted run, a rerun of a finished convert writes nothing, and a
token given in Python reaches no manifest, log or shown location."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import coco_doc, free_port, run_cli
from dataset_parts import run_killed_at_record

from formats import storage
from formats.dataset import MANIFEST, Dataset, DatasetWriter, Manifest
from formats.schema import record_schema
from formats.storage import Folder

ROOT = Path(__file__).resolve().parents[2]
LEAK = "ya29.LEAKTOKEN0000"


@pytest.fixture(scope="session")
def _gcs_emulator(tmp_path_factory):
    """gcp-storage-emulator (in memory) as a subprocess on 127.0.0.1 (a free port) for the whole session; its
    URL. Stopped at the session's end."""
    pytest.importorskip("gcsfs", reason="gs:// needs gcsfs (pip install -e '.[gcs]')")
    pytest.importorskip("gcp_storage_emulator", reason="the GCS tests need gcp-storage-emulator (the dev extra)")
    log = tmp_path_factory.mktemp("gcs-emulator") / "emulator.log"
    for _ in range(3):  # another process may take the free port before the emulator binds it
        port = free_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                                     "--port", str(port), "--in-memory", "-q"], stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        if proc.poll() is None and time.monotonic() < deadline:
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail(f"the GCS emulator did not start: {log.read_text()[-2000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def gcs(_gcs_emulator, monkeypatch, request):
    """An empty bucket on the emulator: ``gcs.url`` (``gs://BUCKET``), ``gcs.bucket``, ``gcs.fs`` (the gcsfs
    filesystem ovlabel uses for it). This process's environment, and so the commands the test runs, point at
    the emulator for the test (`monkeypatch`); cached gcsfs instances are dropped before and after."""
    from formats import gcs as G

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", _gcs_emulator)
    for cls in (G.GCSFileSystem, G.EmulatorGCSFileSystem):
        cls.clear_instance_cache()
    bucket = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    fs = Folder(f"gs://{bucket}").fs
    if fs.exists(bucket):
        fs.rm(fs.find(f"{bucket}/"))
    else:
        fs.mkdir(bucket)
    yield types.SimpleNamespace(url=f"gs://{bucket}", bucket=bucket, fs=fs)
    for cls in (G.GCSFileSystem, G.EmulatorGCSFileSystem):
        cls.clear_instance_cache()


def _same_manifest(a: dict, b: dict) -> None:
    for m in (a, b):
        m["provenance"].pop("created"), m["provenance"].pop("command")
    assert a == b


def _objects(gcs, prefix: str) -> dict[str, str]:
    """Each object under gs://BUCKET/PREFIX/ with its generation (a new one each time the object is written)."""
    gcs.fs.invalidate_cache()
    found = gcs.fs.find(f"{gcs.bucket}/{prefix}/", detail=True)
    return {name[len(gcs.bucket) + len(prefix) + 2:]: info["generation"] for name, info in found.items()}


# -- the storage layer on gs:// -------------------------------------------------------------------------------

def test_gs_folders_talk_to_the_emulator_anonymously_and_a_token_is_never_shown(gcs, caplog):
    import gcsfs.core
    from google.oauth2.credentials import Credentials

    from formats import gcs as G

    fs = Folder(f"{gcs.url}/ds").fs
    # the plain JSON-API class (the default one would ask the gRPC Storage Control API, which emulators lack)
    assert type(fs) is G.EmulatorGCSFileSystem and type(fs).__mro__[1] is gcsfs.core.GCSFileSystem
    assert fs.credentials.credentials is None and fs.credentials.method == "anon"
    assert G.emulator() == os.environ["STORAGE_EMULATOR_HOST"]
    f = Folder(f"gcs://{gcs.bucket}/files")
    f.write_bytes("a/x.json", b"{}")
    with f.atomic_path("b/y.bin") as tmp:
        tmp.write_bytes(b"0123456789")
    assert f.find() == ["a/x.json", "b/y.bin"] and f.list("a") == ["x.json"] and f.list("nothing") == []
    assert f.read_range("b/y.bin", 2, 3) == b"234" and f.isfile("b/y.bin") and not f.exists("b/z")
    with f.open("b/y.bin") as r:  # read ahead, as s3fs does (gcsfs's default starts background prefetch tasks)
        assert r.cache.name == "readahead" and r.read() == b"0123456789"
    assert [(n, size) for n, size, _ in f.find_info()] == [("a/x.json", 2), ("b/y.bin", 10)]
    assert storage.file_identity(f"{gcs.url}/files/b/y.bin").location == f"gs://{gcs.bucket}/files/b/y.bin"
    f.rm_tree()
    assert f.is_empty()

    # a token given in Python (storage_options) is used, and reaches no manifest, log or shown location
    caplog.set_level(logging.DEBUG)
    folder = Folder(f"{gcs.url}/ds", storage_options={"token": Credentials(LEAK)})
    w = DatasetWriter(folder, Manifest(kind="od", source="t"), resume_key={"inputs": ["x"]})
    w.write_part("part-0.parquet", pa.Table.from_pylist([], schema=record_schema()))
    m = w.finish()
    text = (folder.read_bytes(MANIFEST).decode() + json.dumps(m.to_json()) + caplog.text + str(w.root)
            + repr(folder) + storage.display(folder))
    assert LEAK not in text and folder.url == f"{gcs.url}/ds"
    assert Dataset(f"{gcs.url}/ds").require_complete().manifest.parts[0]["name"] == "part-0.parquet"


# -- the commands on gs:// ------------------------------------------------------------------------------------

def test_convert_stats_and_exports_on_gs_equal_a_local_run(gcs, write_json, tmp_path):
    ann = write_json(coco_doc(n_images=5))
    gcs.fs.put_file(str(ann), f"{gcs.bucket}/in/ann.json")
    args = ["--source", "custom", "--part-images", "2", "--image-root", tmp_path / "images"]
    run_cli("convert", "coco", ann, *args, "--out", tmp_path / "local")
    out = run_cli("convert", "coco", ann, *args, "--out", f"{gcs.url}/ds")
    assert json.loads(out.stdout)["dataset"] == f"{gcs.url}/ds" and json.loads(out.stdout)["images"] == 5
    remote, local = Dataset(f"{gcs.url}/ds").require_complete(), Dataset(tmp_path / "local")
    _same_manifest(remote.manifest.to_json(), local.manifest.to_json())
    assert len(remote.manifest.parts) == 3
    assert remote.read().equals(local.read()) and remote.read_rejects().equals(local.read_rejects())
    assert remote.part_paths == [f"{gcs.url}/ds/records/{p['name']}" for p in remote.manifest.parts]
    assert sorted(_objects(gcs, "ds")) == sorted(
        p.relative_to(tmp_path / "local").as_posix() for p in (tmp_path / "local").rglob("*") if p.is_file())

    # the input JSON and the image root on the store too: the input is named by its URL
    store_args = ["--source", "custom", "--image-root", f"{gcs.url}/images", "--out", f"{gcs.url}/ds2"]
    run_cli("convert", "coco", f"{gcs.url}/in/ann.json", *store_args)
    m = Dataset(f"{gcs.url}/ds2").require_complete().manifest
    assert m.provenance["inputs"][0]["path"] == f"{gcs.url}/in/ann.json" and m.image_root == f"{gcs.url}/images"
    assert m.provenance["inputs"][0]["sha256"] == local.manifest.provenance["inputs"][0]["sha256"]
    assert Dataset(f"{gcs.url}/ds2").read().equals(local.read())

    # a rerun after completion does nothing: same input object, same settings; no object is written again
    before = _objects(gcs, "ds2")
    again = run_cli("convert", "coco", f"{gcs.url}/in/ann.json", *store_args)
    assert "nothing to do" in again.stderr and _objects(gcs, "ds2") == before

    stats_remote = json.loads(run_cli("stats", f"{gcs.url}/ds", "--json").stdout)
    stats_local = json.loads(run_cli("stats", tmp_path / "local", "--json").stdout)
    assert stats_remote.pop("dataset") == f"{gcs.url}/ds"
    stats_local.pop("dataset")
    assert stats_remote == stats_local and stats_remote["images"] == 5
    shown = run_cli("stats", f"{gcs.url}/ds")
    assert "INCOMPLETE" not in shown.stdout and shown.stderr == "", shown.stderr  # no gcsfs or asyncio noise

    r = json.loads(run_cli("export", "odvg", f"{gcs.url}/ds", "--out", f"{gcs.url}/x/train.jsonl").stdout)
    assert r["records"] == f"{gcs.url}/x/train.jsonl" and r["label_map"] == f"{gcs.url}/x/train.label_map.json"
    run_cli("export", "odvg", tmp_path / "local", "--out", tmp_path / "train.jsonl")
    assert gcs.fs.cat_file(f"{gcs.bucket}/x/train.jsonl") == (tmp_path / "train.jsonl").read_bytes()
    assert gcs.fs.cat_file(f"{gcs.bucket}/x/train.label_map.json") == (tmp_path / "train.label_map.json").read_bytes()
    r = json.loads(run_cli("export", "coco", f"gcs://{gcs.bucket}/ds", "--out", f"{gcs.url}/x/coco.json").stdout)
    assert r["file"] == f"{gcs.url}/x/coco.json" and r["images"] == 5
    run_cli("export", "coco", tmp_path / "local", "--out", tmp_path / "coco.json")
    remote_coco = json.loads(gcs.fs.cat_file(f"{gcs.bucket}/x/coco.json"))
    local_coco = json.loads((tmp_path / "coco.json").read_text())
    assert remote_coco.pop("info")["description"] == "ovlabel export of ds"
    local_coco.pop("info")
    assert remote_coco == local_coco
    assert sorted(_objects(gcs, "x")) == ["coco.json", "train.jsonl", "train.label_map.json"]


def test_a_convert_killed_after_some_parts_and_rerun_on_gs_equals_one_uninterrupted_run(gcs, write_json):
    ann = write_json(coco_doc(n_images=7))
    args = ["convert", "coco", str(ann), "--source", "custom", "--part-images", "2"]
    # the convert dies (SIGKILL) as it is about to record its third part: parts after it may be on the store
    run_killed_at_record([*args, "--out", f"{gcs.url}/ds"], 3)
    killed = Dataset(f"{gcs.url}/ds")
    assert not killed.manifest.complete and len(killed.manifest.parts) == 2
    assert len([n for n in _objects(gcs, "ds") if n.startswith("records/")]) >= 3  # a part never recorded
    run_cli(*args, "--out", f"{gcs.url}/ds")
    run_cli(*args, "--out", f"{gcs.url}/once")
    ds, once = Dataset(f"{gcs.url}/ds").require_complete(), Dataset(f"{gcs.url}/once").require_complete()
    _same_manifest(ds.manifest.to_json(), once.manifest.to_json())
    assert ds.read().equals(once.read()) and ds.read().num_rows == 7
    assert sorted(_objects(gcs, "ds")) == sorted(_objects(gcs, "once"))  # no leftovers, no _done/
    assert [n.split("/", 1)[1] for n in sorted(_objects(gcs, "ds")) if n.startswith("records/")] == [
        p["name"] for p in ds.manifest.parts]
    # and a rerun of the finished convert writes nothing
    before = _objects(gcs, "ds")
    assert "nothing to do" in run_cli(*args, "--out", f"{gcs.url}/ds").stderr and _objects(gcs, "ds") == before
