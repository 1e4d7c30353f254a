"""Which detector backend a checkpoint is, read from its own config: ``--detector DIR_OR_HUB_ID`` selects it.

``model_type == "owlv2"``: ``detector.owlv2.Owlv2Detector`` (per-phrase text queries, ``QueryEncoder``);
anything else: ``detector.grounding.GroundingDetector`` (Grounding DINO family, ``"a . b ."`` prompts,
``PromptEncoder``). Both have the interface the model actor and evaluation use (``propose``, ``detect``,
``resize_rule``, ``mean``, ``std``, ``tokenizer``, ``encoder``).
"""

from __future__ import annotations

import functools

OWLV2 = "owlv2"


@functools.lru_cache(maxsize=16)
def model_type(name: str, trust_remote_code: bool = False) -> str:
    """The checkpoint's ``config.model_type`` (``"mm-grounding-dino"``, ``"grounding-dino"``, ``"owlv2"``)."""
    from transformers import AutoConfig

    from detector.models import load_pretrained

    return str(load_pretrained(AutoConfig, name, trust_remote_code=trust_remote_code).model_type)


def load_detector(name: str, **kwargs):
    """The detector of checkpoint `name` (hub id or local folder) with the backend its config names;
    `kwargs` as ``GroundingDetector``'s (device, precision, batch_size, box_threshold, canvas_multiple, ...)."""
    if model_type(name, kwargs.get("trust_remote_code", False)) == OWLV2:
        from detector.owlv2 import Owlv2Detector

        return Owlv2Detector(name, **kwargs)
    from detector.grounding import GroundingDetector

    return GroundingDetector(name, **kwargs)


def prompt_encoder(name: str, max_tokens: int | None = None):
    """The CPU side's prompt encoder for checkpoint `name` (the tokenizer loaded here): ``QueryEncoder``
    for OWLv2 (one query per phrase, the text model's ``max_position_embeddings`` tokens each), else
    ``PromptEncoder`` within `max_tokens` (default: the config's ``max_text_len``, 256)."""
    from transformers import AutoConfig, AutoTokenizer

    from detector.prompts import PromptEncoder, QueryEncoder

    cfg = AutoConfig.from_pretrained(name)
    tok = AutoTokenizer.from_pretrained(name)
    if cfg.model_type == OWLV2:
        return QueryEncoder(tok, int(cfg.text_config.max_position_embeddings))
    return PromptEncoder(tok, int(max_tokens or getattr(cfg, "max_text_len", 256)))
