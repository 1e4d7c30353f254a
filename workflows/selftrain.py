"""Self-training rounds: relabel the pool with the previous model, train on gold + pseudo, evaluate, repeat.

    RUN_DIR/run.json            the resolved config and the state of every round (status, steps done, metrics)
    RUN_DIR/inputs/gold-<i>     gold sets given as COCO JSON, converted once
    RUN_DIR/round-0/            metrics.json: the base model evaluated
    RUN_DIR/round-k/pseudo      the pool pseudo-labeled by model k-1 (round k recorded on every region)
    RUN_DIR/round-k/pseudo_kept pseudo minus boxes reviewers rejected (when corrections are given)
    RUN_DIR/round-k/reviewed    boxes reviewers accepted, fixed or drew (train as gold)
    RUN_DIR/round-k/model       checkpoints (safetensors); model k = its last checkpoint
    RUN_DIR/round-k/metrics.json, config.json, timings in run.json

Every step writes its output atomically or resumably, and run.json records a step only once its output is
complete, so a killed run picks up at the step it was in (a half-trained model resumes from its last
checkpoint) and never redoes a finished round. The stop rule ends the run when the chosen metric gains no
more than `min_gain` over the previous round.

RUN_DIR may be on an object store (``s3://bucket/prefix``, ``gs://``): the run then works in a local mirror
(`workflows.run_mirror`: ``--work-dir``, default ``$OVLABEL_CACHE/selftrain/<sha1 of the URL>[:12]``), filled
from the store when the run opens, so it resumes on any machine; after every recorded step (and every training
checkpoint) the new files are uploaded and run.json last, so the store holds a step as done only once its files
are there. Paths in run.json and metrics.json name the store (``s3://bucket/prefix/round-1/pseudo``), never the
work directory or credentials; a local run records its local paths as before.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from formats.config import ConfigError, from_dict, load_config
from formats.dataset import atomic_write_json
from workflows.run_mirror import RunMirror

log = logging.getLogger("ovlabel.selftrain")

RUN = "run.json"


@dataclass
class GoldEntry:
    """One `gold` entry of a self-training config (the config keeps it as a dict)."""

    path: str  # a dataset directory or a COCO JSON file
    image_root: str | None = None


@dataclass
class EvalEntry:
    """One `eval` entry of a self-training config (the config keeps it as a dict)."""

    path: str  # a COCO/LVIS JSON, a dataset directory or an ODinW suite
    name: str | None = None  # default eval<i>
    image_root: str | None = None
    max_images: int | None = None
    protocol: str | None = None  # one of detector.evaluate.PROTOCOLS (default: the gold's, `default_protocol`)


@dataclass
class SelfTrainConfig:
    """What a run does; read from TOML or JSON (paths relative to the working directory)."""

    base_model: str
    pool: str  # caption dataset or img2dataset folder to pseudo-label
    gold: list[dict] = field(default_factory=list, metadata={"config": GoldEntry})  # dataset dirs or COCO JSON
    eval: list[dict] = field(default_factory=list, metadata={"config": EvalEntry})
    pool_gold: str | None = None  # hidden gold boxes of the pool: pseudo-label quality per round
    clip: str | None = None
    rounds: int = 2
    init: str = "previous"  # train round k from model k-1 ("previous") or from the base model ("base")
    metric: str = ""  # "<eval name>.<metric>", e.g. "sample.AP50"; default: the first eval's headline (AP, R@1...)
    min_gain: float = 0.0
    corrections: str | None = None  # a `review pull` directory
    # PseudoConfig fields (filter: {...}, phrases: {...})
    pseudo: dict = field(default_factory=dict, metadata={"config": "workflows.pseudo_label:PseudoConfig"})
    # TrainConfig fields; pseudo_ratio is the gold/pseudo mix
    train: dict = field(default_factory=dict, metadata={"config": "detector.train:TrainConfig"})
    device: str | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> SelfTrainConfig:
        """Reads a TOML (``.toml``) or JSON config; relative paths become absolute (from the working directory).

        Raises formats.config.ConfigError (a ValueError) naming the file and the key's path for an unknown
        key at any depth, a missing required key or a value of the wrong type; ValueError for other checks."""
        p = Path(path)
        cfg = load_config(cls, p)
        cfg.base_model, cfg.pool = _abs(cfg.base_model), _abs(cfg.pool)
        cfg.clip, cfg.pool_gold, cfg.corrections = _abs(cfg.clip), _abs(cfg.pool_gold), _abs(cfg.corrections)
        if isinstance(cfg.pseudo.get("classes"), str):  # a class-list file, read again in every round
            cfg.pseudo["classes"] = _abs(cfg.pseudo["classes"])
        for entry in cfg.gold + cfg.eval:
            entry["path"] = _abs(entry["path"])
            if entry.get("image_root"):
                entry["image_root"] = _abs(entry["image_root"])
        from detector.evaluate import HEADLINE, PROTOCOLS, default_protocol

        for i, e in enumerate(cfg.eval):
            e.setdefault("name", f"eval{i}")
            if e.get("protocol") is not None and e["protocol"] not in PROTOCOLS:
                raise ConfigError(f"eval[{i}].protocol", f"protocol must be one of {', '.join(PROTOCOLS)}, "
                                  f"not {e['protocol']!r}", p)
        if cfg.init not in ("previous", "base"):
            raise ConfigError("init", f"init must be 'previous' or 'base', not {cfg.init!r}", p)
        if not cfg.metric and cfg.eval:
            first = cfg.eval[0]
            proto = first.get("protocol") or (default_protocol(first["path"]) if Path(first["path"]).exists() else "coco")
            cfg.metric = f"{first['name']}.{HEADLINE[proto]}"
        return cfg


def _abs(p: str | None) -> str | None:
    if p is None:
        return None
    q = Path(p).expanduser()
    return str(q.resolve()) if q.exists() or not _looks_like_hub_id(p) else p


def _looks_like_hub_id(p: str) -> bool:
    return p.count("/") == 1 and not p.startswith((".", "/")) and not Path(p).exists()


# -- state -----------------------------------------------------------------------------------------------

class Run:
    """RUN_DIR/run.json: the config and, per round, the steps done and their results.

    `location` is a local folder or a store URL, worked in through `work_dir` (`workflows.run_mirror.RunMirror`):
    `root` is the local directory steps read and write, `home` the run's name (its path or URL, no credentials).
    Opening a run fills the mirror from the store. Raises ValueError for a folder without run.json (when no
    `cfg` is given) or one holding a run of another config; `formats.storage.StorageError` for an unusable
    location or work directory."""

    def __init__(self, location: str | os.PathLike, cfg: SelfTrainConfig | None = None, *,
                 work_dir: str | os.PathLike | None = None):
        self.mirror = RunMirror(location, work_dir, kind="selftrain", record=RUN)
        self.root, self.home = self.mirror.root, self.mirror.home
        if cfg is not None and self.mirror.is_remote and self.mirror.remote.isfile(RUN):  # before downloading it all
            self._check_config(json.loads(self.mirror.remote.read_bytes(RUN)), cfg)
        self.mirror.pull()
        path = self.root / RUN
        if path.exists():
            text = path.read_text()
            self.state, self._saved = json.loads(text), json.loads(text)
            self._check_config(self.state, cfg)
            self.mirror.push()  # what a run cut short before its upload recorded here
        elif cfg is None:
            raise ValueError(f"{self.home}: no {RUN}; not a self-training run directory")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self.state, self._saved = {"config": asdict(cfg), "rounds": {}, "status": "running"}, None
            self.save()
        self.cfg = SelfTrainConfig(**self.state["config"])
        self.gold: list[str] = []  # the gold entries as dataset directories (`run_selftrain` sets them)

    def _check_config(self, state: dict, cfg: SelfTrainConfig | None) -> None:
        if cfg is not None and state["config"] != asdict(cfg):
            raise ValueError(f"{self.home} holds a run with another config; choose another --out")

    def save(self) -> None:
        """Writes run.json when the state changed, then uploads what the store lacks, run.json last."""
        if self.state != self._saved:
            atomic_write_json(self.root / RUN, self.state)
            self._saved = json.loads(json.dumps(self.state))
        self.mirror.push()

    def round(self, k: int) -> dict:
        return self.state["rounds"].setdefault(str(k), {"steps": {}, "timings": {}})

    def done(self, k: int, step: str) -> bool:
        return step in self.round(k)["steps"]

    def mark(self, k: int, step: str, result, seconds: float) -> None:
        r = self.round(k)
        r["steps"][step] = result
        r["timings"][step] = round(seconds, 2)
        self.save()

    def model(self, k: int) -> str:
        """Model k: the base model for k = 0, else round k's last checkpoint."""
        if k == 0:
            return self.cfg.base_model
        from detector.train import last_checkpoint

        ckpt = last_checkpoint(self.root / f"round-{k}" / "model")
        if ckpt is None:
            raise ValueError(f"round {k} has no trained model")
        return str(ckpt)


