"""Starting or joining Ray the same way on a laptop and on a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger("ovlabel.ray")
START_ATTEMPTS = 3  # local Ray start-ups tried before giving up (see `init_ray`)


def init_ray(num_cpus: int | None = None, object_store_mb: int | None = None, address: str | None = None) -> None:
    """Joins the cluster named by `address` or RAY_ADDRESS (as inside `ray job submit`), else starts a new
    local Ray (``address="local"``), never joining a cluster that merely runs on this machine uninvited.

    `num_cpus` and `object_store_mb` size the local Ray only (a joined cluster keeps its own resources).

    Object-store credentials (`formats.storage`): the workers of a local Ray started here inherit this process's
    environment (``AWS_*``, ``AWS_ENDPOINT_URL``), so they reopen ``s3://`` folders as the driver does and nothing
    is passed or logged; a joined cluster's workers use the credentials of their own nodes.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining the Ray cluster at %s", address)
        if num_cpus:
            log.warning("--num-cpus %s is ignored: a joined cluster keeps its own resources", num_cpus)
        ray.init(address=address, log_to_driver=True)
        return
    mb = object_store_mb or int(os.environ.get("OVLABEL_OBJECT_STORE_MB", "512"))
    for attempt in range(1, START_ATTEMPTS + 1):
        before = _children()
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, object_store_memory=mb << 20,
                     log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)
            return
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for this
            # Ray gives a local node's raylet a fixed 30 s to start (ray/_private/node.py); an overloaded machine
            # can miss it. Nothing has run yet, so starting again is safe.
            if "timed out during startup" not in str(e) or attempt == START_ATTEMPTS:
                raise
            log.warning("the local Ray did not start in time (attempt %d of %d); starting it again",
                        attempt, START_ATTEMPTS)
            ray.shutdown()
            _kill_new_children(before)  # the failed node's GCS, raylet, reaper: Ray keeps no handle on them


def _children() -> set[int]:
    """Process ids of this process's descendants."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _kill_new_children(before: set[int]) -> None:
    """SIGKILLs the descendants of this process not in `before` (what a failed `ray.init` left running)."""
    import psutil

    for p in psutil.Process().children(recursive=True):
        if p.pid not in before:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None, address: str | None = None) -> Iterator[None]:
    """`init_ray` for the length of a block; shuts down only a Ray it started (a caller's or a cluster's stays)."""
    import ray

    started_here = not ray.is_initialized()
    init_ray(num_cpus, address=address)
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


def cluster_gpus() -> float:
    """GPUs the Ray cluster has (0 on CPU machines)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0))
