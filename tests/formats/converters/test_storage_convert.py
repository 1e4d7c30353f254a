"""The other converters and exports on object storage (issue 17): `convert goldg|odvg|openimages|images|cc3m|grit`
read their inputs from and write datasets to ``s3://`` (moto's server, the `s3` fixture), with image roots there
too; `export hf|yolo-world` write to ``s3://``; images inside webdataset shards under an ``s3://`` image root are
read by range requests. Each command's result equals the same command's on local paths (records equal, manifests
equal once the local paths read as their URLs, exported files byte-equal)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, objects, run_cli
from converter_inputs import image_files, mdetr_doc, od, vg, write_inputs, write_lines

from formats.dataset import MANIFEST, Dataset
from formats.storage import Folder

LEAK = ("AKIDLEAK0000", "SEKRITLEAK0000")


def upload(s3, local: Path, key: str) -> str:
    """Copies the file or folder `local` to ``s3://BUCKET/key``; returns that URL."""
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    for f in files:
        rel = "" if f == local else "/" + f.relative_to(local).as_posix()
        s3.fs.put_file(str(f), f"{s3.bucket}/{key}{rel}")
    return f"{s3.url}/{key}"


def as_urls(obj, tmp_path: Path, s3) -> object:
    """`obj` (JSON-able) with every local path under `tmp_path` written as its URL in the bucket."""
    return json.loads(json.dumps(obj).replace(str(tmp_path), s3.url))


def _manifest(ds: Dataset) -> dict:
    m = ds.manifest.to_json()
    m["provenance"].pop("created"), m["provenance"].pop("command")
    m["config"].pop("_resume_key", None)
    return m


def same_dataset(remote: str, local: Path, tmp_path: Path, s3) -> Dataset:
    """Asserts the dataset at URL `remote` equals the local one (records, rejects, manifest with local paths read
    as URLs); returns the remote dataset."""
    r, lo = Dataset(remote).require_complete(), Dataset(local).require_complete()
    assert r.read().equals(lo.read())
    assert r.read_rejects().to_pylist() == as_urls(lo.read_rejects().to_pylist(), tmp_path, s3)
    assert _manifest(r) == as_urls(_manifest(lo), tmp_path, s3)
    return r


def convert_both(s3, tmp_path, *args: str) -> tuple[dict, dict]:
    """Runs ``ovlabel convert ARGS`` twice: as written (local paths under tmp_path), and with every such path
    replaced by its URL in the bucket; returns both summaries."""
    local = json.loads(run_cli("convert", *args).stdout)
    remote = json.loads(run_cli("convert", *[a.replace(str(tmp_path), s3.url) for a in args]).stdout)
    return local, remote


def test_convert_goldg_on_s3_equals_a_local_run(s3, tmp_path):
    p = tmp_path / "in" / "final_mixed_train.json"
    p.parent.mkdir()
    p.write_text(json.dumps(mdetr_doc(mixed=True)))
    upload(s3, tmp_path / "in", "in")
    local, remote = convert_both(s3, tmp_path, "goldg", str(p), "--source", "mixed", "--out", str(tmp_path / "ds"),
                                 "--image-root", str(tmp_path / "images"))
    assert remote == as_urls(local, tmp_path, s3) and remote["dataset"] == f"{s3.url}/ds" and remote["images"] == 2
    ds = same_dataset(f"{s3.url}/ds", tmp_path / "ds", tmp_path, s3)
    assert ds.manifest.image_root == f"{s3.url}/images"
    assert ds.manifest.provenance["inputs"][0]["path"] == f"{s3.url}/in/final_mixed_train.json"