# -- steps -----------------------------------------------------------------------------------------------

def _dataset_dir(run: Run, entry: dict, name: str) -> str:
    """A config entry's data as a dataset directory (a COCO JSON file is converted once into RUN/inputs/NAME)."""
    from formats.converters.coco import CocoConvertConfig, convert_coco

    p = Path(entry["path"])
    if not p.is_file():
        return str(p)
    target = run.root / "inputs" / name
    convert_coco(p, target, CocoConvertConfig(source="custom", image_root=entry.get("image_root")))
    return str(target)


def evaluate_model(run: Run, model: str, pseudo_dir: str | None = None) -> dict:
    """The run's evaluation sets, each with its protocol (the entry's ``protocol`` or the gold's default;
    every result records it), and, with a pool gold, pseudo quality."""
    from detector.evaluate import evaluate
    from detector.grounding import GroundingDetector

    out = {}
    det = GroundingDetector(model, device=run.cfg.device, box_threshold=0.0)
    for e in run.cfg.eval:
        out[e["name"]] = evaluate(e["path"], detector=det, protocol=e.get("protocol"),
                                  image_root=e.get("image_root"), max_images=e.get("max_images"))
    if pseudo_dir and run.cfg.pool_gold:
        out["pseudo_quality"] = _pseudo_quality(pseudo_dir, run.cfg.pool_gold)
    return out


