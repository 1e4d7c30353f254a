"""The ``ovlabel`` command line. Data (paths, JSON) goes to stdout, logs and progress to stderr.

Exit codes: 0 success, 1 a problem with the input or the data (the message says which file, record
and why), 2 a usage error (a bad option, or a config file with an unknown key or a value of the wrong type:
the message names the file and the key's path).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from workflows.stdio import print_json, reading_progress

log = logging.getLogger("ovlabel")


class CLIError(Exception):
    """An error worth one clear line on stderr and exit code 1."""



# -- convert ---------------------------------------------------------------------------------------------

def cmd_convert_coco(a: argparse.Namespace) -> None:
    from formats.converters.coco import CocoConvertConfig, convert_coco
    from formats.storage import display

    cfg = CocoConvertConfig(source=a.source, image_root=a.image_root, check_images=a.check_images,
                            fix_o365_names=a.fix_o365_names, part_images=a.part_images,
                            keep_unused_categories=a.keep_unused_categories)
    with reading_progress(a.annotations) as update:
        m = convert_coco(a.annotations, a.out, cfg, overwrite=a.overwrite, progress=update)
    c = m.counts
    log.info("%s: %s images, %s boxes; dropped %s; rejected %s", display(a.out), f"{c['images']:,}",
             f"{c['boxes']:,}", c.get("dropped") or "none", c.get("rejected") or "none")
    print_json({"dataset": display(a.out), **c})


# -- export ----------------------------------------------------------------------------------------------

def cmd_export_odvg(a: argparse.Namespace) -> None:
    from formats.export.odvg import export_odvg

    print_json(export_odvg(a.dataset, a.out, a.label_map, images_dir=a.images_dir, tar_paths=a.tar_paths,
                           keep_empty=a.keep_empty))


def cmd_export_coco(a: argparse.Namespace) -> None:
    from formats.export.coco import export_coco

    print_json(export_coco(a.dataset, a.out, images_dir=a.images_dir, tar_paths=a.tar_paths, view=a.view))


def cmd_export_hf(a: argparse.Namespace) -> None:
    from formats.export.hf import export_hf

    print_json(export_hf(a.dataset, a.out, push_to_hub=a.push_to_hub, private=not a.public, images_dir=a.images_dir,
                         tar_paths=a.tar_paths))


def cmd_export_yolo_world(a: argparse.Namespace) -> None:
    from formats.export.yolo_world import export_yolo_world

    print_json(export_yolo_world(a.dataset, a.out, images_dir=a.images_dir, tar_paths=a.tar_paths))


def cmd_stats(a: argparse.Namespace) -> None:
    from formats.query import format_stats, stats

    s = stats(a.dataset, top=a.top)
    if a.json:
        print_json(s)
    else:
        print(format_stats(s))


# -- parser ----------------------------------------------------------------------------------------------

def register_convert_coco(csub) -> None:
    """`convert coco`."""
    from formats.converters import COCO_SOURCES

    c = csub.add_parser("coco", help="COCO-format detection JSON (Objects365, COCO, LVIS, V3Det, custom)")
    c.add_argument("annotations", help="the COCO-format JSON file")
    c.add_argument("--source", required=True, choices=COCO_SOURCES, help="label-id convention and source fixes")
    c.add_argument("--out", required=True, help="dataset directory to write")
    c.add_argument("--image-root", help="folder the file names are relative to (recorded in the manifest)")
    c.add_argument("--check-images", action="store_true", help="check every image exists and its size matches")
    c.add_argument("--fix-o365-names", action="store_true", help="fix the 13 misspelled Objects365 v2 names")
    c.add_argument("--keep-unused-categories", action="store_true",
                   help="--source custom: keep categories no box uses that are other categories' supercategory "
                        "or a background category (left out of the label map by default, and counted)")
    c.add_argument("--part-images", type=int, default=100_000, help="at most this many images per parquet part; parts are balanced (default 100000)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    c.set_defaults(func=cmd_convert_coco, bulk=True)


def add_images_dir(p: argparse.ArgumentParser) -> None:
    """The exports' ``--images-dir`` and ``--tar-paths`` options."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--images-dir", help="write images kept inside img2dataset shards (GRIT, CC3M) there as files "
                   "(a local folder or an s3:// prefix) and name them relative to it, others by absolute path or "
                   "URL: use it as the trainer's data root "
                   "(required for shard-backed datasets unless --tar-paths)")
    g.add_argument("--tar-paths", action="store_true", help="write shard-backed images as their shard names "
                   "(tar://KEY.jpg::SHARD), which no trainer opens, instead of refusing the export")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovlabel", description="Training data engine for open-vocabulary detection.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conv = sub.add_parser("convert", help="convert a source into an ODVG dataset directory")
    csub = conv.add_subparsers(dest="format", required=True, metavar="FORMAT")
    register_convert_coco(csub)
    from workflows.cli_ingest import register_convert

    register_convert(csub)

    exp = sub.add_parser("export", help="export a dataset directory for a trainer")
    esub = exp.add_subparsers(dest="format", required=True, metavar="FORMAT")
    e = esub.add_parser("odvg", help="ODVG JSON lines + label map (MMDetection, Open-GroundingDino)")
    e.add_argument("dataset")
    e.add_argument("--out", required=True, help="the .jsonl file to write")
    e.add_argument("--label-map", help="label map path (default: OUT with .label_map.json)")
    e.add_argument("--keep-empty", action="store_true", help="keep grounding records without regions (left out "
                   "and counted by default: Open-GroundingDino's reader raises on them)")
    add_images_dir(e)
    e.set_defaults(func=cmd_export_odvg)
    e = esub.add_parser("coco", help="COCO JSON (pycocotools; CC3M-Lite style for VG data)")
    e.add_argument("dataset")
    e.add_argument("--out", required=True, help="the .json file to write")
    e.add_argument("--view", choices=("od", "vg"), help="a VG dataset with a label map (the vocabulary union): "
                   "od = its class regions with the label map's categories (a detection file), vg = its regions "
                   "with caption spans (a grounding file); default: every region, classes first")
    add_images_dir(e)
    e.set_defaults(func=cmd_export_coco)
    e = esub.add_parser("hf", help="Hugging Face datasets parquet with declared features")
    e.add_argument("dataset")
    e.add_argument("--out", required=True, help="folder to write")
    e.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub dataset repo")
    e.add_argument("--public", action="store_true", help="create the Hub repo public (default private)")
    add_images_dir(e)
    e.set_defaults(func=cmd_export_hf)
    e = esub.add_parser("yolo-world", help="YOLO-World class texts (and grounding COCO file for VG data)")
    e.add_argument("dataset")
    e.add_argument("--out", required=True, help="folder to write")
    add_images_dir(e)
    e.set_defaults(func=cmd_export_yolo_world)

    s = sub.add_parser("stats", help="summary of a dataset directory (duckdb)")
    s.add_argument("dataset")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--top", type=int, default=20, help="how many top categories/phrases (default 20)")
    s.set_defaults(func=cmd_stats)

    for register in _extensions():
        register(sub)
    return p


