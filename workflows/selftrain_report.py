"""`ovlabel selftrain status|report`: a table per round and PNG plots of a self-training run.

Both read the run where it lives: a local run directory, or a run on an object store (``s3://...``) whose
run.json is read from the store (nothing is downloaded into a work directory) and whose report is written
beside it (``<run>/report/``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from formats import storage
from workflows.selftrain import RUN, SelfTrainConfig, metric_value

STEPS = ("pseudo", "review", "train", "eval")


@dataclass
class RunView:
    """A run's state as run.json holds it, read-only: `home` (its path, or URL without credentials)."""

    home: str
    state: dict

    @property
    def cfg(self) -> SelfTrainConfig:
        return SelfTrainConfig(**self.state["config"])

    def round(self, k: int) -> dict:
        return self.state["rounds"].get(str(k), {"steps": {}, "timings": {}})

    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> RunView:
        """Reads RUN_DIR/run.json (local or on a store). Raises ValueError when there is none."""
        try:
            data = storage.read_bytes(storage.inside(run_dir, RUN))
        except FileNotFoundError:
            raise ValueError(f"{storage.display(run_dir)}: no {RUN}; not a self-training run directory") from None
        return cls(storage.display(run_dir), json.loads(data))


def rows(run_dir: str | os.PathLike | RunView) -> list[dict]:
    """One row per round: steps done, the chosen metric, pseudo images/boxes kept, time."""
    run = run_dir if isinstance(run_dir, RunView) else RunView.open(run_dir)
    out = []
    for k in sorted(int(x) for x in run.state["rounds"]):
        r = run.round(k)
        ev = r["steps"].get("eval")
        pseudo = r["steps"].get("review") or r["steps"].get("pseudo") or {}
        out.append({
            "round": k,
            "steps": "eval" if k == 0 else "/".join(s for s in STEPS if s in r["steps"]) or "-",
            run.cfg.metric or "metric": metric_value(ev, run.cfg.metric) if ev else None,
            "pseudo_images": pseudo.get("images"),
            "pseudo_boxes": pseudo.get("boxes"),
            "train_loss": (r["steps"].get("train") or {}).get("final_loss"),
            "seconds": round(sum(r["timings"].values()), 1),
        })
    return out


def format_table(table: list[dict]) -> str:
    """A plain-text table."""
    if not table:
        return "(no rounds yet)"
    cols = list(table[0])
    cells = [[("-" if r[c] is None else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])) for c in cols]
             for r in table]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


def status(run_dir: str | os.PathLike) -> str:
    """The run's status line and round table."""
    run = RunView.open(run_dir)
    return f"{run.home}: {run.state['status']}\n" + format_table(rows(run))


def report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """Writes report.md (the table) and PNG plots (metrics per round, boxes per round, score histograms) into
    `out_dir` (default RUN_DIR/report; either may be on a store); returns their locations and the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyarrow.compute as pc

    from formats.dataset import Dataset

    run = RunView.open(run_dir)
    out = out_dir if out_dir else storage.inside(run_dir, "report")
    table = rows(run)
    files = {}

    # every evaluation metric per round
    series: dict[str, list[tuple[int, float]]] = {}
    for k in sorted(int(x) for x in run.state["rounds"]):
        ev = run.round(k)["steps"].get("eval")
        for name, metrics in (ev or {}).get("eval", {}).items():
            for m, v in metrics.items():
                if isinstance(v, (int, float)) and m in ("AP", "AP50", "R@1", "R@5", "accuracy", "precision@0.5", "recall@0.5"):
                    series.setdefault(f"{name}.{m}", []).append((k, float(v)))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in sorted(series.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("metric")
    ax.set_title("evaluation per round")
    if series:
        ax.legend(fontsize=7)
    files["metrics"] = _save(fig, storage.inside(out, "metrics_per_round.png"), plt)

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = [r["round"] for r in table if r["pseudo_boxes"] is not None]
    ax.bar([k - 0.2 for k in ks], [r["pseudo_boxes"] for r in table if r["pseudo_boxes"] is not None], 0.4,
           label="pseudo boxes kept")
    ax.bar([k + 0.2 for k in ks], [r["pseudo_images"] for r in table if r["pseudo_boxes"] is not None], 0.4,
           label="images kept")
    ax.set_xlabel("round")
    ax.set_title("pseudo labels per round")
    ax.legend(fontsize=7)
    files["boxes"] = _save(fig, storage.inside(out, "boxes_per_round.png"), plt)

    fig, ax = plt.subplots(figsize=(6, 4))
    for k in sorted(int(x) for x in run.state["rounds"]):
        p = (run.round(k)["steps"].get("pseudo") or {}).get("dir")
        if not p:
            continue
        scores = [c.flatten().field("score") for c in Dataset(p).read(columns=["regions"]).column("regions").chunks]
        vals = [v for s in scores for v in pc.drop_null(s).to_pylist()]
        if vals:
            ax.hist(vals, bins=30, range=(0, 1), alpha=0.5, label=f"round {k}")
    ax.set_xlabel("fused score")
    ax.set_ylabel("boxes")
    ax.set_title("pseudo box scores")
    ax.legend(fontsize=7)
    files["scores"] = _save(fig, storage.inside(out, "score_histograms.png"), plt)

    md = storage.inside(out, "report.md")
    with storage.atomic_path(md) as tmp:
        tmp.write_text(f"# Self-training run {run.home}\n\nStatus: {run.state['status']}\n\n```\n"
                       f"{format_table(table)}\n```\n\n" + "".join(f"![{k}]({Path(str(v)).name})\n"
                                                                     for k, v in files.items()))
    return {"report": str(storage.shown(md)), "plots": files, "rounds": table}


def _save(fig, location, plt) -> str:
    fig.tight_layout()
    with storage.atomic_path(location) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return str(storage.shown(location))
