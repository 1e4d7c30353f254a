"""Multi-node (issue 17): a Ray head and a second worker node on this machine, each with its own temp dir,
resources and the object store's environment (endpoint and keys, as a real node has its credentials), all data on
the local S3 server; ``ray job submit ... pipelines/cc3m_pseudo.py`` with s3:// input, config and output. The
job's work lands on both nodes (Ray's state API: which node ran each of the job's tasks), its output equals a local
run of the same input and config, and nothing is written to the submitting machine's or the nodes' disks but
Ray's own files.

The model folders are the one local input: the tiny models live on this machine's disk, which both "nodes"
share. transformers' ``from_pretrained`` takes a hub id or a local folder, not a URL; on a real cluster the
models are hub ids (each node downloads them once into its Hugging Face cache) or a folder present on every node
(a shared file system, the container image). See README "Running on a cluster"."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    LOW_FILTER,
    RAY,
    ROOT,
    S3_ENV,
    SAMPLE,
    SAMPLE_UNITS,
    RayNode,
    captioned_gold,
    objects,
    ray_cli_env,
    ray_node_ports,
    records,
    sample_pseudo_config,
    start_ray_head,
    upload_sample,
)

from formats.dataset import Dataset

pytestmark = pytest.mark.slow


class Cluster:
    """Two nodes started by the fixture: ``url`` (the head's dashboard: job and state API), ``gcs`` (the head's
    GCS address), ``nodes`` (name -> RayNode: ``head``, ``worker``)."""

    def __init__(self, url: str, gcs: str, nodes: dict[str, RayNode]):
        self.url, self.gcs, self.nodes = url, gcs, nodes

    def node_names(self) -> dict[str, str]:
        """Ray node id -> ``head`` / ``worker`` (each node carries a custom resource named after it)."""
        from ray.util.state import list_nodes

        out = {}
        for n in list_nodes(address=self.url, detail=True):
            names = [k for k in self.nodes if k in n.resources_total]
            if n.state == "ALIVE" and len(names) == 1:
                out[n.node_id] = names[0]
        return out


@pytest.fixture
def two_nodes(s3):
    """A head (1 CPU) and a worker node (1 CPU) on 127.0.0.1, each with its own short temp dir (Ray's socket
    paths have a length limit) and a custom resource named after it; both get the S3 endpoint and keys in their
    environment, as real nodes get credentials from theirs (or an instance role). Both are stopped afterwards,
    even on failure, by their own process trees: other Ray instances on the machine are left alone."""
    env = ray_cli_env({**S3_ENV, "AWS_ENDPOINT_URL": s3.env["AWS_ENDPOINT_URL"]})
    with tempfile.TemporaryDirectory(prefix="ovl-mn-", dir="/tmp") as d:
        nodes: dict[str, RayNode] = {}
        try:
            nodes["head"], gcs, url = start_ray_head(env, Path(d) / "head", num_cpus=1, resources={"head": 1},
                                                     object_store_mb=200)
            nodes["worker"] = RayNode([f"--address={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                                       '--resources={"worker": 1}', f"--object-store-memory={200 << 20}",
                                       "--disable-usage-stats", *ray_node_ports()], env, Path(d) / "worker")
            cluster = Cluster(url, gcs, nodes)
            deadline = time.monotonic() + 60
            while sorted(cluster.node_names().values()) != ["head", "worker"]:  # the worker has registered
                assert time.monotonic() < deadline, f"the worker node never joined: {cluster.node_names()}"
                time.sleep(0.5)
            yield cluster
        finally:
            for node in reversed(nodes.values()):
                node.stop()


@pytest.fixture(scope="module")
def local_pseudo(tiny_models, tmp_path_factory) -> Path:
    """The reference: the sample's captions pseudo-labeled on a local disk by this process's own local Ray
    (`sample_pseudo_config`: phrases by spaCy, every image kept, 2 images a part); returns the dataset."""
    from workflows.pseudo_label import RunOptions, run_pseudo

    root = tmp_path_factory.mktemp("local")
    captioned_gold(SAMPLE / "gold.json", root / "captions", SAMPLE / "images")
    run_pseudo(root / "captions", root / "pseudo", sample_pseudo_config(tiny_models), RunOptions(num_cpus=2))
    return root / "pseudo"


def git_status() -> str:
    """The worktree's changes and untracked files (ignored ones too), as git shows them."""
    return subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


