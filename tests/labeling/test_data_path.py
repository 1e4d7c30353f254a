"""The pseudo-labeling data path, stage by stage and without Ray: resize rule, device preprocessing against the
transformers processor, batch independence, CLIP crops, NMS, resource planning, declared columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import EXAMPLES
from PIL import Image

from detector.device_ops import batched_nms, crop_resize, normalize_pad, square_context_boxes
from detector.preprocess import ResizeRule
from formats.boxes import nms
from labeling.image_stages import LoadImages, canvas_groups
from labeling.model_stage import ModelStage
from labeling.stage import Resources, Stage, StageError
from workflows.ray_stages import ResourceError, plan_resources

SAMPLE = EXAMPLES / "sample" / "images"


@pytest.fixture(scope="module")
def processor():
    """Grounding DINO's image processor at its real settings (800/1333, bilinear, ImageNet mean/std)."""
    from transformers import GroundingDinoImageProcessorPil

    return GroundingDinoImageProcessorPil()


def test_resize_rule_is_the_processors(processor):
    rule = ResizeRule.from_processor(processor)
    assert (rule.shortest_edge, rule.longest_edge, rule.resample) == (800, 1333, 2)
    for w, h in [(500, 375), (375, 500), (3000, 400), (800, 800), (1333, 800), (451, 300), (64, 2000)]:
        im = Image.new("RGB", (w, h), (10, 20, 30))
        shape = processor(images=[im], return_tensors="pt")["pixel_values"].shape
        assert rule.resized(w, h) == (shape[3], shape[2]), (w, h)
    assert rule.resized(500, 375) == (1066, 800) and rule.canvas(1066, 800) == (1088, 832)
    assert rule.resized(3000, 400) == (1333, 178) and rule.canvas(1333, 178) == (1344, 192)


@pytest.mark.parametrize("names", [("coffee.jpg",), ("rocket.jpg", "chelsea.jpg", "camera.jpg")])
@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_device_pixel_values_equal_the_processor(processor, names, scale):
    """CPU stage + device canvases + normalise/pad == the processor with pad_size=canvas.

    Images the processor shrinks (photos at 2x) are resized on the CPU with PIL: the same uint8 pixels, so
    equal to 1e-5 (float32 order of operations). Images it enlarges (photos at 0.5x, like CC3M's 500x375) are
    enlarged on the device: within 1/255 of PIL's uint8 pixels before normalisation."""
    from detector.device_ops import assemble_canvases

    rule = ResizeRule.from_processor(processor)
    loader = LoadImages(rule)
    images = []
    for n in names:
        im = Image.open(SAMPLE / n).convert("RGB")
        images.append(im.resize((round(im.width * scale), round(im.height * scale))))
    prepared = [loader.prepare(im) for im in images]
    ch = max(z[4] for _, z in prepared)
    cw = max(z[5] for _, z in prepared)
    flat = torch.frombuffer(bytearray(b"".join(d for d, _ in prepared)), dtype=torch.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d, _ in prepared])]).tolist()
    enlarged = [z[0] * z[1] < z[2] * z[3] for _, z in prepared]  # these travel at their decoded size
    assert all(enlarged) if scale < 1 else not all(enlarged)
    canvas = assemble_canvases(flat, offsets, [z[0:2] for _, z in prepared], [z[2:4] for _, z in prepared], ch, cw)
    sizes = torch.tensor([z[2:4] for _, z in prepared])
    pv, pm = normalize_pad(canvas, sizes, processor.image_mean, processor.image_std)
    ref = processor(images=images, return_tensors="pt", pad_size={"height": ch, "width": cw})
    assert pv.shape == ref["pixel_values"].shape and torch.equal(pm, ref["pixel_mask"])
    for k, up in enumerate(enlarged):
        tol = 1 / 255 / min(processor.image_std) + 1e-5 if up else 1e-5
        assert (pv[k] - ref["pixel_values"][k]).abs().max().item() <= tol, names[k]


def _rows(names: list[str], phrases: list[list[str]]) -> pa.Table:
    caps = [" . ".join(p) for p in phrases]
    ph = []
    for cap, ps in zip(caps, phrases):
        at, items = 0, []
        for p in ps:
            s = cap.index(p, at)
            items.append({"phrase": p, "tokens_positive": [[s, s + len(p)]]})
            at = s + len(p)
        ph.append(items)
    return pa.table({"image_id": [f"t/{i}" for i in range(len(names))], "file_name": names,
                     "image_root": [str(SAMPLE)] * len(names), "caption": caps,
                     "phrases": pa.array(ph, pa.list_(pa.struct([("phrase", pa.string()),
                                                                 ("tokens_positive", pa.list_(pa.list_(pa.int32(), 2)))])))})


