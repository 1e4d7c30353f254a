"""FiftyOne review: build, tag as the App would, pull, apply, export; the App on 127.0.0.1 in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from selftrain_inputs import write_round1

os.environ.setdefault("FIFTYONE_DATABASE_DIR", tempfile.mkdtemp(prefix="ovlabel-fo-db-"))

from formats.corrections import apply_corrections, read_corrections  # noqa: E402
from formats.dataset import Dataset  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gold_and_pseudo(tmp_path_factory, sample_gold):
    """The bundled sample's hand-drawn gold boxes, and a round-1 pseudo dataset over the same photos."""
    pseudo = tmp_path_factory.mktemp("review") / "round1"
    write_round1(Dataset(sample_gold), pseudo)
    return sample_gold, pseudo


def test_build_tag_pull_apply_export(gold_and_pseudo, tmp_path):
    import fiftyone as fo
    from fiftyone import ViewField as F

    from workflows.review import build_review

    gold, pseudo = gold_and_pseudo
    fds = build_review(gold, [pseudo], name="t-review", cache_dir=tmp_path / "cache", rebuild=True)
    n_gold = sum(len(r["regions"]) for r in Dataset(gold).read().to_pylist())
    assert len(fds) == 7 and fds.count("gold.detections") == n_gold == fds.count("round_1.detections")
    det = fds.first()["round_1"].detections[0]
    assert det.region_id.endswith("#r0c0") and det.round == 1 and det.origin == "pseudo" and det.phrase == det.label
    views = fds.list_saved_views()
    assert {"round_1-low-score", "round_1-det-clip-disagree", "round_1-false-positives",
            "round_1-missed-gold"} <= set(views)
    assert fds.load_saved_view("round_1-low-score").count("round_1.detections") == len(
        fds.filter_labels("round_1", F("confidence") < 0.3).values("round_1.detections.id", unwind=True))
    assert "eval_round_1" in fds.list_evaluations()
    dropped = fds.load_saved_view("round_1-dropped-candidates")
    assert len(dropped) == 1 and dropped.values("round_1_dropped.detections.region_id", unwind=True) == [
        f"{fds.load_saved_view('round_1-dropped-candidates').first()['image_id']}#r0c99"]

    # a reviewer at work, through the same API the App uses
    keys = fds.values("round_1.detections.region_id", unwind=True)
    reject, accept, fix = keys[0], keys[1], keys[2]
    fds.filter_labels("round_1", F("region_id") == reject).tag_labels("reject", label_fields=["round_1"])
    fds.filter_labels("round_1", F("region_id") == accept).tag_labels("accept", label_fields=["round_1"])
    sample = fds.match(F("round_1.detections.region_id").contains(fix)).first()
    for d in sample["round_1"].detections:
        if d.region_id == fix:
            d.bounding_box = [0.1, 0.1, 0.2, 0.2]
            d.label = "a better phrase"
    sample["round_1"].detections.append(fo.Detection(label="missed thing", bounding_box=[0.5, 0.5, 0.1, 0.1]))
    sample.save()

    # rebuilding keeps the tags and adds nothing twice
    fds = build_review(gold, [pseudo], name="t-review", cache_dir=tmp_path / "cache")
    assert len(fds) == 7 and fds.count_label_tags() == {"reject": 1, "accept": 1}

    out = tmp_path / "corrections"
    summary = json.loads(run_cli("review", "pull", "t-review", "--out", out).stdout)
    assert summary["actions"] == {"reject": 1, "accept": 1, "fix": 1, "add": 1}
    corr = {r["action"]: r for r in read_corrections(out).to_pylist()}
    assert corr["reject"]["region_id"] == reject and corr["fix"]["phrase"] == "a better phrase"
    w, h = sample["width"], sample["height"]
    assert corr["fix"]["bbox"] == pytest.approx([0.1 * w, 0.1 * h, 0.3 * w, 0.3 * h])
    assert corr["add"]["region_id"] is None and corr["add"]["dataset"] == str(pseudo.resolve())

    fixed = tmp_path / "round1_reviewed"
    counts = apply_corrections(pseudo, out, fixed)
    assert counts["applied"] == {"reject": 1, "accept": 1, "fix": 1, "add": 1}
    regions = {g["region_id"]: g for r in Dataset(fixed).read().to_pylist() for g in r["regions"]}
    assert reject not in regions and regions[accept]["origin"] == "review"
    assert regions[fix]["phrase"] == "a better phrase" and regions[fix]["bbox"] == pytest.approx(corr["fix"]["bbox"])
    assert [g["phrase"] for g in regions.values() if g["phrase"] == "missed thing"]
    assert len(regions) == len(keys)  # one rejected, one added
    # the change shows in the next export
    run_cli("export", "odvg", fixed, "--out", tmp_path / "fixed.jsonl")
    exported = [g for line in (tmp_path / "fixed.jsonl").read_text().splitlines()
                for g in json.loads(line)["grounding"]["regions"]]
    assert len(exported) == len(keys) and "a better phrase" in {g["phrase"] for g in exported}


