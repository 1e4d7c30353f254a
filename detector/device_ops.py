"""Batched tensor operations of the model actor, in plain torch (no torchvision): they run where the model
runs (GPU on clusters, CPU in CI) and launch a fixed number of kernels per batch, not per box.

Conventions: images are ``(B, H, W, 3)`` uint8 canvases whose top-left ``(h, w)`` is the image (the rest is
padding); boxes are absolute-pixel ``xyxy`` in the canvas's pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def normalize_pad(canvas: torch.Tensor, sizes: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_values (B, 3, H, W) float32, pixel_mask (B, H, W) int64) from uint8 canvases (B, H, W, 3).

    Rescale by 1/255, normalise with `mean`/`std` (per channel), and zero everything outside each image's
    ``sizes[b] = (h, w)``: what transformers' DETR-family processors produce with ``pad_size=(H, W)``
    (resize -> rescale -> normalise -> pad with 0 at the bottom and right, mask 1 on the image).
    """
    B, H, W, _ = canvas.shape
    mean = torch.as_tensor(mean, dtype=torch.float32, device=canvas.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=canvas.device).view(1, 3, 1, 1)
    x = canvas.permute(0, 3, 1, 2).float().mul_(1 / 255.0).sub_(mean).div_(std)
    mask = valid_mask(sizes, H, W)
    return x.mul_(mask[:, None].to(x.dtype)), mask.long()


def assemble_canvases(flat: torch.Tensor, offsets: list[int], shipped: list[tuple[int, int]],
                      resized: list[tuple[int, int]], H: int, W: int) -> torch.Tensor:
    """uint8 canvases ``(B, H, W, 3)`` from images packed in one flat uint8 tensor (row-major HWC each,
    image b at ``flat[offsets[b]:offsets[b + 1]]``, of size ``shipped[b] = (h, w)``).

    An image shipped at its resized size ``resized[b]`` is copied to the canvas's top-left; a smaller one is
    enlarged to it first: bilinear (``align_corners=False``, the sampling PIL's bilinear filter uses when
    enlarging), rounded to uint8: within 1/255 of PIL's pixels (PIL rounds between its two passes). The rest
    of the canvas is left as is: ``normalize_pad`` zeroes it.
    """
    out = torch.empty((len(shipped), H, W, 3), dtype=torch.uint8, device=flat.device)
    for b, ((h, w), (rh, rw)) in enumerate(zip(shipped, resized)):
        img = flat[offsets[b]:offsets[b + 1]].view(h, w, 3)
        if (h, w) != (rh, rw):
            x = img.permute(2, 0, 1)[None].float()
            img = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)[0].round_().clamp_(0, 255)
            img = img.to(torch.uint8).permute(1, 2, 0)
        out[b, :rh, :rw] = img
    return out


def valid_mask(sizes: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, H, W) bool: True on each image's top-left ``sizes[b] = (h, w)`` block of the canvas."""
    ys = torch.arange(H, device=sizes.device)[None, :, None] < sizes[:, 0, None, None]
    xs = torch.arange(W, device=sizes.device)[None, None, :] < sizes[:, 1, None, None]
    return ys & xs