def _score(tiny_models, table: pa.Table, batch_size: int) -> pa.Table:
    from transformers import AutoProcessor

    from labeling.prompt_stages import TokenizePrompts

    proc = AutoProcessor.from_pretrained(tiny_models["detector"]).image_processor
    t = LoadImages(ResizeRule.from_processor(proc))(table)
    t = TokenizePrompts(str(tiny_models["detector"]), str(tiny_models["clip"]), max_tokens=256)(t)
    stage = ModelStage({"detector": str(tiny_models["detector"]), "clip": str(tiny_models["clip"]), "device": "cpu",
                        "batch_size": batch_size, "box_threshold": 0.0, "top_k": 12, "candidate_nms_iou": 0.7})
    return stage(t)


def test_an_image_alone_and_in_a_mixed_batch_gives_the_same_candidates(tiny_models):
    names = ["coffee.jpg", "rocket.jpg", "chelsea.jpg", "motorcycle_left.jpg", "camera.jpg", "astronaut.jpg"]
    phrases = [["cup", "red saucer"], ["rocket", "towers"], ["tabby cat", "eyes"], ["red motorcycle"], ["camera"], []]
    table = _rows(names, phrases)
    mixed = _score(tiny_models, table, batch_size=5).to_pylist()
    assert len({(r["canvas_h"], r["canvas_w"]) for r in mixed}) >= 2  # the batch really mixes canvases
    for i in range(len(names)):
        (alone,) = _score(tiny_models, table.slice(i, 1), batch_size=1).to_pylist()
        m = mixed[i]
        assert alone["cand_phrase"] == m["cand_phrase"] and (len(alone["cand_det"]) > 0) == bool(phrases[i])
        for col, tol in (("cand_boxes", 1e-3), ("cand_det", 1e-5), ("cand_clip", 1e-5)):
            assert np.allclose(np.array(alone[col]), np.array(m[col]), rtol=0, atol=tol), col
        assert abs(alone["image_score"] - m["image_score"]) < 1e-5
        w, h = Image.open(SAMPLE / names[i]).size
        b = np.array(m["cand_boxes"]).reshape(-1, 4)
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all() and (b[:, 2] >= b[:, 0]).all()


