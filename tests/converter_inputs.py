"""Input files the converters read, built in tmp folders; shared by the converter tests
(tests/formats/converters/test_convert_*.py) and the object-storage convert tests (test_storage_convert.py)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
from conftest import EXAMPLES
from PIL import Image

# -- MDETR / GoldG (formats/converters/goldg.py) ---------------------------------------------------------------

CAP0 = "A man in a red hat talks to a man in a blue coat ."
CAP1 = "Two dogs run on the grass"


def span(caption: str, words: str, nth: int = 0) -> list[int]:
    at = -1
    for _ in range(nth + 1):
        at = caption.index(words, at + 1)
    return [at, at + len(words)]


def mdetr_doc(mixed: bool = False) -> dict:
    """Flickr30k-Entities-shaped (or mixed-shaped) MDETR file with every case the converter must handle."""
    images = [
        {"file_name": "1000.jpg", "height": "200", "width": "300", "id": 0, "caption": CAP0, "dataset_name": "flickr",
         "tokens_negative": [[0, 5]], "sentence_id": 0, "original_img_id": 1000,
         "tokens_positive_eval": [[span(CAP0, "A man")], [span(CAP0, "red"), span(CAP0, "hat")]]},
        {"file_name": "1000.jpg", "height": 200, "width": 300, "id": 1, "caption": CAP1, "dataset_name": "flickr",
         "sentence_id": 1, "original_img_id": 1000},
        {"file_name": "../../etc/passwd", "height": 200, "width": 300, "id": 2, "caption": CAP1, "original_img_id": 9},
        {"file_name": "2000.jpg", "height": -5, "width": 300, "id": 3, "caption": CAP1, "original_img_id": 2000},
    ]
    if mixed:
        for im, src in zip(images, ("coco", "vg", "coco", "vg")):
            im["data_source"], im["original_id"] = src, 500 + im["id"]
    a = [
        # id, image, bbox, spans, extra
        (1, 0, [10, 20, 50, 60], [span(CAP0, "A man")], {}),
        (2, 0, [30, 25, 20, 10], [span(CAP0, "hat"), span(CAP0, "red")], {}),  # multi-span, unsorted
        (3, 0, [200, 30, 40, 50], [span(CAP0, "a man", 0)], {}),  # same words as id 1 (case aside), own span
        (4, 0, [250, 150, 100, 100], [span(CAP0, "blue coat")], {}),  # crosses the image edge: clipped
        (5, 0, [400, 10, 20, 20], [span(CAP0, "blue coat")], {}),  # entirely outside: dropped
        (6, 0, [10, 10, 20, 20], [span(CAP0, "red")], {"iscrowd": 1}),  # crowd: dropped
        (7, 0, [10, 10, -4, 20], [span(CAP0, "red")], {"area": 80}),  # negative width: dropped
        (8, 0, [10, 10, 20, 20], [[40, 99]], {}),  # span beyond the caption: rejected
        (9, 0, [10, 10, 20, 20], [[2, 8], [5, 12]], {}),  # overlapping spans: rejected
        (10, 1, [5, 5, 40, 40], [span(CAP1, "Two dogs")], {}),
        (11, 1, [5, 5, 40, 40], [span(CAP1, "the grass")], {"area": 0}),  # area 0: dropped
        (12, 2, [5, 5, 40, 40], [span(CAP1, "Two dogs")], {}),  # its caption is rejected
        (13, 77, [5, 5, 40, 40], [span(CAP1, "Two dogs")], {}),  # unknown image
    ]
    anns = []
    for aid, img, bbox, spans, extra in a:
        ann = {"area": max(bbox[2], 0) * bbox[3], "iscrowd": 0, "image_id": img, "category_id": 1, "id": aid,
               "bbox": bbox, "tokens_positive": spans}
        ann.update(extra)
        anns.append(ann)
    return {"info": {}, "licenses": [], "images": images, "annotations": anns,
            "categories": [{"supercategory": "object", "id": 1, "name": "object"}]}


# -- a folder of images (formats/converters/image_folder.py) ---------------------------------------------------

def image_files(root):
    """Image files in `root`: extensions in any case, a subfolder, an EXIF-turned photo, a broken file, another
    kind of file, a hidden file; returns `root`."""
    (root / "sub").mkdir(parents=True)
    (root / "A.JPG").write_bytes((EXAMPLES / "sample" / "images" / "chelsea.jpg").read_bytes())  # 451x300
    Image.new("RGB", (30, 20), (1, 2, 3)).save(root / "sub" / "b.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x10, displayed turned: 10x40
    Image.new("RGB", (40, 10)).save(root / "sub" / "turned.jpeg", exif=exif)
    Image.new("L", (5, 7)).save(root / "c.TiF")
    (root / "broken.webp").write_bytes(b"RIFF0000WEBPnot an image")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(b"x")
    return root


# -- ODVG JSON lines (formats/converters/odvg.py) --------------------------------------------------------------

CAP = "a dog and a cat near zq"


def write_lines(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def od(filename="a.jpg", w=200, h=100, instances=()):
    return {"filename": filename, "height": h, "width": w, "detection": {"instances": list(instances)}}


def vg(regions, caption=CAP, filename="a.jpg", w=200, h=100):
    return {"filename": filename, "height": h, "width": w, "grounding": {"caption": caption, "regions": regions}}


# -- Open Images CSVs (formats/converters/openimages.py) -------------------------------------------------------

HEADER = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
CLASSES = "/m/01g317,Person\n/m/0k4j,Car\n/m/01yrx,Cat\n"
SIZES = {"000a1249af2bc5f0": (400, 300), "0b6f22bf3b586889": (200, 100), "1111111111111111": (50, 50)}
ROWS = [  # deliberately not sorted by ImageID
    ("0b6f22bf3b586889", "/m/0k4j", 0.1, 0.5, 0.2, 0.6, 0),
    ("000a1249af2bc5f0", "/m/01g317", 0.0, 0.5, 0.0, 0.5, 0),
    ("0b6f22bf3b586889", "/m/01yrx", 0.5, 0.9, 0.1, 0.9, 1),
    ("1111111111111111", "/m/01yrx", 0.1, 0.9, 0.1, 0.9, 1),  # this image has group-of boxes only
    ("000a1249af2bc5f0", "/m/0k4j", 0.25, 0.75, 0.5, 1.0, 0),
    ("000a1249af2bc5f0", "/m/zzzz", 0.1, 0.2, 0.1, 0.2, 0),  # unknown class
    ("0b6f22bf3b586889", "/m/0k4j", 0.6, 0.4, 0.1, 0.2, 0),  # XMin > XMax
    ("../../etc", "/m/0k4j", 0.1, 0.2, 0.1, 0.2, 0),  # not an image id
]


def write_inputs(tmp_path, header_in_classes: bool = False):
    ann = tmp_path / "ann"
    ann.mkdir()
    lines = [HEADER] + [f"{i},xclick,{m},1,{x1},{x2},{y1},{y2},0,0,{g},0,0" for i, m, x1, x2, y1, y2, g in ROWS]
    (ann / "oidv6-train-annotations-bbox.csv").write_text("\n".join(lines) + "\n")
    (ann / "class-descriptions-boxable.csv").write_text(("LabelName,DisplayName\n" if header_in_classes else "") + CLASSES)
    images = tmp_path / "train"
    images.mkdir()
    for i, (w, h) in SIZES.items():
        Image.new("RGB", (w, h), (120, 80, 40)).save(images / f"{i}.jpg")
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("ImageID,width,height\n" + "".join(f"{i},{w},{h}\n" for i, (w, h) in SIZES.items()))
    return ann, images, sizes


# -- webdataset shards (formats/converters/img2dataset.py) -----------------------------------------------------

def image_bytes(w: int, h: int, fmt: str = "JPEG", color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), color, np.uint8)).save(buf, fmt)
    return buf.getvalue()


def write_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def meta(key: str, **more) -> bytes:
    return json.dumps({"key": key, "status": "success", "url": f"http://x/{key}.jpg", "sha256": "ab" * 32,
                       **more}).encode()