def test_render_draws_gold_and_pseudo(gold_and_pseudo, tmp_path):
    from PIL import Image

    gold, pseudo = gold_and_pseudo
    s = json.loads(run_cli("render", gold, "--pseudo", pseudo, "--out", tmp_path / "png", "-n", "3", "--seed", "1").stdout)
    assert len(s["images"]) == 3
    again = json.loads(run_cli("render", gold, "--out", tmp_path / "png2", "-n", "3", "--seed", "1").stdout)
    assert [Path(p).name for p in s["images"]] == [Path(p).name for p in again["images"]]
    img = Image.open(s["images"][0]).convert("RGB")
    colours = set(img.getdata())
    assert (40, 200, 80) in colours and (255, 140, 0) in colours  # gold green, pseudo orange


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _screenshot(url: str, path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run `make browser`"
    proc = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                           "--virtual-time-budget=20000", f"--screenshot={path}", url],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and path.exists(), proc.stderr[-2000:]


def _grid_colours(path: Path) -> int:
    from PIL import Image

    img = Image.open(path).convert("RGB")
    grid = img.crop((310, 140, img.width, img.height - 140))  # right of the sidebar, below the toolbar
    return len(set(grid.getdata()))


def test_app_serves_on_localhost_and_renders_the_grid(gold_and_pseudo, tmp_path):
    import fiftyone as fo

    from workflows.review import build_review, launch

    gold, pseudo = gold_and_pseudo
    fds = build_review(gold, [pseudo], name="t-app", cache_dir=tmp_path / "cache", rebuild=True)
    empty = fo.Dataset("t-empty", overwrite=True)
    port = _free_port()
    session = launch(fds, port=port)
    try:
        assert session.url == f"http://127.0.0.1:{port}/"
        for _ in range(60):
            try:
                assert urllib.request.urlopen(session.url, timeout=2).status == 200
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the App did not answer")
        shot = tmp_path / "app.png"
        for _ in range(3):  # a loaded machine can catch the App still on its loading screen: look again
            _screenshot(f"{session.url}datasets/{fds.name}", shot)
            if _grid_colours(shot) > 5000:
                break
        blank = tmp_path / "empty.png"
        _screenshot(f"{session.url}datasets/{empty.name}", blank)
    finally:
        session.close()
    # the photos with their boxes fill the grid; the empty dataset's grid is flat
    assert _grid_colours(shot) > 5000 > _grid_colours(blank) * 3


def test_review_open_prints_the_url_as_json_and_serves(gold_and_pseudo, tmp_path):
    gold, pseudo = gold_and_pseudo
    port = _free_port()
    cmd = [sys.executable, "-m", "workflows.cli", "review", "open", str(gold), "--pseudo", str(pseudo), "--name",
           "t-cli", "--port", str(port), "--cache", str(tmp_path / "cache"), "--rebuild"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(tmp_path / "err.log", "w"), text=True,
                            start_new_session=True)
    try:
        lines = []
        for line in proc.stdout:  # the JSON summary, then the App runs until stopped
            lines.append(line)
            if line.startswith("}"):
                break
        assert lines, f"review open printed nothing (exit {proc.poll()}):\n{(tmp_path / 'err.log').read_text()[-3000:]}"
        info = json.loads("".join(lines))
        assert info["url"] == f"http://127.0.0.1:{port}/" and info["samples"] == 7
        assert set(info["fields"]) == {"gold", "round_1"}
        assert urllib.request.urlopen(info["url"], timeout=30).status == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_review_open_accepts_tar_only_webdataset_output(tmp_path):
    """`review open` takes img2dataset / webdataset output as `pseudo --input` does (converted once into the cache)."""
    import io
    import tarfile

    from PIL import Image

    from workflows.review import build_review

    raw = tmp_path / "wds"
    raw.mkdir()
    with tarfile.open(raw / "00000.tar", "w") as tf:
        for key, caption in (("k0", "a red square"), ("k1", "a blue square")):
            buf = io.BytesIO()
            Image.new("RGB", (16, 12), (200, 0, 0)).save(buf, "JPEG")
            for name, data in ((f"{key}.jpg", buf.getvalue()), (f"{key}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    fds = build_review(raw, [], name="t-wds", cache_dir=tmp_path / "cache", rebuild=True, evaluate=False)
    got = sorted((s["image_id"], s["caption"], s["width"], s["height"]) for s in fds)
    assert got == [("cc3m/k0", "a red square", 16, 12), ("cc3m/k1", "a blue square", 16, 12)]
    assert all(Path(s.filepath).is_file() for s in fds)
    fds.delete()