def data_files(temp_dir: Path) -> list[str]:
    """Dataset files (parquet parts, manifests, completion records) under a node's temp dir that are not the
    repository's own (the job's working dir is unpacked there, examples included)."""
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split())
    out = []
    for p in temp_dir.rglob("*"):
        if not (p.suffix == ".parquet" or p.name == "manifest.json" or p.name.endswith(".parquet.json")):
            continue
        parts = p.relative_to(temp_dir).parts
        if "working_dir_files" in parts:  # .../runtime_resources/working_dir_files/<package>/<repo path>
            rel = "/".join(parts[parts.index("working_dir_files") + 2:])
            if rel in tracked:
                continue
        out.append(str(p))
    return out


def test_a_job_on_two_nodes_reads_and_writes_only_object_storage(local_pseudo, tiny_models, s3, two_nodes):
    # the input: the sample's captions (records) and images on the store; the job extracts phrases itself
    captions = f"{s3.url}/captions"
    captioned_gold(f"{s3.url}/sample/gold.json", captions, upload_sample(s3))
    s3.fs.pipe_file(f"{s3.bucket}/cfg.json", json.dumps({"filter": LOW_FILTER, "box_threshold": 0.0}).encode())
    out = f"{s3.url}/pseudo"
    before = git_status()
    sid = f"ovl-mn-{uuid.uuid4().hex[:8]}"
    # the client has no store credentials: the job's driver and workers use their nodes' environment
    client_env = {k: v for k, v in ray_cli_env().items() if not k.startswith("AWS_")}
    proc = subprocess.run(
        [RAY, "job", "submit", "--address", two_nodes.url, "--submission-id", sid, "--working-dir", str(ROOT), "--",
         "python", "pipelines/cc3m_pseudo.py", "--input", captions, "--out", out, "--config", f"{s3.url}/cfg.json",
         "--detector", str(tiny_models["detector"]), "--clip", str(tiny_models["clip"]), "--images-per-part", "2"],
        env=client_env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    log = proc.stdout[-4000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    assert "joining the Ray cluster" in proc.stdout + proc.stderr, log

    # the output on the store is complete and equals the local run's
    got = records(out)
    assert got == records(local_pseudo) and sum(len(r["regions"]) for r in got) > 0
    m = Dataset(out).manifest
    assert m.image_root == f"{s3.url}/sample/images" and m.provenance["inputs"][0]["path"] == captions
    names = [p["name"] for p in m.parts]
    assert len(names) == SAMPLE_UNITS
    assert objects(s3, "pseudo") == sorted(["manifest.json", *(f"{d}/{n}" for d in ("records", "candidates")
                                                               for n in names)])

    # the pipeline's work ran on both nodes: Ray Data's stage tasks and the model actor, by the node Ray's state
    # API records for each (the actor reserves a whole node's CPU, so the CPU stages must use the other one)
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_actors, list_tasks

    job_id = JobSubmissionClient(two_nodes.url).get_job_info(sid).job_id
    where = two_nodes.node_names()
    flt = [("job_id", "=", job_id)]
    tasks = list_tasks(address=two_nodes.url, filters=flt, detail=True, limit=10_000, raise_on_missing_output=False)
    actors = list_actors(address=two_nodes.url, filters=flt, detail=True, limit=10_000, raise_on_missing_output=False)
    work = Counter((where.get(t.node_id), t.name) for t in tasks if t.name.startswith("MapBatches(") and t.node_id)
    work.update((where.get(a.node_id), a.class_name) for a in actors if a.class_name.startswith("MapWorker("))
    assert {node for node, _ in work} == {"head", "worker"}, work

    # nothing was written on local disks: the repository (the job's working dir) is as it was, and the nodes'
    # temp dirs hold no dataset file but the repository's own
    assert git_status() == before
    for node in two_nodes.nodes.values():
        assert data_files(node.temp_dir) == []
