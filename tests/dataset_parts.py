"""Small parts for the dataset writer (formats/dataset.py), shared by the writer's tests on a local disk
(test_dataset.py), on object storage (test_storage.py, test_storage_pseudo.py) and by the scripts those tests run
in a subprocess to kill a writer mid-run."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from formats import schema as S
from formats.dataset import DatasetWriter, Manifest

KEY = {"inputs": ["x"]}


def table(part: int, n: int = 2) -> pa.Table:
    """`n` records of part `part`; record i has i gold boxes and, for odd i, one crowd region."""
    rows = []
    for i in range(n):
        regs = [{"region_id": None, "bbox": [1.0, 1.0, 3.0, 3.0], "label": 0, "category": "cat", "phrase": None,
                 "tokens_positive": None, "score": None, "det_score": None, "clip_score": None,
                 "origin": "crowd" if k == i else "gold", "round": None} for k in range(i + (i % 2))]
        rows.append({"image_id": f"t/{part}-{i}", "source": "t", "file_name": f"{part}-{i}.jpg", "width": 4,
                     "height": 4, "caption": None, "regions": regs})
    return S.conform(pa.Table.from_pylist(rows, schema=S.CORE_SCHEMA))


def writer(out: Path, **kw) -> DatasetWriter:
    """A writer of an OD dataset at `out` (a path or URL) with the resume key `KEY`."""
    return DatasetWriter(out, Manifest(kind="od", source="t"), resume_key=KEY, **kw)


def write_parts(root, parts=range(3)) -> DatasetWriter:
    """Writes `parts` (3 records each, and one reject) to a new writer at `root`; returns it unfinished."""
    w = DatasetWriter(root, Manifest(kind="od", source="t"), resume_key=KEY)
    for p in parts:
        w.write_rejects(f"part-{p}.parquet", [{"file": "f", "record": f"t/{p}-9", "reason": "r", "detail": None}])
        w.write_part(f"part-{p}.parquet", table(p, 3), note=p)
    return w


def run_killed_at_record(args: list[str], n: int = 3, env: dict | None = None):
    """Runs ``ovlabel ARGS`` (a command writing a dataset part by part) in a subprocess that SIGKILLs itself
    as it is about to write its `n`-th completion record (`formats.dataset._commit`): parts after it may be on
    disk or the store, unrecorded. Records are made one at a time (parts are written by two threads), so the
    records before it are complete when it dies: a record still being uploaded by the other thread cannot be
    cut off. Checks that it died so; returns the completed process."""
    import signal
    import subprocess
    import sys

    from conftest import ROOT

    script = f"""
import os, signal, sys, threading
sys.path[:0] = [{str(ROOT)!r}]
import formats.dataset as D
commit, seen, lock = D._commit, [], threading.Lock()
def dying(folder, rel, record):
    if not rel.startswith("_done/records/"):
        return commit(folder, rel, record)
    with lock:
        seen.append(rel)
        if len(seen) == {n}:
            os.kill(os.getpid(), signal.SIGKILL)
        commit(folder, rel, record)
D._commit = dying
from workflows.cli import main
sys.exit(main({[str(a) for a in args]!r}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc
