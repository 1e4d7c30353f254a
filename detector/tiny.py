"""Tiny random-weight models for tests and offline smoke runs, saved like real checkpoints.

``write_tiny_models(DIR)`` writes ``DIR/detector`` (MM-Grounding-DINO architecture) and ``DIR/clip`` (CLIP)
(and, with ``owlv2=True``, ``DIR/owlv2``: an OWLv2 detector, `write_tiny_owlv2`) with their processors through ``save_pretrained``; everything else loads them with ``from_pretrained(DIR)``,
the same code path as a hub id. The outputs are random: they exercise shapes, batching and plumbing.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

# Grounding DINO's modeling code treats these BERT ids as special: [CLS] 101, [SEP] 102, "." 1012, "?" 1029.
_SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}
_WORDS = """a an the of in on at with and to for from by is are man woman men women person people boy girl child
dog cat bird horse cow sheep car bus truck train motorcycle bicycle bike boat plane airplane rocket tower
cup mug plate spoon fork knife bowl bottle glass table chair sofa bed tv laptop phone camera tripod box
helmet flag shirt coat hat shoe bag umbrella tree grass sky cloud water road street building house garage
wall door window shelf shelves floor red blue green black white orange yellow brown gray small big large
old young two three sitting standing walking riding looking holding next front space suit model shuttle
american launch pad dusk coffee saucer wooden tabby eyes close up parked seen second same through pink""".split()


def _bert_vocab() -> list[str]:
    size = 1100
    vocab = [f"[unused{i}]" for i in range(size)]
    for i, tok in _SPECIAL.items():
        vocab[i] = tok
    free = [i for i in range(size) if i not in _SPECIAL]
    pieces = list(dict.fromkeys(_WORDS + list(string.ascii_lowercase) + list(string.digits) +
                                [f"##{c}" for c in string.ascii_lowercase + string.digits] +
                                [c for c in string.punctuation if c not in ".?"]))
    for i, tok in zip(free, pieces):
        vocab[i] = tok
    return vocab


def bert_tokenizer():
    """A small BertTokenizerFast whose special tokens carry BERT's ids."""
    from transformers import BertTokenizerFast

    vocab = {t: i for i, t in enumerate(_bert_vocab())}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True)


def clip_tokenizer(tmp: Path, model_max_length: int = 77):
    """A character-level CLIPTokenizer (CLIP's BPE class with a tiny vocab and no merges); `model_max_length`
    is what ``padding="max_length"`` pads to (77 for CLIP, 16 for OWLv2's queries)."""
    from transformers import CLIPTokenizer

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    for t in ("<|startoftext|>", "<|endoftext|>"):
        vocab[t] = len(vocab)
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=model_max_length)


def tiny_detector(seed: int = 0, image_size: int = 128, real_sizes: bool = False):
    """A tiny MM-Grounding-DINO model and its processor (``real_sizes``: the real 800/1333 processing size)."""
    import torch
    from transformers import (
        BertConfig,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
        SwinConfig,
    )

    torch.manual_seed(seed)
    tok = bert_tokenizer()
    text = BertConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=512)
    backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=image_size,
                          out_features=["stage2", "stage3", "stage4"])
    cfg = MMGroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1,
                                decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
                                decoder_attention_heads=2, num_queries=20, num_feature_levels=4, max_text_len=256,
                                encoder_n_points=2, decoder_n_points=2)
    model = MMGroundingDinoForObjectDetection(cfg).eval()
    size = {"shortest_edge": 800, "longest_edge": 1333} if real_sizes else \
        {"shortest_edge": image_size, "longest_edge": image_size * 4 // 3}
    ip = GroundingDinoImageProcessorPil(size=size)
    return model, GroundingDinoProcessor(image_processor=ip, tokenizer=tok)


def tiny_clip(tmp: Path, seed: int = 0, real_sizes: bool = False):
    """A tiny CLIP model and its processor (``real_sizes``: 224-px inputs in 32-px patches, as CLIP-B/32)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tok = clip_tokenizer(tmp)
    n = len(tok.get_vocab())
    cfg = CLIPConfig(
        text_config={"vocab_size": n, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "projection_dim": 16,
                     "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 224 if real_sizes else 32, "patch_size": 32 if real_sizes else 8,
                       "projection_dim": 16},
        projection_dim=16,
    )
    model = CLIPModel(cfg).eval()
    side = 224 if real_sizes else 32
    ip = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return model, CLIPProcessor(image_processor=ip, tokenizer=tok)


def tiny_owlv2(tmp: Path, seed: int = 0, image_size: int = 64, real_sizes: bool = False):
    """A tiny OWLv2 model and its processor: CLIP-like towers of width 32, 16-px patches on `image_size`
    inputs (``real_sizes``: 960, OWLv2's), 16-token queries, the character-level CLIP tokenizer."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    torch.manual_seed(seed)
    side = 960 if real_sizes else image_size
    tok = clip_tokenizer(tmp, model_max_length=16)
    cfg = Owlv2Config(
        text_config={"vocab_size": len(tok.get_vocab()), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
                     "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": side, "patch_size": 16},
        projection_dim=32,  # the class head compares projected queries with image features of the text width
    )
    model = Owlv2ForObjectDetection(cfg).eval()
    with torch.no_grad():  # random heads saturate their sigmoids (zero-width boxes, objectness 0 or 1): keep
        model.box_head.dense2.weight.mul_(0.005)  # boxes near the model's box bias (a box per patch) and
        model.objectness_head.dense2.weight.mul_(0.005)  # objectness near 0.5, varied a little
    ip = Owlv2ImageProcessorPil(size={"height": side, "width": side})
    return model, Owlv2Processor(image_processor=ip, tokenizer=tok)


def write_tiny_owlv2(out: str | Path, seed: int = 0, real_sizes: bool = False) -> Path:
    """Saves a tiny OWLv2 detector (`tiny_owlv2`) with its processor in folder OUT; returns it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, proc = tiny_owlv2(out, seed, real_sizes=real_sizes)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def write_tiny_models(out: str | Path, seed: int = 0, real_sizes: bool = False, owlv2: bool = False) -> dict[str, Path]:
    """Saves a tiny detector and CLIP under OUT/detector and OUT/clip; returns their paths.

    ``real_sizes``: the processors use the real models' processing sizes (detector 800/1333, CLIP 224), so the
    data path moves real-sized tensors while the networks stay tiny (benchmarks of everything but the FLOPs).
    """
    out = Path(out)
    paths = {"detector": out / "detector", "clip": out / "clip"}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    model, proc = tiny_detector(seed, real_sizes=real_sizes)
    model.save_pretrained(paths["detector"])
    proc.save_pretrained(paths["detector"])
    clip, cproc = tiny_clip(paths["clip"], seed, real_sizes=real_sizes)
    clip.save_pretrained(paths["clip"])
    cproc.save_pretrained(paths["clip"])
    if owlv2:
        paths["owlv2"] = write_tiny_owlv2(out / "owlv2", seed, real_sizes=real_sizes)
    return paths
