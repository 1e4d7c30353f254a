"""The stage contract: a plain class over Arrow batches that declares what it needs and what it does.

A stage declares the ``resources`` one worker of it needs (CPUs, GPUs), the columns it ``reads``, ``adds`` and
``drops``, and whether it keeps state worth loading once per worker (``actor = True``: models, tokenizers).
``setup()`` loads that state; ``__call__(batch)`` checks the declared columns around ``process(batch)``.
Stages run without Ray (``stage.setup(); stage(batch)``), which is how they are unit-tested; the Ray Data
adapter (``workflows.ray_stages``) maps the declarations onto ``map_batches`` tasks or actor pools, so
pipeline code never hard-codes ``num_cpus``/``num_gpus``. (The shape follows NeMo Curator's Ray stages:
resources, setup, declared inputs and outputs.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage reserves: ``cpus`` (fractions allowed), ``gpus`` (0 on CPU-only work),
    ``memory`` (bytes of host memory; 0: not reserved)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: float = 0.0


class StageError(ValueError):
    """A batch lacks a column the stage reads, or the stage did not add what it declared."""


class Stage:
    """Base class of pipeline stages; subclasses set the class attributes and implement ``process``."""

    name: ClassVar[str] = "stage"
    resources: Resources = Resources()
    actor: ClassVar[bool] = False  # True: costly setup(), run in a pool of long-lived workers
    reads: ClassVar[tuple[str, ...]] = ()
    adds: ClassVar[tuple[str, ...]] = ()
    drops: ClassVar[tuple[str, ...]] = ()
    rows_per_block: int | None = None  # set: output in blocks of this many input rows (stages that grow rows)
    # rows per call where the stage holds a GPU (Ray Data refuses whole blocks there; elsewhere calls take
    # blocks whole): blocks are cut or joined to this many rows
    rows_per_call: int | None = None

    _ready: bool = False

    def setup(self) -> None:
        """Loads per-worker state (models, tokenizers). Called once per worker before the first batch."""

    def process(self, batch: pa.Table) -> pa.Table:
        """The stage's work on one batch; subclasses define it (the base raises `NotImplementedError`)."""
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        """``process(batch)`` with the declared columns checked; runs ``setup()`` first if nobody did.

        Raises StageError when `batch` lacks a column of ``reads`` or the output lacks one of ``adds``."""
        if not self._ready:
            self.setup()
            self._ready = True
        missing = [c for c in self.reads if c not in batch.column_names]
        if missing:
            raise StageError(f"stage {self.name}: the batch has no column(s) {missing} (it has {batch.column_names})")
        out = self.process(batch)
        absent = [c for c in self.adds if c not in out.column_names]
        if absent:
            raise StageError(f"stage {self.name}: declared column(s) {absent} were not added")
        return out
