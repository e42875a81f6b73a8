"""Overlap counts computed with torch where the outputs live (CPU or GPU), for the DAD tracker.

The same numbers as ``scripts.core.dynamics.foreground_counts`` (numpy), without copying predictions to
the host every iteration: the tracker keeps these small per-item tensors on the device and moves
them once per epoch.
"""

from __future__ import annotations

import torch

__all__ = ["class_indices", "foreground_counts_torch"]


def class_indices(pred: torch.Tensor) -> torch.Tensor:
    """Predicted class index of every voxel: (B, C, *spatial) logits or probabilities -> (B, *spatial).

    ``max(dim=1).indices`` rather than ``argmax(dim=1)``: the same indices (the first maximum on a
    tie), but on CPU ``argmax`` over the channel dimension of a (8, 2, 32, 32, 32) batch is several
    times slower (33 ms against 8 ms measured on this project's machine).
    """
    return pred.max(dim=1).indices


def foreground_counts_torch(classes: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-item counts (|P ∩ Y|, |P|, |Y|) of every foreground class.

    Args:
        classes: predicted class indices, shape (B, *spatial).
        label: ground-truth class indices, shape (B, *spatial) or (B, 1, *spatial), any dtype.
        num_classes: classes including background (class 0 is not counted).

    Returns:
        int64 tensor of shape (B, 3, num_classes - 1) on ``classes``' device.
    """
    if label.dim() == classes.dim() + 1:
        label = label[:, 0]
    if label.shape != classes.shape:
        raise ValueError(f"prediction shape {tuple(classes.shape)} does not match label shape {tuple(label.shape)}")
    batch = classes.shape[0]
    pred = classes.reshape(batch, -1)
    truth = label.reshape(batch, -1).to(device=classes.device)
    per_class = []
    for c in range(1, num_classes):
        p, y = pred == c, truth == c
        per_class.append(torch.stack([(p & y).sum(dim=1), p.sum(dim=1), y.sum(dim=1)], dim=1))
    return torch.stack(per_class, dim=2)
