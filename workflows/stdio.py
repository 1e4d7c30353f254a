"""stdout is for data: keeping libraries that print progress or banners off it; progress goes to stderr."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path


def print_json(obj) -> None:
    """A command's result on stdout, as indented JSON (paths and other objects as strings)."""
    print(json.dumps(obj, indent=2, default=str))


@contextlib.contextmanager
def stdout_to_stderr():
    """Sends file descriptor 1 to stderr for the duration (child processes and logging handlers included)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def reading_progress(path: str | os.PathLike) -> Iterator[Callable[[int], None]]:
    """A bytes progress bar on stderr for reading `path` (hidden when stderr is not a terminal); yields its update."""
    from tqdm import tqdm

    p = Path(path)
    total = p.stat().st_size if p.is_file() else 0
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"reading {p.name}", file=sys.stderr, disable=None,
               leave=False)
    try:
        yield bar.update
    finally:
        bar.close()