def _pseudo_quality(pseudo_dir: str, pool_gold: str) -> dict:
    """Pseudo quality of a round, or ``{"error": why}`` (logged) when the round kept no pseudo box or its
    images are not the pool gold's: the round goes on, its number is missing rather than a zero."""
    from detector.eval_gold import EvaluationError
    from detector.evaluate import pseudo_quality

    try:
        return pseudo_quality(pseudo_dir, pool_gold)
    except EvaluationError as e:
        log.warning("pseudo quality not measured: %s", e)
        return {"error": str(e)}


def metric_record(cfg: SelfTrainConfig, metrics: dict) -> dict:
    """What the stop rule watched in a round: the metric's name, value and the protocol that produced it."""
    ev = metrics.get("eval", {}).get(cfg.metric.split(".")[0], {})
    return {"name": cfg.metric, "value": metric_value(metrics, cfg.metric),
            "protocol": ev.get("protocol") if isinstance(ev, dict) else None}


def metric_value(metrics: dict, name: str) -> float | None:
    """`name` ("<eval>.<metric>") from a round's metrics."""
    cur = metrics.get("eval", {})
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return float(cur) if isinstance(cur, (int, float)) else None


def _pseudo(run: Run, k: int) -> str:
    from labeling.fuse import FilterConfig
    from workflows.pseudo_label import PseudoConfig, RunOptions, run_pseudo

    data = dict(run.cfg.pseudo)
    data["filter"] = from_dict(FilterConfig, data.get("filter", {}), path="pseudo.filter").to_dict()
    cfg = from_dict(PseudoConfig, data, path="pseudo")
    cfg.detector, cfg.round = run.model(k - 1), k
    if run.cfg.clip:
        cfg.clip = run.cfg.clip
    out = run.root / f"round-{k}" / "pseudo"
    run_pseudo(run.cfg.pool, out, cfg, RunOptions(device=run.cfg.device))
    return str(out)


def _review(run: Run, k: int, pseudo_dir: str) -> tuple[str, list[str]]:
    """Applies review corrections: (pseudo without rejected boxes, reviewed-box datasets that train as gold)."""
    from formats.corrections import apply_corrections, drop_rejected, read_corrections

    if not run.cfg.corrections:
        return pseudo_dir, []
    corr = read_corrections(run.cfg.corrections)
    kept = run.root / f"round-{k}" / "pseudo_kept"
    drop_rejected(pseudo_dir, corr, kept)
    reviewed = []
    for j, src in enumerate(sorted({d for d in corr.column("dataset").to_pylist() if d})):
        if Path(src).is_dir():
            out = run.root / f"round-{k}" / f"reviewed-{j}"
            apply_corrections(src, run.cfg.corrections, out, reviewed_only=True)
            reviewed.append(str(out))
    return str(kept), reviewed


def _train(run: Run, k: int, datasets: list[str]) -> dict:
    from detector.train import TrainConfig
    from workflows.training import train

    init = run.model(k - 1) if run.cfg.init == "previous" else run.cfg.base_model
    cfg = from_dict(TrainConfig, {**run.cfg.train, "seed": run.cfg.train.get("seed", 0) + k}, path="train")
    return train(init, datasets, run.root / f"round-{k}" / "model", cfg, device=run.cfg.device,
                 saved=run.mirror.push)  # each checkpoint reaches the store before the next


def _count(dataset_dir: str) -> dict:
    from formats.dataset import Dataset

    return Dataset(dataset_dir).manifest.totals()


