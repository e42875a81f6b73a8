"""Per-case Dice for validation and evaluation with the same definition as the dynamics record.

One definition everywhere (``scripts.core.dynamics``): per foreground class 2|P∩Y| / (|P| + |Y|), undefined
(NaN) when neither prediction nor label has that class; a case's Dice is the mean over its defined
classes, NaN when none is. So a false positive on an empty label scores 0 (MONAI's ``MeanDice`` with
``ignore_empty=True`` would skip it), and an empty label left empty is not counted at all.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from scripts.core.dynamics import case_dice, pooled_dice

__all__ = ["CaseDice", "class_dice_of_onehot"]


def class_dice_of_onehot(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dice per item and foreground class, NaN where undefined.

    Args:
        y_pred, y: one-hot tensors of shape (B, C, *spatial), channel 0 the background.

    Returns:
        float64 tensor (B, C - 1).
    """
    if y_pred.shape != y.shape:
        raise ValueError(f"prediction shape {tuple(y_pred.shape)} does not match label shape {tuple(y.shape)}")
    p = y_pred[:, 1:].flatten(2).bool()
    t = y[:, 1:].flatten(2).bool()
    counts = torch.stack([(p & t).sum(-1), p.sum(-1), t.sum(-1)], dim=1)  # (B, 3, C-1)
    return torch.as_tensor(pooled_dice(counts.cpu().numpy()))


class CaseDice(CumulativeIterationMetric):
    """MONAI cumulative metric: buffers each case's class Dice (B, C-1), aggregates to the mean over cases of
    the case Dice (classes averaged where defined), skipping undefined cases. Wrap it with
    ``monai.handlers.IgniteMetricHandler`` so ``MetricsSaver`` gets the per-case details."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return class_dice_of_onehot(y_pred, y)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            return torch.tensor(float("nan"))
        cases = case_dice(data.cpu().numpy().astype(np.float64))
        defined = cases[~np.isnan(cases)]
        return torch.tensor(float(defined.mean()) if defined.size else float("nan"))
