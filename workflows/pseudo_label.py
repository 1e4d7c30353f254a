"""CC3M-style pseudo-labeling on Ray Data: phrases -> grounding detector -> CLIP re-scoring -> filters.

The input (a caption dataset directory, or img2dataset output, converted on the fly) is split into
deterministic units (a slice of an input part). Ray Data streams the units through the stages; the driver
collects each unit's rows and writes, atomically and in this order, its rejects, its raw candidates
(``candidates/part-U.parquet``: every box with every score, for ``ovlabel refilter``) and its pseudo
records (``records/part-U.parquet``), then records the unit in the manifest. A rerun skips finished units;
a kill at any moment loses at most the units in flight and never duplicates one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from detector.models import DEFAULT_CLIP, DEFAULT_DETECTOR
from formats import storage
from formats.converters.img2dataset import is_img2dataset_dir, shard_records, shards, stored_shards
from formats.dataset import (
    REJECTS,
    Dataset,
    DatasetError,
    DatasetWriter,
    Manifest,
    prior_run,
    provenance,
    write_parquet,
)
from formats.storage import Folder
from labeling.candidates import records_from_candidates
from labeling.fuse import FilterConfig
from labeling.model_settings import ModelSettings
from labeling.phrases import PhraseConfig
from labeling.vocabulary import vocabulary_categories

log = logging.getLogger("ovlabel.pseudo")
CANDIDATES = "candidates"


@dataclass
class PseudoConfig:
    """Everything that decides the output; recorded in the manifest (changing it needs --overwrite)."""

    detector: str = DEFAULT_DETECTOR
    clip: str = DEFAULT_CLIP
    # the actor's candidate rule, defaults from labeling.model_settings.ModelSettings (one place)
    box_threshold: float = ModelSettings.box_threshold  # detector candidates kept (recall first); filters decide
    clip_margin: float = ModelSettings.clip_margin
    # which candidates are CLIP-scored and stored (what `refilter` can see): the top_k best queries per prompt,
    # greedy NMS within each phrase at candidate_nms_iou (None: off), boxes with a side under min_box_size px
    # dropped; images padded to canvases rounded up to canvas_multiple px (results never depend on batch mates)
    top_k: int = ModelSettings.top_k
    candidate_nms_iou: float | None = ModelSettings.candidate_nms_iou
    min_box_size: float = ModelSettings.min_box_size
    canvas_multiple: int = ModelSettings.canvas_multiple
    round: int | None = None
    # True: phrases extracted by spaCy (`phrases`) even when the input records carry their own (a `phrases`
    # column, or VG regions with spans), which are used as they are otherwise
    extract_phrases: bool = False
    # class-list mode: every image is prompted with these classes ([name, synonym, ...] each, file order; the
    # label map of the output, which is an OD dataset). A string is a class-list file, read here
    # (`labeling.vocabulary.read_vocabulary`), so the manifest and the resume key hold the classes themselves;
    # a list or label map is any JSON form `vocabulary_from_json` reads (kept as [[name, synonym, ...], ...])
    classes: list | dict | str | None = None
    # with `classes` and an input that has captions: False (default) prompts each image with its caption's
    # phrases plus the vocabulary (the union, as OWL-ST queried web images); True the vocabulary alone
    vocabulary_only: bool = False
    # PhraseConfig / FilterConfig fields, kept as dicts (the manifest records them as given); checked on load
    phrases: dict = field(default_factory=lambda: PhraseConfig().to_dict(), metadata={"config": PhraseConfig})
    filter: dict = field(default_factory=lambda: FilterConfig().to_dict(), metadata={"config": FilterConfig})
    images_per_part: int = 1000

    def __post_init__(self):
        if not isinstance(self.images_per_part, int) or self.images_per_part < 1:
            raise ValueError(f"images_per_part must be a positive integer, got {self.images_per_part!r}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.classes is not None:
            from labeling.vocabulary import read_vocabulary, vocabulary_from_json

            self.classes = read_vocabulary(self.classes) if isinstance(self.classes, (str, Path)) else \
                vocabulary_from_json(self.classes, "classes")

    @property
    def class_names(self) -> list[str] | None:
        """The prompt name (first text) of each class in class-list mode, else None."""
        return [c[0] for c in self.classes] if self.classes else None


@dataclass
class RunOptions:
    """How to run (not recorded in the resume key): devices, batching, parallelism."""

    device: str | None = None
    precision: str = "auto"
    batch_size: int | None = None  # images per model batch; default 16 on GPU clusters, 4 on CPU
    model_actors: int | None = None  # default: one per GPU, 1 on CPU clusters
    num_cpus: int | None = None  # CPUs of the local Ray this run starts (ignored when joining a cluster)
    ray_address: str | None = None  # join this cluster (else RAY_ADDRESS; else start a local Ray)
    source: str = "cc3m"
    max_units: int | None = None  # stop after this many units (tests simulate a crash)

    def __post_init__(self):
        for name in ("batch_size", "model_actors", "num_cpus"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {v}")


@dataclass
class InputPlan:
    """What to pseudo-label: units, and the facts the output manifest needs."""

    units: list[dict]
    source: str
    image_root: str
    fingerprint: list
    inputs: list[dict]
    rejects: dict[str, list[dict]]  # unit -> rejects known before any work (failed downloads)
    given_phrases: str | None = None  # "column" / "regions": the records' own phrases (labeling.stages.given_phrases)


def plan_input(input_path: str | Path, images_per_part: int, source: str = "cc3m", *,
               extract_phrases: bool = False) -> InputPlan:
    """Deterministic work units (consecutive slices of each input part or img2dataset shard).

    A records dataset whose records carry phrases with spans (`given_phrase_source`) is prompted with them,
    unless `extract_phrases`; img2dataset input always gets spaCy's.

    A records dataset may be on an object store (``s3://...``): units name its parts by URL and workers reopen
    them (and the image root, when it is a URL too) from the environment's credentials. So may img2dataset
    output: its shards are listed and read there as local ones are (`stored_img2dataset_plan`), and images are
    read from the shard folder's URL.

    Raises `formats.dataset.DatasetError` (no dataset, an incomplete one), `Img2DatasetError` (an unreadable
    shard)."""
    remote = not Folder(input_path).is_local
    if remote and is_img2dataset_dir(input_path):
        return stored_img2dataset_plan(input_path, images_per_part, source)
    p = Folder(input_path).resolve() if remote else Path(Folder(input_path).path).resolve()
    units, rejects, fingerprint = [], {}, []
    if not remote and is_img2dataset_dir(p):
        for shard in shards(p):
            table, failed = shard_records(shard, source)
            fingerprint.append((shard.name, table.num_rows, len(failed)))
            first = len(units)
            _slices(units, shard.stem, shard, table.num_rows, images_per_part, "img2dataset", str(p), source)
            if failed and len(units) > first:
                rejects[units[first]["unit"]] = failed
        return InputPlan(units, source, str(p), fingerprint, [{"path": str(p), "img2dataset": True}], rejects)
    ds = Dataset(p).require_complete()
    image_root = ds.manifest.image_root or ds.folder.url
    for part in ds.manifest.parts:
        fingerprint.append((part["name"], part["rows"]))
        _slices(units, part["name"].removesuffix(".parquet"), ds.folder.url_of(f"records/{part['name']}"),
                int(part["rows"]), images_per_part, "records", image_root, ds.manifest.source)
    given = None if extract_phrases else given_phrase_source(ds)
    for u in units:
        u["phrases"] = given
    return InputPlan(units, ds.manifest.source, image_root, fingerprint,
                     [{"path": ds.folder.url, "dataset": True}], rejects, given)


def stored_img2dataset_plan(raw_dir: str, images_per_part: int, source: str) -> InputPlan:
    """`plan_input` of img2dataset output on an object store, converted on the fly as local output is: the same
    units, records, rejects and fingerprint as for a local copy of the folder (`stored_shards`: the driver reads
    each shard from a temp copy), the shards and the image root named by URL. A worker fetches a unit's shard to
    a temp copy to read its records (`stored_shard_records`), and its images by range requests."""
    folder = Folder(raw_dir)
    units, rejects, fingerprint = [], {}, []
    for shard in stored_shards(raw_dir, source):
        name = shard.url.rsplit("/", 1)[1]
        fingerprint.append((name, shard.rows, len(shard.rejects)))
        first = len(units)
        _slices(units, Path(name).stem, shard.url, shard.rows, images_per_part, "img2dataset", folder.url, source)
        for u in units[first:]:  # what the worker needs to read the shard's records as the plan did
            u.update(duplicates=json.dumps(shard.duplicates, sort_keys=True), tar_beside=shard.tar_beside)
        if shard.rejects and len(units) > first:
            rejects[units[first]["unit"]] = shard.rejects
    return InputPlan(units, source, folder.url, fingerprint, [{"path": folder.url, "img2dataset": True}], rejects)


def given_phrase_source(ds: Dataset) -> str | None:
    """Where the dataset's records carry their phrases: ``"column"`` when every part has a ``phrases`` column
    (`ovlabel phrases`, `convert odvg` of VG lines) and some record has a phrase in it, ``"regions"`` when
    some region has ``tokens_positive`` (grounding data: GoldG, GRIT, ODVG VG, pseudo labels), else None
    (spaCy extracts them: e.g. ODVG caption lines whose ``regions`` are all empty carry no phrase)."""
    import duckdb

    if not ds.part_paths:
        return None
    files = ", ".join("'" + str(path).replace("'", "''") + "'" for path in ds.part_paths)
    con = duckdb.connect()
    ds.folder.register(con)  # an object store's URLs read through its fsspec filesystem
    if all("phrases" in storage.parquet_schema(path).names for path in ds.part_paths) and con.execute(
            f"SELECT 1 FROM read_parquet([{files}]) WHERE len(coalesce(phrases, [])) > 0 LIMIT 1").fetchall():
        return "column"
    if "regions" not in storage.parquet_schema(ds.part_paths[0]).names:
        return None
    hit = con.execute(f"""SELECT 1 FROM read_parquet([{files}], union_by_name=true)
        WHERE len(list_filter(coalesce(regions, []), lambda r: r.tokens_positive IS NOT NULL)) > 0 LIMIT 1""").fetchall()
    return "regions" if hit else None


def has_captions(input_path: str | Path) -> bool:
    """True when some record of the input dataset (local or on an object store) has caption text;
    img2dataset output (image-caption pairs by construction) is taken to have captions."""
    import duckdb

    folder = Folder(input_path)
    if is_img2dataset_dir(Path(folder.path).resolve() if folder.is_local else input_path):
        return True
    ds = Dataset(folder)
    paths = [str(x) for x in ds.part_paths if "caption" in storage.parquet_schema(x).names]
    if not paths:
        return False
    files = ", ".join("'" + x.replace("'", "''") + "'" for x in paths)
    con = duckdb.connect()
    ds.folder.register(con)
    return bool(con.execute(f"""SELECT 1 FROM read_parquet([{files}], union_by_name=true)
        WHERE trim(coalesce(caption, '')) <> '' LIMIT 1""").fetchall())


def _slices(units: list, stem: str, path: Path | str, rows: int, step: int, kind: str, root: str, source: str) -> None:
    for k, start in enumerate(range(0, rows, step)):
        units.append({"unit": f"{stem}-{k:05d}", "path": str(path), "start": start, "stop": min(rows, start + step),
                      "kind": kind, "image_root": root, "source": source})


def run_pseudo(input_path: str | Path, out_dir: str | Path, cfg: PseudoConfig, opts: RunOptions | None = None, *,
               overwrite: bool = False) -> dict:
    """Pseudo-labels a caption dataset into OUT; returns a summary (images in/kept, boxes, throughput)."""
    from workflows.ray_runtime import ray_session

    opts = opts or RunOptions()
    if cfg.vocabulary_only and not cfg.classes:  # else silently the caption phrases alone
        raise ValueError("vocabulary_only (--vocabulary-only) prompts with a class list alone: give the classes "
                         "(--classes FILE)")
    out = Folder(out_dir)  # a local path or an object store (shown by its URL, never credentials)
    plan = plan_input(input_path, cfg.images_per_part, opts.source, extract_phrases=cfg.extract_phrases)
    mode = prompt_mode(cfg, input_path, plan)
    if mode == "vocabulary":  # the vocabulary alone prompts every image (no caption phrases)
        plan.given_phrases = None
        for u in plan.units:
            u["phrases"] = None
    if not cfg.classes and not plan.given_phrases and not has_captions(input_path):
        raise DatasetError(f"{input_path}: no record has a caption or phrases to prompt the detector with (an image "
                           "folder, an OD dataset): label it with a class list, --classes FILE (a dataset directory "
                           "gives its label map)")
    resume_key = {"config": asdict(cfg), "input": plan.fingerprint, "input_path": plan.inputs[0]["path"],
                  "source": plan.source,  # img2dataset input: --source names the image ids
                  "given_phrases": plan.given_phrases, "prompts": mode}
    if cfg.classes:
        log.info("prompts: a class list of %d classes%s", len(cfg.classes),
                 " (the same prompts for every image)" if mode == "vocabulary" else " plus each caption's phrases")
    if mode != "vocabulary":
        log.info("phrases: %s", f"the input's own ({plan.given_phrases})" if plan.given_phrases else "extracted by spaCy")
    done = prior_run(out, resume_key, overwrite)
    if done is not None:
        log.info("%s: already complete for this input and config", out.url)
        return {"dataset": out.url, **done.counts, "skipped": True}
    manifest = Manifest(kind="od" if mode == "vocabulary" else "vg", source=plan.source, image_root=plan.image_root,
                        categories=vocabulary_categories(cfg.classes) if cfg.classes else [], config=asdict(cfg),
                        provenance=provenance(plan.inputs, models={"detector": cfg.detector, "clip": cfg.clip}))
    writer = DatasetWriter(out, manifest, overwrite=overwrite, resume_key=resume_key)
    writer.folder.makedirs(CANDIDATES)
    _sweep_candidates(writer)
    units = plan.units
    pending = [u for u in units if not writer.is_done(f"part-{u['unit']}.parquet")]
    if opts.max_units is not None:
        pending = pending[: opts.max_units]
    log.info("%d units (%d images each at most), %d to do", len(units), cfg.images_per_part, len(pending))
    t0 = time.time()
    if pending:
        # a Ray the caller started, or a cluster we joined, is left as it was
        with ray_session(opts.num_cpus, address=opts.ray_address):
            _run_units(pending, cfg, opts, writer, plan.rejects, plan.given_phrases, mode)
    summary = _summary(writer, units, time.time() - t0)
    if len(writer.manifest.parts) == len(units):
        writer.finish(summary)
    return {"dataset": out.url, **summary}


def _sweep_candidates(writer: DatasetWriter) -> None:
    """Deletes candidates files whose part has no completion record (a killed run wrote them, then died before
    recording the part): the commit rule of records and rejects (`DatasetWriter._sweep`) for ``candidates/``."""
    for name in writer.folder.list(CANDIDATES):
        if not writer.is_done(name) and not name.startswith("."):
            writer.folder.rm(f"{CANDIDATES}/{name}")


def prompt_mode(cfg: PseudoConfig, input_path: str | Path, plan: InputPlan) -> str:
    """What prompts each image: ``"phrases"`` (its caption's; no class list), ``"vocabulary"`` (the class
    list alone: `cfg.vocabulary_only`, or an input without caption text, such as an image folder or OD data) or
    ``"union"`` (its phrases plus the class list)."""
    if not cfg.classes:
        return "phrases"
    if cfg.vocabulary_only:
        return "vocabulary"
    return "union" if plan.given_phrases or has_captions(input_path) else "vocabulary"


def build_stages(cfg: PseudoConfig, opts: RunOptions, gpus: float, given_phrases: str | None = None,
                 prompts: str | None = None) -> list:
    """The pipeline's stages in order, configured (plain objects: nothing is loaded before ``setup()``).

    `prompts` (`prompt_mode`; default ``"vocabulary"`` with a class list, else ``"phrases"``). With
    `given_phrases` (``"column"`` / ``"regions"``) the records' own phrases are loaded with them and no
    phrase stage runs (spaCy is never loaded). With the vocabulary alone none runs either: the prompts are the
    vocabulary's, built once per tokenize worker, and regions carry the class's label. In the union each row
    gets its own phrases' prompts followed by the vocabulary's."""
    from transformers import AutoImageProcessor

    from detector.preprocess import ResizeRule
    from labeling.image_stages import LoadImages, OrderByCanvas
    from labeling.model_stage import ModelStage
    from labeling.prompt_stages import TokenizePrompts
    from labeling.stages import AddPhrases, AssembleCandidates, LoadUnits

    prompts = prompts or ("vocabulary" if cfg.classes else "phrases")
    if prompts not in ("phrases", "vocabulary", "union") or (prompts != "phrases") != bool(cfg.classes):
        raise ValueError(f"prompts {prompts!r} does not go with classes={cfg.class_names!r}")
    with_phrases = prompts != "vocabulary"
    rule = ResizeRule.from_processor(AutoImageProcessor.from_pretrained(cfg.detector), cfg.canvas_multiple)
    settings = ModelSettings(detector=cfg.detector, clip=cfg.clip, device=opts.device, precision=opts.precision,
                             batch_size=batch_size(opts, gpus), box_threshold=cfg.box_threshold,
                             clip_margin=cfg.clip_margin, top_k=cfg.top_k, candidate_nms_iou=cfg.candidate_nms_iou,
                             min_box_size=cfg.min_box_size, canvas_multiple=cfg.canvas_multiple, round=cfg.round,
                             torch_threads=None if gpus else 1, classes=cfg.class_names,
                             with_phrases=with_phrases)
    model = ModelStage(settings)
    given = bool(given_phrases) and with_phrases
    phrases = [] if given or not with_phrases else [AddPhrases(cfg.phrases)]
    return [LoadUnits(given_phrases=given), *phrases, OrderByCanvas(rule),
            LoadImages(rule, model.rows_per_call),
            TokenizePrompts(cfg.detector, cfg.clip, vocabulary=cfg.classes, with_phrases=with_phrases),
            model, AssembleCandidates(cfg.round, vocabulary=cfg.classes, with_phrases=with_phrases)]


def _describe(p) -> str:
    """'1 CPU, 1 GPU, 4 GiB, 2 actors' for a stage's placement (log line)."""
    r = p.resources
    parts = [f"{r.cpus:g} CPU"] + ([f"{r.gpus:g} GPU"] if r.gpus else []) + \
        ([f"{r.memory / 2**30:.3g} GiB"] if r.memory else []) + ([f"{p.pool} actors"] if p.pool else [])
    return ", ".join(parts)


def batch_size(opts: RunOptions, gpus: float) -> int:
    """Images per model batch: the option, else 16 on GPU clusters and 4 on CPU ones."""
    return opts.batch_size or (16 if gpus else 4)


def _run_units(units: list[dict], cfg: PseudoConfig, opts: RunOptions, writer: DatasetWriter,
               known_rejects: dict[str, list[dict]], given_phrases: str | None = None,
               prompts: str | None = None) -> None:
    import ray

    from workflows.ray_stages import apply_stage, plan_resources

    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0))
    stages = build_stages(cfg, opts, gpus, given_phrases, prompts)
    model = next(s for s in stages if s.actor)
    plan = plan_resources(stages, float(res.get("CPU", 0)), gpus,
                          {model.name: opts.model_actors} if opts.model_actors else None,
                          cluster_memory=float(res.get("memory", 0)))
    log.info("stages: %s", ", ".join(f"{s.name} ({_describe(plan[s.name])})" for s in stages))
    expected = {u["unit"]: u["stop"] - u["start"] for u in units}
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    # One block per unit; images are loaded in slices of a few model batches (LoadImages.rows_per_block), each
    # its own block, so a block of pixels stays small and never mixes units. Stages take blocks whole (batch_size
    # None): the actor batches rows of one canvas within a block, the same batches on every run. On a GPU, Ray
    # Data needs a number: the actor takes its `rows_per_call` rows per call (see apply_stage).
    for s in stages:
        ds = apply_stage(ds, s, plan[s.name], batch_size=1 if s.name == "load-units" else None)
    filt = FilterConfig(**cfg.filter)
    pending: dict[str, list[pa.Table]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for unit in set(batch.column("unit").to_pylist()):
            part = batch.filter(pa.compute.equal(batch.column("unit"), unit))
            pending.setdefault(unit, []).append(part)
            if sum(t.num_rows for t in pending[unit]) == expected[unit]:
                _write_unit(writer, unit, pa.concat_tables(pending.pop(unit)), filt, known_rejects.get(unit, []))
    missing = [u for u in expected if not writer.is_done(f"part-{u}.parquet")]  # units whose rows never came
    if pending or missing:
        raise RuntimeError(f"units left incomplete: {sorted(set(pending) | set(missing))}")


def _write_unit(writer: DatasetWriter, unit: str, rows: pa.Table, filt: FilterConfig, known_rejects: list[dict]) -> None:
    rows = rows.sort_by("row")
    name = f"part-{unit}.parquet"
    errors = rows.filter(pa.compute.is_valid(rows.column("error")))
    writer.write_rejects(name, known_rejects + [
        {"file": r["file_name"], "record": r["image_id"], "reason": "unreadable image", "detail": r["error"]}
        for r in errors.select(["file_name", "image_id", "error"]).to_pylist()])
    # failed rows are in rejects/ only: refilter must never see them as images without boxes
    cands = rows.filter(pa.compute.is_null(rows.column("error"))).drop_columns(["unit", "row", "error"])
    # before the part's completion record (written by write_part): a candidates file counts only with its part,
    # and one a killed run left without a record is deleted by the rerun (`_sweep_candidates`) and written again
    with writer.folder.atomic_path(f"{CANDIDATES}/{name}") as tmp:
        write_parquet(cands, tmp)
    table, dropped = records_from_candidates(rows.filter(pa.compute.is_null(rows.column("error"))), filt)
    writer.write_part(name, table, images_in=rows.num_rows + len(known_rejects), rejected=errors.num_rows + len(known_rejects),
                      candidates=int(sum(len(c or []) for c in rows.column("candidates").to_pylist())),
                      images_dropped=dropped)


def _summary(writer: DatasetWriter, units: list[dict], seconds: float) -> dict:
    parts = writer.manifest.parts
    images_in = sum(int(p.get("images_in", 0)) for p in parts)
    return {"units": len(units), "units_done": len(parts), "images_in": images_in,
            **writer.manifest.totals(),
            "candidates": sum(int(p.get("candidates", 0)) for p in parts),
            "rejected": sum(int(p.get("rejected", 0)) for p in parts),
            "images_dropped": _dropped(parts),
            "seconds": round(seconds, 1)}


def _dropped(parts: list[dict]) -> dict[str, int]:
    """Images the filters dropped, by reason, over finished parts."""
    out: dict[str, int] = {}
    for p in parts:
        for k, v in (p.get("images_dropped") or {}).items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))


