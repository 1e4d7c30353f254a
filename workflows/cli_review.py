"""`ovlabel review open|pull|apply` (FiftyOne) and `ovlabel render` (PNG files)."""

from __future__ import annotations

import argparse
import sys

from workflows.stdio import print_json


def cmd_review_open(a: argparse.Namespace) -> None:
    from workflows.review import build_review, launch
    from workflows.stdio import stdout_to_stderr

    with stdout_to_stderr():  # FiftyOne logs progress on stdout
        fds = build_review(a.dataset, a.pseudo or [], name=a.name, cache_dir=a.cache, rebuild=a.rebuild)
    info = {"name": fds.name, "samples": len(fds), "fields": sorted(fds.info["ovlabel"]["fields"]),
            "views": fds.list_saved_views()}
    if a.no_launch:
        print_json(info)
        return
    session = launch(fds, port=a.port, address=a.address)
    print_json({**info, "url": session.url})
    sys.stdout.flush()
    print(f"FiftyOne App at {session.url} (Ctrl-C to stop)", file=sys.stderr)
    session.wait()


def cmd_review_pull(a: argparse.Namespace) -> None:
    from workflows.review import pull_corrections
    from workflows.stdio import stdout_to_stderr

    with stdout_to_stderr():  # FiftyOne logs on stdout
        summary = pull_corrections(a.name, a.out)
    print_json(summary)


def cmd_review_apply(a: argparse.Namespace) -> None:
    from formats.corrections import apply_corrections

    print_json(apply_corrections(a.dataset, a.corrections, a.out, overwrite=a.overwrite))


def cmd_render(a: argparse.Namespace) -> None:
    from workflows.render import render

    paths = render(a.dataset, a.out, pseudo_dirs=a.pseudo or [], n=a.n, seed=a.seed)
    print_json({"out": a.out, "images": [str(p) for p in paths]})


def register(sub) -> None:
    """Adds `review` and `render` to the `ovlabel` parser."""
    r = sub.add_parser("review", help="review boxes in FiftyOne; tags come back as corrections")
    rsub = r.add_subparsers(dest="what", required=True, metavar="WHAT")
    p = rsub.add_parser("open", help="build or update the review dataset and launch the App")
    p.add_argument("dataset", help="base dataset directory (its gold boxes become the `gold` field), or img2dataset / "
                   "webdataset output as `pseudo --input` takes it (local or s3://...)")
    p.add_argument("--pseudo", nargs="+", help="pseudo dataset directories (fields `pseudo` or `round_<k>`)")
    p.add_argument("--name", help="FiftyOne dataset name (default from the dataset folder)")
    p.add_argument("--port", type=int, default=5151)
    p.add_argument("--address", default="127.0.0.1", help="address the App binds to (default local only)")
    p.add_argument("--cache", help="local folder for the image files FiftyOne opens: images inside shards or on an "
                   "object store, fetched once (default ~/.cache/ovlabel/review/NAME)")
    p.add_argument("--rebuild", action="store_true", help="delete and rebuild the review dataset (tags are lost)")
    p.add_argument("--no-launch", action="store_true", help="build only")
    p.set_defaults(func=cmd_review_open)
    p = rsub.add_parser("pull", help="reviewers' tags (reject/accept/fix) and edits -> corrections table")
    p.add_argument("name", help="review dataset name")
    p.add_argument("--out", required=True, help="corrections directory (local or s3://...)")
    p.set_defaults(func=cmd_review_pull)
    p = rsub.add_parser("apply", help="apply a corrections table to a dataset directory")
    p.add_argument("dataset")
    p.add_argument("--corrections", required=True, help="directory written by `review pull`")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_review_apply)

    p = sub.add_parser("render", help="draw boxes, phrases and scores on sample images (PNG)")
    p.add_argument("dataset")
    p.add_argument("--pseudo", nargs="+", help="pseudo dataset directories drawn in other colours")
    p.add_argument("--out", required=True)
    p.add_argument("-n", type=int, default=16, help="images (default 16; -1 all)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_render)