def test_unreadable_images_get_an_error_and_no_batch(tiny_models, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    Image.new("RGB", (4000, 1)).save(tmp_path / "thin.png")  # the processor's rule makes it 1333x0
    table = pa.table({"image_id": ["a", "b", "c", "d"], "file_name": ["coffee.jpg", "bad.jpg", "../escape.jpg", "thin.png"],
                      "image_root": [str(SAMPLE), str(tmp_path), str(tmp_path), str(tmp_path)]})
    out = LoadImages(ResizeRule())(table)
    err = out.column("error").to_pylist()
    assert err[0] is None and "cannot decode" in err[1] and err[2] is not None
    assert err[3] == "thin.png: 4000x1 is too thin for the detector's resize (to 1333x0)"
    assert out.column("pixels").to_pylist()[1] is None
    assert [g.tolist() for g in canvas_groups(out, 4)] == [[0]]
    a = np.frombuffer(out.column("pixels")[0].as_py(), np.uint8)
    assert a.size == out.column("pixel_h")[0].as_py() * out.column("pixel_w")[0].as_py() * 3
    # coffee.jpg (600x400) is enlarged by the processor to 1200x800: it travels at 600x400
    assert [out.column(c)[0].as_py() for c in ("pixel_w", "pixel_h", "resized_w", "resized_h", "image_w")] == \
        [600, 400, 1200, 800, 600]


def test_clip_crop_keeps_a_tall_object_whole_with_square_context():
    """A 60x180 standing "person" (red) on light grey: the crop is square, holds all of it, and context beside it."""
    img = np.full((1, 400, 500, 3), 200, np.uint8)
    img[0, 100:280, 200:260] = (255, 0, 0)
    canvas = torch.from_numpy(img)
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    src, _ = normalize_pad(canvas, torch.tensor([[400, 500]]), mean, std)
    box = torch.tensor([[200.0, 100.0, 260.0, 280.0]])
    region = square_context_boxes(box, margin=0.1)
    assert region[0].tolist() == pytest.approx([122.0, 82.0, 338.0, 298.0])  # 216 x 216 about the centre
    crop = crop_resize(src, region, torch.tensor([0]), 224)[0]  # (3, 224, 224)
    red = (crop[0] > 1.5) & (crop[1] < -1.5)  # normalised red: R=(1-.5)/.25=2, G=-2
    rows = torch.nonzero(red.any(1)).flatten()
    cols = torch.nonzero(red.any(0)).flatten()
    # the object spans 180/216 of the crop's height: rows 18/216..198/216 of 224, all of it inside
    assert rows.min().item() == pytest.approx(18 / 216 * 224, abs=2) and rows.max().item() == pytest.approx(198 / 216 * 224, abs=2)
    assert (cols.max() - cols.min()).item() == pytest.approx(60 / 216 * 224, abs=2)
    assert not red[0].any() and not red[-1].any() and not red[:, 0].any()  # grey context around it
    # past the image's border the crop reads the mean colour (0 after normalisation)
    corner = crop_resize(src, square_context_boxes(torch.tensor([[0.0, 0.0, 40.0, 40.0]]), 0.5), torch.tensor([0]), 32)[0]
    assert corner[:, 0, 0].abs().max().item() < 1e-6 and corner[:, -1, -1].abs().max().item() > 0.1


def test_large_crops_are_not_aliased():
    """A fine 1-px stripe pattern downscaled 4x averages to grey (pyramid level), not to the stripes' colour."""
    img = np.zeros((1, 896, 896, 3), np.uint8)
    img[0, :, ::2] = 255
    src, _ = normalize_pad(torch.from_numpy(img), torch.tensor([[896, 896]]), [0, 0, 0], [1, 1, 1])
    crop = crop_resize(src, torch.tensor([[0.0, 0.0, 896.0, 896.0]]), torch.tensor([0]), 224)[0]
    assert crop[:, 8:-8, 8:-8].mean().item() == pytest.approx(0.5, abs=0.02)
    assert crop[:, 8:-8, 8:-8].std().item() < 0.05


@pytest.mark.parametrize("seed", range(30))
def test_batched_nms_is_the_sequential_greedy_rule(seed):
    rng = np.random.default_rng(seed)
    B, K = 3, int(rng.integers(1, 40))
    xy = rng.uniform(0, 100, (B, K, 2))
    wh = rng.uniform(1, 60, (B, K, 2))
    boxes = np.concatenate([xy, xy + wh], -1)
    scores = rng.uniform(0, 1, (B, K)).round(2)  # ties too
    groups = rng.integers(0, 3, (B, K))
    valid = rng.uniform(0, 1, (B, K)) > 0.2
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups),
                       torch.from_numpy(valid), 0.5).numpy()
    for b in range(B):
        idx = np.flatnonzero(valid[b])
        ref = idx[nms(boxes[b, idx], scores[b, idx], 0.5, groups[b, idx])]
        assert sorted(np.flatnonzero(keep[b]).tolist()) == sorted(ref.tolist())


class _Probe(Stage):
    name = "probe"
    reads = ("a",)
    adds = ("b",)

    def __init__(self, add: bool = True):
        self.add = add
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def process(self, batch: pa.Table) -> pa.Table:
        return batch.append_column("b", batch.column("a")) if self.add else batch


def test_stages_check_their_declared_columns_and_set_up_once():
    s = _Probe()
    assert s(pa.table({"a": [1, 2]})).column("b").to_pylist() == [1, 2]
    s(pa.table({"a": [3]}))
    assert s.setups == 1
    with pytest.raises(StageError, match=r"stage probe: the batch has no column\(s\) \['a'\]"):
        s(pa.table({"x": [1]}))
    with pytest.raises(StageError, match=r"declared column\(s\) \['b'\] were not added"):
        _Probe(add=False)(pa.table({"a": [1]}))


class _Gpu(Stage):
    name = "model"
    actor = True
    resources = Resources(cpus=1.0, gpus=1.0, memory=4e9)


class _Cpu(Stage):
    name = "decode"
    resources = Resources(cpus=1.0)


def test_resources_scale_to_the_cluster():
    one = plan_resources([_Cpu(), _Gpu()], cluster_cpus=1, cluster_gpus=0, cluster_memory=8e9)
    assert one["model"].resources == Resources(cpus=0.5, gpus=0.0, memory=2e9) and one["model"].pool == 1
    assert one["decode"].resources == Resources(cpus=0.5, gpus=0.0) and one["decode"].pool is None
    two = plan_resources([_Cpu(), _Gpu()], cluster_cpus=2, cluster_gpus=0)
    assert two["model"].resources.cpus == 1.0 and two["decode"].resources.cpus == 1.0
    node = plan_resources([_Cpu(), _Gpu()], cluster_cpus=16, cluster_gpus=2)
    assert node["model"].resources == Resources(cpus=1.0, gpus=1.0, memory=4e9) and node["model"].pool == 2
    assert node["decode"].resources.cpus == 1.0
    assert plan_resources([_Cpu(), _Gpu()], 16, 2, {"model": 1})["model"].pool == 1
    with pytest.raises(ResourceError, match="3 actors x 1.0 GPU exceed the cluster's 2"):
        plan_resources([_Cpu(), _Gpu()], 16, 2, {"model": 3})
    with pytest.raises(ResourceError, match="no CPUs"):
        plan_resources([_Cpu(), _Gpu()], 0, 0)


