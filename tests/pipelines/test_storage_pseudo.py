"""`ovlabel phrases` and `ovlabel pseudo` on object storage (issue 17): input records, image root and outputs all
on moto's S3 server (the `s3` fixture); Ray workers reopen parts and images from their URLs with the environment's
credentials. The S3 run's records equal a local run's of the same input; a pseudo run killed (SIGKILL) after its
first part record is stored and rerun equals an uninterrupted run, with no duplicated parts and no leftovers."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import (
    LOW_FILTER,
    ROOT,
    SAMPLE,
    SAMPLE_UNITS,
    kill_mid_run,
    objects,
    records,
    run_cli,
    s3_phrases,
    sample_pseudo_config,
)

from formats import storage
from formats.dataset import Dataset, DatasetWriter, Manifest
from formats.images import ImageError, read_image_bytes
from formats.paths import UnsafePathError
from formats.storage import Folder
from labeling.fuse import FilterConfig
from labeling.stages import load_units
from workflows.pseudo_label import (
    RunOptions,
    given_phrase_source,
    has_captions,
    refilter,
    run_pseudo,
)

# -- what Ray workers do, without Ray ----------------------------------------------------------------------------

def test_images_are_read_from_an_s3_image_root_and_never_outside_it(s3):
    data = (SAMPLE / "images" / "chelsea.jpg").read_bytes()
    s3.fs.pipe_file(f"{s3.bucket}/imgs/sub/chelsea.jpg", data)
    s3.fs.pipe_file(f"{s3.bucket}/secret.jpg", data)
    root = f"{s3.url}/imgs"
    assert read_image_bytes(root, "sub/chelsea.jpg") == data == read_image_bytes(root + "/", "sub/../sub/chelsea.jpg")
    for bad in ("../secret.jpg", "sub/../../secret.jpg", "/secret.jpg", f"{s3.url}/secret.jpg"):
        with pytest.raises(UnsafePathError):
            read_image_bytes(root, bad)
    with pytest.raises(ImageError, match="cannot read missing.jpg: FileNotFoundError"):
        read_image_bytes(root, "missing.jpg")
    with pytest.raises(ImageError, match="cannot read tar://a.jpg::00000.tar: FileNotFoundError: .*imgs/00000.tar"):
        read_image_bytes(root, "tar://a.jpg::00000.tar")


def test_units_and_captions_are_read_from_part_urls(s3, tmp_path):
    from dataset_parts import KEY, table

    for where in (f"{s3.url}/ds", tmp_path / "ds"):
        w = DatasetWriter(where, Manifest(kind="od", source="t"), resume_key=KEY)
        t = table(0, 5)
        i = t.schema.get_field_index("caption")
        w.write_part("part-0.parquet", t.set_column(i, t.schema.field(i), pa.array(list("abcde"))))
        w.finish()
    url, path = f"{s3.url}/ds/records/part-0.parquet", str(tmp_path / "ds" / "records" / "part-0.parquet")
    assert Dataset(f"{s3.url}/ds").part_paths == [url]
    assert storage.read_parquet(url).equals(pq.read_table(path))
    assert storage.parquet_schema(url) == pq.read_schema(path) and storage.parquet_rows(url) == 5
    unit = {"unit": "part-0-00000", "start": 1, "stop": 4, "kind": "records", "image_root": f"{s3.url}/imgs",
            "source": "t", "phrases": None}
    remote, local = (load_units(pa.Table.from_pylist([{**unit, "path": p}])) for p in (url, path))
    assert remote.equals(local) and remote.column("caption").to_pylist() == ["b", "c", "d"]
    # what plans the run: the records' own phrases (none: regions without spans) and their captions, by duckdb
    assert given_phrase_source(Dataset(f"{s3.url}/ds")) is None and has_captions(f"{s3.url}/ds")


def test_a_part_written_by_another_process_after_a_listing_is_read(s3):
    """A reader that listed a folder (s3fs caches listings) still reads a part another process wrote since: what
    the driver does after a rerun in a subprocess, and what a worker does after the driver's listing."""
    import s3fs
    from dataset_parts import table

    folder = Folder(f"{s3.url}/ds")
    folder.write_bytes("records/part-0.parquet", _parquet(table(0, 2)))
    assert folder.list("records") == ["part-0.parquet"] and folder.fs.find(f"{s3.bucket}/ds/")
    other = s3fs.S3FileSystem(skip_instance_cache=True)  # another process's connection
    other.pipe_file(f"{s3.bucket}/ds/records/part-1.parquet", _parquet(table(1, 3)))
    assert folder.read_parquet("records/part-1.parquet").num_rows == 3
    assert folder.parquet_schema("records/part-1.parquet") == table(1, 3).schema