def test_convert_odvg_with_a_label_map_and_vg_on_s3_equal_local_runs(s3, tmp_path):
    (tmp_path / "in").mkdir()
    lm = tmp_path / "in" / "lm.json"
    lm.write_text(json.dumps({"0": "dog", "1": "cat"}))
    write_lines(tmp_path / "in" / "od.jsonl", [od(instances=[{"bbox": [1, 2, 30, 40], "label": 0},
                                                             {"bbox": [5, 5, 9, 9], "label": 1}]),
                                               od(filename="b.jpg", instances=[{"bbox": [1, 2, 3, 4], "label": 7}])])
    write_lines(tmp_path / "in" / "vg.jsonl", [vg([{"bbox": [1, 2, 30, 40], "phrase": "dog", "tokens_positive": [[2, 5]]}]), "not json"])
    upload(s3, tmp_path / "in", "in")
    local, remote = convert_both(s3, tmp_path, "odvg", str(tmp_path / "in" / "od.jsonl"), "--label-map", str(lm),
                                 "--image-root", str(tmp_path / "images"), "--out", str(tmp_path / "od"))
    assert remote == as_urls(local, tmp_path, s3) and (remote["images"], remote["boxes"]) == (2, 2)
    ds = same_dataset(f"{s3.url}/od", tmp_path / "od", tmp_path, s3)
    assert ds.manifest.config["label_map"] == f"{s3.url}/in/lm.json"
    assert [i["path"] for i in ds.manifest.provenance["inputs"]] == [f"{s3.url}/in/od.jsonl", f"{s3.url}/in/lm.json"]
    local, remote = convert_both(s3, tmp_path, "odvg", str(tmp_path / "in" / "vg.jsonl"),
                                 "--image-root", str(tmp_path / "images"), "--out", str(tmp_path / "vg"))
    assert remote == as_urls(local, tmp_path, s3) and remote["rejected"] == {"invalid json": 1}
    same_dataset(f"{s3.url}/vg", tmp_path / "vg", tmp_path, s3)


def test_convert_openimages_with_headers_read_on_s3_equals_a_local_run(s3, tmp_path):
    ann, images, sizes = write_inputs(tmp_path)
    upload(s3, ann, "ann"), upload(s3, images, "train"), upload(s3, sizes, "sizes.csv")
    local, remote = convert_both(s3, tmp_path, "openimages", str(ann), "--image-root", str(images),
                                 "--out", str(tmp_path / "ds"))
    assert remote == as_urls(local, tmp_path, s3) and remote["images"] == 3
    same_dataset(f"{s3.url}/ds", tmp_path / "ds", tmp_path, s3)
    local, remote = convert_both(s3, tmp_path, "openimages", str(ann), "--sizes", str(sizes),
                                 "--out", str(tmp_path / "ds2"))
    assert remote == as_urls(local, tmp_path, s3)
    ds = same_dataset(f"{s3.url}/ds2", tmp_path / "ds2", tmp_path, s3)
    assert ds.manifest.config["sizes"] == f"{s3.url}/sizes.csv"
    bad = run_cli("convert", "openimages", f"{s3.url}/nothing", "--sizes", f"{s3.url}/sizes.csv",
                  "--out", f"{s3.url}/o", check=False)
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[-1] == f"ovlabel: error: {s3.url}/nothing: expected one *train-annotations-bbox.csv, found 0"


def test_convert_images_lists_a_folder_on_s3_as_a_local_one(s3, tmp_path):
    root = image_files(tmp_path / "imgs")
    upload(s3, root, "imgs")
    local, remote = convert_both(s3, tmp_path, "images", str(root), "--out", str(tmp_path / "ds"),
                                 "--part-images", "2")
    assert remote == as_urls(local, tmp_path, s3)
    assert (remote["images"], remote["other_files"], remote["rejected"]) == (4, 1, {"unreadable image": 1})
    ds = same_dataset(f"{s3.url}/ds", tmp_path / "ds", tmp_path, s3)
    assert [(r["file_name"], r["width"], r["height"]) for r in ds.read().to_pylist()] == [
        ("A.JPG", 451, 300), ("c.TiF", 5, 7), ("sub/b.png", 30, 20), ("sub/turned.jpeg", 10, 40)]
    again = run_cli("convert", "images", f"{s3.url}/imgs", "--out", f"{s3.url}/ds", "--part-images", "2")
    assert "nothing to do" in again.stderr  # same objects (ETags), same settings
    empty = run_cli("convert", "images", f"{s3.url}/none", "--out", f"{s3.url}/n", check=False)
    assert empty.returncode == 1 and f"{s3.url}/none: not a folder" in empty.stderr


