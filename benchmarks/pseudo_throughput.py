"""Pseudo-labeling throughput against bare loops measured in the same run.

phrases:   on N generated CC3M-like captions, the phrase stage (filters, spans, Arrow batches) against bare
           ``nlp.pipe`` (same model, same disabled pipes) on one core, alternating chunk by chunk; then the
           whole ``ovlabel phrases`` pipeline (run_phrases: parts read, cut into units, 2 phrase actors, joined,
           parts written) on a dataset directory of the same captions, against bare ``nlp.pipe`` timed right
           before and after it (averaged). The pipeline's rate is taken at its output once started: captions
           whose phrases arrived after each worker's first unit, over the time from the last of those first
           arrivals to the last arrival (the actors' start and spaCy loads excluded; the rate counting them is
           printed too). 3 rounds, the median reported. Targets: >= 0.85 and >= 1.6.
cpu_stages: the new CPU stage (read, decode, resize to the detector's 800/1333 as uint8) on CC3M-sized JPEGs,
           images/s on one core, against the work the model actor did per image before (decode, transformers'
           PIL processor at 800/1333, CLIP's processor on 20 crops), alternating chunk by chunk. Target >= 4x.
actor:     the model actor's CPU per image outside the model forwards at the real processing sizes (tiny
           networks; 800/1333 input, 224 CLIP crops, batch 16, 20 candidates per image): host bookkeeping timed,
           plus one kernel launch (10 us) per tensor operation it issues outside the forwards, counted with a
           TorchDispatchMode. Target <= 2 ms.
end_to_end: the whole pipeline on this 2-core machine (Ray, every stage, writes), tiny networks at the real
           processing sizes, against the detector's forward alone on the same preprocessed batches (one thread);
           the pipeline's rate once started (from the first unit's finished part to the last's). Target >= 0.85.

Usage: python benchmarks/pseudo_throughput.py [--captions 20000] [--images 48] [--skip-phrases] [--skip-detection]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUBJECTS = "man woman child dog cat horse bird car bus bicycle boat train chef surfer skier couple family player".split()
ADJ = "red young old small large white black happy wooden blue green vintage little beautiful busy".split()
PLACES = "street beach kitchen park field garden city river mountain market table road bridge lake stadium".split()
OBJECTS = "ball umbrella cup guitar camera phone hat bag kite book flowers bottle laptop leash frisbee".split()
TEMPLATES = [
    "a {a} {s} holding a {o} on the {p}",
    "{s} with a {a} {o} walks along the {p} at sunset .",
    "the {a} {s} and a {s2} near a {p}, with a {o}",
    "close up of a {s}'s {o} in the {p}",
    "people watch as a {a} {s} plays with a {o} next to the {p} .",
]


def captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(TEMPLATES).format(a=rng.choice(ADJ), s=rng.choice(SUBJECTS), s2=rng.choice(SUBJECTS),
                                         o=rng.choice(OBJECTS), p=rng.choice(PLACES)) for _ in range(n)]


def caption_dataset(root: Path, texts: list[str], part_rows: int = 10_000) -> Path:
    """A caption-only dataset directory (CC3M-like records without boxes)."""
    import pyarrow as pa

    from formats import schema as S
    from formats.dataset import DatasetWriter, Manifest, part_ranges

    w = DatasetWriter(root, Manifest(kind="vg", source="bench"), overwrite=True)
    for p, (a, b) in enumerate(part_ranges(len(texts), part_rows)):
        n = b - a
        w.write_part(f"part-{p:05d}.parquet", S.conform(pa.table({
            "image_id": [f"bench/{i}" for i in range(a, b)], "source": ["bench"] * n,
            "file_name": [f"{i}.jpg" for i in range(a, b)], "width": [640] * n, "height": [480] * n,
            "caption": texts[a:b], "regions": S.empty_regions(n)}), []))
    w.finish({"images": len(texts)})
    return root


def bench_phrases(n: int, workers: int = 2, repeats: int = 3) -> dict:
    import pyarrow as pa

    from labeling.phrases import PhraseConfig, PhraseExtractor, load_spacy
    from labeling.stages import add_phrases
    from workflows.phrases import run_phrases
    from workflows.ray_runtime import init_ray

    texts = captions(n)
    cfg = PhraseConfig()
    nlp = load_spacy(cfg.model, cfg.fallback_model)
    disable = [p for p in PhraseExtractor.DISABLE if p in nlp.pipe_names]
    list(nlp.pipe(texts[:500], batch_size=cfg.batch_size, disable=disable))  # warm up
    table = pa.table({"caption": texts})
    add_phrases(table.slice(0, 500), cfg.to_dict())  # loads the model once, as a worker does

    def bare_pass(a: int, b: int) -> float:
        t = time.perf_counter()
        for _ in nlp.pipe(texts[a:b], batch_size=cfg.batch_size, disable=disable):
            pass
        return time.perf_counter() - t

    # bare and stage alternate chunk by chunk, so a slow spell of the machine hits both
    bare, stage = 0.0, 0.0
    for i in range(0, n, 1000):
        bare += bare_pass(i, i + 1000)
        t = time.perf_counter()
        add_phrases(table.slice(i, 1000), cfg.to_dict())
        stage += time.perf_counter() - t

    # the `ovlabel phrases` pipeline: read parts, units over an actor pool, join, write parts
    work = Path(tempfile.mkdtemp(prefix="ovlabel-bench-phrases-"))
    big = caption_dataset(work / "big", texts)
    init_ray(num_cpus=workers)

    def pipeline() -> tuple[float, float]:
        """Whole time, and the rate at the output once started (from the first unit's phrases to the last's)."""
        arrivals = []
        t = time.perf_counter()
        r = run_phrases(big, work / "out", cfg, workers=workers, overwrite=True,
                        on_rows=lambda k: arrivals.append((time.perf_counter(), k)))
        total = time.perf_counter() - t
        assert r["images"] == n and len(arrivals) > workers + 1
        # each actor's first unit ran before the window opens: it starts when every actor has delivered one
        first = arrivals[workers - 1][0]
        return total, (n - sum(k for _, k in arrivals[:workers])) / (arrivals[-1][0] - first)

    # rounds of: pipeline, bare pass; each round's ratio uses the bare passes before and after it, so the
    # machine's slow and fast spells hit both sides alike
    bares, rounds = [bare_pass(0, n)], []
    for _ in range(repeats):
        total, steady = pipeline()
        bares.append(bare_pass(0, n))
        around = n / ((bares[-2] + bares[-1]) / 2)
        rounds.append({"total_s": total, "per_s": steady, "bare_per_s": around,
                       "ratio": steady / around, "ratio_with_startup": n / total / around})
    mid = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    return {"captions": n, "bare_nlp_pipe_per_s": round(n / bare), "stage_one_core_per_s": round(n / stage),
            "ratio_stage_vs_bare": round(bare / stage, 3),
            "pipeline_rounds": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
            "pipeline_total_s": round(mid["total_s"], 2),
            "pipeline_2_workers_per_s": round(mid["per_s"]), "pipeline_2_workers_per_s_with_startup": round(n / mid["total_s"]),
            "ratio_2_workers_vs_bare": round(mid["ratio"], 3),
            "ratio_2_workers_vs_bare_with_startup": round(mid["ratio_with_startup"], 3)}


SIZES = [(500, 375), (375, 500), (500, 333), (500, 281), (400, 400), (333, 500)]  # CC3M-like JPEGs


def cc3m_jpegs(root: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` CC3M-sized JPEGs (about 500x375, mixed aspect ratios) cut from the bundled sample photos."""
    from PIL import Image

    rng = random.Random(seed)
    photos = sorted((ROOT / "examples" / "sample" / "images").glob("*.jpg"))
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        im = Image.open(photos[i % len(photos)]).convert("RGB")
        w, h = SIZES[rng.randrange(len(SIZES))]
        s = max(w / im.width, h / im.height)
        im = im.resize((max(w, round(im.width * s)), max(h, round(im.height * s))))
        x, y = rng.randrange(im.width - w + 1), rng.randrange(im.height - h + 1)
        p = root / f"{i:05d}.jpg"
        im.crop((x, y, x + w, y + h)).save(p, quality=90)
        out.append(p)
    return out


