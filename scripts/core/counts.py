"""Overlap counts computed with torch where the outputs live (CPU or GPU), for the DAD tracker.

The same numbers as ``scripts.core.dynamics.foreground_counts`` (numpy), without copying predictions to
the host every iteration: the tracker keeps these small per-item tensors on the device and moves
them once per epoch.
"""

from __future__ import annotations

import torch

__all__ = ["class_indices", "confusion_torch", "counts_of_confusion", "foreground_counts_torch"]


def class_indices(pred: torch.Tensor) -> torch.Tensor:
    """Predicted class index of every voxel: (B, C, *spatial) logits or probabilities -> (B, *spatial).

    ``max(dim=1).indices`` rather than ``argmax(dim=1)``: the same indices (the first maximum on a
    tie), but on CPU ``argmax`` over the channel dimension of a (8, 2, 32, 32, 32) batch is several
    times slower (33 ms against 8 ms measured on this project's machine).
    """
    return pred.max(dim=1).indices


def confusion_torch(classes: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each item's voxel counts per (label, predicted) class pair: int64 (B, num_classes**2), row-major
    (label * num_classes + prediction). Counts add up over crops; ``counts_of_confusion`` turns them into
    the Dice counts. One bincount over the batch: about 3x faster on CPU than a comparison per class (8 crops
    of 32^3, 3 classes), and fewer kernels on a GPU. A label value that is no class counts as background.

    Args:
        classes: predicted class indices, shape (B, *spatial).
        label: ground-truth class indices, shape (B, *spatial) or (B, 1, *spatial), any dtype.
        num_classes: classes including background.
    """
    if label.dim() == classes.dim() + 1:
        label = label[:, 0]
    if label.shape != classes.shape:
        raise ValueError(f"prediction shape {tuple(classes.shape)} does not match label shape {tuple(label.shape)}")
    batch, k = classes.shape[0], num_classes
    truth = label.to(device=classes.device, dtype=torch.int64)
    truth = torch.where((truth >= 0) & (truth < k), truth, 0)
    item = torch.arange(0, batch * k, k, device=classes.device).view(batch, *([1] * (classes.dim() - 1)))
    index = (item + truth) * k + classes
    return torch.bincount(index.reshape(-1), minlength=batch * k * k).view(batch, k * k)


def counts_of_confusion(confusion: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(..., num_classes**2) confusion counts -> (..., 3, num_classes - 1): (|P ∩ Y|, |P|, |Y|) per foreground class."""
    square = confusion.reshape(*confusion.shape[:-1], num_classes, num_classes)  # [..., label, prediction]
    inter = torch.diagonal(square, dim1=-2, dim2=-1)[..., 1:]
    return torch.stack([inter, square.sum(dim=-2)[..., 1:], square.sum(dim=-1)[..., 1:]], dim=-2)


def foreground_counts_torch(classes: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-item counts (|P ∩ Y|, |P|, |Y|) of every foreground class.

    Args:
        classes: predicted class indices, shape (B, *spatial).
        label: ground-truth class indices, shape (B, *spatial) or (B, 1, *spatial), any dtype; a value that is
            no class counts as no class's label.
        num_classes: classes including background (class 0 is not counted).

    Returns:
        int64 tensor of shape (B, 3, num_classes - 1) on ``classes``' device.
    """
    return counts_of_confusion(confusion_torch(classes, label, num_classes), num_classes)
