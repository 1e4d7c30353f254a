"""The Ray Data adapter (workflows.ray_stages) without starting Ray: resource plans on clusters of several
shapes, the map_batches call each kind of stage gets (a stand-in dataset records it), and the per-worker
stage cache and block slicing that run inside Ray's workers."""

from __future__ import annotations

import pyarrow as pa
import pytest

from labeling.stage import Resources, Stage
from workflows import ray_stages
from workflows.ray_stages import (
    Placement,
    ResourceError,
    _ActorStage,
    _run_task,
    _run_task_in_slices,
    apply_stage,
    plan_resources,
)


class _Task(Stage):
    name = "task"
    resources = Resources(cpus=4.0, memory=1e9)  # a task's memory is never reserved

    def __init__(self, setting=0, rows_per_block=None):
        self.setting, self.rows_per_block, self.setups = setting, rows_per_block, 0

    def setup(self):
        self.setups += 1

    def process(self, batch):
        return batch.append_column("setting", pa.array([self.setting] * batch.num_rows))


class _Small(Stage):
    name = "small"
    resources = Resources(cpus=0.25)


def _actor(name, cpus=1.0, gpus=0.0, memory=0.0, rows_per_call=None):
    cls = type(f"_Actor_{name}", (Stage,), {"name": name, "actor": True, "rows_per_call": rows_per_call,
                                           "resources": Resources(cpus=cpus, gpus=gpus, memory=memory),
                                           "process": lambda self, b: b})
    return cls()


def test_actors_share_half_the_cpus_and_tasks_get_the_rest():
    plan = plan_resources([_Task(), _Small(), _actor("a", cpus=2.0), _actor("b", cpus=0.5)], cluster_cpus=4,
                          cluster_gpus=0)
    # two actors: each may take 0.5 * 4 / 2 = 1 CPU; they take 1 + 0.5, leaving 2.5 to each task stage
    assert plan == {"a": Placement(Resources(1.0, 0.0, 0.0), 1), "b": Placement(Resources(0.5, 0.0, 0.0), 1),
                    "task": Placement(Resources(2.5, 0.0, 0.0), None), "small": Placement(Resources(0.25, 0.0, 0.0), None)}


def test_gpu_fractions_pools_and_memory_caps():
    model = _actor("model", cpus=1.0, gpus=0.5, memory=4e9)
    plan = plan_resources([model, _Task()], cluster_cpus=16, cluster_gpus=2, cluster_memory=8e9)
    assert plan["model"] == Placement(Resources(1.0, 0.5, 2e9), 4)  # one actor per half GPU; a quarter of 8 GB
    assert plan["task"].resources == Resources(4.0, 0.0, 0.0)  # 16 - 4 x 1 CPUs free; it declares 4
    assert plan_resources([model], 16, 2, {"model": 0})["model"].pool == 4  # 0: the default
    assert plan_resources([model], 16, 2, {"model": 2})["model"].pool == 2
    assert plan_resources([model], 16, 0)["model"] == Placement(Resources(1.0, 0.0, 4e9), 1)  # no GPU, no cap
    with pytest.raises(ResourceError, match=r"stage model: 5 actors x 0.5 GPU exceed the cluster's 2"):
        plan_resources([model], 16, 2, {"model": 5})


def test_many_actors_on_few_cpus_get_fractions():
    plan = plan_resources([_actor("m", cpus=1.0), _Task()], cluster_cpus=2, cluster_gpus=0, pools={"m": 4})
    assert plan["m"] == Placement(Resources(0.25, 0.0, 0.0), 4)  # 0.5 * 2 / 4
    assert plan["task"].resources.cpus == 1.0  # 2 - 4 x 0.25


@pytest.mark.parametrize("cpus", [0, -1])
def test_a_cluster_without_cpus_is_refused(cpus):
    with pytest.raises(ResourceError, match="the Ray cluster reports no CPUs; start it with --num-cpus >= 1"):
        plan_resources([_Task()], cpus, 0)


