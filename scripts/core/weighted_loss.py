"""Per-crop loss weights that are exact for the batch losses of MONAI the bundle trains with (issue 25,
item 3): ``DiceCELoss`` and ``DiceLoss``, with ``batch=True`` (configs/train.yaml) or not.

What "exact" means here: a crop i of weight w_i contributes to the loss, and so to the gradient, as if
it appeared w_i times in the batch; at w_i = 0 it is not in the batch at all (zero gradient). For
integer weights the weighted loss equals the configured loss of the batch with each crop repeated
w_i times; real weights extend that linearly. The sums this rests on are additive over crops:

- Dice, ``batch=True``: per class c, tp_c = sum_i w_i tp_ic and fp_c, fn_c alike (tp_ic the soft
  overlap of crop i, with MONAI's ``compute_tp_fp_fn``: squared predictions when ``squared_pred``),
  then MONAI's f_c = 1 - (2 tp_c + s_nr) / (2 tp_c + fp_c + fn_c + s_dr) (Jaccard: fp, fn not halved),
  times the class weight, averaged (or summed) over the classes.
- Dice, ``batch=False``: f_ic per crop; the mean is sum_ic w_i f_ic / (C sum_i w_i).
- Cross entropy: l_iv per voxel (torch's, with its class weights and label smoothing); the mean is
  sum_iv w_i l_iv / sum_iv w_i a_iv, a_iv the class weight of the voxel's label (1 without weights),
  which is torch's own normaliser over the repeated batch. Binary (one channel): the voxel mean.

A sum of per-crop losses weighted by w_i (what the dynamic mode did up to 0.6.1) is not this: a batch
Dice is a ratio of sums, not a mean of per-crop losses, so a crop at weight 0 still had a gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from monai.losses.utils import compute_tp_fp_fn
from monai.networks import one_hot

__all__ = ["WeightedLoss", "supported_loss"]


def supported_loss(loss: torch.nn.Module) -> str | None:
    """None when ``loss`` can be weighted exactly, else why not (named for the error message)."""
    if not isinstance(loss, (DiceCELoss, DiceLoss)):
        return f"{type(loss).__name__} is not MONAI's DiceCELoss or DiceLoss"
    dice = loss.dice if isinstance(loss, DiceCELoss) else loss
    if dice.ignore_index is not None:
        return "ignore_index is not supported"
    if dice.reduction not in ("mean", "sum"):
        return f"reduction {dice.reduction!r} is not 'mean' or 'sum'"
    return None


def _dice_terms(dice: DiceLoss, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """MONAI's DiceLoss up to its reduction over the batch: per-crop (B, C) tp, fp, fn."""
    n_ch = pred.shape[1]
    if dice.sigmoid:
        pred = torch.sigmoid(pred)
    if dice.softmax and n_ch > 1:
        pred = torch.softmax(pred, 1)
    if dice.other_act is not None:
        pred = dice.other_act(pred)
    if dice.to_onehot_y and n_ch > 1:
        target = one_hot(target, num_classes=n_ch)
    if not dice.include_background and n_ch > 1:
        pred, target = pred[:, 1:], target[:, 1:]
    if target.shape != pred.shape:
        raise ValueError(f"ground truth has a different shape ({target.shape}) from the prediction ({pred.shape})")
    spatial = list(range(2, pred.dim()))
    return compute_tp_fp_fn(pred, target, spatial, 2 if dice.squared_pred else 1, dice.soft_label)


def _weighted_dice(dice: DiceLoss, pred: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    tp, fp, fn = _dice_terms(dice, pred, target)
    if not dice.jaccard:
        fp, fn = 0.5 * fp, 0.5 * fn
    wc = w.to(tp)[:, None]
    if dice.batch:  # the batch's sums: each crop's counted w_i times
        tp, fp, fn = ((wc * t).sum(0, keepdim=True) for t in (tp, fp, fn))
    f = 1 - (2 * tp + dice.smooth_nr) / (2 * (tp + fp + fn) + dice.smooth_dr)
    if dice.class_weight is not None and f.shape[1] != 1:
        f = f * torch.broadcast_to(dice.class_weight.to(f), (f.shape[1],))
    if not dice.batch:
        f = wc * f  # each crop's loss w_i times
    if dice.reduction == "sum":
        return f.sum()
    count = f.shape[1] * (1 if dice.batch else wc.sum())
    return f.sum() / count if count > 0 else f.sum() * 0


def _weighted_ce(loss: DiceCELoss, pred: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (pred.dim() - 1)
    if pred.shape[1] == 1:  # MONAI's binary cross entropy on one channel
        bce = loss.binary_cross_entropy
        per_voxel = F.binary_cross_entropy_with_logits(pred, target.to(pred), pos_weight=bce.pos_weight,
                                                       reduction="none")  # fmt: skip
        norm = torch.ones_like(per_voxel)
        reduction = bce.reduction
    else:
        ce = loss.cross_entropy
        if target.shape[1] == 1:
            target = target[:, 0].long()
            norm = ce.weight.to(pred)[target] if ce.weight is not None else torch.ones_like(target, dtype=pred.dtype)
        else:  # probabilities per class: torch averages over the voxels
            target = target.to(pred)
            norm = torch.ones_like(pred[:, 0])
        per_voxel = F.cross_entropy(pred, target, weight=ce.weight, reduction="none",
                                    label_smoothing=ce.label_smoothing)  # fmt: skip
        reduction = ce.reduction
        shape = (-1,) + (1,) * (per_voxel.dim() - 1)
    wv = w.to(per_voxel).reshape(shape)
    total = (wv * per_voxel).sum()
    if reduction == "sum":
        return total
    denominator = (wv * norm).sum()
    return total / denominator if denominator > 0 else total * 0


class WeightedLoss:
    """The configured loss with a weight per crop (see the module docstring for what it computes).

    Args:
        loss: the trainer's loss, MONAI's ``DiceCELoss`` or ``DiceLoss``; anything else is refused with
            the reason, since its weights could not be made exact.
    """

    def __init__(self, loss: torch.nn.Module) -> None:
        problem = supported_loss(loss)
        if problem:
            raise ValueError(
                f"dynamic pruning weights each crop's loss exactly for MONAI's DiceCELoss and DiceLoss; the trainer's "
                f"loss cannot be: {problem}. Fix: use one of them as `loss` (configs/train.yaml) or train without "
                "configs/dynamic.yaml"
            )
        self.loss = loss

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The loss of a batch (B, C, ...) in which crop i counts ``weight[i]`` (>= 0) times."""
        weight = torch.as_tensor(weight, device=pred.device).flatten()
        if weight.shape[0] != pred.shape[0] or bool((weight < 0).any()):
            raise ValueError(f"{weight.shape[0]} weights (each >= 0) for a batch of {pred.shape[0]} crops")
        if isinstance(self.loss, DiceLoss):
            return _weighted_dice(self.loss, pred, target, weight)
        dice = _weighted_dice(self.loss.dice, pred, target, weight)
        return self.loss.lambda_dice * dice + self.loss.lambda_ce * _weighted_ce(self.loss, pred, target, weight)
