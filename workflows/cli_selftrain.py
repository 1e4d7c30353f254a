"""`ovlabel selftrain run|status|report` and `ovlabel train|evaluate`."""

from __future__ import annotations

import argparse
import sys

from workflows.stdio import print_json

PROTOCOLS = ("coco", "lvis", "lvis-fixed", "odinw", "flickr30k", "refcoco")  # detector.evaluate.PROTOCOLS


def cmd_run(a: argparse.Namespace) -> None:
    from formats.storage import redact
    from workflows.selftrain import SelfTrainConfig, run_selftrain

    state = run_selftrain(SelfTrainConfig.load(a.config), a.out, a.work_dir)
    print_json({"run": redact(str(a.out)), "status": state["status"],
                "rounds": sorted(int(k) for k in state["rounds"])})


def cmd_status(a: argparse.Namespace) -> None:
    from workflows.selftrain_report import rows, status

    if a.json:
        print_json(rows(a.run))
    else:
        print(status(a.run))


def cmd_report(a: argparse.Namespace) -> None:
    from workflows.selftrain_report import format_table, report

    r = report(a.run, a.out)
    print(format_table(r["rounds"]), file=sys.stderr)
    print_json(r)


def cmd_train(a: argparse.Namespace) -> None:
    from dataclasses import replace

    from detector.train import TrainConfig
    from formats.config import load_config
    from workflows.training import train

    cfg = load_config(TrainConfig, a.config) if a.config else TrainConfig()
    cfg = replace(cfg, **{k: getattr(a, k) for k in ("steps", "batch_size", "lr", "num_workers")
                          if getattr(a, k) is not None})
    print_json(train(a.model, a.datasets, a.out, cfg, device=a.device, work_dir=a.work_dir))


def cmd_evaluate(a: argparse.Namespace) -> None:
    from detector.evaluate import evaluate, pseudo_quality

    if a.pseudo:
        print_json(pseudo_quality(a.pseudo, a.dataset))
        return
    if not a.detections and not a.model:
        raise SystemExit("ovlabel evaluate: give --model (run a detector) or --detections (a COCO results file)")
    print_json(evaluate(a.dataset, model=a.model, detections=a.detections, protocol=a.protocol,
                        image_root=a.image_root, max_images=a.max_images, device=a.device))


def register(sub) -> None:
    """Adds `selftrain`, `train` and `evaluate` to the `ovlabel` parser."""
    s = sub.add_parser("selftrain", help="self-training rounds: relabel, train, evaluate, repeat")
    ssub = s.add_subparsers(dest="what", required=True, metavar="WHAT")
    p = ssub.add_parser("run", help="run or resume the rounds a config describes")
    p.add_argument("config", help="TOML or JSON (see examples/selftrain_tiny.toml)")
    p.add_argument("--out", required=True, help="run directory, local or s3://... / gs://... (resumes if it exists)")
    p.add_argument("--work-dir", help="local mirror of a run on a store (default: $OVLABEL_CACHE/selftrain/<hash of "
                                      "the URL>); ignored for a local --out")
    p.set_defaults(func=cmd_run)
    p = ssub.add_parser("status", help="a table per round")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = ssub.add_parser("report", help="table + PNG plots (metric, boxes, score histograms per round)")
    p.add_argument("run")
    p.add_argument("--out", help="folder (default RUN/report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("train", help="fine-tune a grounding detector on dataset directories")
    p.add_argument("datasets", nargs="+")
    p.add_argument("--model", required=True, help="hub id or local folder to start from")
    p.add_argument("--out", required=True, help="checkpoint folder, local or s3://... / gs://... (resumes)")
    p.add_argument("--work-dir", help="local mirror of a store --out (default: $OVLABEL_CACHE/train/<hash of the "
                                      "URL>); ignored for a local --out")
    p.add_argument("--config", help="JSON or TOML with TrainConfig fields")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--num-workers", type=int, help="training workers (Ray Train DDP when > 1)")
    p.add_argument("--device")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="a model or a COCO results file scored with a published protocol; "
                                         "or pseudo vs gold")
    p.add_argument("dataset", help="gold: a COCO/LVIS annotation JSON, a dataset directory, or (odinw) a folder "
                                   "of COCO-format datasets / 'odinw13'")
    p.add_argument("--model", help="hub id or local folder")
    p.add_argument("--detections", help="a COCO results JSON to score instead of running a model")
    p.add_argument("--protocol", choices=PROTOCOLS,
                   help="default: the gold's source (LVIS -> lvis, COCO-format detection -> coco, VG -> flickr30k)")
    p.add_argument("--image-root", help="images of a gold given as a JSON file")
    p.add_argument("--pseudo", help="instead: judge this pseudo dataset against the gold boxes")
    p.add_argument("--max-images", type=int)
    p.add_argument("--device")
    p.set_defaults(func=cmd_evaluate)