def _parquet(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


@pytest.mark.slow
def test_phrases_pseudo_export_and_stats_on_s3_equal_a_local_run(s3, tiny_models, local_run, tmp_path):
    phrases = s3_phrases(s3)
    assert records(phrases) == records(local_run / "phrases")
    assert all(r["phrases"] for r in records(phrases))

    summary = run_pseudo(phrases, f"{s3.url}/pseudo", sample_pseudo_config(tiny_models), RunOptions(num_cpus=2))
    assert summary["dataset"] == f"{s3.url}/pseudo" and summary["units_done"] == SAMPLE_UNITS
    got, ref = records(f"{s3.url}/pseudo"), records(local_run / "pseudo")
    assert got == ref and sum(len(r["regions"]) for r in got) > 0  # same images, region ids, boxes and scores
    m = Dataset(f"{s3.url}/pseudo").manifest
    assert m.image_root == f"{s3.url}/sample/images" and m.provenance["inputs"][0]["path"] == phrases
    names = [p["name"] for p in m.parts]
    assert objects(s3, "pseudo") == sorted(["manifest.json", *(f"{d}/{n}" for d in ("records", "candidates")
                                                               for n in names)])
    for n in names:  # candidates as a local run's
        remote = Folder(f"{s3.url}/pseudo").read_parquet(f"candidates/{n}")
        local = pq.read_table(local_run / "pseudo" / "candidates" / n)
        # Table.equals is False on any NaN (objectness is NaN for Grounding DINO): compare it as NaN-equal floats
        assert remote.drop_columns(["objectness"]).equals(local.drop_columns(["objectness"]))
        assert all(
            np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32), equal_nan=True)
            for a, b in zip(remote.column("objectness").to_pylist(), local.column("objectness").to_pylist(), strict=True))
    again = run_pseudo(phrases, f"{s3.url}/pseudo", sample_pseudo_config(tiny_models), RunOptions(num_cpus=2))
    assert again.get("skipped")
    strict = FilterConfig(fused_threshold=0.0, image_threshold=-1.0, max_boxes_per_image=2)
    rf = refilter(f"{s3.url}/pseudo", f"{s3.url}/rf", strict)
    assert rf["dataset"] == f"{s3.url}/rf"
    refilter(local_run / "pseudo", tmp_path / "rf", strict)
    assert records(f"{s3.url}/rf") == records(tmp_path / "rf")

    r = json.loads(run_cli("export", "odvg", f"{s3.url}/pseudo", "--out", f"{s3.url}/x/p.jsonl").stdout)
    assert r["records"] == f"{s3.url}/x/p.jsonl"
    run_cli("export", "odvg", local_run / "pseudo", "--out", tmp_path / "p.jsonl")
    assert s3.fs.cat_file(f"{s3.bucket}/x/p.jsonl") == (tmp_path / "p.jsonl").read_bytes()
    stats = json.loads(run_cli("stats", f"{s3.url}/pseudo", "--json").stdout)
    local = json.loads(run_cli("stats", local_run / "pseudo", "--json").stdout)
    assert stats.pop("dataset") == f"{s3.url}/pseudo"
    local.pop("dataset")
    assert stats == local and stats["images"] == 7


