"""Ray job entry: pseudo-label a CC3M-style caption dataset (or img2dataset output), or any dataset directory
with a class list (--classes: an image folder from `ovlabel convert images`, an ODVG OD dataset with its own
label map, ...); records that carry their own phrases are prompted with them. The options are `ovlabel pseudo`'s.

Embedded (starts a local Ray):
    python pipelines/cc3m_pseudo.py --input examples/cc3m_sample --out /data/cc3m_pseudo
On a cluster (joins it through RAY_ADDRESS; take data paths as absolute):
    ray job submit --working-dir . -- python pipelines/cc3m_pseudo.py --input /data/cc3m --out /data/cc3m_pseudo
    ray job submit --working-dir . -- python pipelines/cc3m_pseudo.py --input /data/photos \\
        --classes /data/classes.txt --out /data/photos_pseudo
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working dir holds the packages

from workflows.cli import run_command, setup_logging  # noqa: E402
from workflows.cli_labeling import add_pseudo_args, cmd_pseudo  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pseudo_args(p)
    a = p.parse_args(argv)
    setup_logging()
    return run_command("cc3m_pseudo", cmd_pseudo, a)


if __name__ == "__main__":
    sys.exit(main())
