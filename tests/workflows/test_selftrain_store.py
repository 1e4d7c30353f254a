"""Self-training and training runs whose home is on object storage (issue 17), on moto's S3 server (the `s3`
fixture): the run works in a local mirror (`workflows.run_mirror`) filled from the store when it opens; each
recorded step's files reach the store before run.json, so a run resumes on a fresh machine (a fresh work
directory) from what the store holds, and a finished run resumed elsewhere does nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, objects, records, run_cli, run_until_killed

from formats.storage import Folder, StorageError
from workflows.run_mirror import RunMirror, default_work_dir

# -- the mirror, without Ray or models ------------------------------------------------------------------------

FILES = {  # a run directory as a round leaves it (contents do not matter to the mirror)
    "run.json": b'{"status": "running"}',
    "round-1/pseudo/manifest.json": b'{"complete": true}',
    "round-1/pseudo/records/part-00000.parquet": b"PAR1...",
    "round-1/model/checkpoint-2/model.safetensors": b"weights-2",
    "round-1/model/checkpoint-2/trainer_state.json": b'{"step": 2}',
    "round-1/model/checkpoint-2/vocab.txt": b"[PAD]",
}


def write_files(root, files: dict) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def logged(mirror: RunMirror) -> list:
    """Records the mirror's uploads, downloads and deletions in order (as ("up" | "down" | "rm", name))."""
    calls, remote = [], mirror.remote

    def logging(what: str, method):
        def wrapped(rel, *args):
            calls.append((what, rel))
            return method(rel, *args)
        return wrapped

    for what, name in (("up", "upload"), ("down", "download"), ("rm", "rm")):
        setattr(remote, name, logging(what, getattr(remote, name)))
    return calls


def test_push_uploads_new_files_markers_and_the_record_last_and_deletes_rotated_ones(s3, tmp_path):
    w1 = tmp_path / "w1"
    write_files(w1, FILES)
    (w1 / "round-1" / "model" / ".checkpoint-4.tmp").mkdir()
    (w1 / "round-1" / "model" / ".checkpoint-4.tmp" / "model.safetensors").write_bytes(b"half")
    (w1 / "round-1" / ".metrics.json.tmp-1-2").write_bytes(b"half")
    mirror = RunMirror(f"{s3.url}/run", w1, kind="selftrain", record="run.json")
    calls = logged(mirror)
    assert mirror.root == w1.resolve() and mirror.home == f"{s3.url}/run"
    assert mirror.push() == [c[1] for c in calls]
    assert calls == [("up", "round-1/model/checkpoint-2/model.safetensors"),
                     ("up", "round-1/model/checkpoint-2/vocab.txt"),
                     ("up", "round-1/pseudo/records/part-00000.parquet"),
                     ("up", "round-1/model/checkpoint-2/trainer_state.json"),  # the markers after their folders
                     ("up", "round-1/pseudo/manifest.json"),
                     ("up", "run.json")]  # the commit record last
    assert objects(s3, "run") == sorted(FILES)  # hidden files (temps, the index) stay local
    assert stored_file(s3, "run/run.json") == FILES["run.json"]

    calls.clear()
    assert mirror.push() == [] and calls == []  # nothing changed: nothing uploaded
    (w1 / "run.json").write_bytes(b'{"status": "finished"}')  # the record rewritten, same size as it may be
    (w1 / "run.json").write_bytes(b'{"status": "complete"}')
    assert mirror.push() == ["run.json"] and stored_file(s3, "run/run.json") == b'{"status": "complete"}'

    # training rotates checkpoint-2 away for checkpoint-4: uploaded, and checkpoint-2 deleted (its marker first)
    write_files(w1, {"round-1/model/checkpoint-4/model.safetensors": b"weights-4",
                     "round-1/model/checkpoint-4/trainer_state.json": b'{"step": 4}'})
    for name in ("trainer_state.json", "model.safetensors", "vocab.txt"):
        (w1 / "round-1" / "model" / "checkpoint-2" / name).unlink()
    calls.clear()
    mirror.push()
    assert calls == [("up", "round-1/model/checkpoint-4/model.safetensors"),
                     ("up", "round-1/model/checkpoint-4/trainer_state.json"),
                     ("rm", "round-1/model/checkpoint-2/trainer_state.json"),
                     ("rm", "round-1/model/checkpoint-2/model.safetensors"),
                     ("rm", "round-1/model/checkpoint-2/vocab.txt")]
    assert [o for o in objects(s3, "run") if "checkpoint" in o] == [
        "round-1/model/checkpoint-4/model.safetensors", "round-1/model/checkpoint-4/trainer_state.json"]