def test_crops_of_a_batch_never_read_a_neighbouring_image():
    """The batch is sampled as one stacked atlas: a crop reaching past its canvas reads padding (0), not the
    next image, and a crop is the same whether its image is cut alone or in a batch."""
    rule = ResizeRule(shortest_edge=64, longest_edge=128)
    assert rule.canvas(128, 120) == (128, 128) and rule.canvas(128, 121) == (128, 192)  # >= 8 padding rows
    canvas = np.zeros((2, 128, 128, 3), np.uint8)  # image 0: black; image 1: white; both 120 px high
    canvas[1] = 255
    sizes = torch.tensor([[120, 128], [120, 128]])
    src, _ = normalize_pad(torch.from_numpy(canvas), sizes, [0, 0, 0], [1, 1, 1])
    regions = torch.tensor([[0.0, 64.0, 128.0, 192.0], [0.0, 0.0, 128.0, 128.0], [0.0, 60.0, 100.0, 160.0]])
    crops = crop_resize(src, regions, torch.tensor([0, 1, 1]), 32)
    assert crops[0].abs().max().item() == 0.0  # black image, then padding, never image 1's white
    alone = crop_resize(src[1:], regions[1:], torch.tensor([0, 0]), 32)
    assert torch.allclose(crops[1:], alone, atol=1e-6)
    rows = crops[2][0].mean(1)  # rows 60..120 of the image are white: the crop's top 60 %, then padding
    assert rows[:18].min().item() > 0.99 and rows[21:].max().item() == 0.0
    with pytest.raises(ValueError, match="multiple of 8"):
        ResizeRule(canvas_multiple=12)


def test_records_take_the_decoded_size_their_boxes_are_in():
    from labeling.stages import _decoded_sizes

    t = pa.table({"width": pa.array([200, 640], pa.int32()), "height": pa.array([100, 480], pa.int32()),
                  "image_w": pa.array([100, 0], pa.int32()), "image_h": pa.array([200, 0], pa.int32()),
                  "error": [None, "cannot decode"]})
    out = _decoded_sizes(t)  # an EXIF-rotated image recorded unrotated; a failed row keeps its record's size
    assert out.column("width").to_pylist() == [100, 640] and out.column("height").to_pylist() == [200, 480]


def test_run_settings_are_checked():
    from workflows.pseudo_label import PseudoConfig, RunOptions

    for bad in (0, -1):
        with pytest.raises(ValueError, match="images_per_part must be a positive integer"):
            PseudoConfig(images_per_part=bad)
        with pytest.raises(ValueError, match="batch-size must be >= 1"):
            RunOptions(batch_size=bad)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        PseudoConfig(top_k=0)



def test_a_gpu_stage_gets_its_rows_per_call_from_ray_data():
    """Ray Data refuses whole-block batches (batch_size None) for a stage that requests GPUs; found on an H200.
    Here a Ray with a declared GPU runs the stage on the CPU: each call gets `rows_per_call` rows, none lost."""
    import ray

    from workflows.ray_stages import Placement, apply_stage

    class _GpuRows(Stage):  # defined here: Ray's workers take it by value (tests/ is not importable there)
        """Records how many rows each call got (a GPU actor stage as the model stage declares it)."""

        name = "gpu-rows"
        actor = True
        resources = Resources(cpus=1.0, gpus=1.0, memory=1e8)
        reads = ("a",)
        adds = ("call_rows",)

        def process(self, batch: pa.Table) -> pa.Table:
            return batch.append_column("call_rows", pa.array([batch.num_rows] * batch.num_rows, pa.int64()))

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=100 << 20,
             log_to_driver=False)
    try:
        place = Placement(Resources(cpus=1.0, gpus=1.0, memory=1e8), 1)
        ds = ray.data.from_items([{"a": i} for i in range(7)], override_num_blocks=2)
        with pytest.raises(ResourceError, match="stage gpu-rows: a stage placed on a GPU must declare rows_per_call"):
            apply_stage(ds, _GpuRows(), place)
        stage = _GpuRows()
        stage.rows_per_call = 3
        rows = apply_stage(ds, stage, place).take_all()
    finally:
        ray.shutdown()
    assert sorted(r["a"] for r in rows) == list(range(7))
    assert sorted(r["call_rows"] for r in rows) == [1, 3, 3, 3, 3, 3, 3]
    assert stage.rows_per_call == 3 and _GpuRows.rows_per_call is None
