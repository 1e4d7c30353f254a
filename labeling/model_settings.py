"""`ModelSettings`: how the pseudo-labeling actor runs its models, and the candidate rule's defaults.

Kept apart from `labeling.model_stage` (which imports torch) so that configs (`workflows.pseudo_label.
PseudoConfig`, whose candidate-rule defaults are these) load without torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelSettings:
    """How the actor runs its models (recorded in the pseudo manifest through PseudoConfig/RunOptions).

    ``top_k`` candidates per prompt, ``candidate_nms_iou`` per-phrase NMS before CLIP (``None``: off),
    ``min_box_size`` px: smaller boxes are never scored. These decide which candidates ``refilter`` can see.
    """

    detector: str
    clip: str
    device: str | None = None
    precision: str = "auto"
    batch_size: int = 4
    box_threshold: float = 0.1
    clip_margin: float = 0.1
    top_k: int = 100
    candidate_nms_iou: float | None = 0.7
    min_box_size: float = 2.0
    canvas_multiple: int = 64
    round: int | None = None
    torch_threads: int | None = None  # the actor's CPU share; None leaves torch's default
    classes: list[str] | None = None  # a vocabulary: CLIP texts of its classes (labeling.prompt_stages.class_index)
    with_phrases: bool = True  # rows carry phrases (False: the vocabulary alone; rows have no phrases column)
