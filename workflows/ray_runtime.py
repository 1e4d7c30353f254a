"""Starting or joining Ray the same way on a laptop and on a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger("ovlabel.ray")


def init_ray(num_cpus: int | None = None, object_store_mb: int | None = None, address: str | None = None) -> None:
    """Joins the cluster named by `address` or RAY_ADDRESS (as inside `ray job submit`), else starts a new
    local Ray (``address="local"``), never joining a cluster that merely runs on this machine uninvited.

    `num_cpus` and `object_store_mb` size the local Ray only (a joined cluster keeps its own resources).
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
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, object_store_memory=mb << 20,
             log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)


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