@pytest.mark.slow
def test_a_pseudo_run_killed_on_s3_and_rerun_equals_an_uninterrupted_run(s3, tiny_models, local_run, tmp_path):
    phrases = s3_phrases(s3)
    out = f"{s3.url}/pseudo"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"filter": LOW_FILTER, "box_threshold": 0.0}))
    cmd = [sys.executable, str(ROOT / "pipelines" / "cc3m_pseudo.py"), "--input", phrases, "--out", out,
           "--detector", str(tiny_models["detector"]), "--clip", str(tiny_models["clip"]), "--config", str(cfg),
           "--images-per-part", "2", "--num-cpus", "2"]
    # the run's own local Ray: its workers get the store's endpoint and keys from this environment only
    kill_mid_run(cmd, out, parts=SAMPLE_UNITS, env=s3.env)
    assert len([n for n in objects(s3, "pseudo") if n.startswith("_done/records/")]) == 1
    rerun = subprocess.run(cmd, cwd=ROOT, env=s3.env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert records(out) == records(local_run / "pseudo")
    names = [p["name"] for p in Dataset(out).manifest.parts]
    assert len(names) == len(set(names)) == SAMPLE_UNITS
    # no duplicated parts, no completion records, no candidates without their part
    assert objects(s3, "pseudo") == sorted(["manifest.json", *(f"{d}/{n}" for d in ("records", "candidates")
                                                               for n in names)])


def _raw_folders(tmp_path):
    """The cc3m sample (img2dataset parquet + tar) and two tar-only webdataset shards sharing a key (the later
    one's sample is a duplicate), as local folders."""
    import shutil

    from converter_inputs import image_bytes, write_tar

    cc3m = tmp_path / "cc3m"
    shutil.copytree(SAMPLE.parent / "cc3m_sample", cc3m)
    wds = tmp_path / "wds"
    wds.mkdir()
    write_tar(wds / "00000.tar", [("k0.jpg", image_bytes(16, 12)), ("k0.txt", b"a red square"),
                                  ("k1.jpg", image_bytes(8, 8)), ("k1.txt", b"a small red square")])
    write_tar(wds / "00001.tar", [("k1.jpg", image_bytes(9, 9)), ("k1.txt", b"the same key"),
                                  ("k2.png", image_bytes(10, 6, "PNG")), ("k2.txt", b"a png square")])
    return cc3m, wds


def test_a_raw_shard_folder_on_s3_is_planned_and_loaded_as_its_local_copy(s3, tmp_path):
    """`pseudo --input` of img2dataset output on the store: the same units, fingerprint, rejects and unit records as
    the same folder on a local disk, shards and image root named by URL (what Ray's load stage gets)."""
    from workflows.pseudo_label import plan_input

    for local in _raw_folders(tmp_path):
        for p in sorted(local.iterdir()):
            s3.fs.put_file(str(p), f"{s3.bucket}/{local.name}/{p.name}")
        url = f"{s3.url}/{local.name}"
        lo, remote = plan_input(local, 2), plan_input(url, 2)
        assert remote.image_root == url and remote.inputs == [{"path": url, "img2dataset": True}]
        assert remote.fingerprint == lo.fingerprint and len(remote.units) == len(lo.units) >= 2
        for r, u in zip([dict(x) for x in remote.units], lo.units, strict=True):
            shard = u["path"].rsplit("/", 1)[1]
            assert r.pop("path") == f"{url}/{shard}" and r.pop("image_root") == url and r.pop("tar_beside") == (
                shard.endswith(".parquet"))
            assert json.loads(r.pop("duplicates")) == ({"k1": "00000.tar"} if shard == "00001.tar" else {})
            assert r == {k: v for k, v in u.items() if k not in ("path", "image_root")}
        shown = json.loads(json.dumps(lo.rejects).replace(str(local), url))
        assert remote.rejects == shown and remote.rejects  # cc3m: a failed download; wds: the duplicate key
        got = load_units(pa.Table.from_pylist(remote.units))
        want = load_units(pa.Table.from_pylist(lo.units))
        assert got.drop_columns(["image_root"]).equals(want.drop_columns(["image_root"]))
        assert set(got.column("image_root").to_pylist()) == {url}
        for name in got.column("file_name").to_pylist():  # the images, read from the store by range requests
            assert read_image_bytes(url, name) == read_image_bytes(str(local), name)


@pytest.mark.slow
def test_pseudo_of_a_raw_shard_folder_on_s3_equals_a_local_run(s3, tiny_models, tmp_path):
    cc3m, _ = _raw_folders(tmp_path)
    for p in sorted(cc3m.iterdir()):
        s3.fs.put_file(str(p), f"{s3.bucket}/cc3m/{p.name}")
    cfg = sample_pseudo_config(tiny_models)
    cfg.images_per_part = 4
    ref = run_pseudo(cc3m, tmp_path / "ref", cfg, RunOptions(num_cpus=2))
    got = run_pseudo(f"{s3.url}/cc3m", f"{s3.url}/pseudo", cfg, RunOptions(num_cpus=2))
    assert got.pop("dataset") == f"{s3.url}/pseudo" and ref.pop("dataset") == str(tmp_path / "ref")
    assert {k: v for k, v in got.items() if k not in ("seconds", "images_per_second")} == \
        {k: v for k, v in ref.items() if k not in ("seconds", "images_per_second")}
    assert records(f"{s3.url}/pseudo") == records(tmp_path / "ref") and got["images"] == 7
    m = Dataset(f"{s3.url}/pseudo").manifest
    assert m.image_root == f"{s3.url}/cc3m" and m.provenance["inputs"] == [{"path": f"{s3.url}/cc3m", "img2dataset": True}]
    assert [r["file"] for r in Dataset(f"{s3.url}/pseudo").read_rejects().to_pylist()] == [f"{s3.url}/cc3m/00000.parquet"]
    names = [p["name"] for p in m.parts]
    assert objects(s3, "pseudo") == sorted(["manifest.json", *(f"{d}/{n}" for d in ("records", "candidates")
                                                               for n in names)] + [f"rejects/{n}" for n in m.reject_parts])
    assert run_pseudo(f"{s3.url}/cc3m", f"{s3.url}/pseudo", cfg, RunOptions(num_cpus=2)).get("skipped")
