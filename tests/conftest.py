"""Shared fixtures: small COCO files written by the tests, and a CLI runner."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# property-based tests (tests/formats/converters/test_converter_properties.py) try the same examples on every
# run and machine
settings.register_profile("ovlabel", derandomize=True, database=None, print_blob=True)
settings.load_profile("ovlabel")

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def coco_doc(n_images: int = 3, cats=((1, "person"), (2, "car"), (3, "Cabinet/shelf")), boxes=None) -> dict:
    """A small valid COCO document; `boxes` maps image id -> list of (category_id, [x, y, w, h])."""
    images = [{"id": i, "file_name": f"img/{i:04d}.jpg", "width": 640, "height": 480} for i in range(1, n_images + 1)]
    if boxes is None:
        boxes = {i: [(1 + (i + k) % len(cats), [10.0 * k + 1, 20.0, 30.5, 40.25]) for k in range(i)]
                 for i in range(1, n_images + 1)}
    anns, aid = [], 1
    for img, lst in boxes.items():
        for cat, bb in lst:
            anns.append({"id": aid, "image_id": img, "category_id": cat, "bbox": bb,
                         "area": bb[2] * bb[3], "iscrowd": 0})
            aid += 1
    return {"info": {"year": 2026}, "images": images, "annotations": anns,
            "categories": [{"id": c, "name": n, "supercategory": "x"} for c, n in cats]}


@pytest.fixture
def write_json(tmp_path):
    def write(doc, name="ann.json", indent=None) -> Path:
        p = tmp_path / name
        p.write_text(json.dumps(doc, indent=indent))
        return p
    return write


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `python -m workflows.cli ARGS` as a user would; returns the completed process."""
    return run_command([sys.executable, "-m", "workflows.cli", *args], check=check)


def run_command(cmd: list, check: bool = True) -> subprocess.CompletedProcess:
    """Runs a command (`python -m workflows.cli ...`, `python pipelines/...`) in the repository; returns the
    completed process, its output as text."""
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        shown = " ".join(map(str, cmd)).replace(f"{sys.executable} -m workflows.cli", "ovlabel")
        raise AssertionError(f"{shown} exited {proc.returncode}\n{proc.stderr}")
    return proc


EXAMPLES = ROOT / "examples"


def run_until_killed(cmd: list, event: str, n: int, env: dict | None = None) -> str:
    """Runs `cmd` in a process group of its own and has it SIGKILL itself and its group (the driver, the local
    Ray it started, its workers) right after its `n`-th `event` (``part``, ``checkpoint``), as `kill -9` or a
    lost machine would (``$OVLABEL_TEST_KILL_AFTER``, `formats.faults`): the same instant on every run and
    machine, where watching for files could see the run finish within one poll. Checks that it died so;
    returns the tail of its stderr."""
    import signal
    import tempfile

    from formats.faults import kill_after

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=err, env={**(env or os.environ), **kill_after(event, n)})
        try:
            proc.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group outlived the driver
            proc.wait()
        err.seek(0)
        log = err.read().decode(errors="replace")[-3000:]
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not killed\n{log}"
    return log


def kill_mid_run(cmd: list, out: Path | str, parts: int, after: int = 1, env: dict | None = None) -> int:
    """Runs `cmd`, a run that writes the dataset OUT part by part (`ovlabel pseudo`, pipelines/...), killed
    right after it records its `after`-th part (`run_until_killed`); checks that it stopped mid-way (`after` of
    its `parts` parts recorded, the manifest not complete) and returns how many parts it recorded."""
    from formats.dataset import Dataset

    assert 1 <= after < parts
    log = run_until_killed(cmd, "part", after, env)
    dataset = Dataset(out)
    assert len(dataset.manifest.parts) == after and not dataset.manifest.complete, log
    return len(dataset.manifest.parts)


