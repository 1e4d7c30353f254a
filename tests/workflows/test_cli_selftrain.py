"""workflows/cli_selftrain.py: `selftrain run|status|report`, `train` and `evaluate` parsed into their handlers
and options (the commands run end to end in test_selftrain.py and test_train.py, `slow`)."""

from __future__ import annotations

import pytest

from workflows.cli import build_parser
from workflows.cli_selftrain import cmd_evaluate, cmd_report, cmd_run, cmd_status, cmd_train


def test_selftrain_train_and_evaluate_route_to_their_handlers():
    parse = build_parser().parse_args
    a = parse(["selftrain", "run", "cfg.toml", "--out", "s3://b/run"])
    assert a.func is cmd_run and (a.config, a.out, a.work_dir) == ("cfg.toml", "s3://b/run", None)
    assert parse(["selftrain", "status", "run", "--json"]).func is cmd_status
    a = parse(["selftrain", "report", "run"])
    assert a.func is cmd_report and a.out is None  # RUN/report
    a = parse(["train", "d1", "d2", "--model", "m", "--out", "ck", "--steps", "5", "--lr", "1e-4"])
    assert a.func is cmd_train and a.datasets == ["d1", "d2"]
    assert (a.steps, a.lr, a.batch_size, a.num_workers) == (5, 1e-4, None, None)
    a = parse(["evaluate", "gold.json", "--detections", "dets.json"])
    assert a.func is cmd_evaluate and (a.detections, a.model, a.protocol) == ("dets.json", None, None)


def test_an_unknown_protocol_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["evaluate", "gold.json", "--protocol", "nope"])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
