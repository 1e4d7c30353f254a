"""workflows/cli_review.py: `review open|pull|apply` and `render` parsed into their handlers and options (the
commands run end to end in test_review.py, `slow`)."""

from __future__ import annotations

from workflows.cli import build_parser
from workflows.cli_review import cmd_render, cmd_review_apply, cmd_review_open, cmd_review_pull


def test_review_commands_route_to_their_handlers_with_their_defaults():
    parse = build_parser().parse_args
    a = parse(["review", "open", "gold", "--pseudo", "r1", "r2"])
    assert a.func is cmd_review_open and a.pseudo == ["r1", "r2"]
    assert (a.port, a.address, a.name, a.cache, a.rebuild, a.no_launch) == (5151, "127.0.0.1", None, None, False,
                                                                            False)
    a = parse(["review", "pull", "t-review", "--out", "corr"])
    assert a.func is cmd_review_pull and (a.name, a.out) == ("t-review", "corr")
    a = parse(["review", "apply", "ds", "--corrections", "corr", "--out", "o"])
    assert a.func is cmd_review_apply and (a.dataset, a.corrections, a.out, a.overwrite) == ("ds", "corr", "o", False)
    a = parse(["render", "ds", "--out", "png"])
    assert a.func is cmd_render and (a.n, a.seed, a.pseudo) == (16, 0, None)
