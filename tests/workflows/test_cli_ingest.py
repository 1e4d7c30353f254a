"""workflows/cli_ingest.py in-process: `download`, `dedup`, `leakage`, `split` and `convert img2dataset` parsed
by the `ovlabel` parser into their handlers and configs (the commands run end to end: test_ingest_web.py,
test_hygiene.py)."""

from __future__ import annotations

import json

from dataset_parts import write_parts

from formats.dataset import Dataset
from workflows.cli import build_parser
from workflows.cli_ingest import (
    cmd_convert_img2dataset,
    cmd_dedup,
    cmd_download,
    cmd_leakage,
    cmd_split,
    download_config,
    img2dataset_config,
)
from workflows.download import DownloadConfig


def test_download_options_become_the_download_config():
    a = build_parser().parse_args(["download", "cc3m", "urls.tsv", "--out", "raw", "--threads", "4",
                                   "--resize-mode", "no", "--shard-size", "5", "--output-format", "parquet"])
    assert a.func is cmd_download and (a.kind, a.source, a.out) == ("cc3m", "urls.tsv", "raw")
    assert download_config(a) == DownloadConfig(output_format="parquet", image_size=1024, resize_mode="no",
                                                processes=1, threads=4, timeout=10, retries=0, shard_size=5,
                                                distributor="multiprocessing")
    defaults = build_parser().parse_args(["download", "grit", "meta", "--out", "raw"])
    assert download_config(defaults) == DownloadConfig()  # the command line's defaults are the config's


def test_hygiene_commands_route_to_their_handlers():
    parse = build_parser().parse_args
    assert parse(["dedup", "a", "b", "--out", "o"]).func is cmd_dedup
    a = parse(["leakage", "t", "--against", "e1", "e2", "--out", "o"])
    assert a.func is cmd_leakage and a.against == ["e1", "e2"] and not a.overwrite
    a = parse(["split", "d", "--n", "-1", "--out", "o"])
    assert a.func is cmd_split and (a.n, a.seed) == (-1, 0)


def test_split_handler_prints_the_report(tmp_path, capsys):
    write_parts(tmp_path / "ds").finish()  # 3 parts of 3 records
    a = build_parser().parse_args(["split", str(tmp_path / "ds"), "--n", "4", "--seed", "3",
                                   "--out", str(tmp_path / "s")])
    a.func(a)
    rep = json.loads(capsys.readouterr().out)
    assert (rep["records"], rep["chosen"], rep["removed"], rep["seed"]) == (9, 4, 5, 3)
    assert Dataset(tmp_path / "s").manifest.totals()["images"] == 4


def test_convert_grit_and_cc3m_options_become_the_img2dataset_config():
    parse = build_parser().parse_args
    a = parse(["convert", "grit", "raw", "--out", "o", "--spans", "noun_chunks", "--min-score", "0.25"])
    assert a.func is cmd_convert_img2dataset
    cfg = img2dataset_config(a, a.spans)
    assert (cfg.source, cfg.spans, cfg.min_score) == ("grit", "noun_chunks", 0.25)
    a = parse(["convert", "cc3m", "raw", "--out", "o"])  # no GRIT options: no spans, every box
    assert a.func is cmd_convert_img2dataset
    cfg = img2dataset_config(a, getattr(a, "spans", None))
    assert (cfg.source, cfg.spans, cfg.min_score) == ("cc3m", None, 0.0)
