"""The dataset writer's completion records (formats/dataset.py): one small record per finished part, folded into
manifest.json by finish(); crashes between a part file and its record; resume; datasets of the older layout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from dataset_parts import KEY, table, writer

from formats.dataset import (
    DONE,
    MANIFEST,
    Dataset,
    DatasetError,
    DatasetWriter,
    Manifest,
    prior_run,
    write_part_file,
)
from formats.query import connect, register_records, register_rejects


def write_all(out: Path, parts: range = range(3)) -> DatasetWriter:
    w = writer(out)
    for p in parts:
        w.write_rejects(f"part-{p}.parquet", [{"file": "f", "record": f"t/{p}-9", "reason": "r", "detail": None}])
        w.write_part(f"part-{p}.parquet", table(p, 3), note=p)
    return w


def on_disk(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def done_files(out: Path) -> list[str]:
    return sorted(str(f.relative_to(out / DONE)) for f in (out / DONE).rglob("*") if f.is_file())


ENTRIES = [{"name": f"part-{p}.parquet", "rows": 3, "boxes": 4, "origins": {"crowd": 1, "gold": 3}, "note": p}
           for p in range(3)]


def test_parts_are_recorded_one_record_each_and_finish_folds_them_into_the_manifest(tmp_path):
    out = tmp_path / "ds"
    w = write_all(out)
    # while the run goes on, manifest.json is the one written at open: the records list the parts
    assert on_disk(out)["parts"] == [] and on_disk(out)["reject_parts"] == [] and not on_disk(out)["complete"]
    assert done_files(out) == [f"{sub}/part-{p}.parquet.json" for sub in ("records", "rejects") for p in range(3)]
    assert json.loads((out / DONE / "records" / "part-1.parquet.json").read_text()) == {
        "key": w.manifest.config["_resume_key"], "part": ENTRIES[1]}
    # readers see the unfinished dataset through the records, as the writer does
    ds = Dataset(out)
    assert ds.manifest.parts == w.manifest.parts == ENTRIES
    assert ds.manifest.reject_parts == w.manifest.reject_parts == [f"part-{p}.parquet" for p in range(3)]
    assert ds.manifest.totals() == {"images": 9, "boxes": 12}
    assert ds.read().column("image_id").to_pylist() == [f"t/{p}-{i}" for p in range(3) for i in range(3)]
    con = connect()
    register_records(con, ds, with_order=True)
    register_rejects(con, ds)
    assert con.execute("SELECT count(*), max(_ord) FROM records").fetchone() == (9, 8)
    assert con.execute("SELECT list(record ORDER BY record) FROM rejects").fetchone()[0] == ["t/0-9", "t/1-9", "t/2-9"]
    m = w.finish({"images_in": 10})
    assert m.counts == {"images_in": 10, "images": 9, "boxes": 12}
    saved = on_disk(out)
    assert saved["complete"] and saved["parts"] == ENTRIES and saved["counts"] == m.counts
    assert saved["reject_parts"] == [f"part-{p}.parquet" for p in range(3)]
    assert not (out / DONE).exists()
    assert Dataset(out).require_complete().manifest.parts == ENTRIES
    with pytest.raises(DatasetError, match="the writer has finished"):
        w.write_part("part-9.parquet", table(9))


def test_a_crash_between_part_file_and_record_leaves_no_part_and_the_rerun_redoes_it(tmp_path):
    out = tmp_path / "ds"
    # a writer killed (SIGKILL) right after part 2's file, before its record
    script = f"""
import os, signal, sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
from dataset_parts import table, writer
from formats.dataset import write_part_file
from pathlib import Path
w = writer(Path({str(out)!r}))
for p in range(2):
    w.write_part(f"part-{{p}}.parquet", table(p, 3), note=p)
