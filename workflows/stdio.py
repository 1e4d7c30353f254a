"""stdout is for data: keeping libraries that print progress or banners off it."""

from __future__ import annotations

import contextlib
import json
import os
import sys


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
