"""Launching detector training: one process, or several under Ray Train (the runtime side of `detector.train`).

`train` runs `detector.train.train_loop` in this process when ``cfg.num_workers <= 1``, else as a Ray Train
`TorchTrainer` (DDP; gloo on CPU, NCCL on GPU) of ``num_workers`` workers, each given its rank, its device and
DDP wrapping through `detector.train.Distributed`. A Ray that `train` starts is shut down after; a caller's or
a cluster's (``RAY_ADDRESS``) stays.
"""

from __future__ import annotations

import json
import logging
import os

from detector.train import Distributed, TrainConfig, train_loop, trained_to, training_config

log = logging.getLogger("ovlabel.train")


def train(init: str, datasets: list[str], out_dir: str | os.PathLike, cfg: TrainConfig, *,
          exclude_keys: set[str] = frozenset(), device: str | None = None) -> dict:
    """Fine-tunes `init` (a model folder or hub id) on the dataset directories `datasets`; checkpoints land in
    `out_dir/checkpoint-N`, a local folder, and a rerun resumes from the newest. Returns the timing stats
    (``{"steps", "resumed": True}`` when `out_dir` is already trained to ``cfg.steps``).

    Raises `formats.storage.NotLocalError` for an object-store `out_dir` (torch and transformers save and resume
    checkpoints as local files), ValueError when the datasets have no image with boxes, FloatingPointError on
    a non-finite loss."""
    from formats.storage import require_local

    out = require_local(out_dir, "checkpoints are saved and resumed by torch/transformers as local files; give a "
                                 "local --out (copy the finished checkpoints to the store afterwards)")
    out.mkdir(parents=True, exist_ok=True)
    step = trained_to(out)
    if step is not None and step >= cfg.steps:
        log.info("%s: already trained to step %d", out, cfg.steps)
        return {"steps": cfg.steps, "resumed": True}
    config = training_config(init, datasets, out, cfg, exclude_keys=exclude_keys, device=device)
    if cfg.num_workers <= 1:
        return train_loop(config)
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