def _baseline_eval(run: Run, k: int, done: dict) -> dict:
    """Round 0's one step: the base model evaluated on the run's sets."""
    metrics = {"round": 0, "model": run.cfg.base_model, "eval": evaluate_model(run, run.cfg.base_model)}
    metrics["metric"] = metric_record(run.cfg, metrics)
    (run.root / "round-0").mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.root / "round-0" / "metrics.json", run.mirror.shown(metrics))
    return metrics


def _pseudo_step(run: Run, k: int, done: dict) -> dict:
    """Pseudo-labels the pool with model k-1."""
    p = _pseudo(run, k)
    return {"dir": p, **_count(p)}


def _review_step(run: Run, k: int, done: dict) -> dict:
    """Applies the review's corrections to the round's pseudo labels and to the reviewed gold."""
    kept, reviewed = _review(run, k, done["pseudo"]["dir"])
    return {"pseudo": kept, "reviewed": reviewed, **_count(kept)}


def _train_step(run: Run, k: int, done: dict) -> dict:
    """Trains model k on the gold, the round's pseudo labels and the reviewed sets."""
    datasets = run.gold + [done["review"]["pseudo"]] + done["review"]["reviewed"]
    return {**_train(run, k, datasets), "datasets": datasets}


def _eval_step(run: Run, k: int, done: dict) -> dict:
    """Evaluates model k; writes round-k/metrics.json."""
    model, rv = run.model(k), done["review"]
    metrics = {"round": k, "model": model, "eval": evaluate_model(run, model, rv["pseudo"]),
               "pseudo": {"images": rv["images"], "boxes": rv["boxes"]}, "train": done["train"]}
    metrics["metric"] = metric_record(run.cfg, metrics)
    atomic_write_json(run.root / f"round-{k}" / "metrics.json", run.mirror.shown(metrics))
    return metrics


# A step: (run, round k, the results of round k's earlier steps by name) -> its result, recorded in run.json.
# Steps see and return local paths; run.json records them as `run.mirror.shown` names them.
Step = Callable[[Run, int, dict], dict]
BASELINE: list[tuple[str, Step]] = [("eval", _baseline_eval)]
ROUND: list[tuple[str, Step]] = [("pseudo", _pseudo_step), ("review", _review_step), ("train", _train_step),
                                 ("eval", _eval_step)]


def run_steps(run: Run, k: int, steps: list[tuple[str, Step]]) -> dict:
    """Runs round k's `steps` in order, each once: a step recorded in run.json is not run again; one that
    runs is timed and recorded (`Run.mark`: on a store run, its files uploaded and run.json after them) before
    the next starts, so a killed run resumes at the step it was in. Returns the round's results by step name
    (paths as recorded)."""
    for name, step in steps:
        if not run.done(k, name):
            t0 = time.perf_counter()
            result = step(run, k, run.mirror.local(run.round(k)["steps"]))
            run.mark(k, name, run.mirror.shown(result), time.perf_counter() - t0)
    return run.round(k)["steps"]


def run_selftrain(config: SelfTrainConfig, run_dir: str | os.PathLike,
                  work_dir: str | os.PathLike | None = None) -> dict:
    """Runs (or resumes) the rounds in `run_dir`, a local folder or a store URL worked in through `work_dir`
    (see the module docstring); returns run.json's state. Raises ValueError for a run directory holding a run of
    another config, `formats.storage.StorageError` for an unusable location or a work directory that mirrors
    another run."""
    run = Run(run_dir, config, work_dir=work_dir)
    cfg = run.cfg
    run.gold = [_dataset_dir(run, g, f"gold-{i}") for i, g in enumerate(cfg.gold)]
    best = metric_value(run_steps(run, 0, BASELINE)["eval"], cfg.metric)
    for k in range(1, cfg.rounds + 1):
        rdir = run.root / f"round-{k}"
        rdir.mkdir(parents=True, exist_ok=True)
        if not (rdir / "config.json").exists():
            atomic_write_json(rdir / "config.json", {"round": k, "config": asdict(cfg)})
        value = metric_value(run_steps(run, k, ROUND)["eval"], cfg.metric)
        log.info("round %d: %s = %s (previous best %s)", k, cfg.metric, value, best)
        if value is not None and best is not None and value - best <= cfg.min_gain and k < cfg.rounds:
            run.state["status"] = f"stopped after round {k}: {cfg.metric} gained {value - best:+.4f} <= {cfg.min_gain}"
            run.save()
            return run.state
        best = value if best is None or (value is not None and value > best) else best
    run.state["status"] = "complete"
    run.save()
    return run.state
