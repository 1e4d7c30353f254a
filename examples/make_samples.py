"""Rebuilds the bundled samples from the photos scikit-image ships (run once; the outputs are committed).

- examples/sample/images/*.jpg and examples/sample/gold.json: seven real photos with boxes drawn by hand
  (COCO format), the small gold set used as gold training and evaluation data.
- examples/sample/captions.tsv: CC3M-style ``caption<TAB>url`` lines (urls on 127.0.0.1, one dead on purpose).
- examples/cc3m_sample/: what ``img2dataset`` writes for that TSV (webdataset shards + parquet + stats),
  produced by really running img2dataset against a local http.server.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "sample"
CC3M = HERE / "cc3m_sample"

# name -> (caption, [(category, [x1, y1, x2, y2]), ...]); boxes drawn by hand on a 50 px grid
PHOTOS = {
    "astronaut": ("an astronaut in an orange space suit smiles next to a model of a space shuttle and an american flag",
                  [("person", [20, 15, 370, 512]), ("helmet", [275, 343, 512, 512]),
                   ("rocket", [352, 0, 472, 285]), ("flag", [0, 0, 95, 430])]),
    "chelsea": ("close up of a tabby cat with green eyes", [("cat", [0, 0, 451, 300])]),
    "coffee": ("a cup of coffee on a red saucer with a spoon on a wooden table",
               [("cup", [170, 15, 420, 305]), ("plate", [75, 65, 480, 390]), ("spoon", [325, 65, 425, 325])]),
    "rocket": ("a rocket stands on the launch pad between towers at dusk",
               [("rocket", [300, 125, 340, 410]), ("tower", [0, 0, 90, 427]), ("tower", [555, 0, 640, 427]),
                ("tower", [165, 120, 210, 410]), ("tower", [435, 120, 470, 427])]),
    "motorcycle_left": ("a red motorcycle parked in a garage in front of shelves with boxes",
                        [("motorcycle", [90, 70, 685, 450]), ("box", [525, 45, 600, 100]),
                         ("box", [610, 195, 690, 275])]),
    "motorcycle_right": ("the same red motorcycle seen from a second camera", []),
    "camera": ("a man in a black coat looks through a camera on a tripod",
               [("person", [0, 65, 335, 512]), ("camera", [255, 135, 330, 190]), ("tripod", [230, 190, 410, 512])]),
}


def photo(name: str) -> np.ndarray:
    import skimage.data as d

    if name.startswith("motorcycle"):
        left, right, _ = d.stereo_motorcycle()
        return left if name.endswith("left") else right
    img = getattr(d, name)()
    return np.stack([img] * 3, axis=-1) if img.ndim == 2 else img


def write_gold() -> None:
    (SAMPLE / "images").mkdir(parents=True, exist_ok=True)
    cats = sorted({c for _, boxes in PHOTOS.values() for c, _ in boxes})
    images, anns = [], []
    for i, (name, (_, boxes)) in enumerate(PHOTOS.items(), start=1):
        arr = photo(name)
        Image.fromarray(arr).save(SAMPLE / "images" / f"{name}.jpg", quality=88)
        h, w = arr.shape[:2]
        images.append({"id": i, "file_name": f"{name}.jpg", "width": w, "height": h})
        for c, (x1, y1, x2, y2) in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cats.index(c) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    doc = {"info": {"description": "ovlabel sample: scikit-image photos, boxes drawn by hand"},
           "images": images, "annotations": anns,
           "categories": [{"id": k + 1, "name": c} for k, c in enumerate(cats)]}
    (SAMPLE / "gold.json").write_text(json.dumps(doc, indent=1) + "\n")


def write_cc3m(port: int = 0) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SAMPLE / "images"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    lines = [f"{cap}\t{base}/{name}.jpg" for name, (cap, _) in PHOTOS.items()]
    lines.append(f"a photo that is no longer online\t{base}/gone.jpg")
    tsv = "\n".join(lines) + "\n"
    (SAMPLE / "captions.tsv").write_text(tsv.replace(base, "http://127.0.0.1:8000"))
    from img2dataset import download

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "cc3m.tsv"
        src.write_text("caption\turl\n" + tsv)
        shutil.rmtree(CC3M, ignore_errors=True)
        download(url_list=str(src), input_format="tsv", url_col="url", caption_col="caption",
                 output_format="webdataset", output_folder=str(CC3M), processes_count=1, thread_count=4,
                 image_size=512, resize_mode="keep_ratio", resize_only_if_bigger=True, encode_quality=90,
                 timeout=5, retries=0, enable_wandb=False, number_sample_per_shard=1000, distributor="multiprocessing")
    server.shutdown()


if __name__ == "__main__":
    write_gold()
    write_cc3m()
    print(f"wrote {SAMPLE} and {CC3M}")