def _extensions() -> list[Callable]:
    """Subcommand groups that live with their workflows."""
    from workflows import cli_ingest, cli_labeling, cli_review, cli_selftrain

    return [cli_ingest.register, cli_labeling.register, cli_review.register, cli_selftrain.register]


def entry() -> None:
    """The ``ovlabel`` console script: `main` in a process of its own."""
    sys.exit(main(own_process=True))


def _tune_bulk_process(a: argparse.Namespace) -> None:
    """Settings for a process that runs one bulk conversion (big columns, no pandas); call before numpy loads."""
    if getattr(a, "annotations", None):  # hash the input file while the libraries load (one core is idle then)
        from formats.digest import prefetch_sha256

        prefetch_sha256(a.annotations)
    # numpy's OpenBLAS starts a thread per core that spins after start-up; the converters' numpy work is
    # element-wise (the heavy parts run in duckdb and Arrow, with threads of their own), so it only steals cores
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # glibc hands every freed block over 128 KB (numpy columns) back to the kernel, and the next one is faulted
    # in and zeroed page by page again: keep blocks up to 32 MB (glibc's cap) for reuse instead
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        import ctypes

        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc
            mallopt = None
        if mallopt is not None:
            m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
            mallopt(m_mmap_threshold, 32 << 20)
            mallopt(m_trim_threshold, 1 << 30)
            mallopt(m_top_pad, 256 << 20)
    from formats.arrow_np import skip_pandas_probe

    skip_pandas_probe()


def setup_logging(level: int = logging.INFO) -> None:
    """Logs to stderr (stdout is for data) as ``LEVEL logger: message``; botocore's and aiobotocore's DEBUG
    records are held back (they print signed request headers, the access key id among them), gcsfs's INFO
    records unless `level` is DEBUG."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in ("botocore", "aiobotocore"):
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    if level > logging.DEBUG:  # gcsfs announces its experimental features at INFO whenever it is imported
        logging.getLogger("gcsfs").setLevel(logging.WARNING)


def run_command(prog: str, func, args, *, verbose: bool = False) -> int:
    """Runs ``func(args)`` and returns the exit code the CLI and the pipelines/ scripts share: 0 done; 2 a
    config file that does not fit its settings (`formats.config.ConfigError`, a usage error); 1 a data or
    file error (ovlabel's errors are ValueErrors naming file, record and reason; OSError; `CLIError`); 130
    interrupted. Errors are one line on stderr, ``PROG: error: ...``; `verbose` re-raises them instead."""
    from formats.config import ConfigError

    try:
        func(args)
    except ConfigError as e:
        if verbose:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except (CLIError, OSError, ValueError) as e:
        if verbose:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None, *, own_process: bool = False) -> int:
    """Runs one ovlabel command; returns the exit code (`run_command`). `own_process`: this process runs
    nothing else."""
    parser = build_parser()
    a = parser.parse_args(argv)
    setup_logging(logging.DEBUG if a.verbose else logging.WARNING if a.quiet else logging.INFO)
    if own_process and getattr(a, "bulk", False):
        _tune_bulk_process(a)
    return run_command("ovlabel", a.func, a, verbose=a.verbose)


if __name__ == "__main__":
    entry()