def test_pull_fills_a_fresh_work_dir_and_the_store_wins_over_a_stale_one(s3, tmp_path):
    w1, w2 = tmp_path / "w1", tmp_path / "w2"
    write_files(w1, FILES)
    RunMirror(f"{s3.url}/run", w1, kind="selftrain", record="run.json").push()

    fresh = RunMirror(f"{s3.url}/run", w2, kind="selftrain", record="run.json")
    calls = logged(fresh)
    assert fresh.pull() == [c[1] for c in calls] and [c[0] for c in calls] == ["down"] * len(FILES)
    assert [c[1] for c in calls][-3:] == ["round-1/model/checkpoint-2/trainer_state.json",
                                          "round-1/pseudo/manifest.json", "run.json"]  # markers, then the record
    assert {rel: (w2 / rel).read_bytes() for rel in FILES} == FILES
    assert not list(w2.rglob(".*.tmp-*"))
    assert fresh.pull() == [] and fresh.push() == []  # in sync both ways

    # a local change the store has not seen is newer: kept by pull, uploaded by push
    (w2 / "run.json").write_bytes(b'{"status": "round 2"}')
    assert RunMirror(f"{s3.url}/run", w2, kind="selftrain", record="run.json").pull() == []
    assert RunMirror(f"{s3.url}/run", w2, kind="selftrain", record="run.json").push() == ["run.json"]
    # w1 last synced the old version: the store's newer one replaces its copy
    assert RunMirror(f"{s3.url}/run", w1, kind="selftrain", record="run.json").pull() == ["run.json"]
    assert (w1 / "run.json").read_bytes() == b'{"status": "round 2"}'
    # a file of the mirror that differs and was never synced there: the store's version
    w3 = tmp_path / "w3"
    write_files(w3, {"run.json": b"{}"})
    assert "run.json" in RunMirror(f"{s3.url}/run", w3, kind="selftrain", record="run.json").pull()
    assert (w3 / "run.json").read_bytes() == b'{"status": "round 2"}'