def assert_same_run(out: Path, reference: Path) -> None:
    """OUT, resumed after a kill, holds exactly what the uninterrupted run wrote to `reference`: the same records
    (region ids included) and candidates in the same part files, each part once, no temporary file left."""
    import pyarrow.parquet as pq

    from formats.dataset import Dataset

    got, ref = Dataset(out).require_complete(), Dataset(reference).require_complete()
    names = [p["name"] for p in got.manifest.parts]
    assert len(names) == len(set(names)) and names == [p["name"] for p in ref.manifest.parts]
    for folder in ("records", "candidates"):
        assert sorted(p.name for p in (out / folder).iterdir()) == sorted(p.name for p in (reference / folder).iterdir())
    assert got.read().to_pylist() == ref.read().to_pylist()
    for p in sorted((reference / "candidates").glob("*.parquet")):  # repr: a missing image score (NaN) is equal
        assert repr(pq.read_table(out / "candidates" / p.name).to_pylist()) == repr(pq.read_table(p).to_pylist())
    assert got.manifest.parts == ref.manifest.parts
    assert {k: v for k, v in got.manifest.counts.items() if k != "seconds"} == \
        {k: v for k, v in ref.manifest.counts.items() if k != "seconds"}
    assert not list(out.rglob(".*.tmp-*"))


def label_twice(cmd: list, tmp_path: Path, parts: int) -> tuple[dict, str, object]:
    """Runs the pseudo-labeling command `cmd` (all but --out) uninterrupted into tmp_path/ref, and into
    tmp_path/killed killed mid-way and rerun; checks both wrote the same; returns the first run's summary, its
    log and its dataset."""
    from formats.dataset import Dataset

    proc = run_command([*cmd, "--out", tmp_path / "ref"])
    kill_mid_run([*cmd, "--out", tmp_path / "killed"], tmp_path / "killed", parts)
    run_command([*cmd, "--out", tmp_path / "killed"])
    assert_same_run(tmp_path / "killed", tmp_path / "ref")
    return json.loads(proc.stdout), proc.stderr, Dataset(tmp_path / "ref")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight detector and CLIP, saved and loaded back like real checkpoints."""
    from detector.tiny import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_owlv2(tmp_path_factory):
    """A tiny random-weight OWLv2 detector folder (64-px square input, 16-px patches), saved and loaded back
    like a real checkpoint (``ovlabel models tiny --owlv2``)."""
    from detector.tiny import write_tiny_owlv2

    return write_tiny_owlv2(tmp_path_factory.mktemp("owlv2") / "owlv2")


@pytest.fixture(scope="session")
def sample_gold(tmp_path_factory):
    """The bundled sample's hand-drawn gold boxes as a dataset directory (read-only for tests)."""
    out = tmp_path_factory.mktemp("sample_gold") / "gold"
    run_cli("convert", "coco", EXAMPLES / "sample" / "gold.json", "--source", "custom",
            "--image-root", EXAMPLES / "sample" / "images", "--out", out)
    return out


@pytest.fixture
def sample_images():
    from PIL import Image

    return [Image.open(EXAMPLES / "sample" / "images" / n).convert("RGB") for n in ("coffee.jpg", "rocket.jpg")]


