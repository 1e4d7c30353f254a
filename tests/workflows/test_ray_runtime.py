"""`init_ray` starts a local Ray again when the raylet misses Ray's fixed start-up wait (an overloaded
machine), and only then; Ray itself is replaced by a recorder (no Ray starts)."""

from __future__ import annotations

import pytest
import ray

from workflows import ray_runtime


@pytest.fixture
def fake_ray(monkeypatch):
    calls = []
    failures = []

    def init(**kw):
        calls.append("init")
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls, failures


TIMEOUT = "The current node timed out during startup. This could happen because some of the raylet failed"


def test_a_start_up_timeout_is_retried(fake_ray):
    calls, failures = fake_ray
    failures += [Exception(TIMEOUT), Exception(TIMEOUT)]
    ray_runtime.init_ray(1)
    assert calls == ["init", "shutdown", "init", "shutdown", "init"]


def test_it_gives_up_after_the_last_attempt(fake_ray):
    calls, failures = fake_ray
    failures += [Exception(TIMEOUT)] * ray_runtime.START_ATTEMPTS
    with pytest.raises(Exception, match="timed out during startup"):
        ray_runtime.init_ray(1)
    assert calls.count("init") == ray_runtime.START_ATTEMPTS == 3


def test_other_errors_are_not_retried(fake_ray):
    calls, failures = fake_ray
    failures.append(ValueError("bad num_cpus"))
    with pytest.raises(ValueError, match="bad num_cpus"):
        ray_runtime.init_ray(1)
    assert calls == ["init"]


def test_a_failed_attempt_leaves_no_process_behind(fake_ray, monkeypatch):
    """What a timed-out ``ray.init`` started (its GCS, raylet, reaper: here a sleeping child) is killed
    before the next attempt; processes that were there before are left alone."""
    import subprocess

    calls, _ = fake_ray
    old = subprocess.Popen(["sleep", "60"])
    started = []

    def init(**kw):
        calls.append("init")
        if len(started) == 0:
            started.append(subprocess.Popen(["sleep", "60"]))
            raise Exception(TIMEOUT)

    monkeypatch.setattr(ray, "init", init)
    try:
        ray_runtime.init_ray(1)
        assert calls == ["init", "shutdown", "init"]
        assert started[0].wait(timeout=10) == -9  # killed
        assert old.poll() is None  # not ours to kill
    finally:
        old.kill()
        old.wait()
