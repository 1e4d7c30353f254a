"""Datasets on object storage (issue 17): the storage layer (formats/storage.py), the dataset writer's commit rule on
an object store, and convert / stats / export on ``s3://`` paths against a real S3 API (moto's server on 127.0.0.1,
the `s3` fixture in conftest.py): results equal to the same commands on a local disk; a convert killed mid-run and
rerun gives the dataset of an uninterrupted run; credentials never reach a manifest, a log or an error."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, coco_doc, run_cli
from dataset_parts import KEY, run_killed_at_record, table, write_parts

from formats import storage
from formats.dataset import DONE, MANIFEST, Dataset, DatasetError, DatasetWriter, Manifest, write_part_file
from formats.paths import UnsafePathError
from formats.storage import Folder, StorageError

LEAK = ("AKIDLEAK0000", "SEKRITLEAK0000")
BOTO_LOGGERS = ("botocore", "aiobotocore")


# -- the URL layer -------------------------------------------------------------------------------------------

def test_locations_parse_into_folders_and_names_never_leave_them(tmp_path):
    f = Folder("s3://bucket/some/prefix/")
    assert (f.protocol, f.path, f.url, f.name, f.is_local) == ("s3", "bucket/some/prefix", "s3://bucket/some/prefix",
                                                               "prefix", False)
    assert f.url_of("records/part-0.parquet") == "s3://bucket/some/prefix/records/part-0.parquet"
    assert str(f / "records") == "s3://bucket/some/prefix/records" and f.resolve() is f
    assert Folder("s3a://b/x").url == "s3://b/x" and Folder("gcs://b/x").url == "gs://b/x"
    assert Folder("file:///tmp/x").path == "/tmp/x" and Folder("file:///tmp/x").is_local
    local = Folder(tmp_path / "ds")
    assert local.is_local and local.local == tmp_path / "ds" and os.fspath(local) == str(tmp_path / "ds")
    for bad in ("../x", "/etc/passwd", "a/../../x", "s3://other/x"):
        with pytest.raises(UnsafePathError):
            f.url_of(bad)
        with pytest.raises(UnsafePathError):
            local.read_bytes(bad)
    with pytest.raises(storage.NotLocalError, match="s3://bucket/some/prefix: this step needs a local folder"):
        Path(f)
    with pytest.raises(StorageError, match="unsupported storage scheme 'http'"):
        Folder("http://u:pw@host/x")
    with pytest.raises(StorageError, match="no bucket"):
        Folder("s3:///x")
    assert storage.sibling("s3://b/x/train.jsonl", "a.json") == "s3://b/x/a.json"
    assert storage.sibling(tmp_path / "train.jsonl", "a.json") == tmp_path / "a.json"


def test_gs_urls_need_gcsfs_and_say_so():
    f = Folder("gs://bucket/ds")
    assert f.url == "gs://bucket/ds"
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(StorageError, match=r"gs://bucket/ds: gs:// needs the gcsfs package \(pip install gcsfs\)"):
            f.exists()


def test_credentials_in_a_url_are_used_and_never_shown():
    f = Folder(f"s3://{LEAK[0]}:{LEAK[1]}@bucket/ds")
    assert f._options == {"key": LEAK[0], "secret": LEAK[1]}
    shown = [f.url, str(f), repr(f), f.url_of("x"), storage.display(f"s3://{LEAK[0]}:{LEAK[1]}@bucket/ds"),
             storage.redact(f"ovlabel convert coco a.json --out s3://{LEAK[0]}:{LEAK[1]}@bucket/ds")]
    assert not any(LEAK[0] in s or LEAK[1] in s for s in shown), shown
    with pytest.raises(StorageError) as e:
        Folder(f"gs://{LEAK[0]}:{LEAK[1]}@bucket/ds")
    assert LEAK[1] not in str(e.value)


def test_a_config_is_read_from_s3_and_its_url_shown_without_credentials(s3):
    """`--config s3://...` (a cluster job needs no local file): the pseudo and filter configs read it as a local
    file; errors name its URL, never credentials given in it."""
    import argparse

    from formats.config import ConfigError, read_config_file
    from labeling.fuse import FilterConfig
    from workflows.cli_labeling import add_pseudo_args, pseudo_config

    s3.fs.pipe_file(f"{s3.bucket}/c/pseudo.json", b'{"box_threshold": 0.0, "filter": {"fused_threshold": 0.2}}')
    s3.fs.pipe_file(f"{s3.bucket}/c/bad.toml", b"box_threshold = ")
    url = f"{s3.url}/c/pseudo.json"
    assert read_config_file(url) == {"box_threshold": 0.0, "filter": {"fused_threshold": 0.2}}
    assert FilterConfig.load(url) == FilterConfig(fused_threshold=0.2)
    p = argparse.ArgumentParser()
    add_pseudo_args(p)
    cfg = pseudo_config(p.parse_args(["--input", "x", "--out", "y", "--config", url]))
    assert cfg.box_threshold == 0.0 and cfg.filter["fused_threshold"] == 0.2
    with pytest.raises(ConfigError) as e:
        read_config_file(f"s3://{LEAK[0]}:{LEAK[1]}@{s3.bucket}/c/bad.toml")
    assert str(e.value).startswith(f"{s3.url}/c/bad.toml: not a valid config") and LEAK[0] not in str(e.value)
    with pytest.raises(FileNotFoundError, match=f"{s3.url}/c/missing.json: no such file"):
        read_config_file(f"{s3.url}/c/missing.json")


# -- the dataset writer on S3 ---------------------------------------------------------------------------------


def test_a_dataset_on_s3_is_written_and_read_as_on_a_local_disk(s3, tmp_path):
    url = f"{s3.url}/ds"
    w = write_parts(url)
    assert w.root == Folder(url) and str(w.root) == url
    assert s3.fs.find(f"{s3.bucket}/ds/{DONE}") == [f"{s3.bucket}/ds/{DONE}/{sub}/part-{p}.parquet.json"
                                                   for sub in ("records", "rejects") for p in range(3)]
    unfinished = Dataset(url)  # readers see the parts through their completion records
    assert not unfinished.manifest.complete and [p["name"] for p in unfinished.manifest.parts] == [
        f"part-{p}.parquet" for p in range(3)]
    w.finish()
    local = write_parts(tmp_path / "ds")
    local.finish()
    ds, ref = Dataset(url).require_complete(), Dataset(tmp_path / "ds")
    assert ds.manifest.to_json() == ref.manifest.to_json()
    assert ds.read().equals(ref.read()) and ds.read_rejects().equals(ref.read_rejects())
    assert ds.part_paths == [f"{url}/records/part-{p}.parquet" for p in range(3)]
    assert not s3.fs.exists(f"{s3.bucket}/ds/{DONE}")
    assert sorted(s3.fs.ls(f"{s3.bucket}/ds")) == [f"{s3.bucket}/ds/{n}" for n in (MANIFEST, "records", "rejects")]
    with pytest.raises(DatasetError, match=f"{s3.url}/nothing: no manifest.json"):
        Dataset(f"{s3.url}/nothing")
    with pytest.raises(DatasetError, match="exists and is not an ovlabel dataset"):
        s3.fs.pipe_file(f"{s3.bucket}/other/x.txt", b"x")
        write_parts(f"{s3.url}/other")


def test_a_writer_killed_on_s3_leaves_nothing_visible_and_the_rerun_resumes_and_cleans(s3, tmp_path):
    url = f"{s3.url}/ds"
    # killed (SIGKILL) right after part 2's object, before its completion record; a record of another run too
    script = f"""