def test_converting_with_credentials_in_urls_never_shows_them(s3, tmp_path):
    root = image_files(tmp_path / "imgs")
    upload(s3, root, "imgs")
    env = {k: v for k, v in s3.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    secret = f"s3://{LEAK[0]}:{LEAK[1]}@{s3.bucket}"
    # moto accepts any key: the credentials in the URL are the only ones, and they are used
    proc = subprocess.run([sys.executable, "-m", "workflows.cli", "-v", "convert", "images", f"{secret}/imgs", "--out",
                           f"{secret}/ds"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    manifest = s3.fs.cat_file(f"{s3.bucket}/ds/{MANIFEST}").decode()
    rejects = Folder(f"{s3.url}/ds").find("rejects")
    texts = [manifest, proc.stdout, proc.stderr] + [s3.fs.cat_file(f"{s3.bucket}/ds/{r}").decode("latin-1")
                                                    for r in rejects]
    for text in texts:
        assert LEAK[0] not in text and LEAK[1] not in text
    assert json.loads(manifest)["image_root"] == f"{s3.url}/imgs" and json.loads(proc.stdout)["images"] == 4



def files_under(s3, key: str) -> dict[str, bytes]:
    s3.fs.invalidate_cache()  # other processes wrote and deleted there
    return {f[len(f"{s3.bucket}/{key}/"):]: s3.fs.cat_file(f) for f in s3.fs.find(f"{s3.bucket}/{key}")}


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_yolo_world_and_hf_write_to_s3_what_they_write_locally(s3, tmp_path):
    p = tmp_path / "in" / "final_mixed_train.json"
    p.parent.mkdir()
    p.write_text(json.dumps(mdetr_doc(mixed=True)))
    upload(s3, tmp_path / "in", "in")
    convert_both(s3, tmp_path, "goldg", str(p), "--source", "mixed", "--out", str(tmp_path / "ds"))
    # yolo-world: a dataset on the store exported to the store, byte-equal to the local export of the local one
    remote = json.loads(run_cli("export", "yolo-world", f"{s3.url}/ds", "--out", f"{s3.url}/yw").stdout)
    local = json.loads(run_cli("export", "yolo-world", tmp_path / "ds", "--out", tmp_path / "yw").stdout)
    assert remote == as_urls(local, tmp_path, s3) and remote["class_texts"] == f"{s3.url}/yw/class_texts.json"
    assert files_under(s3, "yw") == local_files(tmp_path / "yw")
    assert sorted(files_under(s3, "yw")) == ["class_texts.json", "grounding.json"]
    # hf: the same dataset exported to the store and to a local folder gives the same shards (the fingerprint is
    # the dataset's); the card names the folder it is in
    remote = json.loads(run_cli("export", "hf", tmp_path / "ds", "--out", f"{s3.url}/hf").stdout)
    local = json.loads(run_cli("export", "hf", tmp_path / "ds", "--out", tmp_path / "hf").stdout)
    assert remote == as_urls(local, tmp_path, s3) and remote["dir"] == f"{s3.url}/hf" and remote["rows"] == 2
    got, want = files_under(s3, "hf"), local_files(tmp_path / "hf")
    assert got.pop("README.md") == want.pop("README.md").replace(str(tmp_path).encode(), s3.url.encode())
    assert got == want and len(got) == 1
    # a re-export of another dataset into the folder removes the earlier shards there
    run_cli("export", "hf", f"{s3.url}/ds", "--out", f"{s3.url}/hf")
    names = sorted(files_under(s3, "hf"))
    assert len(names) == 2 and names[0] == "README.md" and names[1].startswith("data/train-")
    assert names[1] != next(iter(want))
    refused = run_cli("export", "hf", tmp_path / "ds", "--out", f"{s3.url}/hub", "--push-to-hub", "me/x",
                      check=False)
    assert refused.returncode == 1 and refused.stderr.splitlines()[-1] == (
        f"ovlabel: error: {s3.url}/hub: --push-to-hub uploads a local folder (huggingface_hub's upload_folder); "
        "export to a local folder to push it")
    assert not s3.fs.exists(f"{s3.bucket}/hub")


def test_images_inside_shards_under_an_s3_image_root_are_read_by_range_requests(s3, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from converter_inputs import image_bytes, write_tar

    from formats import images
    from formats.images import ImageError, read_image_bytes
    from formats.paths import UnsafePathError

    a, b, c = image_bytes(32, 24), image_bytes(20, 10, "PNG"), image_bytes(8, 8)
    write_tar(tmp_path / "00000.tar", [("k0.jpg", a), ("k0.txt", b"x" * 5000), ("k1.png", b), ("k1.txt", b"y"),
                                       ("twice.jpg", a), ("twice.jpg", b)])
    pq.write_table(pa.table({"key": ["p0", "p1"], "jpg": [c, None]}), tmp_path / "00001.parquet")
    upload(s3, tmp_path / "00000.tar", "raw/00000.tar"), upload(s3, tmp_path / "00001.parquet", "raw/00001.parquet")
    fetched: list[tuple] = []  # every ranged read of the tar once its index is built
    root = f"{s3.url}/raw"
    fs = images.store_root(root).fs  # the filesystem read_image_bytes reads this root with
    cat_file = fs.cat_file

    def counting(path, start=None, end=None, **kw):
        fetched.append((path.rsplit("/", 1)[1], start, end))
        return cat_file(path, start=start, end=end, **kw)

    monkeypatch.setattr(fs, "cat_file", counting)
    for name, want in (("tar://k0.jpg::00000.tar", a), ("tar://k1.png::00000.tar", b),
                       ("parquet://p0::00001.parquet", c)):
        assert read_image_bytes(root, name) == want == read_image_bytes(tmp_path, name)
    index = images._TARS.get(f"{root}/00000.tar")
    assert fetched == [("00000.tar", index["k0.jpg"][0], index["k0.jpg"][0] + len(a)),
                       ("00000.tar", index["k1.png"][0], index["k1.png"][0] + len(b))]  # the member only
    with pytest.raises(ImageError, match=f"^k9.jpg is not in {root}/00000.tar$"):
        read_image_bytes(root, "tar://k9.jpg::00000.tar")
    with pytest.raises(ImageError, match="twice.jpg is in .*00000.tar more than once"):
        read_image_bytes(root, "tar://twice.jpg::00000.tar")
    with pytest.raises(ImageError, match="p1 in .*00001.parquet has no image bytes"):
        read_image_bytes(root, "parquet://p1::00001.parquet")
    with pytest.raises(UnsafePathError):
        read_image_bytes(root, "tar://k0.jpg::../raw/00000.tar")


def test_convert_cc3m_writes_to_s3_from_local_shards_and_reads_webdataset_shards_on_s3(s3, tmp_path):
    from converter_inputs import image_bytes, meta, write_tar

    raw = tmp_path / "wds"
    raw.mkdir()
    write_tar(raw / "00000.tar", [("000.jpg", image_bytes(32, 24)), ("000.json", meta("000", width=32, height=24)),
                                  ("000.txt", b"a red square"), ("001.json", meta("001", status="failed_to_download",
                                                                                  error_message="HTTP Error 404"))])
    local = json.loads(run_cli("convert", "cc3m", raw, "--out", tmp_path / "ds").stdout)
    remote = json.loads(run_cli("convert", "cc3m", raw, "--out", f"{s3.url}/ds").stdout)
    assert remote == as_urls(local, tmp_path, s3) | {"dataset": f"{s3.url}/ds"} and remote["images"] == 1
    r, lo = Dataset(f"{s3.url}/ds").require_complete(), Dataset(tmp_path / "ds")
    assert r.read().equals(lo.read()) and r.read_rejects().equals(lo.read_rejects())
    assert _manifest(r) == _manifest(lo) and r.manifest.image_root == str(raw)
    upload(s3, raw, "wds")  # a tar without a side parquet, read from the store: its rejects name the shard's URL
    stored = json.loads(run_cli("convert", "cc3m", f"{s3.url}/wds", "--out", f"{s3.url}/ds2").stdout)
    assert stored == as_urls(local, tmp_path, s3) | {"dataset": f"{s3.url}/ds2"}
    ds = same_dataset(f"{s3.url}/ds2", tmp_path / "ds", tmp_path, s3)
    assert ds.read_rejects().select(["file", "record", "reason"]).to_pylist() == [
        {"file": f"{s3.url}/wds/00000.tar", "record": "key=001", "reason": "download failed"}]
    empty = run_cli("convert", "cc3m", f"{s3.url}/nothing", "--out", f"{s3.url}/ds3", check=False)
    assert empty.returncode == 1 and empty.stderr.splitlines()[-1] == (
        f"ovlabel: error: {s3.url}/nothing: no img2dataset shards (NNNNN.parquet) nor webdataset shards (NNNNN.tar)")


def test_convert_cc3m_of_img2dataset_shards_on_s3_equals_a_local_run_and_a_rerun_does_nothing(s3, tmp_path):
    import shutil

    from formats.images import read_image_bytes

    raw = tmp_path / "cc3m"
    shutil.copytree(ROOT / "examples" / "cc3m_sample", raw)
    upload(s3, raw, "cc3m")
    local, remote = convert_both(s3, tmp_path, "cc3m", str(raw), "--out", str(tmp_path / "ds"))
    assert remote == as_urls(local, tmp_path, s3) and remote["dataset"] == f"{s3.url}/ds"
    assert (remote["images_in"], remote["images"], remote["rejected"]) == (8, 7, {"download failed": 1})
    ds = same_dataset(f"{s3.url}/ds", tmp_path / "ds", tmp_path, s3)
    assert ds.manifest.image_root == f"{s3.url}/cc3m"
    lo = Dataset(tmp_path / "ds")
    assert [(i["path"], i["sha256"]) for i in ds.manifest.provenance["inputs"]] == [
        (f"{s3.url}/cc3m/00000.parquet", lo.manifest.provenance["inputs"][0]["sha256"])]
    name = ds.read().column("file_name")[0].as_py()
    assert name.startswith("tar://") and name.endswith("::00000.tar")
    assert read_image_bytes(ds.manifest.image_root, name) == read_image_bytes(lo.manifest.image_root, name)
    before = s3.fs.find(f"{s3.bucket}/ds", detail=True)
    again = run_cli("convert", "cc3m", f"{s3.url}/cc3m", "--out", f"{s3.url}/ds")
    assert json.loads(again.stdout) == remote and "nothing to do" in again.stderr
    s3.fs.invalidate_cache()
    assert s3.fs.find(f"{s3.bucket}/ds", detail=True) == before


def test_convert_cc3m_with_credentials_only_in_the_url_reads_its_shards_and_never_shows_them(s3, tmp_path):
    import shutil

    raw = tmp_path / "cc3m"
    shutil.copytree(ROOT / "examples" / "cc3m_sample", raw)
    upload(s3, raw, "cc3m")
    env = {k: v for k, v in s3.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    secret = f"s3://{LEAK[0]}:{LEAK[1]}@{s3.bucket}"
    # the shards are listed, hashed and converted in this process with the URL's credentials, the only ones
    proc = subprocess.run([sys.executable, "-m", "workflows.cli", "-v", "convert", "cc3m", f"{secret}/cc3m", "--out",
                           f"{secret}/ds"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert (out["images_in"], out["images"], out["rejected"]) == (8, 7, {"download failed": 1})
    manifest = s3.fs.cat_file(f"{s3.bucket}/ds/{MANIFEST}").decode()
    texts = [manifest, proc.stdout, proc.stderr] + [s3.fs.cat_file(f"{s3.bucket}/ds/{r}").decode("latin-1")
                                                    for r in Folder(f"{s3.url}/ds").find("rejects")]
    assert len(texts) == 4  # one rejects file: the failed download
    for text in texts:
        assert LEAK[0] not in text and LEAK[1] not in text
    assert json.loads(manifest)["image_root"] == f"{s3.url}/cc3m"


def test_export_images_dir_on_s3_writes_shard_images_as_objects(s3, tmp_path):
    """`export --images-dir s3://...`: each shard image an object under the prefix (bytes of its shard member),
    named in the export relative to it as in a local images folder; a rerun writes nothing; an object with other
    bytes under a needed name is refused, naming its URL."""
    import shutil

    from formats.export.images import ImagesDirConflict
    from formats.export.odvg import export_odvg
    from formats.images import read_image_bytes

    raw = tmp_path / "cc3m"
    shutil.copytree(ROOT / "examples" / "cc3m_sample", raw)
    upload(s3, raw, "cc3m")
    run_cli("convert", "cc3m", f"{s3.url}/cc3m", "--out", f"{s3.url}/ds")
    remote = json.loads(run_cli("export", "odvg", f"{s3.url}/ds", "--out", f"{s3.url}/x/cc3m.jsonl", "--keep-empty",
                                "--images-dir", f"{s3.url}/images").stdout)
    local = json.loads(run_cli("export", "odvg", f"{s3.url}/ds", "--out", tmp_path / "cc3m.jsonl", "--keep-empty",
                               "--images-dir", tmp_path / "images").stdout)
    assert (remote["images_written"], remote["images_present"]) == (7, 0) == (local["images_written"], 0)
    assert s3.fs.cat_file(f"{s3.bucket}/x/cc3m.jsonl") == (tmp_path / "cc3m.jsonl").read_bytes()
    stored = Dataset(f"{s3.url}/ds").read(["file_name"]).column("file_name").to_pylist()
    exported = [json.loads(line)["filename"] for line in (tmp_path / "cc3m.jsonl").read_text().splitlines()]
    assert objects(s3, "images") == sorted(exported) == sorted(local_files(tmp_path / "images"))
    for name, key in zip(stored, exported, strict=True):
        assert s3.fs.cat_file(f"{s3.bucket}/images/{key}") == read_image_bytes(str(raw), name) == \
            (tmp_path / "images" / key).read_bytes()
    again = export_odvg(f"{s3.url}/ds", f"{s3.url}/x/again.jsonl", images_dir=f"{s3.url}/images", keep_empty=True)
    assert (again["images_written"], again["images_present"]) == (0, 7)
    s3.fs.pipe_file(f"{s3.bucket}/images/{exported[0]}", b"another picture")
    with pytest.raises(ImagesDirConflict, match=f"^{s3.url}/images/{exported[0]}: already holds a different image"):
        export_odvg(f"{s3.url}/ds", f"{s3.url}/x/third.jsonl", images_dir=f"{s3.url}/images", keep_empty=True)


def test_convert_coco_check_images_under_an_s3_image_root_equals_a_local_run(s3, tmp_path, write_json):
    from conftest import coco_doc
    from PIL import Image

    root = tmp_path / "images"
    (root / "img").mkdir(parents=True)
    Image.new("RGB", (640, 480)).save(root / "img/0001.jpg")
    Image.new("RGB", (10, 10)).save(root / "img/0002.jpg")  # 0003.jpg is missing
    upload(s3, root, "images")
    ann = write_json(coco_doc(n_images=3))
    upload(s3, ann, ann.name)
    local, remote = convert_both(s3, tmp_path, "coco", str(ann), "--source", "custom", "--image-root", str(root),
                                 "--check-images", "--out", str(tmp_path / "ds"))
    assert remote == as_urls(local, tmp_path, s3) and remote["images"] == 1
    assert (remote["rejected"]["image file missing"], remote["rejected"]["image size mismatch"]) == (1, 1)
    ds = same_dataset(f"{s3.url}/ds", tmp_path / "ds", tmp_path, s3)  # images named by URL, as local by path
    details = sorted(r["detail"] for r in ds.read_rejects().to_pylist() if r["detail"].startswith("s3:"))
    assert len(details) == 2 and details[0].startswith(f"{s3.url}/images/img/0002.jpg: header 10x10") and \
        details[1] == f"{s3.url}/images/img/0003.jpg"
