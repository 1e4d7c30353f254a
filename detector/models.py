"""Loading models the same way for hub ids and local folders, and choosing device and precision."""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger("ovlabel.models")

DEFAULT_DETECTOR = "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"


def pick_device(device: str | None = None) -> str:
    """`device` if given, else "cuda" when a GPU is visible, else "cpu"."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast(device: str, precision: str = "auto"):
    """bf16 (or fp16) autocast on GPU, nothing on CPU (fp32 there keeps runs deterministic)."""
    import torch

    if not device.startswith("cuda") or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


def load_pretrained(cls, name_or_dir: str, *, trust_remote_code: bool = False, **kw):
    """``cls.from_pretrained`` with remote code off unless asked, and a clear error when offline.

    Raises OSError naming `name_or_dir` and how to get a model (``ovlabel models tiny``) when loading fails."""
    try:
        return cls.from_pretrained(name_or_dir, trust_remote_code=trust_remote_code, **kw)
    except OSError as e:
        raise OSError(f"cannot load {name_or_dir!r}: {e}. Pass a local folder (ovlabel models tiny --out DIR "
                      "writes small test models) or make the Hugging Face Hub reachable.") from None
