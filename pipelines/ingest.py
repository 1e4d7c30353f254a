"""Ray job entry: any download or conversion of `ovlabel`, on Ray.

Sharded sources (img2dataset output: `convert grit`, `convert cc3m`) convert one Ray task per shard;
reruns skip finished shards. `download` runs img2dataset (pass `--distributor ray` to spread it over the
cluster); single-file conversions (goldg, coco, openimages) run in the job's driver.

Embedded (starts a local Ray):
    python pipelines/ingest.py convert grit /data/grit_raw --out /data/grit
On a cluster (joins it through RAY_ADDRESS; take data paths as absolute):
    ray job submit --working-dir . -- python pipelines/ingest.py download grit /data/grit.parquet --out /data/grit_raw
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working dir holds the packages

from workflows import cli, cli_ingest  # noqa: E402
from workflows.ray_runtime import init_ray  # noqa: E402
from workflows.stdio import print_json  # noqa: E402


def convert_sharded(a: argparse.Namespace) -> None:
    """`convert grit|cc3m` with one Ray task per shard."""
    from formats.converters.img2dataset import convert_img2dataset
    from formats.storage import display
    from workflows.ingest import ray_map

    cfg = cli_ingest.img2dataset_config(a, getattr(a, "spans", None))
    m = convert_img2dataset(a.raw_dir, a.out, cfg, overwrite=a.overwrite, map_fn=ray_map)
    print_json({"dataset": display(a.out), **m.counts})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    conv = sub.add_parser("convert", help="convert a source (see `ovlabel convert --help`)")
    csub = conv.add_subparsers(dest="format", required=True, metavar="FORMAT")
    cli_ingest.register_convert(csub)
    for name in ("grit", "cc3m"):
        csub.choices[name].set_defaults(func=convert_sharded)
    cli.register_convert_coco(csub)
    d = sub.add_parser("download", help="download GRIT or CC3M images (see `ovlabel download --help`)")
    cli_ingest.add_download_args(d)
    d.add_argument("--distributor", choices=("multiprocessing", "ray"), default="multiprocessing")
    d.set_defaults(func=cli_ingest.cmd_download)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    cli.setup_logging()

    def run(args) -> None:
        init_ray(num_cpus=args.num_cpus)
        args.func(args)
    return cli.run_command("ingest", run, a)


if __name__ == "__main__":
    sys.exit(main())
