"""Grounding DINO's training loss from transformers, with one fix: label-map offsets in batches.

transformers 5.23 (``GroundingDinoImageLoss._get_target_classes_one_hot``) offsets the class labels of
image i by the size of image i's *own* label map instead of the sizes of the images before it, so any batch
of two or more images whose prompts have different numbers of phrases trains on wrong targets or fails with
an IndexError. `grounding_loss` is the library's loss with cumulative offsets; `detector.train` installs it
on the model (``model.loss_function = grounding_loss``).

The label maps (which tokens are which class) are the model's, read from the separator tokens. When the
targets carry their own ``label_map`` (``detector.train`` builds it from the prompt's character spans,
``detector.prompts.label_maps``), the two must agree: a disagreement means a phrase was split or lost by a
separator and every later class would be trained on its neighbour's tokens, so it is an error, never
silent wrong supervision.
"""

from __future__ import annotations

import torch
from transformers.loss.loss_for_object_detection import _set_aux_loss
from transformers.loss.loss_grounding_dino import GroundingDinoHungarianMatcher, GroundingDinoImageLoss


class _ImageLoss(GroundingDinoImageLoss):
    def _get_target_classes_one_hot(self, outputs, targets, indices):
        logits = outputs["logits"]
        sizes = [len(m) for m in outputs["label_maps"]]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        class_labels = torch.cat([t["class_labels"][J] + starts[i] for i, (t, (_, J)) in enumerate(zip(targets, indices))])
        label_maps = torch.cat(outputs["label_maps"], dim=0)
        idx = self._get_source_permutation_idx(indices)
        onehot = torch.zeros_like(logits, device=logits.device, dtype=torch.long)
        onehot[idx] = label_maps[class_labels].to(torch.long)
        return onehot


def grounding_loss(logits, labels, device, pred_boxes, config, label_maps, text_mask, outputs_class=None,
                   outputs_coord=None, encoder_logits=None, encoder_pred_boxes=None):
    """Same signature and terms as transformers' GroundingDinoForObjectDetectionLoss."""
    label_maps = checked_label_maps(label_maps, labels)
    matcher = GroundingDinoHungarianMatcher(class_cost=config.class_cost, bbox_cost=config.bbox_cost,
                                            giou_cost=config.giou_cost)
    criterion = _ImageLoss(matcher=matcher, focal_alpha=config.focal_alpha, losses=["labels", "boxes", "cardinality"])
    criterion.to(device)
    outputs = {"logits": logits, "pred_boxes": pred_boxes, "label_maps": label_maps, "text_mask": text_mask}
    aux = None
    if config.auxiliary_loss:
        aux = _set_aux_loss(outputs_class, outputs_coord)
        for a in aux:
            a["label_maps"], a["text_mask"] = label_maps, text_mask
        outputs["auxiliary_outputs"] = aux
    loss_dict = criterion(outputs, labels)
    if config.two_stage:
        enc = criterion({"logits": encoder_logits, "pred_boxes": encoder_pred_boxes, "label_maps": label_maps,
                         "text_mask": text_mask}, labels)
        loss_dict.update({k + "_enc": v for k, v in enc.items()})
    weights = {"loss_ce": 2.0, "loss_bbox": config.bbox_loss_coefficient, "loss_giou": config.giou_loss_coefficient}
    loss = sum(v * weights[loss_term(k)] for k, v in loss_dict.items() if loss_term(k) in weights)
    return loss, loss_dict, aux


def checked_label_maps(label_maps, labels: list[dict]):
    """The model's label maps, checked against the targets' span-built ``label_map`` where they have one.

    Raises `ValueError` when an image's prompt separators group its tokens differently from its phrases."""
    for i, (model_map, t) in enumerate(zip(label_maps, labels)):
        ours = t.get("label_map")
        if ours is None:
            continue
        width = model_map.shape[-1]
        ours = ours[:, :width].to(model_map.device, model_map.dtype)
        if ours.shape != model_map.shape or not torch.equal(ours, model_map):
            raise ValueError(
                f"image {i} of the batch: the prompt's separator tokens make {len(model_map)} phrase groups, its "
                f"phrases {len(ours)} (or on other tokens); build prompts with detector.prompts.join_prompt "
                f"and separator_chars(tokenizer)")
    return label_maps


def loss_term(key: str) -> str:
    """`loss_bbox_3`, `loss_bbox_enc` -> `loss_bbox`."""
    for b in ("loss_ce", "loss_bbox", "loss_giou"):
        if key == b or key.startswith(b + "_"):
            return b
    return key
