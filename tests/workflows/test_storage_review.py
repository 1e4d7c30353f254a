"""`ovlabel review` on object storage (issue 17): the base and pseudo datasets on moto's S3 server (the `s3`
fixture) with their images there too, as plain files and inside shards (``tar://``, ``parquet://``); FiftyOne
gets local copies fetched once into the review cache; `review pull` writes the corrections to the store and
`review apply` reads them from there."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLES, SAMPLE, objects, run_cli, upload_sample

os.environ.setdefault("FIFTYONE_DATABASE_DIR", tempfile.mkdtemp(prefix="ovlabel-fo-db-"))

from formats.dataset import Dataset  # noqa: E402
from formats.images import read_image_bytes  # noqa: E402
from formats.storage import NotLocalError  # noqa: E402


def test_default_name_of_a_url_hashes_it_without_credentials(tmp_path):
    from workflows.review import default_name

    plain = default_name("s3://bucket/data/cc3m")
    assert plain == f"ovlabel-cc3m-{hashlib.sha1(b's3://bucket/data/cc3m').hexdigest()[:6]}"
    assert default_name("s3://AKID:SECRET@bucket/data/cc3m/") == plain and default_name("s3://bucket/data/x") != plain
    local = tmp_path / "cc3m"
    assert default_name(local) == f"ovlabel-cc3m-{hashlib.sha1(str(local.resolve()).encode()).hexdigest()[:6]}"


def test_the_review_cache_must_be_local():
    from workflows.review import build_review

    with pytest.raises(NotLocalError, match="^s3://b/cache: the review cache holds the image files FiftyOne opens"):
        build_review("s3://b/gold", [], cache_dir="s3://KEY:SECRET@b/cache")


@pytest.mark.slow
def test_review_build_pull_and_apply_with_datasets_and_images_on_s3(s3, tmp_path):
    from fiftyone import ViewField as F
    from selftrain_inputs import write_round1

    from formats.converters.coco import CocoConvertConfig, convert_coco
    from formats.corrections import apply_corrections, read_corrections
    from workflows.review import build_review

    images = upload_sample(s3)
    gold, pseudo = f"{s3.url}/gold", f"{s3.url}/round1"
    convert_coco(f"{s3.url}/sample/gold.json", gold, CocoConvertConfig(source="custom", image_root=images))
    write_round1(Dataset(gold), pseudo)
    cache = tmp_path / "cache"
    fds = build_review(gold, [pseudo], name="t-s3-review", cache_dir=cache, rebuild=True)
    n_gold = sum(len(r["regions"]) for r in Dataset(gold).read().to_pylist())
    assert len(fds) == 7 and fds.count("gold.detections") == n_gold == fds.count("round_1.detections")
    assert fds.info["ovlabel"]["fields"] == {"gold": gold, "round_1": pseudo}
    assert len(fds.load_saved_view("round_1-dropped-candidates")) == 1  # read from candidates/ on the store
    # every image fetched once into the cache, named by its image root's URL and file name, the photo's bytes
    names = dict(zip(*Dataset(gold).read(["image_id", "file_name"]).select(["image_id", "file_name"]).to_pydict().values()))
    for s in fds:
        path = Path(s.filepath)
        key = hashlib.sha1(f"{images}|{names[s['image_id']]}".encode()).hexdigest()[:16]
        assert path == cache / f"{key}.jpg" and path.read_bytes() == (SAMPLE / "images" / names[s["image_id"]]).read_bytes()
    fetched = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(fetched) == 7

    # a reviewer rejects one box; corrections pulled to the store, applied from there to a dataset there
    reject = fds.values("round_1.detections.region_id", unwind=True)[0]
    fds.filter_labels("round_1", F("region_id") == reject).tag_labels("reject", label_fields=["round_1"])
    summary = json.loads(run_cli("review", "pull", "t-s3-review", "--out", f"{s3.url}/corr").stdout)
    assert summary["corrections"] == f"{s3.url}/corr/corrections.parquet" and summary["rows"] == 1
    assert objects(s3, "corr") == ["corrections.parquet", "summary.json"]
    corr = read_corrections(f"{s3.url}/corr").to_pylist()
    assert [(c["action"], c["region_id"], c["dataset"]) for c in corr] == [("reject", reject, pseudo)]
    counts = apply_corrections(pseudo, f"{s3.url}/corr", f"{s3.url}/fixed")
    assert counts["applied"]["reject"] == 1
    kept = [g["region_id"] for r in Dataset(f"{s3.url}/fixed").read().to_pylist() for g in r["regions"]]
    assert reject not in kept and len(kept) == n_gold - 1

    # rebuilt from scratch: the cached images are used as they are, nothing fetched again
    fds = build_review(gold, [pseudo], name="t-s3-review", cache_dir=cache, rebuild=True, evaluate=False)
    assert len(fds) == 7 and {p: p.stat().st_mtime_ns for p in cache.iterdir()} == fetched
    fds.delete()


def parquet_shard_folder(out: Path) -> Path:
    """The cc3m sample as img2dataset's output_format parquet: one ``00000.parquet`` holding the images (``jpg``)
    beside its stats file, no tar."""
    import tarfile

    with tarfile.open(EXAMPLES / "cc3m_sample" / "00000.tar") as tf:
        jpgs = {Path(m.name).stem: tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".jpg")}
    t = pq.read_table(EXAMPLES / "cc3m_sample" / "00000.parquet")
    out.mkdir()
    pq.write_table(t.append_column("jpg", pa.array([jpgs.get(k) for k in t.column("key").to_pylist()], pa.binary())),
                   out / "00000.parquet")
    (out / "00000_stats.json").write_bytes((EXAMPLES / "cc3m_sample" / "00000_stats.json").read_bytes())
    return out


@pytest.mark.slow
def test_review_of_shard_images_on_s3_fetches_each_member_into_the_cache(s3, tmp_path):
    from workflows.review import build_review

    for p in sorted((EXAMPLES / "cc3m_sample").iterdir()):  # parquet + tar beside it: tar:// names
        s3.fs.put_file(str(p), f"{s3.bucket}/cc3m/{p.name}")
    local = parquet_shard_folder(tmp_path / "pq")
    for p in sorted(local.iterdir()):  # images inside the parquet: parquet:// names
        s3.fs.put_file(str(p), f"{s3.bucket}/pq/{p.name}")
    run_cli("convert", "cc3m", f"{s3.url}/cc3m", "--out", f"{s3.url}/ds")
    # a converted dataset on the store, and raw img2dataset output on the store (converted into the cache)
    for given, root, prefix, local_root in ((f"{s3.url}/ds", f"{s3.url}/cc3m", "tar://", EXAMPLES / "cc3m_sample"),
                                            (f"{s3.url}/pq", f"{s3.url}/pq", "parquet://", local)):
        cache = tmp_path / f"cache-{prefix[:3]}"
        fds = build_review(given, [], name=f"t-s3-{prefix[:3]}", cache_dir=cache, rebuild=True, evaluate=False)
        base = Dataset(given) if given.endswith("/ds") else Dataset(cache / "base-cc3m")
        assert base.manifest.image_root == root
        stored = dict(zip(*base.read(["image_id", "file_name"]).select(["image_id", "file_name"]).to_pydict().values()))
        assert len(fds) == 7 == len(stored)
        for s in fds:
            file_name = stored[s["image_id"]]
            key = hashlib.sha1(f"{root}|{file_name}".encode()).hexdigest()[:16]
            assert file_name.startswith(prefix) and Path(s.filepath) == cache / f"{key}.jpg"
            assert Path(s.filepath).read_bytes() == read_image_bytes(str(local_root), file_name)
        fds.delete()


def test_corrections_written_and_read_on_s3_name_their_url(s3):
    from formats.corrections import read_corrections, summary_json, write_corrections
    from formats.dataset import DatasetError

    row = {"image_id": "i", "region_id": "i#r0c0", "action": "reject", "field": "pseudo", "dataset": "d",
           "bbox": [0.0, 0.0, 1.0, 1.0], "phrase": "p", "category": None, "score": 0.5, "tags": ["reject"],
           "when": "t"}
    info = write_corrections([row], f"s3://KEY:SECRET@{s3.bucket}/c", review_dataset="r")
    assert info["corrections"] == f"{s3.url}/c/corrections.parquet" and "SECRET" not in json.dumps(info)
    assert summary_json(f"{s3.url}/c") == info
    assert read_corrections(f"{s3.url}/c").to_pylist() == read_corrections(f"{s3.url}/c/corrections.parquet").to_pylist()
    assert read_corrections(f"{s3.url}/c").to_pylist()[0]["region_id"] == "i#r0c0"
    with pytest.raises(DatasetError, match=f"^{s3.url}/none: no corrections.parquet"):
        read_corrections(f"{s3.url}/none")
