"""Pseudo-labeling at GPU rate: images/s per GPU and the GPU's busy fraction, one command, within 8 minutes.

On a GPU machine: builds full-size random-weight MM-Grounding-DINO-T (Swin-T + BERT-base, 900 queries) and
CLIP ViT-B/32 from their configs (saved and loaded back through ``from_pretrained``, as real checkpoints are),
generates CC3M-like JPEGs (about 500x375) with captions, and runs the real pipeline (``run_pseudo``: Ray, every
CPU stage, the model actor in bf16, candidates, filters, atomic writes) at model batch sizes 8, 16 and 32.
For each it prints the steady rate (from the GPU's first busy sample to the last finished part) and the GPU's busy fraction
(``nvidia-smi`` utilisation sampled every 0.2 s over the same window); then the training step rate of
``benchmarks/train_throughput.py --device cuda --full-size``.

Random weights give random boxes: the candidate count per image is pinned with ``--top-k`` (20) and a zero
box threshold so the CLIP work is that of a real run (tens of candidates per image).

Usage: python benchmarks/pseudo_gpu.py [--images 6000] [--batch-sizes 8,16,32] [--json out.json]
       python benchmarks/pseudo_gpu.py --profile    # the model actor alone: ms per image per forward and the rest
       python benchmarks/pseudo_gpu.py --smoke      # CPU, tiny networks at real sizes, a few images: checks the script
Target (issue #12): >= 300 images/s per H100/H200 at bf16, GPU busy >= 90%.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def full_size_models(out: Path) -> dict:
    """MM-Grounding-DINO-T and CLIP ViT-B/32 with random weights, saved like checkpoints; returns their dirs."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPProcessor,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
    )

    from detector.tiny import bert_tokenizer, clip_tokenizer

    torch.manual_seed(0)
    det, clip = out / "detector", out / "clip"
    det.mkdir(parents=True, exist_ok=True)
    clip.mkdir(parents=True, exist_ok=True)
    MMGroundingDinoForObjectDetection(MMGroundingDinoConfig()).save_pretrained(det)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessorPil(), tokenizer=bert_tokenizer()).save_pretrained(det)
    ctok = clip_tokenizer(clip)
    cfg = CLIPConfig(text_config={"vocab_size": len(ctok.get_vocab()), "eos_token_id": ctok.eos_token_id,
                                  "bos_token_id": ctok.bos_token_id, "pad_token_id": ctok.pad_token_id})
    CLIPModel(cfg).save_pretrained(clip)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=ctok).save_pretrained(clip)
    return {"detector": det, "clip": clip}


def caption_dataset(work: Path, n: int) -> Path:
    """A caption dataset directory over `n` generated CC3M-like JPEGs."""
    import pyarrow as pa
    from PIL import Image
    from pseudo_throughput import captions, cc3m_jpegs

    from formats import schema as S
    from formats.dataset import DatasetWriter, Manifest

    unique = min(n, 512)  # JPEGs are reused past this many (the pipeline reads each row anyway)
    files = cc3m_jpegs(work / "jpegs", unique)
    sizes = [Image.open(f).size for f in files]
    texts = captions(n, seed=5)
    w = DatasetWriter(work / "captions", Manifest(kind="vg", source="bench", image_root=str(work / "jpegs")),
                      overwrite=True)
    idx = [i % unique for i in range(n)]
    w.write_part("part-00000.parquet", S.conform(pa.table({
        "image_id": [f"bench/{i}" for i in range(n)], "source": ["bench"] * n,
        "file_name": [files[i].name for i in idx], "width": [sizes[i][0] for i in idx],
        "height": [sizes[i][1] for i in idx], "caption": texts, "regions": S.empty_regions(n)}), []))
    w.finish({"images": n})
    return work / "captions"


