"""Ingest on Ray: sharded sources (img2dataset output of GRIT, CC3M) convert shard by shard in parallel Ray
tasks; single-file sources (MDETR, COCO, Open Images) and downloads run in the job's driver."""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger("ovlabel.ingest")


def ray_map(fn: Callable, items: Iterable, *, num_cpus: float = 1, in_flight: int | None = None) -> Iterator:
    """Like `map(fn, items)` (results in order), each call a Ray task; at most `in_flight` run at once."""
    import ray
    from tqdm import tqdm

    items = list(items)
    remote = ray.remote(num_cpus=num_cpus)(_apply)
    limit = in_flight or max(2, int(ray.cluster_resources().get("CPU", 1) / num_cpus) * 2)
    pending: deque = deque()
    with tqdm(total=len(items), desc="shards", unit="shard", file=sys.stderr, disable=None) as bar:
        for item in items:
            pending.append(remote.remote(fn, item))
            if len(pending) >= limit:
                yield ray.get(pending.popleft())
                bar.update()
        while pending:
            yield ray.get(pending.popleft())
            bar.update()


def _apply(fn: Callable, item):
    return fn(item)
