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
    from test_dataset import KEY, table

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
    from test_dataset import table

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


def test_review_refuses_datasets_on_object_storage_with_a_clear_error(tmp_path):
    from workflows.review import ReviewError, build_review

    with pytest.raises(ReviewError, match="review needs local datasets and image roots; s3://b/pseudo is on object"):
        build_review(tmp_path / "gold", ["s3://b/pseudo"])