import os, signal, sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
from dataset_parts import table, write_parts
from formats.dataset import write_part_file
w = write_parts({url!r}, range(2))
w.folder.write_bytes("_done/records/part-7.parquet.json", b'{{"key": "another", "part": {{"name": "part-7.parquet"}}}}')
write_part_file(w.root, "part-2.parquet", table(2, 3))
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=s3.env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    listed = lambda sub: sorted(n.rsplit("/", 1)[1] for n in s3.fs.ls(f"{s3.bucket}/ds/{sub}"))  # noqa: E731
    assert listed("records") == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    ds = Dataset(url)  # the unrecorded part and the other run's record are not seen
    assert [p["name"] for p in ds.manifest.parts] == ["part-0.parquet", "part-1.parquet"] and ds.read().num_rows == 6
    w = DatasetWriter(url, Manifest(kind="od", source="t"), resume_key=KEY)
    assert listed("records") == ["part-0.parquet", "part-1.parquet"]  # the leftover part is deleted
    assert listed(f"{DONE}/records") == ["part-0.parquet.json", "part-1.parquet.json"]  # the stale record too
    redone = [p for p in range(3) if not w.is_done(f"part-{p}.parquet")]
    assert redone == [2]
    for p in redone:
        w.write_rejects(f"part-{p}.parquet", [{"file": "f", "record": f"t/{p}-9", "reason": "r", "detail": None}])
        w.write_part(f"part-{p}.parquet", table(p, 3), note=p)
    w.finish()
    once = write_parts(tmp_path / "once")
    once.finish()
    assert Dataset(url).manifest.to_json() == Dataset(tmp_path / "once").manifest.to_json()
    assert Dataset(url).read().equals(Dataset(tmp_path / "once").read())
    assert listed("records") == [f"part-{p}.parquet" for p in range(3)] and not s3.fs.exists(f"{s3.bucket}/ds/{DONE}")


