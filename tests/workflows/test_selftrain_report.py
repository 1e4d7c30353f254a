"""workflows/selftrain_report.py: the plain-text round table of `ovlabel selftrain status` (runs: test_selftrain.py)."""

from __future__ import annotations

from workflows.selftrain_report import format_table


def test_format_table_right_aligns_columns_and_shows_missing_values_as_dashes():
    table = [{"round": 0, "steps": "eval", "AP50": 0.123456, "pseudo_images": None, "seconds": 12.0},
             {"round": 1, "steps": "pseudo/train/eval", "AP50": 0.5, "pseudo_images": 40, "seconds": 3.25}]
    assert format_table(table).split("\n") == [
        "round              steps    AP50  pseudo_images  seconds",
        "-----  -----------------  ------  -------------  -------",
        "    0               eval  0.1235              -       12",  # floats to 4 significant digits
        "    1  pseudo/train/eval     0.5             40     3.25"]
    assert format_table([]) == "(no rounds yet)"