class _Dataset:
    """Records map_batches calls as Ray Data's Dataset would receive them."""

    def __init__(self):
        self.calls = []

    def map_batches(self, fn, **kw):
        self.calls.append((fn, kw))
        return self


def test_a_task_stage_is_a_task_per_whole_block_keyed_by_its_settings():
    ds = _Dataset()
    apply_stage(ds, _Task(1), Placement(Resources(2.0), None))
    fn, kw = ds.calls[0]
    assert fn is _run_task
    assert {k: v for k, v in kw.items() if k != "fn_kwargs"} == {"batch_size": None, "batch_format": "pyarrow",
                                                                   "num_cpus": 2.0}
    key = kw["fn_kwargs"]["key"]
    apply_stage(ds, _Task(1), Placement(Resources(2.0), None))
    apply_stage(ds, _Task(2), Placement(Resources(2.0), None))
    assert ds.calls[1][1]["fn_kwargs"]["key"] == key != ds.calls[2][1]["fn_kwargs"]["key"]
    apply_stage(ds, _Task(1, rows_per_block=2), Placement(Resources(1.0), None), batch_size=8)
    assert ds.calls[3][0] is _run_task_in_slices and ds.calls[3][1]["batch_size"] == 8


def test_an_actor_stage_is_an_actor_pool_with_its_memory():
    import ray.data

    ds = _Dataset()
    stage = _actor("model", memory=2e9)
    apply_stage(ds, stage, Placement(Resources(0.5, 0.0, 2e9), 3))
    fn, kw = ds.calls[0]
    assert fn is _ActorStage and kw["fn_constructor_kwargs"] == {"stage": stage}
    assert isinstance(kw["compute"], ray.data.ActorPoolStrategy)
    assert (kw["num_cpus"], kw["num_gpus"], kw["memory"], kw["batch_size"]) == (0.5, 0.0, 2e9, None)
    with pytest.raises(ResourceError, match="stage model: an actor stage must declare its memory"):
        apply_stage(ds, stage, Placement(Resources(0.5, 0.0, 0.0), 1))


def test_a_gpu_stage_takes_rows_per_call_rows():
    ds = _Dataset()
    gpu = Placement(Resources(1.0, 1.0, 4e9), 1)
    apply_stage(ds, _actor("model", gpus=1.0, memory=4e9, rows_per_call=16), gpu)
    assert ds.calls[0][1]["batch_size"] == 16 and ds.calls[0][1]["num_gpus"] == 1.0
    apply_stage(ds, _actor("model", gpus=1.0, memory=4e9, rows_per_call=16), gpu, batch_size=4)
    assert ds.calls[1][1]["batch_size"] == 4  # an explicit batch size wins
    with pytest.raises(ResourceError, match="stage model: a stage placed on a GPU must declare rows_per_call"):
        apply_stage(ds, _actor("model", gpus=1.0, memory=4e9), gpu)
    assert len(ds.calls) == 2


def test_a_worker_sets_up_one_copy_per_key_and_slices_growing_stages(monkeypatch):
    monkeypatch.setattr(ray_stages, "_WORKER_STAGES", {})
    first, second = _Task(1), _Task(1)
    batch = pa.table({"x": [1, 2, 3, 4, 5]})
    _run_task(batch, first, b"k")
    out = _run_task(batch, second, b"k")  # the same settings: the worker's cached copy runs
    assert (first.setups, second.setups) == (1, 0) and out.column("setting").to_pylist() == [1] * 5
    sliced = _Task(3, rows_per_block=2)
    blocks = list(_run_task_in_slices(batch, sliced, b"s"))
    assert [b.column("x").to_pylist() for b in blocks] == [[1, 2], [3, 4], [5]]
    assert sliced.setups == 1


def test_an_actor_sets_its_stage_up_once_at_start():
    stage = _Task(7)
    actor = _ActorStage(stage)
    assert stage.setups == 1
    actor(pa.table({"x": [1]}))
    actor(pa.table({"x": [2]}))
    assert stage.setups == 1