def test_storage_options_with_keys_never_reach_the_manifest_or_the_log(s3, caplog, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    caplog.set_level(logging.DEBUG)
    for folder in (Folder(f"{s3.url}/a", storage_options={"key": LEAK[0], "secret": LEAK[1]}),
                   Folder(f"s3://{LEAK[0]}:{LEAK[1]}@{s3.bucket}/b")):
        w = DatasetWriter(folder, Manifest(kind="od", source="t"), resume_key=KEY)
        w.write_part("part-0.parquet", table(0, 2))
        m = w.finish()
        ours = [r.getMessage() for r in caplog.records if not r.name.startswith(BOTO_LOGGERS)]
        text = folder.read_bytes(MANIFEST).decode() + json.dumps(m.to_json()) + "".join(ours) + str(w.root)
        assert LEAK[0] not in text and LEAK[1] not in text
        assert Dataset(folder).read().num_rows == 2
    # the secret is in no log at all; botocore's own DEBUG log names the access key id (not a secret for AWS) in
    # the signed request's header, which is why the ovlabel command line keeps botocore at INFO even with -v
    assert LEAK[1] not in caplog.text and caplog.records


def test_write_part_file_on_s3_puts_the_part_whole_under_its_final_name(s3):
    entry = write_part_file(f"{s3.url}/ds", "part-0.parquet", table(0, 2))
    assert entry["rows"] == 2
    assert s3.fs.find(f"{s3.bucket}/ds") == [f"{s3.bucket}/ds/records/part-0.parquet"]  # no temp name on the store
    assert Folder(f"{s3.url}/ds").read_parquet("records/part-0.parquet").num_rows == 2


# -- the commands on s3:// ------------------------------------------------------------------------------------

def _same_manifest(a: dict, b: dict) -> None:
    for m in (a, b):
        m["provenance"].pop("created"), m["provenance"].pop("command")
    assert a == b


def test_convert_stats_and_exports_on_s3_equal_a_local_run(s3, write_json, tmp_path):
    ann = write_json(coco_doc(n_images=5))
    s3.fs.put_file(str(ann), f"{s3.bucket}/in/ann.json")
    run_cli("convert", "coco", ann, "--source", "custom", "--out", tmp_path / "local", "--part-images", "2",
            "--image-root", tmp_path / "images")
    out = run_cli("convert", "coco", ann, "--source", "custom", "--out", f"{s3.url}/ds", "--part-images", "2",
                  "--image-root", tmp_path / "images")
    assert json.loads(out.stdout)["dataset"] == f"{s3.url}/ds" and json.loads(out.stdout)["images"] == 5
    remote, local = Dataset(f"{s3.url}/ds").require_complete(), Dataset(tmp_path / "local")
    _same_manifest(remote.manifest.to_json(), local.manifest.to_json())
    assert remote.read().equals(local.read()) and len(remote.manifest.parts) == 3
    # the input JSON and the image root on the store too: the input is named by its URL
    out = run_cli("convert", "coco", f"{s3.url}/in/ann.json", "--source", "custom", "--out", f"{s3.url}/ds2",
                  "--image-root", f"{s3.url}/images")
    m = Dataset(f"{s3.url}/ds2").manifest
    assert m.provenance["inputs"][0]["path"] == f"{s3.url}/in/ann.json" and m.image_root == f"{s3.url}/images"
    assert m.provenance["inputs"][0]["sha256"] == local.manifest.provenance["inputs"][0]["sha256"]
    again = run_cli("convert", "coco", f"{s3.url}/in/ann.json", "--source", "custom", "--out", f"{s3.url}/ds2",
                    "--image-root", f"{s3.url}/images")
    assert "nothing to do" in again.stderr  # same input object, same settings: the finished dataset is kept

    stats_remote = json.loads(run_cli("stats", f"{s3.url}/ds", "--json").stdout)
    stats_local = json.loads(run_cli("stats", tmp_path / "local", "--json").stdout)
    assert stats_remote.pop("dataset") == f"{s3.url}/ds"
    stats_local.pop("dataset")
    assert stats_remote == stats_local and stats_remote["images"] == 5
    assert "INCOMPLETE" not in run_cli("stats", f"{s3.url}/ds").stdout

    r = json.loads(run_cli("export", "odvg", f"{s3.url}/ds", "--out", f"{s3.url}/x/train.jsonl").stdout)
    assert r["records"] == f"{s3.url}/x/train.jsonl" and r["label_map"] == f"{s3.url}/x/train.label_map.json"
    run_cli("export", "odvg", tmp_path / "local", "--out", tmp_path / "train.jsonl")
    assert s3.fs.cat_file(f"{s3.bucket}/x/train.jsonl") == (tmp_path / "train.jsonl").read_bytes()
    assert s3.fs.cat_file(f"{s3.bucket}/x/train.label_map.json") == (tmp_path / "train.label_map.json").read_bytes()
    r = json.loads(run_cli("export", "coco", f"{s3.url}/ds", "--out", f"{s3.url}/x/coco.json").stdout)
    assert r["file"] == f"{s3.url}/x/coco.json" and r["images"] == 5
    run_cli("export", "coco", tmp_path / "local", "--out", tmp_path / "coco.json")
    remote_coco = json.loads(s3.fs.cat_file(f"{s3.bucket}/x/coco.json"))
    local_coco = json.loads((tmp_path / "coco.json").read_text())
    assert remote_coco.pop("info")["description"] == "ovlabel export of ds"
    local_coco.pop("info")
    assert remote_coco == local_coco
    assert sorted(s3.fs.ls(f"{s3.bucket}/x")) == [f"{s3.bucket}/x/{n}" for n in
                                                  ("coco.json", "train.jsonl", "train.label_map.json")]


def test_a_convert_killed_after_some_parts_and_rerun_on_s3_equals_one_uninterrupted_run(s3, write_json):
    ann = write_json(coco_doc(n_images=7))
    args = ["convert", "coco", str(ann), "--source", "custom", "--part-images", "2"]
    # the convert dies (SIGKILL) as it is about to record its third part: parts after it may be on the store
    run_killed_at_record([*args, "--out", f"{s3.url}/ds"], 3, env=s3.env)
    killed = Dataset(f"{s3.url}/ds")
    assert not killed.manifest.complete and len(killed.manifest.parts) == 2
    assert len(s3.fs.ls(f"{s3.bucket}/ds/records")) >= 3  # a part written but never recorded
    run_cli(*args, "--out", f"{s3.url}/ds")
    run_cli(*args, "--out", f"{s3.url}/once")
    ds, once = Dataset(f"{s3.url}/ds").require_complete(), Dataset(f"{s3.url}/once")
    _same_manifest(ds.manifest.to_json(), once.manifest.to_json())
    assert ds.read().equals(once.read()) and ds.read().num_rows == 7
    assert sorted(s3.fs.find(f"{s3.bucket}/ds")) == sorted(
        f.replace("/once/", "/ds/") for f in s3.fs.find(f"{s3.bucket}/once"))  # no leftovers, no _done/
    assert [p.rsplit("/", 1)[1] for p in s3.fs.ls(f"{s3.bucket}/ds/records")] == [p["name"] for p in ds.manifest.parts]


def test_credentials_on_the_command_line_never_reach_the_manifest_or_the_output(s3, write_json):
    ann = write_json(coco_doc(n_images=2))
    url = f"s3://{LEAK[0]}:{LEAK[1]}@{s3.bucket}/ds"
    env = {k: v for k, v in s3.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    proc = subprocess.run([sys.executable, "-m", "workflows.cli", "-v", "convert", "coco", str(ann), "--source",
                           "custom", "--out", url, "--image-root", f"s3://{LEAK[0]}:{LEAK[1]}@{s3.bucket}/img"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    manifest = s3.fs.cat_file(f"{s3.bucket}/ds/{MANIFEST}").decode()
    for text in (manifest, proc.stdout, proc.stderr):
        assert LEAK[0] not in text and LEAK[1] not in text
    m = json.loads(manifest)
    assert m["image_root"] == f"{s3.url}/img" and f"--out {s3.url}/ds" in m["provenance"]["command"]
    assert json.loads(proc.stdout)["dataset"] == f"{s3.url}/ds"
    bad = subprocess.run([sys.executable, "-m", "workflows.cli", "stats", f"s3://{LEAK[0]}:{LEAK[1]}@{s3.bucket}/no"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 1 and f"{s3.url}/no: no manifest.json" in bad.stderr and LEAK[1] not in bad.stderr
