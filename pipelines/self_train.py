"""Ray job entry: a self-training run (resumes when RUN_DIR exists).

Embedded (starts a local Ray):
    python pipelines/self_train.py examples/selftrain_tiny.toml --out runs/tiny
On a cluster (joins it through RAY_ADDRESS; give paths as absolute; `train.num_workers` > 1 trains with Ray Train):
    ray job submit --working-dir . -- python pipelines/self_train.py /data/selftrain.toml --out /data/runs/r1
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working dir holds the packages

from workflows.cli import run_command, setup_logging  # noqa: E402
from workflows.cli_selftrain import cmd_run  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--out", required=True, help="run directory, local or on a store (s3://, gs://)")
    p.add_argument("--work-dir", help="local mirror of a run on a store (default under $OVLABEL_CACHE/selftrain)")
    a = p.parse_args(argv)
    setup_logging()
    return run_command("self_train", cmd_run, a)


if __name__ == "__main__":
    sys.exit(main())