def refilter(pseudo_dir: str | Path, out_dir: str | Path, filt: FilterConfig, *, overwrite: bool = False) -> dict:
    """Re-applies filters to a pseudo dataset's stored candidates (no models, no GPU) into a new dataset."""
    src = Dataset(Folder(pseudo_dir).resolve()).require_complete()
    if not src.folder.exists(CANDIDATES) and src.manifest.parts:
        raise DatasetError(f"{src.folder.url}: no {CANDIDATES}/ folder; not a pseudo-label output")
    cfg = dict(src.manifest.config)
    cfg.pop("_resume_key", None)
    cfg["filter"] = filt.to_dict()
    manifest = Manifest(kind=src.manifest.kind, source=src.manifest.source, image_root=src.manifest.image_root,
                        categories=src.manifest.categories, config=cfg,
                        provenance=provenance([{"path": src.folder.url, "dataset": True}],
                                              refiltered_from=src.folder.url))
    resume_key = {"config": cfg, "input": src.folder.url}
    writer = DatasetWriter(out_dir, manifest, overwrite=overwrite, resume_key=resume_key)
    writer.folder.makedirs(CANDIDATES)
    for part in src.manifest.parts:
        name = part["name"]
        data = src.folder.read_bytes(f"{CANDIDATES}/{name}")
        writer.folder.write_bytes(f"{CANDIDATES}/{name}", data)
        cands = pq.read_table(pa.BufferReader(data))
        # the source's rejects (unreadable images, failed downloads) stay with the refiltered dataset
        if src.folder.exists(f"{REJECTS}/{name}"):
            writer.write_rejects(name, src.folder.read_parquet(f"{REJECTS}/{name}"))
        table, dropped = records_from_candidates(cands, filt)
        writer.write_part(name, table, images_in=part.get("images_in"), rejected=part.get("rejected"),
                          candidates=part.get("candidates"), images_dropped=dropped)
    parts = writer.manifest.parts
    return {"dataset": writer.folder.url, **writer.finish({
        "images_in": sum(int(p.get("images_in") or 0) for p in parts), **writer.manifest.totals(),
        "rejected": sum(int(p.get("rejected") or 0) for p in parts), "images_dropped": _dropped(parts)}).counts}
