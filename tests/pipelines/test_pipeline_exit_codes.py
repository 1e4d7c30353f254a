"""The pipelines/ scripts exit as the CLI does (workflows.cli.run_command): 2 for a config that does not fit,
1 for a missing file, the error on one stderr line named by the script."""

from __future__ import annotations

import json
import sys

from conftest import EXAMPLES, ROOT, run_cli, run_command


def test_a_config_error_exits_2_like_the_cli(tmp_path):
    bad = tmp_path / "pseudo.json"
    bad.write_text(json.dumps({"filter": {"fused_treshold": 0.3}}))
    args = ["--input", EXAMPLES / "cc3m_sample", "--out", tmp_path / "out", "--config", bad]
    script = run_command([sys.executable, ROOT / "pipelines" / "cc3m_pseudo.py", *args], check=False)
    cli = run_cli("pseudo", *map(str, args), check=False)
    message = f"{bad}: filter.fused_treshold: unknown key (did you mean fused_threshold?)"
    assert (script.returncode, script.stderr.strip()) == (2, f"cc3m_pseudo: error: {message}")
    assert (cli.returncode, cli.stderr.strip()) == (2, f"ovlabel: error: {message}")
    assert not (tmp_path / "out").exists()


def test_self_train_config_errors(tmp_path):
    bad = tmp_path / "run.toml"
    bad.write_text('base_model = "m"\npool = "p"\n[train]\nbogus_key = 1\n')
    proc = run_command([sys.executable, ROOT / "pipelines" / "self_train.py", bad, "--out", tmp_path / "run"],
                       check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(f"self_train: error: {bad}: train.bogus_key: unknown key")
    proc = run_command([sys.executable, ROOT / "pipelines" / "self_train.py", tmp_path / "missing.toml", "--out",
                        tmp_path / "run"], check=False)
    assert proc.returncode == 1 and "missing.toml" in proc.stderr and proc.stderr.startswith("self_train: error: ")
