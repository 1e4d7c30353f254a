"""Launching detector training: one process, or several under Ray Train (the runtime side of `detector.train`).

`train` runs `detector.train.train_loop` in this process when ``cfg.num_workers <= 1``, else as a Ray Train
`TorchTrainer` (DDP; gloo on CPU, NCCL on GPU) of ``num_workers`` workers, each given its rank, its device and
DDP wrapping through `detector.train.Distributed`. A Ray that `train` starts is shut down after; a caller's or
a cluster's (``RAY_ADDRESS``) stays. A checkpoint folder on an object store is trained in a local mirror that
uploads each checkpoint (`workflows.run_mirror`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

from detector.train import Distributed, TrainConfig, train_loop, trained_to, training_config

log = logging.getLogger("ovlabel.train")


def train(init: str, datasets: list[str], out_dir: str | os.PathLike, cfg: TrainConfig, *,
          exclude_keys: set[str] = frozenset(), device: str | None = None,
          work_dir: str | os.PathLike | None = None, saved: Callable[[], None] | None = None) -> dict:
    """Fine-tunes `init` (a model folder or hub id) on the dataset directories `datasets`; checkpoints land in
    `out_dir/checkpoint-N`, and a rerun resumes from the newest. Returns the timing stats
    (``{"steps", "resumed": True}`` when `out_dir` is already trained to ``cfg.steps``).

    `out_dir` is a local folder or a store URL (``s3://``, ``gs://``): torch and transformers save and resume
    checkpoints as local files, so a store folder is mirrored in `work_dir` (default under ``$OVLABEL_CACHE/train``,
    `workflows.run_mirror`): its checkpoints are downloaded first, each new checkpoint is uploaded once saved
    (with ``num_workers > 1``, at the end) and rotated ones are deleted there. `saved` is called after each
    checkpoint (and its upload) and at the end.

    Raises `formats.storage.StorageError` for an unusable location or a work directory that mirrors another,
    ValueError when the datasets have no image with boxes, FloatingPointError on a non-finite loss."""
    from workflows.run_mirror import RunMirror

    mirror = RunMirror(out_dir, work_dir, kind="train")
    mirror.pull()
    out = mirror.root

    def checkpoint_saved(_path=None) -> None:
        mirror.push()
        if saved is not None:
            saved()

    out.mkdir(parents=True, exist_ok=True)
    step = trained_to(out)
    if step is not None and step >= cfg.steps:
        log.info("%s: already trained to step %d", mirror.home, cfg.steps)
        checkpoint_saved()  # a run cut short after its last checkpoint: the store gets what it lacks
        return {"steps": cfg.steps, "resumed": True}
    config = training_config(init, datasets, out, cfg, exclude_keys=exclude_keys, device=device)
    if cfg.num_workers <= 1:
        stats = train_loop(config, Distributed(saved=checkpoint_saved))
        checkpoint_saved()  # train_stats.json
        return stats
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from workflows.ray_runtime import ray_session

    with ray_session():  # a Ray this call starts is shut down after; a caller's or a cluster's stays
        use_gpu = cfg.use_gpu if cfg.use_gpu is not None else bool(ray.cluster_resources().get("GPU", 0))
        trainer = TorchTrainer(
            _ray_worker, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cfg.cpus_per_worker}),
            run_config=RunConfig(storage_path=str(out.resolve() / "ray_train"), name="train"),
        )
        trainer.fit()
    checkpoint_saved()
    return json.loads((out / "train_stats.json").read_text())  # written by rank 0


def _ray_worker(config: dict) -> None:
    """One Ray Train worker: `train_loop` with this worker's rank, device and DDP wrapping; reports its stats."""
    import ray.train
    import ray.train.torch

    from detector.models import pick_device

    ctx = ray.train.get_context()
    # a worker meant for cuda trains on the device Ray Train gave it (cpu when it was given no GPU, as
    # `prepare_model` moves the model there); a cpu one stays on cpu
    wants_cuda = (config.get("device") or pick_device()).startswith("cuda")
    train_loop(config, Distributed(
        rank=ctx.get_world_rank(), world=ctx.get_world_size(),
        device=str(ray.train.torch.get_device()) if wants_cuda else None,
        wrap_model=lambda m: ray.train.torch.prepare_model(m, parallel_strategy_kwargs={"find_unused_parameters": True}),
        report=ray.train.report))
