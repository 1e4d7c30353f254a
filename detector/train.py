"""Fine-tuning MM-Grounding-DINO / Grounding DINO (transformers) on dataset directories.

One training loop (`train_loop`) runs in one process given its place in a data-parallel group
(`Distributed`); the launcher that runs one process, or several under Ray Train's `TorchTrainer` (DDP; gloo on
CPU, NCCL on GPU), is `workflows.training.train`. Gold and pseudo images go in separate batches, mixed at
`pseudo_ratio`, so pseudo batches can be weighted by their boxes' scores or trained for classification
only (no box regression, as YOLO-World trains its CC3M pseudo boxes). bf16 autocast on GPU, gradient
accumulation, checkpoints with `save_pretrained` (safetensors) plus the optimizer state (loaded with
`weights_only=True`); a rerun resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.data import Example, distinct_names, load_examples, load_image, prompt_for, target
from detector.models import autocast, load_pretrained, pick_device
from detector.prompts import join_prompt, label_maps, prompt_form, separator_chars
from formats.faults import crash_point

log = logging.getLogger("ovlabel.train")

STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"


@dataclass
class TrainConfig:
    """Training settings (recorded in every checkpoint)."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 2  # images per worker per micro-batch
    grad_accum: int = 1
    lr: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    max_grad_norm: float = 0.1
    negatives: int = 20  # sampled negative category names per OD prompt
    pseudo_ratio: float = 0.5  # share of batches drawn from pseudo data when both kinds exist
    pseudo_weighting: str = "score"  # "score": a pseudo batch's loss times its boxes' mean score; "none"
    pseudo_box_loss: bool = True  # False: pseudo batches train classification only
    pseudo_min_score: float = 0.0
    precision: str = "auto"  # bf16 on GPU; fp32 on CPU
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    seed: int = 0
    loader_workers: int = 1  # DataLoader processes decoding images
    num_workers: int = 1  # training workers (Ray Train when > 1)
    use_gpu: bool | None = None  # None: when the cluster has GPUs
    cpus_per_worker: float = 1.0
    log_every: int = 10
    extra: dict = field(default_factory=dict)


# -- data ------------------------------------------------------------------------------------------------

class _Batches:
    """A deterministic, endless sequence of homogeneous batches (all gold or all pseudo) for one worker."""

    def __init__(self, gold: list[Example], pseudo: list[Example], names: list[str], cfg: TrainConfig,
                 rank: int, world: int, count_tokens, max_tokens: int):
        self.gold, self.pseudo, self.names, self.cfg = gold, pseudo, names, cfg
        self.rank, self.world = rank, world
        self.count_tokens, self.max_tokens = count_tokens, max_tokens
        self.separators = count_tokens.separators

    def plan(self, step: int) -> list[tuple[bool, list[int]]]:
        """The micro-batches of optimizer step `step` for this worker: (pseudo?, example indices)."""
        out = []
        for micro in range(self.cfg.grad_accum):
            rng = random.Random(f"{self.cfg.seed}:{step}:{micro}")
            use_pseudo = bool(self.pseudo) and (not self.gold or rng.random() < self.cfg.pseudo_ratio)
            pool = self.pseudo if use_pseudo else self.gold
            # every worker draws a different slice of the same global batch
            idx = [rng.randrange(len(pool)) for _ in range(self.cfg.batch_size * self.world)]
            out.append((use_pseudo, idx[self.rank * self.cfg.batch_size:(self.rank + 1) * self.cfg.batch_size]))
        return out

    def make(self, item: tuple[int, int, bool, list[int]]):
        """Loads and encodes one micro-batch (runs in DataLoader workers)."""
        step, micro, use_pseudo, idx = item
        pool = self.pseudo if use_pseudo else self.gold
        rng = random.Random(f"{self.cfg.seed}:{step}:{micro}:prompt")
        images, texts, spans, labels, scores = [], [], [], [], []
        for i in idx:
            ex = pool[i]
            names, lab = prompt_for(ex, self.names, self.cfg.negatives, rng, self.count_tokens, self.max_tokens)
            images.append(load_image(ex))
            text, where = join_prompt(names, self.separators)  # the same prompts as inference
            texts.append(text)
            spans.append(where)
            labels.append(target(ex, lab))
            scores.append(ex.score)
        return {"images": images, "texts": texts, "spans": spans, "labels": labels, "pseudo": use_pseudo,
                "weight": float(np.mean(scores)) if use_pseudo and self.cfg.pseudo_weighting == "score" else 1.0}