@pytest.fixture(scope="session")
def image_server(tmp_path_factory):
    """A local http.server on 127.0.0.1 serving the sample photos, plus `corrupt.jpg` (bytes that do not decode)."""
    import functools
    import http.server
    import shutil
    import threading

    root = tmp_path_factory.mktemp("www")
    for p in (EXAMPLES / "sample" / "images").glob("*.jpg"):
        shutil.copy(p, root / p.name)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(__import__("http.server").server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


# -- object storage (issue 17): a real S3 API on 127.0.0.1 ---------------------------------------------------

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def _moto_server():
    """moto's S3 server in a thread on 127.0.0.1 (a free port), for the whole session; stopped at its end."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(_moto_server, monkeypatch, request):
    """An empty bucket on the local S3 server: ``s3.url`` (``s3://BUCKET``), ``s3.env`` (the environment for
    subprocesses: endpoint and dummy keys), ``s3.fs`` (an s3fs filesystem). This process's environment points at
    the server for the test (`monkeypatch`); cached s3fs instances are dropped so none talks to another endpoint."""
    import re
    import types

    import s3fs

    env = {**S3_ENV, "AWS_ENDPOINT_URL": _moto_server}
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    fs = s3fs.S3FileSystem()
    if fs.exists(bucket):
        fs.rm(bucket, recursive=True)
    fs.mkdir(bucket)
    yield types.SimpleNamespace(url=f"s3://{bucket}", bucket=bucket, fs=fs, env={**os.environ, **env})
    s3fs.S3FileSystem.clear_instance_cache()


# -- the bundled sample as a caption dataset, locally and on the store (test_storage_pseudo, test_multinode) -----

SAMPLE = EXAMPLES / "sample"
SAMPLE_UNITS = 4  # the sample's 7 images, 2 per unit (`sample_pseudo_config`)
# filters that keep every image and at most 7 boxes each, as a dict (PseudoConfig.filter, a --config file)
LOW_FILTER = {"fused_threshold": 0.0, "image_threshold": -1.0, "max_boxes_per_image": 7}


def sample_pseudo_config(models: dict):
    """The pseudo config the sample runs use: the tiny models, every candidate and image kept, 2 images a part."""
    from labeling.fuse import FilterConfig
    from workflows.pseudo_label import PseudoConfig

    return PseudoConfig(detector=str(models["detector"]), clip=str(models["clip"]), box_threshold=0.0,
                        filter=FilterConfig(**LOW_FILTER).to_dict(), images_per_part=2)


def sample_captions() -> dict[str, str]:
    """The sample's captions by image file name (captions.tsv: caption, URL)."""
    out = {}
    for line in (SAMPLE / "captions.tsv").read_text().splitlines():
        text, url = line.split("\t")
        out[url.rsplit("/", 1)[1]] = text
    return out


def captioned_gold(ann, out, image_root) -> None:
    """The sample's gold boxes converted into `out` (a path or URL) with its captions put into the records, as a
    caption dataset has them (convert coco leaves captions empty)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from formats.converters.coco import CocoConvertConfig, convert_coco
    from formats.dataset import Dataset
    from formats.storage import Folder

    convert_coco(ann, out, CocoConvertConfig(source="custom", image_root=str(image_root)))
    folder, by_name = Folder(out), sample_captions()
    for part in Dataset(out).manifest.parts:
        t = folder.read_parquet(f"records/{part['name']}")
        i = t.schema.get_field_index("caption")
        text = pa.array([by_name[n] for n in t.column("file_name").to_pylist()], t.schema.field(i).type)
        buf = io.BytesIO()
        pq.write_table(t.set_column(i, t.schema.field(i), text), buf)
        folder.write_bytes(f"records/{part['name']}", buf.getvalue())


def upload_sample(s3) -> str:
    """gold.json and the images on the store, under s3://BUCKET/sample; returns the image root's URL."""
    s3.fs.put_file(str(SAMPLE / "gold.json"), f"{s3.bucket}/sample/gold.json")
    for p in sorted((SAMPLE / "images").glob("*.jpg")):
        s3.fs.put_file(str(p), f"{s3.bucket}/sample/images/{p.name}")
    return f"{s3.url}/sample/images"


def s3_phrases(s3) -> str:
    """convert coco -> captions -> phrases, all on the store; returns the phrases dataset's URL."""
    from formats.dataset import Dataset
    from labeling.phrases import PhraseConfig
    from workflows.phrases import run_phrases

    images = upload_sample(s3)
    captioned_gold(f"{s3.url}/sample/gold.json", f"{s3.url}/gold", images)
    assert Dataset(f"{s3.url}/gold").manifest.image_root == images
    r = run_phrases(f"{s3.url}/gold", f"{s3.url}/phrases", PhraseConfig(), workers=2, rows_per_unit=3)
    assert r["dataset"] == f"{s3.url}/phrases" and r["images"] == 7
    return f"{s3.url}/phrases"


def records(location) -> list[dict]:
    """A complete dataset's records as Python rows."""
    from formats.dataset import Dataset

    return Dataset(location).require_complete().read().to_pylist()


def objects(s3, prefix: str) -> list[str]:
    """The object names under s3://BUCKET/PREFIX/, relative to it, sorted."""
    s3.fs.invalidate_cache()
    return sorted(f[len(s3.bucket) + len(prefix) + 2:] for f in s3.fs.find(f"{s3.bucket}/{prefix}/"))


@pytest.fixture(scope="module")
def local_run(tiny_models, tmp_path_factory):
    """The sample pipeline (captions -> phrases -> pseudo) on a local disk, with `sample_pseudo_config`: the
    reference for the runs on object storage; returns its folder (gold/, phrases/, pseudo/)."""
    from labeling.phrases import PhraseConfig
    from workflows.phrases import run_phrases
    from workflows.pseudo_label import RunOptions, run_pseudo

    root = tmp_path_factory.mktemp("local")
    captioned_gold(SAMPLE / "gold.json", root / "gold", SAMPLE / "images")
    run_phrases(root / "gold", root / "phrases", PhraseConfig(), workers=2, rows_per_unit=3)
    run_pseudo(root / "phrases", root / "pseudo", sample_pseudo_config(tiny_models), RunOptions(num_cpus=2))
    return root


# -- Ray clusters started by `ray start` (test_ray_job, test_multinode) ---------------------------------------

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on 127.0.0.1 now: all `n` are held open together while they are picked
    (ports picked one at a time can repeat, as one closed socket's port is offered again)."""
    import contextlib
    import socket

    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def ray_cli_env(extra: dict | None = None) -> dict:
    """The environment for `ray start` / `ray job submit`: token auth off (clients need no token), usage stats
    off, this interpreter's `ray` first on PATH, no RAY_ADDRESS inherited; then `extra`."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(extra or {})}
    env.pop("RAY_ADDRESS", None)
    return env


class RayNode:
    """One Ray node started by ``ray start --block`` in a process of its own: every process of the node (GCS,
    raylet, agents, workers, a job's driver) descends from it, so `stop` ends this node's processes, and only
    them (``ray stop`` would end every Ray of the user on the machine, other tests' included)."""

    def __init__(self, args: list[str], env: dict, temp_dir: Path, timeout: float = 180):
        import time

        temp_dir.mkdir(parents=True, exist_ok=True)
        self.temp_dir = temp_dir
        self.log = temp_dir.with_name(temp_dir.name + ".log")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([RAY, "start", "--block", f"--temp-dir={temp_dir}", *args], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text(errors="replace"):  # a readiness poll
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray start {' '.join(args)} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> None:
        """Kills the node's process tree, as ``ray stop --force`` would but for this node only: every process in
        it is first suspended (so none starts another while the tree is walked), then SIGKILLed. (SIGTERM is no
        quicker: a head's GCS and raylet outlive it by more than 20 s here.)"""
        import psutil

        frozen: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.proc.pid)
            while True:
                new = [p for p in [root, *root.children(recursive=True)] if p.pid not in frozen]
                if not new:
                    break
                for p in new:
                    with contextlib.suppress(psutil.Error):
                        p.suspend()
                    frozen[p.pid] = p
        for p in frozen.values():
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(list(frozen.values()), timeout=timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)


NODE_PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
                   "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port")


def ray_node_ports(ports: list[int] | None = None) -> list[str]:
    """Distinct free ports for everything a node listens on (two nodes on one machine, and other tests' Ray,
    must not meet on a default port such as the dashboard agent's 52365; Ray refuses one port given to two
    of its components). `ports`: ports picked by the caller with others (`free_ports`)."""
    ports = ports if ports is not None else free_ports(len(NODE_PORT_FLAGS))
    return [f"{flag}={port}" for flag, port in zip(NODE_PORT_FLAGS, ports, strict=True)]


def start_ray_head(env: dict, temp_dir: Path, num_cpus: int, resources: dict | None = None,
                   object_store_mb: int = 300) -> tuple[RayNode, str, str]:
    """A head node on 127.0.0.1 with a dashboard (the job API); returns (node, GCS address, dashboard URL) once
    the job API answers."""
    import time

    from ray.job_submission import JobSubmissionClient

    gcs, dash, *ports = free_ports(2 + len(NODE_PORT_FLAGS))
    node = RayNode(["--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--num-cpus={num_cpus}",
                    f"--resources={json.dumps(resources or {})}", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                    f"--object-store-memory={object_store_mb << 20}", "--disable-usage-stats",
                    *ray_node_ports(ports)], env, temp_dir)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 120
    while True:  # `ray job submit` right after the start can find no agent: wait until the job API answers
        try:
            JobSubmissionClient(url).list_jobs()
            break
        except Exception:
            if time.monotonic() > deadline:
                node.stop()
                raise
            time.sleep(0.5)
    return node, f"127.0.0.1:{gcs}", url
