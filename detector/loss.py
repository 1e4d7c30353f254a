"""Grounding DINO's training loss from transformers, with one fix: label-map offsets in batches.

transformers 5.23 (``GroundingDinoImageLoss._get_target_classes_one_hot``) offsets the class labels of
image i by the size of image i's *own* label map instead of the sizes of the images before it, so any batch
of two or more images whose prompts have different numbers of phrases trains on wrong targets or fails with
an IndexError. `grounding_loss` is the library's loss with cumulative offsets; `detector.train` installs it
on the model (``model.loss_function = grounding_loss``).
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


def loss_term(key: str) -> str:
    """`loss_bbox_3`, `loss_bbox_enc` -> `loss_bbox`."""
    for b in ("loss_ce", "loss_bbox", "loss_giou"):
        if key == b or key.startswith(b + "_"):
            return b
    return key
