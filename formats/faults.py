"""Crash points for fault-injection tests: a run dies by SIGKILL at a named instant, the same on every run.

``OVLABEL_TEST_KILL_AFTER=<event>:<n>`` makes the process SIGKILL itself (and its process group when it leads
one: the local Ray it started, its workers) right after its n-th `<event>`, as ``kill -9`` or a lost machine
would at that instant. Events: ``part`` (a dataset writer recorded a finished part, `formats.dataset`) and
``checkpoint`` (training saved a checkpoint, `detector.train`). Counts are per process.

Tests kill runs this way rather than by watching for files: a run that writes its parts within one poll
interval would finish before a watcher's kill, so the test would depend on timing. Unset (always, outside
tests), a crash point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import Counter

KILL_AFTER_ENV = "OVLABEL_TEST_KILL_AFTER"
_counts: Counter[str] = Counter()
_lock = threading.Lock()


def kill_after(event: str, n: int) -> dict[str, str]:
    """The environment entry that kills a run right after its `n`-th `event` (for subprocess ``env=``)."""
    return {KILL_AFTER_ENV: f"{event}:{n}"}


def crash_point(event: str) -> None:
    """Counts one `event`; SIGKILLs this process (its group when it leads one) when ``$OVLABEL_TEST_KILL_AFTER``
    names this event and the count has reached its number. Raises ValueError on a malformed setting."""
    spec = os.environ.get(KILL_AFTER_ENV)
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name != event:
        return
    if not n.isdecimal() or int(n) < 1:
        raise ValueError(f"${KILL_AFTER_ENV}={spec!r}: expected <event>:<n>, n >= 1")
    with _lock:
        _counts[event] += 1
        reached = _counts[event] >= int(n)
    if reached:
        sys.stderr.flush()
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