write_part_file(w.root, "part-2.parquet", table(2, 3))
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "records" / "part-2.parquet").exists()
    ds = Dataset(out)
    assert [p["name"] for p in ds.manifest.parts] == ["part-0.parquet", "part-1.parquet"]
    assert ds.read().num_rows == 6 and not ds.manifest.complete
    assert prior_run(out, KEY, overwrite=False) is None  # unfinished: the rerun resumes
    w = writer(out)
    assert [w.is_done(f"part-{p}.parquet") for p in range(3)] == [True, True, False]
    assert not (out / "records" / "part-2.parquet").exists()  # the unrecorded file is swept
    # the resumed writer folded the two records into manifest.json; they stay (harmless) until finish
    assert [p["name"] for p in on_disk(out)["parts"]] == ["part-0.parquet", "part-1.parquet"]
    assert done_files(out) == ["records/part-0.parquet.json", "records/part-1.parquet.json"]
    w.write_part("part-2.parquet", table(2, 3), note=2)
    w.finish()
    ref = write_all(tmp_path / "ref")
    ref.finish()
    assert Dataset(out).read().equals(Dataset(tmp_path / "ref").read())
    assert Dataset(out).manifest.parts == ENTRIES
    assert Dataset(out).manifest.counts == {"images": 9, "boxes": 12}


def test_resume_after_kill_gives_the_same_records_and_skips_finished_parts(tmp_path):
    out = tmp_path / "ds"
    w = write_all(out, range(2))  # then the process dies: no finish
    del w
    w = writer(out)
    assert on_disk(out)["parts"] == ENTRIES[:2] and on_disk(out)["reject_parts"] == ["part-0.parquet", "part-1.parquet"]
    todo = [p for p in range(4) if not w.is_done(f"part-{p}.parquet")]
    assert todo == [2, 3]
    for p in todo:
        w.write_rejects(f"part-{p}.parquet", [{"file": "f", "record": f"t/{p}-9", "reason": "r", "detail": None}])
        w.write_part(f"part-{p}.parquet", table(p, 3), note=p)
    # unfinished again: the two earlier parts from manifest.json, the two new ones from their records
    assert Dataset(out).manifest.parts == w.manifest.parts
    w.finish()
    ref = write_all(tmp_path / "ref", range(4))
    ref.finish()
    assert Dataset(out).read().equals(Dataset(tmp_path / "ref").read())
    got, want = on_disk(out), on_disk(tmp_path / "ref")
    assert got["parts"] == want["parts"] and got["reject_parts"] == want["reject_parts"]
    assert got["counts"] == want["counts"] == {"images": 12, "boxes": 16}
    assert Dataset(out).read_rejects().column("record").to_pylist() == [f"t/{p}-9" for p in range(4)]


def test_records_of_another_run_unreadable_ones_and_leftovers_after_finish_are_ignored(tmp_path):
    out = tmp_path / "ds"
    w = write_all(out, range(1))
    foreign = {"key": "0123456789abcdef", "part": {"name": "part-7.parquet", "rows": 5, "boxes": 0, "origins": {}}}
    (out / DONE / "records" / "part-7.parquet.json").write_text(json.dumps(foreign))
    (out / DONE / "records" / "part-8.parquet.json").write_text('{"key": "')
    (out / DONE / "records" / ".part-9.parquet.json.tmp-1-2").write_text("{}")
    write_part_file(out, "part-7.parquet", table(7))
    assert [p["name"] for p in Dataset(out).manifest.parts] == ["part-0.parquet"]
    w = writer(out)
    assert [p["name"] for p in w.manifest.parts] == ["part-0.parquet"]
    assert done_files(out) == ["records/part-0.parquet.json", "rejects/part-0.parquet.json"]
    assert sorted(f.name for f in (out / "records").iterdir()) == ["part-0.parquet"]
    w.finish()
    # a crash between finish's manifest write and its cleanup: the leftover records are ignored
    (out / DONE / "records").mkdir(parents=True)
    (out / DONE / "records" / "part-5.parquet.json").write_text(json.dumps(
        {"key": w.manifest.config["_resume_key"], "part": {"name": "part-5.parquet", "rows": 1, "boxes": 0}}))
    assert [p["name"] for p in Dataset(out).manifest.parts] == ["part-0.parquet"]
    assert Dataset(out).manifest.totals() == {"images": 3, "boxes": 4}
    w = writer(out)  # a rerun on the complete dataset deletes them
    assert done_files(out) == [] and [p["name"] for p in w.manifest.parts] == ["part-0.parquet"]


