"""workflows/stdio.py: results as JSON on stdout, library chatter sent to stderr, a reading progress bar."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

from workflows.stdio import print_json, reading_progress


def test_print_json_writes_indented_json_with_paths_as_strings(capsys):
    print_json({"out": Path("/tmp/x"), "n": 2, "parts": ["a"]})
    assert capsys.readouterr().out == '{\n  "out": "/tmp/x",\n  "n": 2,\n  "parts": [\n    "a"\n  ]\n}\n'


def test_stdout_to_stderr_moves_file_descriptor_1_child_processes_included():
    # in a process of its own: pytest's capture replaces sys.stdout, the real one writes to descriptor 1
    script = """
import os, subprocess, sys
from workflows.stdio import stdout_to_stderr
print("before")
with stdout_to_stderr():
    print("inside")
    os.write(1, b"fd 1\\n")
    subprocess.run([sys.executable, "-c", "print('child')"], check=True)
print("after")
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "before\nafter\n"
    assert proc.stderr == "inside\nfd 1\nchild\n"


def test_reading_progress_yields_an_update_and_closes(tmp_path, capfd):
    f = tmp_path / "data.json"
    f.write_bytes(b"x" * 100)
    with reading_progress(f) as update:
        update(60)
        update(40)
    with reading_progress(tmp_path / "missing") as update:  # no file: no total, still an update
        update(5)
    assert capfd.readouterr().out == ""  # the bar never writes on stdout