class _StepDataset:
    """torch Dataset over (step, micro) items from `start` to `steps` (so DataLoader workers prefetch)."""

    def __init__(self, batches: _Batches, start: int, steps: int):
        self.items = [(s, m, p, idx) for s in range(start, steps) for m, (p, idx) in enumerate(batches.plan(s))]
        self.batches = batches

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.batches.make(self.items[i])


class _TokenCounter:
    """Tokens of a name in its prompt form, without special tokens (picklable, for DataLoader workers)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.separators = separator_chars(tokenizer)

    def __call__(self, text: str) -> int:
        return len(self.tokenizer(prompt_form(text, self.separators), add_special_tokens=False)["input_ids"])


def with_label_maps(labels: list[dict], spans: list[list[tuple[int, int]]], offsets, mask, width: int) -> list[dict]:
    """Adds each image's ``label_map`` (phrases x width), built from its prompt's character spans.

    Phrases the tokenizer's truncation cut off entirely (past the text limit; only the prompt's tail can be
    cut) have no tokens and no group in the model: they leave the map, and their boxes leave this step's
    targets, rather than being supervised on another phrase's tokens.
    """
    import torch

    out = []
    for t, s, o, m in zip(labels, spans, offsets, mask):
        lm = label_maps(s, np.asarray(o), np.asarray(m), width)
        n = int(lm.any(axis=1).sum())  # the phrases with tokens: a prefix
        keep = t["class_labels"] < n
        out.append({**t, "class_labels": t["class_labels"][keep], "boxes": t["boxes"][keep],
                    "label_map": torch.as_tensor(lm[:n])})
    return out


def _as_is(batch):
    return batch


# -- checkpoints -----------------------------------------------------------------------------------------

def last_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder under `out_dir` (one with its trainer state)."""
    found = sorted(Path(out_dir).glob("checkpoint-*/" + STATE), key=lambda p: int(p.parent.name.split("-")[1]))
    return found[-1].parent if found else None