def caption_rows(files: list[Path], root: Path):
    """Rows with image roots, captions and ~8 phrases each (what the phrase stage hands on)."""
    import pyarrow as pa

    from labeling.stages import PHRASES_TYPE

    texts = captions(len(files), seed=1)
    rows = []
    for i, (f, cap) in enumerate(zip(files, texts)):
        words = cap.replace(",", " ").replace("'s", "").split()
        phrases, at = [], 0
        for wd in words:
            s0 = cap.index(wd, at)
            at = s0 + len(wd)
            if len(wd) > 3 and len(phrases) < 8:
                phrases.append({"phrase": wd, "tokens_positive": [[s0, at]]})
        rows.append({"unit": "u", "row": i, "image_id": f"bench/{i}", "source": "bench", "file_name": f.name,
                     "width": 0, "height": 0, "caption": cap, "image_root": str(root), "phrases": phrases})
    schema = pa.schema([("unit", pa.string()), ("row", pa.int32()), ("image_id", pa.string()), ("source", pa.string()),
                        ("file_name", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                        ("caption", pa.string()), ("image_root", pa.string()), ("phrases", PHRASES_TYPE)])
    return pa.Table.from_pylist(rows, schema=schema)


def bench_cpu_stages(work: Path, n: int = 96) -> dict:
    """Images/s on one core: the new CPU stage (read, decode, resize to uint8 at 800/1333) against the work the
    model actor did per image before (read, decode, the detector processor's PIL path at 800/1333, CLIP's
    processor on 20 crops), alternating chunk by chunk on the same files."""
    import torch
    from transformers import CLIPImageProcessorPil, GroundingDinoImageProcessorPil

    from detector.preprocess import ResizeRule
    from formats.images import decode_image, read_image_bytes
    from labeling.image_stages import LoadImages

    torch.set_num_threads(1)
    files = cc3m_jpegs(work / "jpegs", n)
    table = caption_rows(files, work / "jpegs")
    det_proc, clip_proc = GroundingDinoImageProcessorPil(), CLIPImageProcessorPil()
    stage = LoadImages(ResizeRule.from_processor(det_proc))
    rng = random.Random(0)

    def old(i: int) -> tuple[float, float]:
        t = time.perf_counter()
        im = decode_image(read_image_bytes(str(work / "jpegs"), files[i].name))
        det_proc(images=[im], return_tensors="pt")
        t_det = time.perf_counter() - t
        w, h = im.size
        boxes = [(rng.uniform(0, w / 2), rng.uniform(0, h / 2)) for _ in range(20)]
        clip_proc(images=[im.crop((x, y, x + w / 3, y + h / 3)) for x, y in boxes], return_tensors="pt")
        return t_det, time.perf_counter() - t

    stage(table.slice(0, 4))  # warm up both
    old(0)
    new_s, old_det_s, old_all_s = 0.0, 0.0, 0.0
    for i in range(0, n, 8):
        t = time.perf_counter()
        stage(table.slice(i, 8))
        new_s += time.perf_counter() - t
        for k in range(i, min(n, i + 8)):
            a, b = old(k)
            old_det_s += a
            old_all_s += b
    return {"images": n, "sizes": "about 500x375, mixed aspect ratios", "new_per_s_one_core": round(n / new_s, 1),
            "old_decode_preprocess_per_s": round(n / old_det_s, 1),
            "old_with_20_clip_crops_per_s": round(n / old_all_s, 1),
            "new_ms_per_image": round(new_s / n * 1000, 2), "old_ms_per_image": round(old_det_s / n * 1000, 2),
            "old_with_crops_ms_per_image": round(old_all_s / n * 1000, 2),
            "ratio_vs_decode_preprocess": round(old_det_s / new_s, 2), "ratio_vs_with_crops": round(old_all_s / new_s, 2)}


class _OpCounter:
    """Counts the tensor operations the actor issues outside the model forwards (each one a kernel launch
    on a GPU), with a flag the wrapped forwards raise."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if counter.inside == 0:
                    counter.outside += 1
                return func(*args, **(kwargs or {}))

        self.mode, self.inside, self.outside = Mode(), 0, 0

    def wrap(self, obj, name: str) -> None:
        fn = getattr(obj, name)

        def wrapped(*a, **k):
            self.inside += 1
            try:
                return fn(*a, **k)
            finally:
                self.inside -= 1

        setattr(obj, name, wrapped)


def actor_rows(root: Path, models: dict, n: int, seed: int):
    """What the model actor receives: `n` generated CC3M-like JPEGs under `root` with ~8 phrases each, through
    the image and tokenize stages in-process, rows sorted by canvas as OrderByCanvas does (full batches)."""
    from transformers import AutoImageProcessor

    from detector.preprocess import ResizeRule
    from labeling.image_stages import LoadImages
    from labeling.prompt_stages import TokenizePrompts

    table = caption_rows(cc3m_jpegs(root, n, seed=seed), root)
    rule = ResizeRule.from_processor(AutoImageProcessor.from_pretrained(models["detector"]))
    table = TokenizePrompts(str(models["detector"]), str(models["clip"]), 256)(LoadImages(rule)(table))
    order = sorted(range(n), key=lambda i: (table.column("canvas_h")[i].as_py(), table.column("canvas_w")[i].as_py()))
    return table.take(order)


def bench_actor(work: Path, models: dict, n: int = 64, batch_size: int = 16, launch_us: float = 10.0) -> dict:
    """The model actor's CPU time outside the model forwards, per image, at the real processing sizes (tiny
    networks, 800/1333 detector input, 224 CLIP crops, batch 16, 20 candidates per image).

    Host work (packing pixels, prompt arrays, the output arrays) is timed in CPU seconds of the actor thread
    (so other processes on the machine do not inflate it); the device work a GPU would run
    asynchronously costs the host one launch per tensor operation: those are counted (TorchDispatchMode) and
    priced at `launch_us` each. Target: host + launches <= 2 ms per image."""
    import torch

    from labeling.model_stage import ModelStage

    torch.set_num_threads(1)
    table = actor_rows(work / "jpegs_actor", models, n, seed=2)
    stage = ModelStage({"detector": str(models["detector"]), "clip": str(models["clip"]), "device": "cpu",
                        "batch_size": batch_size, "box_threshold": 0.0, "top_k": 20, "candidate_nms_iou": None,
                        "min_box_size": 0.0})
    stage.setup()
    stage(table.slice(0, batch_size))  # warm up
    forward = {"s": 0.0}

    def timed(obj, name):
        fn = getattr(obj, name)

        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                forward["s"] += time.perf_counter() - t
        setattr(obj, name, run)

    for obj, name in ((stage.detector.model, "forward"), (stage.scorer.model, "get_image_features"),
                      (stage.scorer.model, "get_text_features")):
        timed(obj, name)
    stage.timings = {k: 0 for k in stage.timings}
    t = time.perf_counter()
    out = stage(table)
    wall = time.perf_counter() - t
    cands = sum(len(x) for x in out.column("cand_det").to_pylist()) / n
    host_ms = stage.timings["host_s"] / n * 1000
    forward_s = forward["s"]
    # count the launches in a second pass (the dispatch mode slows everything down: not timed)
    counter = _OpCounter()
    for obj, name in ((stage.detector.model, "forward"), (stage.scorer.model, "get_image_features"),
                      (stage.scorer.model, "get_text_features")):
        counter.wrap(obj, name)
    with counter.mode:
        stage(table)
    ops = counter.outside / n
    return {"images": n, "batch_size": batch_size, "candidates_per_image": round(cands, 1),
            "host_ms_per_image": round(host_ms, 3), "device_ops_per_image_outside_forwards": round(ops, 1),
            f"launch_ms_per_image_at_{launch_us:g}us": round(ops * launch_us / 1000, 3),
            "actor_cpu_ms_per_image_on_gpu": round(host_ms + ops * launch_us / 1000, 3),
            "cpu_device_ms_per_image_outside_forwards": round((wall - forward_s) / n * 1000, 1),
            "forwards_ms_per_image_cpu": round(forward_s / n * 1000, 1)}


def bench_end_to_end(work: Path, models: dict, n: int = 48, batch_size: int = 4, per_part: int = 8) -> dict:
    """The whole pipeline on this machine (Ray, 2 CPUs: phrases, reads, decoding, resizing, tokenizing, the
    actor, candidates, filters, writes) against the detector's forward alone on the same preprocessed batches
    (one thread, like the actor). Rate once started: between the first and the last finished unit's part
    (each unit is written when it is done); the whole run's rate, start-up included, is printed too."""
    import pyarrow as pa
    import torch
    from transformers import AutoImageProcessor

    from detector.device_ops import normalize_pad
    from detector.grounding import GroundingDetector
    from detector.preprocess import ResizeRule
    from formats import schema as S
    from formats.dataset import DatasetWriter, Manifest
    from labeling.fuse import FilterConfig
    from labeling.image_stages import LoadImages, canvas_groups
    from labeling.prompt_stages import TokenizePrompts
    from labeling.stages import add_phrases
    from workflows.pseudo_label import PseudoConfig, RunOptions, run_pseudo
    from workflows.ray_runtime import init_ray

    root = work / "jpegs_e2e"
    files = cc3m_jpegs(root, n, seed=3)
    texts = captions(n, seed=3)

    def dataset(name: str, k: int) -> Path:
        from PIL import Image

        w = DatasetWriter(work / name, Manifest(kind="vg", source="bench", image_root=str(root)), overwrite=True)
        sizes = [Image.open(f).size for f in files[:k]]
        w.write_part("part-00000.parquet", S.conform(pa.table({
            "image_id": [f"bench/{i}" for i in range(k)], "source": ["bench"] * k,
            "file_name": [f.name for f in files[:k]], "width": [s[0] for s in sizes], "height": [s[1] for s in sizes],
            "caption": texts[:k], "regions": S.empty_regions(k)}), []))
        w.finish({"images": k})
        return work / name

    big, small = dataset("e2e", n), dataset("e2e_small", per_part)
    cfg = PseudoConfig(detector=str(models["detector"]), clip=str(models["clip"]), box_threshold=0.0, top_k=20,
                       filter=FilterConfig(fused_threshold=0.0, image_threshold=-1.0).to_dict(), images_per_part=per_part)
    # bare: the same units, phrases, canvases and batches; only the detector forward is timed
    torch.set_num_threads(1)
    rule = ResizeRule.from_processor(AutoImageProcessor.from_pretrained(models["detector"]))
    det = GroundingDetector(str(models["detector"]), device="cpu")
    rows = dataset_rows(big)
    tok = TokenizePrompts(str(models["detector"]), str(models["clip"]), det.max_tokens)
    batches = []
    for a in range(0, n, per_part):
        unit = rows.slice(a, per_part)
        unit = unit.append_column("image_root", pa.array([str(root)] * unit.num_rows))
        t = tok(LoadImages(rule)(add_phrases(unit, cfg.phrases)))
        for g in canvas_groups(t, batch_size):
            batches.append(_forward_inputs(t, g, det, normalize_pad))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for inp in batches:
            det.model(**inp)
    bare = time.perf_counter() - t0
    del batches
    t0 = time.perf_counter()
    init_ray(num_cpus=2)
    ray_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_pseudo(small, work / "p_small", cfg, RunOptions(batch_size=batch_size, num_cpus=2), overwrite=True)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_pseudo(big, work / "p_big", cfg, RunOptions(batch_size=batch_size, num_cpus=2), overwrite=True)
    pipe = time.perf_counter() - t0
    # once started: units are written as they finish; the rate between the first unit's part and the last's
    done = sorted(p.stat().st_mtime for p in (work / "p_big" / "records").glob("part-*.parquet"))
    steady = (len(done) - 1) * per_part / (done[-1] - done[0])
    return {"images": n, "batch_size": batch_size, "images_per_part": per_part, "resolution": "800/1333 (tiny networks)",
            "forward_alone_s": round(bare, 2), "forward_alone_per_s": round(n / bare, 3),
            "pipeline_s": round(pipe, 2), "pipeline_one_unit_s": round(one, 2), "ray_init_s": round(ray_init, 1),
            "pipeline_per_s_started": round(steady, 3), "pipeline_per_s_with_startup": round(n / pipe, 3),
            "ratio_started_vs_forward_alone": round(steady * bare / n, 3)}


