"""The stage contract (labeling.stage) beyond the column checks of test_data_path.py: setup once per stage object
(or never, when a worker set it up), declarations per instance, what is not checked."""

from __future__ import annotations

import pyarrow as pa
import pytest

from labeling.stage import Resources, Stage, StageError


class _Count(Stage):
    name = "count"
    reads = ("a",)
    adds = ("n",)
    drops = ("a",)

    def __init__(self):
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def process(self, batch: pa.Table) -> pa.Table:
        return pa.table({"n": [batch.num_rows]})


def test_resources_defaults_and_stage_defaults():
    assert Resources() == Resources(cpus=1.0, gpus=0.0, memory=0.0)
    s = Stage()
    assert (s.name, s.actor, s.reads, s.adds, s.drops, s.rows_per_block, s.rows_per_call) == \
        ("stage", False, (), (), (), None, None)
    assert s.resources == Resources()
    with pytest.raises(NotImplementedError):
        s(pa.table({"a": [1]}))  # the base class has no process()


def test_setup_runs_once_per_object_on_its_first_batch():
    a, b = _Count(), _Count()
    assert a.setups == 0  # construction loads nothing
    assert a(pa.table({"a": [1, 2, 3]})).to_pydict() == {"n": [3]}
    a(pa.table({"a": [1]}))
    assert (a.setups, b.setups) == (1, 0)  # readiness is per object, not per class
    b(pa.table({"a": []}))
    assert b.setups == 1


def test_a_stage_set_up_by_its_worker_is_not_set_up_again():
    s = _Count()
    s.setup()
    s._ready = True  # what an actor does in its constructor (workflows.ray_stages._ActorStage)
    s(pa.table({"a": [1]}))
    assert s.setups == 1


def test_drops_are_a_declaration_only_and_extra_columns_are_allowed():
    # `drops` tells the pipeline what leaves; the contract checks reads and adds only
    out = _Count()(pa.table({"a": [1], "extra": ["x"]}))
    assert out.column_names == ["n"]


def test_a_failed_read_check_runs_no_process_and_names_the_columns():
    s = _Count()
    with pytest.raises(StageError, match=r"stage count: the batch has no column\(s\) \['a'\] \(it has \['b', 'c'\]\)"):
        s(pa.table({"b": [1], "c": [2]}))
    assert issubclass(StageError, ValueError)
