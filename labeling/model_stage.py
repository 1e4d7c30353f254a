"""The model actor: device work only. uint8 canvases in, candidate arrays out.

Per batch of one canvas: the rows' resized uint8 pixels are copied once into a (pinned, on GPU) host buffer
and sent with one non-blocking copy; on the device: rescale/normalise/pad, the detector forward (autocast
on GPU), phrase scores from the positive map, threshold + top-k + per-phrase NMS, then CLIP on square-context
crops of the surviving candidates only (cut from the same image tensor), and CLIP on the whole image against
the caption. The host side is array bookkeeping: no decoding, resizing, tokenizing of prompts or per-box
Python objects (the CPU stages before and after it do that). ``timings`` keeps the host's CPU seconds
(``host_s``, this thread's CPU time, so other processes do not inflate it) and the wall seconds of the
device work (``device_s``), for ``benchmarks/pseudo_throughput.py``.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from detector.device_ops import normalize_pad, square_context_boxes
from detector.preprocess import SIZE_COLUMNS
from detector.prompts import pad_prompts
from formats.arrow_np import from_numpy
from labeling.image_stages import canvas_groups
from labeling.model_settings import ModelSettings
from labeling.stage import Resources, Stage

CANDIDATE_ARRAYS = ("cand_boxes", "cand_det", "cand_clip", "cand_phrase", "image_score", "cand_objectness")


class ModelStage(Stage):
    """Adds ``cand_boxes`` (per row: (K, 4) xyxy original pixels), ``cand_det``, ``cand_clip``, ``cand_phrase``
    (what the box was found for: the row's phrase index ``>= 0``, or a vocabulary class
    ``labeling.prompt_stages.class_index(label) < 0``), ``image_score`` (CLIP image vs caption; NaN where the
    image failed) and ``cand_objectness`` (the detector's objectness of each candidate, OWLv2; NaN for a
    backend without one)."""

    name = "detect-and-score"
    resources = Resources(cpus=1.0, gpus=1.0, memory=4 << 30)  # host memory: models, buffers, batches
    actor = True
    reads = ("pixels", *SIZE_COLUMNS, "error", "phrases",
             "prompt_ids", "prompt_phrases", "prompt_token_spans", "caption_clip_ids")
    adds = CANDIDATE_ARRAYS
    drops = ("pixels", "prompt_ids", "prompt_phrases", "prompt_token_spans", "caption_clip_ids")

    def __init__(self, settings: dict | ModelSettings):
        self.s = settings if isinstance(settings, ModelSettings) else ModelSettings(**settings)
        if self.s.classes and not self.s.with_phrases:
            self.reads = tuple(c for c in ModelStage.reads if c != "phrases")
        # on a GPU, a few model batches per call (Ray Data needs a number there); the image stage cuts its
        # blocks to the same size, so most calls are one block
        self.rows_per_call = 4 * self.s.batch_size
        self.timings = {"host_s": 0.0, "forward_s": 0.0, "device_s": 0.0, "images": 0}
        self._buffer = None  # flat host buffer of shipped pixels (pinned on GPU hosts)

    def setup(self) -> None:
        import torch

        from detector.backends import load_detector
        from detector.clip_scorer import RegionScorer

        if self.s.torch_threads:
            torch.set_num_threads(self.s.torch_threads)
        self.torch = torch
        self.detector = load_detector(self.s.detector, device=self.s.device, precision=self.s.precision,
                                          batch_size=self.s.batch_size, box_threshold=self.s.box_threshold,
                                          canvas_multiple=self.s.canvas_multiple)
        self.scorer = RegionScorer(self.s.clip, device=self.s.device, precision=self.s.precision,
                                   margin=self.s.clip_margin)
        self.device = self.detector.device
        self.pin = self.device.startswith("cuda")
        self._ready = True

    def process(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        results: list = [None] * n
        for rows in canvas_groups(batch, self.s.batch_size):
            for i, res in zip(rows.tolist(), self.run_group(batch, rows)):
                results[i] = res
        return self._finish(batch, results)

    # -- one batch of one canvas ---------------------------------------------------------------------------

    def run_group(self, batch: pa.Table, rows: np.ndarray) -> list[tuple]:
        """(boxes, det, clip, phrase, objectness, image_score) per row of `rows` (all of one canvas)."""
        torch, dev = self.torch, self.device
        c0 = time.thread_time()
        packed, sizes, image_sizes = self._pack(batch, rows)
        prompts = self._prompts(batch, rows)
        if prompts is None:  # no phrases in any row: no detector call, only the image scores
            return self._images_only(batch, rows, packed, sizes, c0)
        ids, mask, spans, prompt_row, prompt_phr = prompts
        classes = self.s.classes or []
        phrases = batch.column("phrases").take(from_numpy(rows)).to_pylist() if "phrases" in self.reads else None
        caption_ids = batch.column("caption_clip_ids").take(from_numpy(rows)).to_pylist()
        t1, c1 = time.perf_counter(), time.thread_time()
        canvas = self._canvas(packed)
        sizes, image_sizes = sizes.to(dev, non_blocking=True), image_sizes.to(dev, non_blocking=True)
        prop = self.detector.propose(canvas, sizes, image_sizes, ids.to(dev, non_blocking=True),
                                     mask.to(dev, non_blocking=True), spans.to(dev, non_blocking=True),
                                     prompt_row.to(dev, non_blocking=True), top_k=self.s.top_k,
                                     nms_iou=self.s.candidate_nms_iou, min_box_size=self.s.min_box_size)
        # keep the survivors, compacted to the front of each prompt's slots
        keep = prop.keep
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
        counts = keep.sum(1)
        K = int(counts.max()) if len(counts) else 0
        order = order[:, :K]
        boxes = prop.boxes.gather(1, order[..., None].expand(-1, -1, 4))
        det = prop.scores.gather(1, order)
        local = prop.phrase.gather(1, order)
        obj = prop.objectness.gather(1, order) if prop.objectness is not None else torch.full_like(det, float("nan"))
        # CLIP on the device: crops of the survivors (canvas pixels) and the whole images
        rows_dev = prompt_row.to(dev)
        scale = (sizes.flip(1) / image_sizes)[rows_dev].repeat(1, 2)  # original px -> canvas px
        slot = torch.arange(K, device=dev)[None, :] < counts[:, None]
        # one crop pass: the survivors (square context, margin) and the whole images (square, letterboxed)
        regions = torch.cat([square_context_boxes((boxes * scale[:, None, :])[slot], self.s.clip_margin),
                             square_context_boxes(torch.cat([torch.zeros_like(sizes), sizes.flip(1)], 1).float(), 0.0)])
        index = torch.cat([rows_dev[:, None].expand(-1, K)[slot], torch.arange(len(sizes), device=dev)])
        feats = self.scorer.image_features(self.scorer.crop_pixels(prop.pixel_values, regions, index,
                                                                   self.detector.mean, self.detector.std))
        crop_feat, img_feat = feats[:len(regions) - len(sizes)], feats[len(regions) - len(sizes):]
        # the phrase text of every survivor, for the cached text embeddings
        counts_np, local_np = counts.cpu().numpy(), local.cpu().numpy()
        texts = []
        for p in range(len(counts_np)):
            own = phrases[int(prompt_row[p])] if phrases is not None else None
            for j in local_np[p, :counts_np[p]]:
                e = int(prompt_phr[p][j])  # a row's phrase (>= 0) or a class (class_index, < 0)
                texts.append(own[e]["phrase"] if e >= 0 else classes[-e - 1])
        clip = self.scorer.similarity(crop_feat, self.scorer.text_features(texts)) if texts else crop_feat.new_zeros(0)
        img_score = self.scorer.similarity(img_feat, self.scorer.token_features(caption_ids))
        out = [t.cpu().numpy() for t in (boxes[slot], det[slot], clip, img_score, obj[slot])]
        t2, c2 = time.perf_counter(), time.thread_time()
        # back to rows: prompts in order, their survivors in query order
        boxes_np, det_np, clip_np, img_np, obj_np = out
        res, at = [[[], [], [], [], []] for _ in rows], 0
        for p, c in enumerate(counts_np.tolist()):
            r = int(prompt_row[p])
            res[r][0].append(boxes_np[at:at + c])
            res[r][1].append(det_np[at:at + c])
            res[r][2].append(clip_np[at:at + c])
            res[r][3].append(np.asarray(prompt_phr[p], np.int32)[local_np[p, :c]])
            res[r][4].append(obj_np[at:at + c])
            at += c
        final = [tuple(np.concatenate(x) if x else np.zeros(0) for x in parts[:4]) + (float(img_np[k]),) +
                 (np.concatenate(parts[4]) if parts[4] else np.zeros(0),)
                 for k, parts in enumerate(res)]
        self.timings["host_s"] += (c1 - c0) + (time.thread_time() - c2)
        self.timings["device_s"] += t2 - t1
        self.timings["images"] += len(rows)
        return final

    def _images_only(self, batch: pa.Table, rows: np.ndarray, packed, sizes, c0: float) -> list[tuple]:
        dev = self.device
        t1, c1 = time.perf_counter(), time.thread_time()
        canvas = self._canvas(packed)
        sizes = sizes.to(dev, non_blocking=True)
        caption_ids = batch.column("caption_clip_ids").take(from_numpy(rows)).to_pylist()
        norm = (self.detector.mean, self.detector.std)  # as in run_group: the same score either way
        src, _ = normalize_pad(canvas, sizes, *norm)
        whole = square_context_boxes(self.torch.cat([self.torch.zeros_like(sizes), sizes.flip(1)], 1).float(), 0.0)
        feat = self.scorer.image_features(self.scorer.crop_pixels(
            src, whole, self.torch.arange(len(sizes), device=dev), *norm))
        img = self.scorer.similarity(feat, self.scorer.token_features(caption_ids)).cpu().numpy()
        t2 = time.perf_counter()
        self.timings["host_s"] += c1 - c0
        self.timings["device_s"] += t2 - t1
        self.timings["images"] += len(rows)
        return [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                 np.zeros(0, np.int32), float(v), np.zeros(0, np.float32)) for v in img]

    def _pack(self, batch: pa.Table, rows: np.ndarray):
        """Host side of the canvases: the rows' shipped pixels packed into one flat buffer (pinned on GPU hosts,
        reused), with the layout ``_canvas`` needs; and the resized (h, w) and original (w, h) sizes."""
        torch = self.torch
        col = batch.column("pixels")
        ints = {c: batch.column(c).to_numpy(zero_copy_only=False)[rows] for c in SIZE_COLUMNS}
        nbytes = ints["pixel_h"].astype(np.int64) * ints["pixel_w"] * 3
        offsets = np.concatenate([[0], np.cumsum(nbytes)]).tolist()
        if self._buffer is None or self._buffer.numel() < offsets[-1]:
            self._buffer = torch.empty(int(offsets[-1] * 1.25), dtype=torch.uint8, pin_memory=self.pin)
        view = self._buffer.numpy()
        for k, i in enumerate(rows.tolist()):
            view[offsets[k]:offsets[k + 1]] = np.frombuffer(col[i].as_buffer(), np.uint8)
        layout = (offsets, list(zip(ints["pixel_h"].tolist(), ints["pixel_w"].tolist())),
                  list(zip(ints["resized_h"].tolist(), ints["resized_w"].tolist())),
                  int(ints["canvas_h"][0]), int(ints["canvas_w"][0]))
        sizes = torch.from_numpy(np.stack([ints["resized_h"], ints["resized_w"]], 1).astype(np.int64))
        image_sizes = torch.from_numpy(np.stack([ints["image_w"], ints["image_h"]], 1).astype(np.int64))
        return layout, sizes, image_sizes

    def _canvas(self, layout):
        """Device side: one non-blocking copy of the packed pixels, then ``device_ops.assemble_canvases``."""
        from detector.device_ops import assemble_canvases

        offsets, shipped, resized, H, W = layout
        flat = self._buffer[:offsets[-1]].to(self.device, non_blocking=True)
        return assemble_canvases(flat, offsets, shipped, resized, H, W)

    def _prompts(self, batch: pa.Table, rows: np.ndarray):
        """Padded prompt tensors of the rows: ids/mask (N, T), token spans (N, P, 2), prompt -> row (N,),
        and the phrase indices of each prompt (a list per prompt)."""
        torch = self.torch
        take = from_numpy(rows)
        ids = batch.column("prompt_ids").take(take).to_pylist()
        phr = batch.column("prompt_phrases").take(take).to_pylist()
        spans = batch.column("prompt_token_spans").take(take).to_pylist()
        flat = [(r, x, p, s) for r in range(len(rows)) for x, p, s in zip(ids[r], phr[r], spans[r])]
        if not flat:
            return None
        a_ids, a_mask, a_spans = pad_prompts([f[1] for f in flat], [f[3] for f in flat],
                                             self.detector.tokenizer.pad_token_id or 0)
        return (torch.from_numpy(a_ids), torch.from_numpy(a_mask), torch.from_numpy(a_spans),
                torch.tensor([f[0] for f in flat], dtype=torch.long), [f[2] for f in flat])

    def _finish(self, batch: pa.Table, results: list) -> pa.Table:
        """The candidate arrays as list columns (rows without results: empty lists, NaN image score)."""
        c0 = time.thread_time()
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                 np.zeros(0, np.int32), np.nan, np.zeros(0, np.float32))
        res = [r if r is not None else empty for r in results]
        counts = np.array([len(r[1]) for r in res], np.int32)
        offsets = from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))

        def lst(values: list, dtype, width: int | None = None) -> pa.Array:
            flat = np.concatenate([np.asarray(v, dtype).reshape(-1) for v in values]) if values else np.zeros(0, dtype)
            inner = from_numpy(flat)
            if width:
                inner = pa.FixedSizeListArray.from_arrays(inner, width)
            return pa.ListArray.from_arrays(offsets, inner)

        out = batch.drop_columns([c for c in self.drops if c in batch.column_names])
        out = (out.append_column("cand_boxes", lst([r[0] for r in res], np.float32, 4))
               .append_column("cand_det", lst([r[1] for r in res], np.float32))
               .append_column("cand_clip", lst([r[2] for r in res], np.float32))
               .append_column("cand_phrase", lst([r[3] for r in res], np.int32))
               .append_column("image_score", from_numpy(np.array([r[4] for r in res], np.float32)))
               .append_column("cand_objectness", lst([r[5] for r in res], np.float32)))
        self.timings["host_s"] += time.thread_time() - c0
        return out
