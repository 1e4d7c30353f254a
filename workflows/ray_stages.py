"""The Ray Data adapter of the stage contract (``labeling.stage``): declared resources -> ``map_batches``.

Task stages (``actor = False``) become ``map_batches`` tasks spread over every CPU of the cluster; their
``setup()`` runs once per worker process (the stage is cached there by its settings). Actor stages become an
actor pool (``setup()`` in each actor's constructor). ``plan_resources`` scales the declared resources to
the cluster, so the same pipeline runs on a 1-CPU laptop and on GPU nodes: GPUs are asked for only where the
cluster has them, and actors together reserve at most half of the CPUs, leaving the rest to the tasks that
feed them (an actor pool that reserves every CPU starves its own reads: Ray waits forever).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

from labeling.stage import Resources, Stage


class ResourceError(ValueError):
    """The cluster cannot run the pipeline's stages (for instance no CPU left for the task stages)."""


@dataclass(frozen=True)
class Placement:
    """One stage's resources on this cluster, and its pool size (actors) or None (tasks)."""

    resources: Resources
    pool: int | None


def plan_resources(stages: list[Stage], cluster_cpus: float, cluster_gpus: float,
                   pools: dict[str, int] | None = None, cluster_memory: float = 0.0) -> dict[str, Placement]:
    """Scaled resources per stage name. ``pools`` overrides actor pool sizes (default: one actor per GPU the
    stage could use, else 1). An actor's declared memory is capped at a quarter of the cluster's
    (``cluster_memory`` bytes; 0: unknown, kept as declared).

    Raises ResourceError when the cluster has no CPU, or a stage needs a GPU fraction the cluster lacks.
    """
    if cluster_cpus <= 0:
        raise ResourceError("the Ray cluster reports no CPUs; start it with --num-cpus >= 1")
    pools = pools or {}
    out: dict[str, Placement] = {}
    actors = [s for s in stages if s.actor]
    sizes = {}
    for s in actors:
        want_gpu = s.resources.gpus if cluster_gpus > 0 else 0.0
        default = max(1, int(cluster_gpus // want_gpu)) if want_gpu else 1
        sizes[s.name] = max(1, int(pools.get(s.name) or default))
    n_actor = sum(sizes.values())
    cpu_share = 0.5 * cluster_cpus / max(n_actor, 1)
    actor_cpus = 0.0
    for s in actors:
        gpus = s.resources.gpus if cluster_gpus > 0 else 0.0
        if gpus * sizes[s.name] > cluster_gpus + 1e-9:
            raise ResourceError(f"stage {s.name}: {sizes[s.name]} actors x {gpus} GPU exceed the cluster's {cluster_gpus}")
        cpus = min(s.resources.cpus, cpu_share)
        actor_cpus += cpus * sizes[s.name]
        memory = min(s.resources.memory, cluster_memory / 4) if cluster_memory else s.resources.memory
        out[s.name] = Placement(Resources(cpus=cpus, gpus=gpus, memory=memory), sizes[s.name])
    free = cluster_cpus - actor_cpus
    for s in stages:
        if not s.actor:
            out[s.name] = Placement(Resources(cpus=min(s.resources.cpus, free), gpus=0.0), None)
    return out


_WORKER_STAGES: dict[bytes, Stage] = {}


def _worker_stage(stage: Stage, key: bytes) -> Stage:
    """The worker process's cached copy of a task stage (its setup() then runs once per process)."""
    cached = _WORKER_STAGES.get(key)
    if cached is None:
        cached = _WORKER_STAGES[key] = stage
    return cached


def _run_task(batch, stage: Stage, key: bytes):
    """Runs a task stage in a Ray worker."""
    return _worker_stage(stage, key)(batch)


def _run_task_in_slices(batch, stage: Stage, key: bytes):
    """Runs a task stage that grows its rows (decoded pixels) slice by slice, one output block per slice of
    ``stage.rows_per_block`` input rows: a block stays small and never mixes two input blocks."""
    s = _worker_stage(stage, key)
    for i in range(0, batch.num_rows, s.rows_per_block):
        yield s(batch.slice(i, s.rows_per_block))


class _ActorStage:
    """An actor holding one set-up stage."""

    def __init__(self, stage: Stage):
        self.stage = stage
        stage.setup()
        stage._ready = True

    def __call__(self, batch):
        return self.stage(batch)


def apply_stage(ds, stage: Stage, placement: Placement, *, batch_size: int | None = None):
    """``ds.map_batches`` for `stage` with its placement: a task per batch, or an actor pool.

    `batch_size` None hands each block whole: a batch never mixes two blocks, so the model sees the same
    batches on every run (records reproduce bit for bit on CPU). Ray Data refuses that for a stage that requests
    GPUs: there the stage's ``rows_per_call`` rows go to each call (a row's candidates do not depend on its batch
    companions, to float tolerance; bf16 on a GPU is reproducible only to that tolerance anyway). Raises
    ResourceError for a GPU placement of a stage without ``rows_per_call``."""
    import ray

    if batch_size is None and placement.resources.gpus:
        if stage.rows_per_call is None:
            raise ResourceError(f"stage {stage.name}: a stage placed on a GPU must declare rows_per_call")
        batch_size = stage.rows_per_call
    kw = {"batch_size": batch_size, "batch_format": "pyarrow", "num_cpus": placement.resources.cpus}
    if stage.actor:
        # an actor reserves its memory; that also keeps Ray Data from fusing the CPU stages before the actor
        # into it (it fuses only operators with equal resource requests), where they would run serially beside
        # the model instead of on every CPU of the cluster
        if not placement.resources.memory:
            raise ResourceError(f"stage {stage.name}: an actor stage must declare its memory")
        return ds.map_batches(_ActorStage, fn_constructor_kwargs={"stage": stage},
                              compute=ray.data.ActorPoolStrategy(size=placement.pool),
                              num_gpus=placement.resources.gpus, memory=placement.resources.memory, **kw)
    key = type(stage).__qualname__.encode() + pickle.dumps(stage.__dict__)
    fn = _run_task_in_slices if stage.rows_per_block else _run_task
    return ds.map_batches(fn, fn_kwargs={"stage": stage, "key": key}, **kw)