def _save(model, processor, optimizer, step: int, out_dir: Path, cfg: TrainConfig, history: list) -> Path:
    import torch

    final = out_dir / f"checkpoint-{step}"
    tmp = out_dir / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # safetensors
    processor.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
    (tmp / STATE).write_text(json.dumps({"step": step, "config": asdict(cfg), "history": history}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)  # the state file inside marks it complete
    for old in sorted(out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[:-cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


# -- the loop --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel group, given by whoever launched it (`workflows.training`
    fills it from Ray Train); `detector/` never imports a runtime. The default is one process alone.

    `device` overrides the configured device (a worker's own GPU); `wrap_model` wraps the model for DDP
    (gradients averaged across the group); `report` receives the final stats on every rank; `saved` is called
    on rank 0 with each checkpoint folder once it is complete (a launcher uploads it)."""

    rank: int = 0
    world: int = 1
    device: str | None = None
    wrap_model: Callable[[Any], Any] | None = None
    report: Callable[[dict], None] | None = None
    saved: Callable[[Path], None] | None = None


def training_config(init: str, datasets: list[str], out_dir: str | os.PathLike, cfg: TrainConfig, *,
                    exclude_keys: set[str] = frozenset(), device: str | None = None) -> dict:
    """The plain dict `train_loop` takes (picklable, for launchers that ship it to workers)."""
    return {"train": asdict(cfg), "init": str(init), "datasets": [str(d) for d in datasets], "out": str(out_dir),
            "exclude_keys": sorted(exclude_keys), "device": device}


def trained_to(out_dir: str | os.PathLike) -> int | None:
    """The step of the newest complete checkpoint under `out_dir`; None when there is none."""
    done = last_checkpoint(out_dir)
    return int(json.loads((done / STATE).read_text())["step"]) if done is not None else None


def _loss(out, config, pseudo_box_loss: bool, is_pseudo: bool):
    """The weighted sum of the loss terms, without the box terms for classification-only batches."""
    from detector.loss import loss_term

    if not is_pseudo or pseudo_box_loss:
        return out.loss
    return sum(2.0 * v for k, v in out.loss_dict.items() if loss_term(k) == "loss_ce")


def _load_model(source: str, device: str):
    """(processor, model in train mode on `device`) from a model folder or hub id, with the fixed loss."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    from detector.loss import grounding_loss

    processor = load_pretrained(AutoProcessor, source)
    model = load_pretrained(AutoModelForZeroShotObjectDetection, source).to(device)
    model.loss_function = grounding_loss  # transformers' loss with batch label-map offsets fixed
    model.train()
    return processor, model


def _optimizer(model, cfg: TrainConfig):
    """AdamW with two groups: everything but the backbone at `cfg.lr` (group 0), the backbone at `lr_backbone`."""
    import torch

    backbone = [p for n, p in model.named_parameters() if "backbone" in n and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if "backbone" not in n and p.requires_grad]
    return torch.optim.AdamW([{"params": rest, "lr": cfg.lr}, {"params": backbone, "lr": cfg.lr_backbone}],
                             weight_decay=cfg.weight_decay)


def _restore(optimizer, checkpoint: Path | None, device: str) -> tuple[int, list[dict]]:
    """(step, loss history) of `checkpoint`, its optimizer state loaded (``weights_only=True``); (0, []) without."""
    import torch

    if checkpoint is None:
        return 0, []
    optimizer.load_state_dict(torch.load(checkpoint / OPTIMIZER, map_location=device, weights_only=True))
    state = json.loads((checkpoint / STATE).read_text())
    return int(state["step"]), list(state["history"])


def _batches(config: dict, cfg: TrainConfig, tokenizer, max_tokens: int, dist: Distributed) -> _Batches:
    """This worker's batch plan over config's datasets (gold and pseudo examples apart, one merged name list).

    Raises ValueError when no dataset has an image with boxes."""
    gold, pseudo, names = [], [], []
    exclude = set(config.get("exclude_keys", []))
    seps = separator_chars(tokenizer)  # names are checked and merged as inference prompts them
    for d in config["datasets"]:
        exs, cats = load_examples(d, exclude_keys=exclude, min_score=cfg.pseudo_min_score, separators=seps)
        names = distinct_names(names + cats, seps)
        for ex in exs:
            (pseudo if ex.pseudo else gold).append(ex)
    if not gold and not pseudo:
        raise ValueError(f"no training images with boxes in {config['datasets']}")
    return _Batches(gold, pseudo, names, cfg, dist.rank, dist.world, _TokenCounter(tokenizer), max_tokens)


def _loader(batches: _Batches, start: int, cfg: TrainConfig):
    """A DataLoader over the micro-batches of steps `start`..`cfg.steps`, decoded in `loader_workers` processes."""
    import torch

    return torch.utils.data.DataLoader(
        _StepDataset(batches, start, cfg.steps), batch_size=None, shuffle=False,
        num_workers=cfg.loader_workers, prefetch_factor=4 if cfg.loader_workers else None,
        persistent_workers=False, collate_fn=_as_is)


def _micro_step(model, core, processor, batch: dict, cfg: TrainConfig, device: str, max_tokens: int) -> float:
    """Forward and backward of one micro-batch; returns its loss (weighted, divided by `grad_accum`)."""
    enc = processor.tokenizer(batch["texts"], padding="longest", truncation=True, max_length=max_tokens,
                              return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")
    pix = processor.image_processor(images=batch["images"], return_tensors="pt")
    inputs = {k: v.to(device) for k, v in {**enc, **pix}.items()}
    labels = with_label_maps(batch["labels"], batch["spans"], offsets.numpy(), enc["attention_mask"].numpy(),
                             max_tokens)
    labels = [{k: v.to(device) for k, v in t.items()} for t in labels]
    with autocast(device, cfg.precision):
        out = model(**inputs, labels=labels)
    loss = _loss(out, core.config, cfg.pseudo_box_loss, batch["pseudo"]) * batch["weight"] / cfg.grad_accum
    loss.backward()
    return float(loss.detach())


def _optimizer_step(model, optimizer, cfg: TrainConfig, step: int) -> None:
    """Sets both groups' learning rates for `step` (linear warm-up), clips the gradients' norm and steps."""
    import torch

    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    for g in optimizer.param_groups:
        g["lr"] = (cfg.lr if g is optimizer.param_groups[0] else cfg.lr_backbone) * warm
    if cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_loop(config: dict, dist: Distributed = Distributed()) -> dict:
    """Trains from config["init"] (a model folder or hub id; see `training_config`) on config's datasets, as
    process `dist.rank` of `dist.world`, resuming from the newest checkpoint under config["out"]; rank 0
    writes checkpoints every `checkpoint_every` steps (each handed to `dist.saved`) and ``train_stats.json``.
    Returns the timing stats.

    Raises ValueError when the datasets have no image with boxes, FloatingPointError on a non-finite loss."""
    import torch

    cfg = TrainConfig(**config["train"])
    out_dir = Path(config["out"])
    torch.manual_seed(cfg.seed + dist.rank)
    device = dist.device or config.get("device") or pick_device()
    resume = last_checkpoint(out_dir)
    processor, model = _load_model(str(resume) if resume else config["init"], device)
    optimizer = _optimizer(model, cfg)
    start, history = _restore(optimizer, resume, device)
    if resume and dist.rank == 0:
        log.info("resuming from %s (step %d)", resume, start)
    if dist.wrap_model is not None:
        model = dist.wrap_model(model)
    core = model.module if hasattr(model, "module") else model
    max_tokens = int(getattr(core.config, "max_text_len", 256))
    loader = _loader(_batches(config, cfg, processor.tokenizer, max_tokens, dist), start, cfg)

    step, micro, waited, computed, images, loss_acc = start, 0, 0.0, 0.0, 0, 0.0
    t_wait = time.perf_counter()
    for batch in loader:
        t0 = time.perf_counter()
        waited += t0 - t_wait
        loss_acc += _micro_step(model, core, processor, batch, cfg, device, max_tokens)
        images += len(batch["images"])
        micro += 1
        if micro == cfg.grad_accum:
            _optimizer_step(model, optimizer, cfg, step)
            step, micro = step + 1, 0
            if not math.isfinite(loss_acc):
                raise FloatingPointError(f"loss is {loss_acc} at step {step}")
            history.append({"step": step, "loss": round(loss_acc, 5)})
            if dist.rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps):
                print(f"step {step}/{cfg.steps} loss {loss_acc:.4f}", file=sys.stderr, flush=True)
            loss_acc = 0.0
            if dist.rank == 0 and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                ckpt = _save(core, processor, optimizer, step, out_dir, cfg, history)
                if dist.saved is not None:
                    dist.saved(ckpt)
                crash_point("checkpoint")  # tests: die here, after the checkpoint (formats.faults)
        computed += time.perf_counter() - t0
        t_wait = time.perf_counter()
    stats = _stats(step, start, images * dist.world, waited, computed, history)
    if dist.rank == 0:
        (out_dir / "train_stats.json").write_text(json.dumps(stats, indent=1))
    if dist.report is not None:
        dist.report(stats)
    return stats


def _stats(step: int, start: int, images: int, waited: float, computed: float, history: list[dict]) -> dict:
    """The run's timing stats: images/s over all workers and the share of time spent waiting for data."""
    total = max(waited + computed, 1e-9)
    return {"steps": step, "start": start, "images": images, "seconds": round(waited + computed, 3),
            "data_wait_s": round(waited, 3), "compute_s": round(computed, 3),
            "images_per_s": round(images / total, 3), "data_wait_share": round(waited / total, 4),
            "final_loss": history[-1]["loss"] if history else None}
