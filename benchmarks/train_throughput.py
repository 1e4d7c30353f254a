"""Training throughput and the share of step time spent waiting for data, in one run.

A small random-weight MM-Grounding-DINO (Swin embed 32, d_model 128, 2+2 layers, 100 queries, 320 px
images; built from configs and saved, then loaded like a checkpoint) trains on the bundled sample's gold
boxes. Baseline: images decoded and encoded in the training loop (``loader_workers=0``); ovlabel's default:
one DataLoader worker prefetching. Prints images/s, data-wait share (goal < 10%) and the speed-up.
On a GPU (`--device cuda`) the same script measures the default MM-GDINO-T config at bf16.

Usage: python benchmarks/train_throughput.py [--steps 40] [--batch-size 2] [--device cpu|cuda] [--full-size]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def small_detector(out: Path, full_size: bool = False) -> Path:
    """Writes a small (or, with `full_size`, MM-GDINO-T-sized) random-weight detector; returns its folder."""
    import torch
    from transformers import (
        BertConfig,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
        SwinConfig,
    )

    from detector.tiny import bert_tokenizer

    torch.manual_seed(0)
    tok = bert_tokenizer()
    if full_size:  # Swin-T + BERT-base text, 900 queries, 6+6 layers, 800 px
        text = BertConfig(vocab_size=len(tok.get_vocab()))
        backbone = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                              out_features=["stage2", "stage3", "stage4"])
        cfg = MMGroundingDinoConfig(backbone_config=backbone, text_config=text)
        size = 800
    else:
        text = BertConfig(vocab_size=len(tok.get_vocab()), hidden_size=128, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=256)
        backbone = SwinConfig(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=7,
                              out_features=["stage2", "stage3", "stage4"])
        cfg = MMGroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=128, encoder_layers=2,
                                    decoder_layers=2, encoder_ffn_dim=256, decoder_ffn_dim=256,
                                    encoder_attention_heads=4, decoder_attention_heads=4, num_queries=100)
        size = 320
    model = MMGroundingDinoForObjectDetection(cfg)
    ip = GroundingDinoImageProcessorPil(size={"shortest_edge": size, "longest_edge": size * 4 // 3})
    model.save_pretrained(out)
    GroundingDinoProcessor(image_processor=ip, tokenizer=tok).save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full-size", action="store_true", help="MM-GDINO-T-sized model (for a GPU)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ovlabel-bench-train")
    a = ap.parse_args()
    from detector.train import TrainConfig
    from workflows.cli import main as cli
    from workflows.training import train

    model = small_detector(a.workdir / ("full" if a.full_size else "small"), a.full_size)
    gold = a.workdir / "gold"
    if not (gold / "manifest.json").exists():
        cli(["-q", "convert", "coco", str(ROOT / "examples/sample/gold.json"), "--source", "custom",
             "--image-root", str(ROOT / "examples/sample/images"), "--out", str(gold)])
    base = TrainConfig(steps=a.steps, batch_size=a.batch_size, checkpoint_every=10**9, negatives=10, log_every=10**9)
    results = {}
    for name, workers in (("in-loop decoding (baseline)", 0), ("DataLoader prefetch, 1 worker (default)", 1)):
        cfg = replace(base, loader_workers=workers)
        out = a.workdir / f"run-{workers}"
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        results[name] = train(str(model), [str(gold)], out, cfg, device=a.device)
    print(f"{'full-size' if a.full_size else 'small'} model, {a.steps} steps x {a.batch_size} images, {a.device}")
    for name, s in results.items():
        print(f"{name:42s} {s['images_per_s']:7.2f} images/s   data wait {100 * s['data_wait_share']:5.1f}% "
              f"of step time (goal < 10%)")
    base_s, ours = (results[k]["images_per_s"] for k in results)
    print(f"speed-up {ours / base_s:.2f}x")


if __name__ == "__main__":
    main()