def test_datasets_of_the_older_layout_are_read_and_resumed(tmp_path):
    """Before completion records the writer rewrote manifest.json after every part; an unfinished dataset of that
    layout lists its finished parts in manifest.json, and a part file of a crash may lie beside them."""
    ref = write_all(tmp_path / "ref", range(3))
    ref.finish()
    old = tmp_path / "old"
    os.makedirs(old / "records")
    os.makedirs(old / "rejects")
    m = on_disk(tmp_path / "ref")
    for p in range(3):
        for sub in ("records", "rejects"):
            (old / sub / f"part-{p}.parquet").write_bytes((tmp_path / "ref" / sub / f"part-{p}.parquet").read_bytes())
    (old / MANIFEST).write_text(json.dumps(m))
    assert Dataset(old).require_complete().manifest.parts == ENTRIES  # complete, old layout: as it was
    assert Dataset(old).read().equals(Dataset(tmp_path / "ref").read())
    (old / MANIFEST).write_text(json.dumps({**m, "parts": m["parts"][:2], "reject_parts": m["reject_parts"][:2],
                                            "complete": False, "counts": {}}))
    ds = Dataset(old)
    assert ds.manifest.parts == ENTRIES[:2] and ds.read().num_rows == 6
    w = writer(old)
    assert [w.is_done(f"part-{p}.parquet") for p in range(3)] == [True, True, False]
    assert sorted(f.name for f in (old / "records").iterdir()) == ["part-0.parquet", "part-1.parquet"]
    w.write_rejects("part-2.parquet", [{"file": "f", "record": "t/2-9", "reason": "r", "detail": None}])
    w.write_part("part-2.parquet", table(2, 3), note=2)
    w.finish()
    got = on_disk(old)
    assert got["parts"] == m["parts"] and got["reject_parts"] == m["reject_parts"] and got["counts"] == m["counts"]
    assert Dataset(old).read().equals(Dataset(tmp_path / "ref").read())


def test_an_overwrite_clears_records_of_the_earlier_run(tmp_path):
    out = tmp_path / "ds"
    write_all(out, range(2))
    w = DatasetWriter(out, Manifest(kind="od", source="t"), resume_key={"inputs": ["y"]}, overwrite=True)
    assert w.manifest.parts == [] and done_files(out) == [] and Dataset(out).manifest.parts == []
    with pytest.raises(DatasetError, match="other inputs or settings"):
        writer(out)


def test_another_run_into_the_folder_is_refused_and_says_when_nothing_was_recorded(tmp_path):
    writer(tmp_path / "a")  # opened (manifest written), then died before its first part
    other = {"inputs": ["y"]}
    with pytest.raises(DatasetError, match=r"a holds a dataset made from other inputs or settings \(an unfinished "
                                           r"run that recorded no part\); pass --overwrite"):
        DatasetWriter(tmp_path / "a", Manifest(kind="od", source="t"), resume_key=other)
    w = writer(tmp_path / "b")
    w.write_part("part-0.parquet", table(0))
    with pytest.raises(DatasetError, match=r"b holds a dataset made from other inputs or settings; pass --overwrite"):
        DatasetWriter(tmp_path / "b", Manifest(kind="od", source="t"), resume_key=other)
    with pytest.raises(DatasetError, match=r"\(an unfinished run that recorded no part\)"):
        prior_run(tmp_path / "a", other, overwrite=False)