class GpuSampler:
    """``nvidia-smi`` GPU utilisation (percent of time a kernel ran) sampled every 0.2 s on a thread."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.tool = shutil.which("nvidia-smi")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.tool:
                r = subprocess.run([self.tool, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                    "-i", "0"], capture_output=True, text=True)
                if r.returncode == 0 and r.stdout.strip():
                    self.samples.append((time.time(), float(r.stdout.split()[0])))
            time.sleep(0.2)

    def __enter__(self) -> GpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def first_busy(self) -> float | None:
        """Time of the first sample with the GPU busy (the model's first batch), None without samples."""
        return next((t for t, u in self.samples if u > 0), None)

    def busy(self, t0: float, t1: float) -> float | None:
        inside = [u for t, u in self.samples if t0 <= t <= t1]
        return round(sum(inside) / len(inside) / 100, 3) if inside else None


def run_batch_size(data: Path, work: Path, models: dict, batch: int, device: str, per_part: int) -> dict:
    from labeling.fuse import FilterConfig
    from workflows.pseudo_label import PseudoConfig, RunOptions, run_pseudo

    cfg = PseudoConfig(detector=str(models["detector"]), clip=str(models["clip"]), box_threshold=0.0, top_k=20,
                       filter=FilterConfig().to_dict(), images_per_part=per_part)
    out = work / f"pseudo_b{batch}"
    with GpuSampler() as gpu:
        t0 = time.time()
        summary = run_pseudo(data, out, cfg, RunOptions(batch_size=batch, device=device,
                                                        precision="bf16" if device.startswith("cuda") else "fp32"),
                             overwrite=True)
        total = time.time() - t0
    done = sorted(p.stat().st_mtime for p in (out / "records").glob("part-*.parquet"))
    # from the model's first batch (the GPU's first busy sample) to the last part: parts run side by side and
    # finish close together, so the span between the first and the last finished part would miss most work
    start = gpu.first_busy()
    steady = summary["images_in"] / (done[-1] - start) if start and done and done[-1] > start else \
        ((len(done) - 1) * per_part / (done[-1] - done[0]) if len(done) > 1 else None)
    return {"batch_size": batch, "images": summary["images_in"], "candidates": summary["candidates"],
            "seconds": round(total, 1), "images_per_s_started": round(steady, 1) if steady else None,
            "images_per_s_with_startup": round(summary["images_in"] / total, 1),
            "gpu_busy": gpu.busy(start or done[0], done[-1]) if len(done) > 1 else None}


def profile_model_stage(work: Path, models: dict, device: str, batch: int, n: int = 256) -> dict:
    """Where the model actor's time goes, in-process (no Ray): ms per image in the detector's forward, CLIP's
    forwards and the rest (canvas assembly, normalisation, NMS, crops, host packing), each timed with the device
    synchronised before and after; over `n` images sorted by canvas as OrderByCanvas does, after a warm-up batch."""
    import torch
    from pseudo_throughput import actor_rows

    from labeling.model_stage import ModelStage

    table = actor_rows(work / "jpegs_profile", models, n, seed=3)
    stage = ModelStage({"detector": str(models["detector"]), "clip": str(models["clip"]), "device": device,
                        "precision": "bf16" if device.startswith("cuda") else "fp32", "batch_size": batch,
                        "box_threshold": 0.0, "top_k": 20})
    stage.setup()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    stage(table.slice(0, batch))  # warm-up
    spent = {"detector": 0.0, "clip_images": 0.0, "clip_texts": 0.0}

    def timed(obj, name: str, key: str) -> None:
        fn = getattr(obj, name)

        def run(*a, **k):
            sync()
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sync()
                spent[key] += time.perf_counter() - t
        setattr(obj, name, run)

    timed(stage.detector.model, "forward", "detector")
    timed(stage.scorer.model, "get_image_features", "clip_images")
    timed(stage.scorer.model, "get_text_features", "clip_texts")
    stage.timings = {k: 0 for k in stage.timings}
    sync()
    t = time.perf_counter()
    out = stage(table)
    sync()
    wall = time.perf_counter() - t
    ms = {k: round(v / n * 1000, 2) for k, v in spent.items()}
    return {"batch_size": batch, "images": n, "ms_per_image_total": round(wall / n * 1000, 2), **{
        f"ms_per_image_{k}": v for k, v in ms.items()},
        "ms_per_image_rest": round((wall - sum(spent.values())) / n * 1000, 2),
        "host_cpu_ms_per_image": round(stage.timings["host_s"] / n * 1000, 2),
        "candidates_per_image": round(sum(len(x) for x in out.column("cand_det").to_pylist()) / n, 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.startswith("cuda") else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--batch-sizes", default="8,16,32")
    ap.add_argument("--images-per-part", type=int, default=500)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny networks at real sizes, 16 images")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="only the model actor in-process: ms per image in each forward and the rest")
    ap.add_argument("--json")
    a = ap.parse_args()
    import torch

    work = Path(tempfile.mkdtemp(prefix="ovlabel-bench-gpu-"))
    if a.smoke:
        from detector.tiny import write_tiny_models

        device, n, per_part, sizes = "cpu", 16, 8, [4]
        models = write_tiny_models(work / "models", real_sizes=True)
    else:
        if not torch.cuda.is_available():
            sys.exit("pseudo_gpu: no CUDA device visible; run on a GPU machine (or --smoke to check the script on CPU)")
        device, n, per_part = "cuda", a.images, a.images_per_part
        sizes = [int(b) for b in a.batch_sizes.split(",")]
        models = full_size_models(work / "models")
    if a.profile:
        res = [profile_model_stage(work, models, device, b, n=16 if a.smoke else 256) for b in sizes]
        for r in res:
            print("profile", json.dumps(r), flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=2))
        return
    data = caption_dataset(work, n)
    from workflows.ray_runtime import init_ray

    init_ray()
    res = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "runs": []}
    for b in sizes:
        r = run_batch_size(data, work, models, b, device, per_part)
        res["runs"].append(r)
        print(f"batch {b:3d}: {r['images_per_s_started']} images/s per GPU once started "
              f"({r['images_per_s_with_startup']} with start-up), GPU busy {r['gpu_busy']}, "
              f"{r['candidates'] / max(r['images'], 1):.1f} candidates/image", flush=True)
    if not a.skip_train and not a.smoke:
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--device", "cuda",
                               "--full-size", "--steps", "30"], capture_output=True, text=True, timeout=240)
        res["train"] = proc.stdout.strip().splitlines()[-3:] if proc.returncode == 0 else \
            [f"failed (exit {proc.returncode}):", *proc.stderr.strip().splitlines()[-5:]]
        print("training (train_throughput.py --device cuda --full-size):", *res["train"], sep="\n  ")
    if a.smoke:
        print("smoke run: the script works; its figures mean nothing (16 images on a CPU)")
        return
    best = max((r["images_per_s_started"] or 0) for r in res["runs"])
    print(f"best: {best} images/s per GPU; target >= 300 at bf16 with the GPU busy >= 90%")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