def test_work_dirs_names_paths_and_credentials(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("OVLABEL_CACHE", str(tmp_path / "cache"))
    secret = "s3cr3t-never-shown"
    with_keys = RunMirror(f"s3://AKIDEXAMPLE:{secret}@{s3.bucket}/run", kind="selftrain")
    plain = RunMirror(f"{s3.url}/run/", kind="selftrain")
    assert with_keys.home == plain.home == f"{s3.url}/run"  # credentials in the URL: used, never shown
    assert with_keys.root == plain.root == default_work_dir(f"{s3.url}/run", "selftrain")
    assert plain.root.parent == tmp_path / "cache" / "selftrain" and len(plain.root.name) == 12
    assert RunMirror(f"{s3.url}/run", kind="train").root.parent == tmp_path / "cache" / "train"

    write_files(plain.root, {"run.json": b"{}"})
    plain.push()
    with_keys.pull()  # the index now names the home (without credentials)
    assert secret not in (with_keys.root / ".ovlabel-mirror.json").read_text()
    with pytest.raises(StorageError, match=f"mirrors {s3.url}/run, not {s3.url}/other; give another --work-dir") as e:
        RunMirror(f"s3://AKIDEXAMPLE:{secret}@{s3.bucket}/other", plain.root, kind="selftrain")
    assert secret not in str(e.value)

    root = str(plain.root)
    recorded = {"dir": f"{root}/round-1/pseudo", "datasets": [f"{root}/inputs/gold-0", "/data/gold"], "n": 3,
                "model": "org/model", "other": f"{root}-other/x"}
    shown = plain.shown(recorded)
    assert shown == {"dir": f"{s3.url}/run/round-1/pseudo", "datasets": [f"{s3.url}/run/inputs/gold-0", "/data/gold"],
                     "n": 3, "model": "org/model", "other": f"{root}-other/x"}
    elsewhere = RunMirror(f"{s3.url}/run", tmp_path / "elsewhere", kind="selftrain")
    assert elsewhere.local(shown)["dir"] == str((tmp_path / "elsewhere").resolve() / "round-1" / "pseudo")

    local = RunMirror(tmp_path / "local_run", kind="selftrain")
    assert local.root == tmp_path / "local_run" and local.home == str(tmp_path / "local_run")
    assert local.pull() == [] and local.push() == [] and local.shown(recorded) is recorded
    assert RunMirror(f"file://{tmp_path}/x", kind="train").root == tmp_path / "x"


def test_a_store_run_of_another_config_is_refused_before_anything_is_downloaded(s3, tmp_path):
    from workflows.selftrain import Run, SelfTrainConfig

    cfg = SelfTrainConfig(base_model="m", pool="p", eval=[{"name": "e", "path": "e"}])
    first = Run(f"{s3.url}/run", cfg, work_dir=tmp_path / "w1")
    write_files(first.root, {"round-1/pseudo/records/part-00000.parquet": b"PAR1"})
    first.save()
    assert objects(s3, "run") == ["round-1/pseudo/records/part-00000.parquet", "run.json"]
    with pytest.raises(ValueError, match=f"^{s3.url}/run holds a run with another config"):
        Run(f"{s3.url}/run", SelfTrainConfig(**{**cfg.__dict__, "rounds": 5}), work_dir=tmp_path / "w2")
    assert not (tmp_path / "w2" / "round-1").exists()
    again = Run(f"{s3.url}/run", cfg, work_dir=tmp_path / "w2")  # the same config: filled from the store
    assert again.state == first.state and (tmp_path / "w2" / "round-1" / "pseudo" / "records").is_dir()


# -- training with its checkpoints on the store ----------------------------------------------------------------

def test_train_uploads_each_checkpoint_and_resumes_from_the_store(s3, tiny_models, sample_gold, tmp_path):
    from detector.train import TrainConfig
    from workflows.training import train

    cfg = TrainConfig(steps=2, batch_size=2, checkpoint_every=1, negatives=2, loader_workers=0)
    out, saved = f"{s3.url}/ckpt", []
    first = train(str(tiny_models["detector"]), [str(sample_gold)], out, cfg, device="cpu", work_dir=tmp_path / "w1",
                  saved=lambda: saved.append(objects(s3, "ckpt")))
    assert first["steps"] == 2
    # each checkpoint was on the store when the next step began; then train_stats.json
    assert [sorted({o.split("/")[0] for o in names}) for names in saved] == [
        ["checkpoint-1"], ["checkpoint-1", "checkpoint-2"], ["checkpoint-1", "checkpoint-2", "train_stats.json"]]
    assert "checkpoint-2/trainer_state.json" in objects(s3, "ckpt")

    # another machine: a fresh work dir starts from the store's newest checkpoint; rotation deletes checkpoint-1
    again = train(str(tiny_models["detector"]), [str(sample_gold)], out, TrainConfig(**{**cfg.__dict__, "steps": 3}),
                  device="cpu", work_dir=tmp_path / "w2")
    assert again["start"] == 2 and again["steps"] == 3
    assert sorted({o.split("/")[0] for o in objects(s3, "ckpt")}) == ["checkpoint-2", "checkpoint-3", "train_stats.json"]
    state = json.loads(stored_file(s3, "ckpt/checkpoint-3/trainer_state.json"))
    assert [h["step"] for h in state["history"]] == [1, 2, 3]

    before = listing(s3, "ckpt")
    done = train(str(tiny_models["detector"]), [str(sample_gold)], out, TrainConfig(**{**cfg.__dict__, "steps": 3}),
                 device="cpu", work_dir=tmp_path / "w3")
    assert done == {"steps": 3, "resumed": True} and listing(s3, "ckpt") == before  # nothing trained or uploaded


def stored_file(s3, name: str) -> bytes:
    """The object s3://BUCKET/NAME as it is now (another process may have written it since the last listing)."""
    s3.fs.invalidate_cache()
    return s3.fs.cat_file(f"{s3.bucket}/{name}")


def listing(s3, prefix: str) -> dict:
    """Every object under s3://BUCKET/PREFIX/ with its ETag and modification time (a rewrite changes them)."""
    s3.fs.invalidate_cache()
    return {k: (v.get("ETag"), v.get("LastModified")) for k, v in s3.fs.find(f"{s3.bucket}/{prefix}/", detail=True).items()}


# -- a self-training run on the store, killed and resumed on a "fresh machine" -----------------------------------

@pytest.mark.slow
def test_selftrain_on_the_store_resumes_from_a_fresh_work_dir(s3, tiny_models, tmp_path):
    from selftrain_inputs import write_config

    secret = "s3cr3t-never-shown"
    cfg = tmp_path / "selftrain.json"
    write_config(cfg, tiny_models, rounds=1)
    config = json.loads(cfg.read_text())
    config["train"].update(steps=4, checkpoint_every=2)
    cfg.write_text(json.dumps(config))
    url = f"{s3.url}/runs/r1"
    out = f"s3://AKIDEXAMPLE:{secret}@{s3.bucket}/runs/r1"  # keys in the URL: used to connect, never shown
    cmd = [sys.executable, "-m", "workflows.cli", "selftrain", "run", str(cfg), "--out", out]

    # killed right after round 1's first checkpoint (step 2): the checkpoint reached the store before the kill
    log = run_until_killed([*cmd, "--work-dir", tmp_path / "w1"], "checkpoint", 1, env=s3.env)
    assert secret not in log
    stored = objects(s3, "runs/r1")
    assert "round-1/model/checkpoint-2/trainer_state.json" in stored and "round-1/pseudo/manifest.json" in stored
    state = json.loads(stored_file(s3, "runs/r1/run.json"))
    assert set(state["rounds"]["1"]["steps"]) == {"pseudo", "review"} and state["status"] == "running"

    # a fresh machine: another work dir, filled from the store; the round resumes at its checkpoint
    proc = run_cli_env(s3, *cmd[3:], "--work-dir", tmp_path / "w2")
    assert json.loads(proc.stdout) == {"run": url, "status": "complete", "rounds": [0, 1]}
    run_json = stored_file(s3, "runs/r1/run.json")
    state = json.loads(run_json)
    steps = state["rounds"]["1"]["steps"]
    assert steps["train"]["start"] == 2 and steps["train"]["steps"] == 4
    # recorded paths name the store, never a work dir or credentials
    assert steps["pseudo"]["dir"] == steps["review"]["pseudo"] == f"{url}/round-1/pseudo"
    assert f"{url}/round-1/pseudo" in steps["train"]["datasets"]
    assert f"{url}/inputs/gold-0" in steps["train"]["datasets"]
    metrics = json.loads(stored_file(s3, "runs/r1/round-1/metrics.json"))
    assert metrics == steps["eval"] and metrics["model"] == f"{url}/round-1/model/checkpoint-4"
    assert "AP50" in metrics["eval"]["sample"] and metrics["train"]["steps"] == 4
    stored = objects(s3, "runs/r1")
    assert {"run.json", "round-0/metrics.json", "round-1/config.json", "round-1/metrics.json",
            "round-1/pseudo/manifest.json", "inputs/gold-0/manifest.json", "round-1/model/train_stats.json",
            "round-1/model/checkpoint-4/model.safetensors"} <= set(stored)
    assert not any(o.rsplit("/", 1)[-1].startswith(".") for o in stored)
    assert sorted({o.split("/")[2] for o in stored if o.startswith("round-1/model/checkpoint")}) == [
        "checkpoint-2", "checkpoint-4"]
    pseudo = records(steps["pseudo"]["dir"])  # read straight from the store
    assert pseudo and all(g["round"] == 1 for r in pseudo for g in r["regions"])
    for o in stored:
        if o.endswith(".json"):  # manifests record the command line: redacted
            assert secret not in stored_file(s3, f"runs/r1/{o}").decode(), o
    for o in ("run.json", "round-0/metrics.json", "round-1/metrics.json"):  # no work dir either
        assert str(tmp_path) not in stored_file(s3, f"runs/r1/{o}").decode()
    assert secret not in proc.stdout + proc.stderr

    # once more on another fresh machine: nothing is redone, nothing uploaded
    before = listing(s3, "runs/r1")
    proc = run_cli_env(s3, *cmd[3:], "--work-dir", tmp_path / "w3")
    assert json.loads(proc.stdout)["status"] == "complete"
    assert listing(s3, "runs/r1") == before and stored_file(s3, "runs/r1/run.json") == run_json

    # status and report of the store run, from the mirror
    status = run_cli("selftrain", "status", tmp_path / "w3").stdout
    assert "complete" in status and "sample.AP50" in status
    # and of the store run itself: run.json read from the store, the report written beside the run
    status = run_cli_env(s3, "selftrain", "status", url).stdout.splitlines()
    assert status[0] == f"{url}: complete" and "sample.AP50" in status[1] and len(status) == 5
    rep = json.loads(run_cli_env(s3, "selftrain", "report", url).stdout)
    assert rep["report"] == f"{url}/report/report.md" and [r["round"] for r in rep["rounds"]] == [0, 1]
    assert {"report/report.md", "report/metrics_per_round.png", "report/boxes_per_round.png",
            "report/score_histograms.png"} <= set(objects(s3, "runs/r1"))
    assert "sample.AP50" in stored_file(s3, "runs/r1/report/report.md").decode()


def run_cli_env(s3, *args):
    """`run_cli` with the store's environment (endpoint and keys) in the subprocess."""
    proc = subprocess.run([sys.executable, "-m", "workflows.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env=s3.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_folder_upload_and_download_are_whole(s3, tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 1000)
    for folder in (Folder(f"{s3.url}/f"), Folder(tmp_path / "local")):
        folder.upload("sub/a.bin", src)
        folder.download("sub/a.bin", tmp_path / "back" / folder.protocol / "a.bin")
        assert (tmp_path / "back" / folder.protocol / "a.bin").read_bytes() == src.read_bytes()
        with pytest.raises(FileNotFoundError, match="sub/missing.bin: no such file"):
            folder.download("sub/missing.bin", tmp_path / "back" / "missing.bin")
    assert not list(tmp_path.rglob(".*.tmp-*"))