def positive_map(token_spans: torch.Tensor, width: int) -> torch.Tensor:
    """(N, P, width) float: row p averages the tokens ``[start, end)`` of ``token_spans[n, p]``.

    A phrase's tokens are contiguous in its prompt; an empty span (``start == end``, padding phrases) gives a
    zero row. This is the phrase-to-token map MMDetection's grounding heads average token scores with.
    """
    t = torch.arange(width, device=token_spans.device)
    s, e = token_spans[..., 0:1], token_spans[..., 1:2]
    m = ((t >= s) & (t < e)).float()
    return m / m.sum(-1, keepdim=True).clamp_min(1.0)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` ``[cx, cy, w, h]`` -> ``[x1, y1, x2, y2]`` in the same units (the device-side twin of
    `formats.boxes.cxcywh_to_xyxy`, for DETR-style outputs; scale by the image size after)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of xyxy boxes ``a (..., N, 4)`` with ``b (..., M, 4)`` -> ``(..., N, M)``."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter).clamp_min(1e-9)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor,
                iou: float) -> torch.Tensor:
    """Greedy NMS within groups, for every image of a batch at once: keep mask ``(B, K)``.

    ``boxes (B, K, 4)`` xyxy, ``scores (B, K)``, ``groups (B, K)`` (a box suppresses only boxes of its own
    group: per-phrase NMS), ``valid (B, K)`` bool. Exactly the classic sequential rule (highest score first; a
    kept box removes later boxes of its group with IoU > `iou`), run as K vectorised steps over the batch
    instead of one loop per image, so the kernels launched do not grow with the batch size.
    """
    B, K = scores.shape
    if K == 0:
        return valid.clone()
    order = torch.where(valid, scores, torch.full_like(scores, -math.inf)).argsort(dim=1, descending=True, stable=True)
    bx = boxes.gather(1, order[..., None].expand(B, K, 4))
    gr = groups.gather(1, order)
    va = valid.gather(1, order)
    suppress = (box_iou(bx, bx) > iou) & (gr[:, :, None] == gr[:, None, :])
    suppress &= torch.ones(K, K, dtype=torch.bool, device=boxes.device).triu(1)  # only later boxes
    keep = va.clone()
    for k in range(K):
        keep &= ~(suppress[:, k, :] & keep[:, k:k + 1])
    out = torch.zeros_like(keep)
    return out.scatter_(1, order, keep)


def square_context_boxes(boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """The square region a crop is cut from: the box grown by `margin` of its size on each side, then its
    short side extended (about the centre) to the long side. ``(..., 4)`` xyxy in, xyxy out.

    No centre crop: a 60x180 standing person is judged on all of its 180 px, with image context beside it.
    """
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    side = torch.maximum(w, h) * (1 + 2 * margin)
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], -1)


MAX_LEVEL = 3
GUARD_ROWS = 2 ** MAX_LEVEL  # zero rows a canvas keeps below its image (``ResizeRule.canvas``)


def crop_resize(images: torch.Tensor, regions: torch.Tensor, image_index: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear crops ``(M, C, size, size)`` of ``regions (M, 4)`` (xyxy pixels) from ``images (B, C, H, W)``,
    crop m cut from image ``image_index[m]``.

    Past the image's border the crop reads 0 (the caller passes normalised images whose padding is 0, i.e.
    the model's mean colour). A crop downscaled by 2x or more reads from an average-pooled pyramid level
    (2x, 4x, 8x), so a 900-px box is not aliased the way one bilinear sample per output pixel would alias it
    (the role of antialiased resizing in CLIP's processor).

    The batch is sampled as one atlas (the images stacked vertically, a view when ``images`` is channels-last,
    as ``normalize_pad`` makes it): one ``grid_sample`` per pyramid level for every crop of every image, so the
    kernels launched do not grow with the batch. Exactness at the seams needs the canvases' bottom
    ``GUARD_ROWS`` rows to be padding (zero), which ``ResizeRule.canvas`` guarantees; samples above or below
    their own canvas are zeroed.
    """
    B, C, H, W = images.shape
    M = regions.shape[0]
    out = images.new_zeros(M, C, size, size)
    if M == 0:
        return out
    side = (regions[:, 2] - regions[:, 0]).clamp_min(1e-3)
    level = torch.floor(torch.log2((side / size).clamp_min(1.0))).clamp(0, MAX_LEVEL).long()
    t = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size
    x = regions[:, 0, None] + t * (regions[:, 2] - regions[:, 0])[:, None]  # (M, S) canvas pixels
    y = regions[:, 1, None] + t * (regions[:, 3] - regions[:, 1])[:, None]
    atlas = images.permute(0, 2, 3, 1).reshape(1, B * H, W, C).permute(0, 3, 1, 2)  # (1, C, B*H, W)
    for lvl in sorted(set(level.tolist())):
        while lvl and atlas.shape[2] > B * H >> lvl:  # canvases are multiples of 64 px: levels halve exactly
            atlas = F.avg_pool2d(atlas, 2)
        f = float(2 ** lvl)
        idx = torch.nonzero(level == lvl).flatten()
        gx = (2 * x[idx] / W - 1)[:, None, :].expand(-1, size, size)
        ya = y[idx] + (image_index[idx] * H)[:, None]  # rows of the atlas (level-0 pixels)
        gy = (2 * ya / (B * H) - 1)[:, :, None].expand(-1, size, size)
        g = torch.stack([gx, gy], -1).reshape(1, -1, size, 2).to(atlas.dtype)
        # align_corners=False: -1/+1 are the outer edges of the atlas at every pyramid level
        s = F.grid_sample(atlas, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        inside = (y[idx] >= -0.5 * f) & (y[idx] < H - 0.5 * f)  # (m, S): rows of the crop's own canvas
        s = s.reshape(C, len(idx), size, size).transpose(0, 1) * inside[:, None, :, None].to(s.dtype)
        out[idx] = s
    return out
