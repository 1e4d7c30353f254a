"""`ovlabel` commands that bring sources in and clean them: convert goldg/grit/cc3m/openimages, download
grit/cc3m, dedup, leakage, split. Each prints a JSON summary on stdout."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from formats.storage import display
from workflows.stdio import print_json, reading_progress


def _summary(out: str, manifest) -> dict:
    return {"dataset": display(out), **manifest.counts}


def cmd_convert_goldg(a: argparse.Namespace) -> None:
    from formats.converters.goldg import GoldGConvertConfig, convert_goldg

    cfg = GoldGConvertConfig(source=a.source, image_root=a.image_root, data_source=a.data_source,
                             part_images=a.part_images)
    with reading_progress(a.annotations) as update:
        m = convert_goldg(a.annotations, a.out, cfg, overwrite=a.overwrite, progress=update)
    print_json(_summary(a.out, m))


def cmd_convert_images(a: argparse.Namespace) -> None:
    from formats.converters.image_folder import ImageFolderConvertConfig, convert_image_folder

    cfg = ImageFolderConvertConfig(source=a.source, part_images=a.part_images)
    print_json(_summary(a.out, convert_image_folder(a.folder, a.out, cfg, overwrite=a.overwrite)))


def cmd_convert_odvg(a: argparse.Namespace) -> None:
    from formats.converters.odvg import OdvgConvertConfig, convert_odvg

    cfg = OdvgConvertConfig(source=a.source, image_root=a.image_root, label_map=a.label_map,
                            part_images=a.part_images)
    print_json(_summary(a.out, convert_odvg(a.annotations, a.out, cfg, overwrite=a.overwrite)))


def img2dataset_config(a: argparse.Namespace, spans: str | None = None):
    """The img2dataset conversion settings from the command line."""
    from formats.converters.img2dataset import Img2DatasetConvertConfig

    return Img2DatasetConvertConfig(source=a.source, spans=spans, min_score=getattr(a, "min_score", 0.0))


def cmd_convert_img2dataset(a: argparse.Namespace) -> None:
    from formats.converters.img2dataset import convert_img2dataset

    cfg = img2dataset_config(a, getattr(a, "spans", None))
    print_json(_summary(a.out, convert_img2dataset(a.raw_dir, a.out, cfg, overwrite=a.overwrite)) | {"config": asdict(cfg)})


def cmd_convert_openimages(a: argparse.Namespace) -> None:
    from formats.converters.openimages import OpenImagesConvertConfig, convert_openimages

    cfg = OpenImagesConvertConfig(source=a.source, image_root=a.image_root, split=a.split, group_of=a.group_of,
                                  sizes=a.sizes, part_images=a.part_images)
    print_json(_summary(a.out, convert_openimages(a.ann_dir, a.out, cfg, overwrite=a.overwrite)))


def download_config(a: argparse.Namespace):
    """img2dataset download settings from the command line."""
    from workflows.download import DownloadConfig

    return DownloadConfig(output_format=a.output_format, image_size=a.image_size, resize_mode=a.resize_mode,
                          processes=a.processes, threads=a.threads, timeout=a.timeout, retries=a.retries,
                          shard_size=a.shard_size, distributor=getattr(a, "distributor", "multiprocessing"))


def cmd_download(a: argparse.Namespace) -> None:
    from workflows.download import download

    print_json(download(a.kind, a.source, a.out, download_config(a)))


def cmd_dedup(a: argparse.Namespace) -> None:
    from formats.hygiene import dedup

    print_json(dedup(a.datasets, a.out, overwrite=a.overwrite))


def cmd_leakage(a: argparse.Namespace) -> None:
    from formats.hygiene import leakage

    print_json(leakage(a.train, a.against, a.out, overwrite=a.overwrite))


def cmd_split(a: argparse.Namespace) -> None:
    from formats.hygiene import SplitConfig, split

    print_json(split(a.dataset, a.out, SplitConfig(n=a.n, seed=a.seed), overwrite=a.overwrite))


def register_convert(csub) -> None:
    """`ovlabel convert goldg|grit|cc3m|openimages|images|odvg`."""
    p = csub.add_parser("images", help="a folder of images (recursive) -> OD dataset of images without boxes")
    p.add_argument("folder", help="the image folder (the dataset's image root)")
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--source", default="images", help="name recorded on every record (default images)")
    p.add_argument("--part-images", type=int, default=100_000)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert_images)

    p = csub.add_parser("odvg", help="ODVG JSON lines (MMDetection ODVGDataset, Open-GroundingDino) -> OD or VG dataset")
    p.add_argument("annotations", help="the .jsonl file")
    p.add_argument("--label-map", help="MMDetection label map JSON ({\"0\": \"person\", ...}): the file is OD")
    p.add_argument("--image-root", required=True, help="folder the filenames are relative to (the trainer's data_root)")
    p.add_argument("--source", default="odvg", help="name recorded on every record (default odvg)")
    p.add_argument("--out", required=True)
    p.add_argument("--part-images", type=int, default=100_000)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert_odvg)

    p = csub.add_parser("goldg", help="MDETR grounding JSON (Flickr30k Entities, mixed GQA/VG/COCO, RefCOCO*)")
    p.add_argument("annotations", help="e.g. final_flickr_separateGT_train.json, final_mixed_train_no_coco.json")
    p.add_argument("--source", required=True, help="name recorded on every record (flickr30k, gqa, refcoco, ...)")
    p.add_argument("--out", required=True)
    p.add_argument("--image-root", help="folder the file names are relative to")
    p.add_argument("--data-source", choices=("coco", "vg", "flickr"),
                   help="keep only captions of this data_source (coco: as extract_coco_from_mixed.py)")
    p.add_argument("--part-images", type=int, default=100_000)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert_goldg, bulk=True)

    p = csub.add_parser("grit", help="GRIT downloaded by `ovlabel download grit` (img2dataset shards) -> VG dataset")
    p.add_argument("raw_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--spans", choices=("ref_exps", "noun_chunks"), default="ref_exps",
                   help="which GRIT spans become regions (default ref_exps, as MMDetection)")
    p.add_argument("--min-score", type=float, default=0.0, help="leave out boxes with a lower GRIT score")
    p.add_argument("--source", default="grit")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert_img2dataset, bulk=True)

    p = csub.add_parser("cc3m", help="img2dataset output (CC3M or any URL list) -> caption dataset")
    p.add_argument("raw_dir", help="the img2dataset output folder")
    p.add_argument("--out", required=True)
    p.add_argument("--source", default="cc3m")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert_img2dataset, bulk=True)

    p = csub.add_parser("openimages", help="Open Images v6 box CSVs -> OD dataset")
    p.add_argument("ann_dir", help="folder with *-annotations-bbox.csv and class-descriptions-boxable.csv")
    p.add_argument("--image-root", help="folder of <ImageID>.jpg (sizes read from headers unless --sizes)")
    p.add_argument("--sizes", help="CSV ImageID,width,height")
    p.add_argument("--split", default="train")
    p.add_argument("--group-of", choices=("keep", "drop"), default="keep")
    p.add_argument("--source", default="openimages_v6")
    p.add_argument("--out", required=True)
    p.add_argument("--part-images", type=int, default=100_000)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert_openimages, bulk=True)


def add_download_args(p: argparse.ArgumentParser) -> None:
    """img2dataset options shared by `ovlabel download` and pipelines/ingest.py."""
    p.add_argument("kind", choices=("grit", "cc3m"))
    p.add_argument("source", help="GRIT metadata parquet (file or folder); CC3M caption<TAB>url TSV, "
                                  "a `datasets` folder or a hub id (google-research-datasets/conceptual_captions)")
    p.add_argument("--out", required=True, help="raw folder for img2dataset's shards (resumes)")
    p.add_argument("--output-format", choices=("webdataset", "parquet", "files"), default="webdataset",
                   help="webdataset tars (default), parquet with the image bytes inside, or plain files")
    p.add_argument("--image-size", type=int, default=1024, help="keep_ratio: the shorter side is scaled down to this (default 1024)")
    p.add_argument("--resize-mode", choices=("keep_ratio", "no"), default="keep_ratio")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--timeout", type=int, default=10)
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=10_000, help="URLs per shard (default 10000)")


def register(sub) -> None:
    """Adds download, dedup, leakage and split to the `ovlabel` parser."""
    p = sub.add_parser("download", help="download GRIT or CC3M images with img2dataset")
    add_download_args(p)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("dedup", help="drop exact duplicate images across (and within) dataset directories")
    p.add_argument("datasets", nargs="+", help="dataset directories; an image stays in the first that has it")
    p.add_argument("--out", required=True, help="folder for one deduplicated dataset per input + report.json")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_dedup)

    p = sub.add_parser("leakage", help="remove training images that are evaluation images")
    p.add_argument("train")
    p.add_argument("--against", nargs="+", required=True, help="evaluation dataset directories")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_leakage)

    p = sub.add_parser("split", help="a deterministic sample of N records")
    p.add_argument("dataset")
    p.add_argument("--n", type=int, required=True, help="records to keep (-1: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_split)