def dataset_rows(path: Path):
    from formats.dataset import Dataset

    return Dataset(path).read()


def _forward_inputs(t, rows, det, normalize_pad) -> dict:
    """The detector's inputs for one canvas batch of a tokenized table (pixel_values made beforehand)."""
    import numpy as np
    import torch

    H, W = int(t.column("canvas_h")[int(rows[0])].as_py()), int(t.column("canvas_w")[int(rows[0])].as_py())
    canvas = np.zeros((len(rows), H, W, 3), np.uint8)
    sizes = []
    ids = []
    for k, i in enumerate(rows.tolist()):
        h, w = t.column("pixel_h")[i].as_py(), t.column("pixel_w")[i].as_py()
        canvas[k, :h, :w] = np.frombuffer(t.column("pixels")[i].as_py(), np.uint8).reshape(h, w, 3)
        sizes.append((h, w))
        ids.append(t.column("prompt_ids")[i].as_py()[0])
    pv, pm = normalize_pad(torch.from_numpy(canvas), torch.tensor(sizes), det.mean, det.std)
    T = max(len(x) for x in ids)
    a = torch.zeros(len(ids), T, dtype=torch.long)
    m = torch.zeros(len(ids), T, dtype=torch.long)
    for k, x in enumerate(ids):
        a[k, :len(x)], m[k, :len(x)] = torch.tensor(x), 1
    return {"pixel_values": pv, "pixel_mask": pm, "input_ids": a, "attention_mask": m,
            "token_type_ids": torch.zeros_like(a)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=int, default=20000)
    ap.add_argument("--images", type=int, default=48, help="images of the end-to-end run")
    ap.add_argument("--batch-size", type=int, default=4, help="model batch of the end-to-end run")
    ap.add_argument("--skip-phrases", action="store_true")
    ap.add_argument("--skip-detection", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    res = {}
    if not a.skip_phrases:
        p = res["phrases"] = bench_phrases(a.captions)
        print(f"phrases: bare nlp.pipe {p['bare_nlp_pipe_per_s']}/s, stage {p['stage_one_core_per_s']}/s, "
              f"`ovlabel phrases` pipeline with 2 workers {p['pipeline_2_workers_per_s']}/s once started "
              f"({p['pipeline_2_workers_per_s_with_startup']}/s counting its start-up)")
        print(f"  stage / bare (1 core)      {p['ratio_stage_vs_bare']:.3f}   target >= 0.85   "
              f"{'PASS' if p['ratio_stage_vs_bare'] >= 0.85 else 'MISS'}")
        print(f"  2 workers / bare (1 core)  {p['ratio_2_workers_vs_bare']:.3f}   target >= 1.6    "
              f"{'PASS' if p['ratio_2_workers_vs_bare'] >= 1.6 else 'MISS'}   "
              f"({p['ratio_2_workers_vs_bare_with_startup']:.3f} with the start-up)")
    if not a.skip_detection:
        from detector.tiny import write_tiny_models

        work = Path(tempfile.mkdtemp(prefix="ovlabel-bench-pseudo-"))
        models = write_tiny_models(work / "models", real_sizes=True)
        c = res["cpu_stages"] = bench_cpu_stages(work)
        print(f"CPU stage (read + decode + resize to 800/1333 uint8), CC3M-sized JPEGs, one core: "
              f"{c['new_per_s_one_core']}/s ({c['new_ms_per_image']} ms) against the old actor-side path "
              f"{c['old_decode_preprocess_per_s']}/s ({c['old_ms_per_image']} ms; with 20 CLIP crops "
              f"{c['old_with_crops_ms_per_image']} ms)")
        print(f"  new / old                  {c['ratio_vs_decode_preprocess']:.2f}x  target >= 4x    "
              f"{'PASS' if c['ratio_vs_decode_preprocess'] >= 4 else 'MISS'}   ({c['ratio_vs_with_crops']:.2f}x "
              f"counting the old CLIP crop preprocessing)")
        k = res["actor"] = bench_actor(work, models)
        print(f"model actor outside the forwards, per image (batch {k['batch_size']}, {k['candidates_per_image']} "
              f"candidates, 800/1333 + 224 crops): host {k['host_ms_per_image']} ms + "
              f"{k['device_ops_per_image_outside_forwards']} device ops x 10 us")
        print(f"  actor CPU per image on GPU {k['actor_cpu_ms_per_image_on_gpu']:.3f} ms  target <= 2 ms  "
              f"{'PASS' if k['actor_cpu_ms_per_image_on_gpu'] <= 2 else 'MISS'}   (old: "
              f"{c['old_with_crops_ms_per_image']} ms of decode + preprocessing + crops; on this CPU the device ops "
              f"themselves take {k['cpu_device_ms_per_image_outside_forwards']} ms beside "
              f"{k['forwards_ms_per_image_cpu']} ms of forwards)")
        d = res["end_to_end"] = bench_end_to_end(work, models, a.images, a.batch_size)
        print(f"end to end (Ray, 2 CPUs, tiny networks at 800/1333): pipeline {d['pipeline_per_s_started']} img/s "
              f"once started ({d['pipeline_per_s_with_startup']} with start-up), detector forward alone "
              f"{d['forward_alone_per_s']} img/s (one thread)")
        print(f"  pipeline / forward alone   {d['ratio_started_vs_forward_alone']:.3f}  target >= 0.85   "
              f"{'PASS' if d['ratio_started_vs_forward_alone'] >= 0.85 else 'MISS'}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
