"""FiftyOne review: gold and pseudo boxes side by side, saved views for what needs a look, tags back as corrections.

`build_review` makes (or updates) a persistent FiftyOne dataset: one sample per image with `caption`,
`source`, `image_id`, `width`, `height`; label field `gold` from the base dataset's gold regions and one
field per pseudo directory (`pseudo` for one, `round_<k>` for self-training rounds), each detection carrying
its phrase, scores, origin, round and region key, plus `<field>_dropped` with the candidates the filters
dropped. Images inside img2dataset shards, and every image under an image root on an object store, are
fetched once into a local cache folder (FiftyOne opens local files); local image files are used where they are.
The dataset directories may be on an object store (``s3://...``, `formats.storage`). Samples are added in bulk
batches. `pull_corrections` turns reviewers' tags and edits into the corrections
table of `formats/corrections.py`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from formats import paths as P
from formats.boxes import relative_xywh_to_xyxy
from formats.corrections import now, write_corrections
from formats.dataset import Dataset, atomic_path
from formats.images import ImageError, read_image_bytes, split_parquet_url, split_tar_url, store_root
from formats.storage import Folder, require_local
from workflows.fiftyone_docs import declare_fields, detections_doc, insert_samples, set_label_field

log = logging.getLogger("ovlabel.review")

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

GOLD = "gold"
LOW_SCORE = 0.3
DISAGREE = 0.3
INFO_KEY = "ovlabel"


class ReviewError(ValueError):
    """A review dataset is missing or does not come from ovlabel."""


def field_names(pseudo_dirs: list[Dataset]) -> list[str]:
    """Label field names: `round_<k>` when a pseudo dataset records its round, else `pseudo` (or `pseudo_<i>`)."""
    names = []
    for i, d in enumerate(pseudo_dirs):
        rnd = d.manifest.config.get("round")
        name = f"round_{rnd}" if rnd is not None else ("pseudo" if len(pseudo_dirs) == 1 else f"pseudo_{i + 1}")
        while name in names:
            name += "_b"
        names.append(name)
    return names


def default_name(dataset_dir: str | os.PathLike) -> str:
    """A review dataset name from the dataset directory: its folder name and a short hash of its absolute path,
    or of its URL without credentials for a folder on an object store (`formats.storage.Folder.url`: the same
    folder gets the same name whichever credentials reach it)."""
    folder = Folder(dataset_dir).resolve()
    return f"ovlabel-{folder.name}-{hashlib.sha1(folder.url.encode()).hexdigest()[:6]}"


def image_path(ds: Dataset, file_name: str, image_id: str, cache: Path) -> str:
    """A local file FiftyOne can open for a record: a local image file itself, else a copy in `cache` of an
    image inside a shard (``tar://``, ``parquet://``) or under an image root on an object store, fetched once
    (named by a hash of the image root's URL, which carries no credentials, and the file name; written whole
    or not at all). Raises `formats.images.ImageError`, `formats.paths.UnsafePathError` (a name leaving the
    image root)."""
    root = ds.manifest.image_root or str(ds.root)
    if store_root(root) is None and split_tar_url(file_name) is None and split_parquet_url(file_name) is None:
        return str(P.resolve(root, file_name))
    safe = hashlib.sha1(f"{root}|{file_name}".encode()).hexdigest()[:16]
    out = cache / f"{safe}{Path(file_name.split('::')[0]).suffix or '.jpg'}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        data = read_image_bytes(root, file_name)
        with atomic_path(out) as tmp:
            tmp.write_bytes(data)
    return str(out)


def _candidates_dropped(ds: Dataset, kept: set[str]) -> dict[str, list[dict]]:
    """Per image, the candidates of a pseudo dataset whose keys are not among `kept` (empty without candidates/)."""
    out: dict[str, list] = {}
    for name in ds.folder.list("candidates"):  # local or on an object store
        if name.startswith(".") or not name.endswith(".parquet"):
            continue
        for r in ds.folder.read_parquet(f"candidates/{name}", columns=["image_id", "candidates"]).to_pylist():
            for c in r["candidates"] or []:
                if c["region_id"] not in kept:
                    out.setdefault(r["image_id"], []).append(c)
    return out


def review_base(dataset_dir: str | os.PathLike, pseudos: list[Dataset], cache: Path) -> Dataset:
    """The base dataset: a dataset directory, or img2dataset / webdataset output (what `pseudo --input` accepts),
    converted once into the cache with the pseudo datasets' source so image ids match theirs. Either may be on
    an object store (shards on a store are converted from temp copies; their images stay there)."""
    from formats.converters.img2dataset import (
        Img2DatasetConvertConfig,
        convert_img2dataset,
        is_img2dataset_dir,
    )
    from formats.dataset import MANIFEST, DatasetError

    folder = Folder(dataset_dir)
    if folder.isfile(MANIFEST) or not is_img2dataset_dir(dataset_dir):
        return Dataset(folder).require_complete()
    source = pseudos[0].manifest.source if pseudos else "cc3m"
    out = cache / f"base-{source}"
    cfg = Img2DatasetConvertConfig(source=source)
    try:
        convert_img2dataset(dataset_dir, out, cfg)
    except DatasetError:  # made from other shards: the cache is ours to redo
        convert_img2dataset(dataset_dir, out, cfg, overwrite=True)
    return Dataset(out).require_complete()


def build_review(dataset_dir: str | os.PathLike, pseudo_dirs: list[str | os.PathLike] = (), *, name: str | None = None,
                 cache_dir: str | os.PathLike | None = None, rebuild: bool = False, batch_size: int = 2000,
                 evaluate: bool = True, workers: int = 8):
    """Builds or updates the persistent FiftyOne review dataset; returns it.

    `dataset_dir` and `pseudo_dirs` may be local or on an object store (``s3://...``), with their image roots;
    FiftyOne opens local files, so images on a store (and inside shards) are fetched once into the cache
    folder (`image_path`, `workers` at a time), by default ``$OVLABEL_CACHE/review/NAME`` (``~/.cache/ovlabel``).
    An image that cannot be read is left out with a warning. Raises `ReviewError` (the dataset `name` was built
    from another base), `formats.dataset.DatasetError` (a missing or incomplete dataset),
    `formats.storage.NotLocalError` (`cache_dir` on an object store)."""
    if cache_dir:
        cache_dir = require_local(cache_dir, "the review cache holds the image files FiftyOne opens; give a local folder")
    import fiftyone as fo
    from tqdm import tqdm

    pseudos = [Dataset(p).require_complete() for p in pseudo_dirs]
    fields = field_names(pseudos)
    name = name or default_name(dataset_dir)
    cache = Path(cache_dir) if cache_dir else Path(os.environ.get("OVLABEL_CACHE", Path.home() / ".cache" / "ovlabel")) / "review" / name
    base = review_base(dataset_dir, pseudos, cache)
    if rebuild and fo.dataset_exists(name):
        fo.delete_dataset(name)
    fds = fo.load_dataset(name) if fo.dataset_exists(name) else fo.Dataset(name, persistent=True)
    info = dict(fds.info.get(INFO_KEY, {}))
    if info and info.get("base") != str(base.root.resolve()):
        raise ReviewError(f"review dataset {name!r} was built from {info.get('base')}; pass --rebuild or another --name")
    have_fields = set(fds.get_field_schema())
    have_ids = set(fds.distinct("image_id")) if len(fds) else set()

    # label values per field, keyed by image id
    sources = [(GOLD, base, True)] + [(f, d, False) for f, d in zip(fields, pseudos)]
    values: dict[str, dict[str, object]] = {}
    meta: dict[str, dict] = {}
    for field, d, gold_only in sources:
        vals = values.setdefault(field, {})
        kept: set[str] = set()
        for r, keys in d.iter_keyed(["file_name", "width", "height", "caption", "source"]):
            regs, ks = r.pop("regions") or [], keys
            if gold_only:
                pairs = [(g, k) for g, k in zip(regs, ks) if g["origin"] in ("gold", "review")]
                regs, ks = [g for g, _ in pairs], [k for _, k in pairs]
            vals[r["image_id"]] = detections_doc(regs, ks, r["width"], r["height"])
            kept.update(keys)
            meta.setdefault(r["image_id"], {**r, "_ds": d})
        if not gold_only:
            dropped = _candidates_dropped(d, kept)
            if dropped:
                dv = values.setdefault(f"{field}_dropped", {})
                for image_id, cands in dropped.items():
                    m = meta[image_id]
                    dv[image_id] = detections_doc(cands, [c["region_id"] for c in cands], m["width"], m["height"])
    # new samples, in bulk batches of raw documents
    declare_fields(fds, list(values))
    fds.create_index("image_id")
    new_ids = [i for i in meta if i not in have_ids]
    batch = []

    def local_image(image_id: str) -> str | None:
        m = meta[image_id]
        try:
            return image_path(m["_ds"], m["file_name"], image_id, cache)
        except (ImageError, P.UnsafePathError) as e:
            log.warning("%s: image left out of the review: %s", image_id, e)
            return None

    with tqdm(total=len(new_ids), desc=f"review {name}", unit="img", file=sys.stderr, disable=None) as bar, \
            ThreadPoolExecutor(max(1, workers), thread_name_prefix="ovlabel-review") as pool:
        # each chunk's images fetched by the pool, taken in order
        chunks = (new_ids[a:a + batch_size] for a in range(0, len(new_ids), max(1, batch_size)))
        for image_id, path in ((i, p) for c in chunks for i, p in zip(c, pool.map(local_image, c))):
            if path is None:
                continue
            m = meta[image_id]
            doc = {"filepath": path, "image_id": image_id, "caption": m["caption"], "source": m["source"],
                   "width": m["width"], "height": m["height"]}
            doc.update({f: v[image_id] for f, v in values.items() if image_id in v})
            batch.append(doc)
            if len(batch) >= batch_size:
                insert_samples(fds, batch)
                bar.update(len(batch))
                batch = []
        if batch:
            insert_samples(fds, batch)
            bar.update(len(batch))
    # fields new to samples that were already there
    for f, v in values.items():
        if f not in have_fields and have_ids:
            old = {i: v[i] for i in have_ids if i in v}
            if old:
                set_label_field(fds, f, old)
    fds.reload()
    info.update({"base": str(base.root.resolve()),
                 "fields": {**info.get("fields", {}), GOLD: str(base.root.resolve()),
                            **{f: str(d.root.resolve()) for f, d in zip(fields, pseudos)}}})
    fds.info[INFO_KEY] = info
    fds.save()
    save_views(fds, fields, evaluate=evaluate)
    return fds


def save_views(fds, fields: list[str], *, evaluate: bool = True) -> list[str]:
    """The saved views reviewers start from; returns their names."""
    from fiftyone import ViewField as F

    schema = fds.get_field_schema()
    made = []

    def save(name, view):
        fds.save_view(name, view, overwrite=True)
        made.append(name)

    has_gold = GOLD in schema and fds.count(f"{GOLD}.detections") > 0
    for f in fields:
        if f not in schema:
            continue
        save(f"{f}-low-score", fds.filter_labels(f, F("confidence") < LOW_SCORE))
        save(f"{f}-det-clip-disagree", fds.filter_labels(f, (F("det_score") - F("clip_score")).abs() > DISAGREE))
        if f"{f}_dropped" in schema:
            save(f"{f}-dropped-candidates", fds.match(F(f"{f}_dropped.detections").length() > 0))
        if evaluate and has_gold:
            key = f"eval_{f}"
            if key in fds.list_evaluations():
                fds.delete_evaluation(key)
            fds.evaluate_detections(f, gt_field=GOLD, eval_key=key, method="coco", classwise=False, progress=False)
            save(f"{f}-false-positives", fds.filter_labels(f, F(key) == "fp"))
            save(f"{f}-missed-gold", fds.filter_labels(GOLD, F(key) == "fn"))
    present = [f for f in fields if f in schema]
    for a, b in zip(present, present[1:]):
        save(f"{a}-vs-{b}", fds.match(F(f"{a}.detections").length() != F(f"{b}.detections").length()))
    return made


def launch(fds, *, port: int = 5151, address: str = "127.0.0.1"):
    """Starts the App for the review dataset on `address:port` (local only by default); returns the session."""
    import fiftyone as fo

    from workflows.stdio import stdout_to_stderr

    with stdout_to_stderr():  # FiftyOne prints its remote-session banner (through its log handler too)
        return fo.launch_app(fds, remote=True, address=address, port=port, auto=False)


# -- pull ------------------------------------------------------------------------------------------------

ACTION_TAGS = ("reject", "accept", "fix")


def pull_corrections(name: str, out_dir: str | os.PathLike) -> dict:
    """Reads reviewers' tags and edits from review dataset `name` into a corrections directory (local or on an
    object store, `formats.corrections.write_corrections`); returns its summary. Raises `ReviewError` (no such
    review dataset, or one ovlabel did not build)."""
    import fiftyone as fo

    if not fo.dataset_exists(name):
        raise ReviewError(f"no review dataset named {name!r} (see `ovlabel review open`)")
    fds = fo.load_dataset(name)
    info = fds.info.get(INFO_KEY)
    if not info:
        raise ReviewError(f"review dataset {name!r} was not built by ovlabel")
    when = now()
    rows = []
    for field, source in info["fields"].items():
        for f in (field, f"{field}_dropped"):
            if f not in fds.get_field_schema():
                continue
            cursor = fds._sample_collection.find({f: {"$ne": None}}, {"image_id": 1, "width": 1, "height": 1, f: 1})
            for doc in cursor:  # raw documents: no per-box objects for a million boxes
                for d in (doc.get(f) or {}).get("detections", []):
                    row = _correction(d, doc["image_id"], doc["width"], doc["height"], f, source, when)
                    if row is not None:
                        rows.append(row)
    summary = write_corrections(rows, out_dir, review_dataset=name, pulled=when)
    return summary


def _correction(d: dict, image_id: str, w: int, h: int, field: str, source: str, when: str) -> dict | None:
    """The correction a reviewed box (a raw detection document) stands for, or None when untouched."""
    tags = list(d.get("tags") or [])
    region = d.get("region_id")
    box = list(d["bounding_box"])
    orig_box = d.get("ovl_box")
    edited = orig_box is None or any(abs(a - b) > 1e-6 for a, b in zip(box, orig_box)) or (
        d.get("ovl_label") is not None and d.get("label") != d["ovl_label"])
    if region is None:
        action = "add"
    elif "reject" in tags:
        action = "reject"
    elif "fix" in tags or edited:
        action = "fix"
    elif "accept" in tags:
        action = "accept"
    else:
        return None
    if region is None:  # a drawn box: its label is all there is
        phrase = category = d.get("label")
    elif d.get("phrase"):  # grounding boxes: the label shows the phrase
        phrase, category = d.get("label"), d.get("category")
    else:  # detection boxes: the label shows the category
        phrase, category = None, d.get("label")
    return {"image_id": image_id, "region_id": region, "action": action, "field": field, "dataset": source,
            "bbox": relative_xywh_to_xyxy(box, w, h)[0].tolist(), "phrase": phrase, "category": category,
            "score": d.get("confidence"), "tags": tags, "when": when}
