"""Variance of Gradients, VoG (Agarwal et al. 2022; method-notes.md section 4).

At each of K checkpoints, the gradient of the ground-truth-class probability with respect to the
INPUT is taken on the same fixed, non-augmented input of a case (never a random crop, and never the
loss gradient as the research code leaked in). VoG is the square root of the per-voxel variance over
the K checkpoints, averaged over voxels: sqrt(mean_v var_k G_k(v)), population variance (ddof=0).
The class normalisation of the classification paper has no per-case analogue in segmentation and is
not applied. Checkpoints arrive one at a time, so the variance is accumulated with Welford's method.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["true_class_probability_gradient", "vog", "RunningVariance"]


def true_class_probability_gradient(network: torch.nn.Module, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """d S / d image, where S = the mean over voxels of softmax(network(image))[y_v] at every voxel v.

    Each item's S depends on its own input only (use ``network.eval()`` so batch norm uses its running
    statistics), so one backward pass gives every item's gradient.

    Args:
        network: maps (B, C_in, *spatial) to logits (B, C, *spatial).
        image: shape (B, C_in, *spatial); label: class indices (B, 1, *spatial).

    Returns:
        the gradient, shape (B, C_in, *spatial), detached.
    """
    x = torch.as_tensor(image).detach().float().clone().requires_grad_(True)
    probs = torch.softmax(network(x).float(), dim=1)
    true = probs.gather(1, torch.as_tensor(label).long().to(probs.device))
    score = true.flatten(1).mean(1).sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad.detach()


def vog(gradients: np.ndarray) -> float:
    """VoG of one case from its K gradients: sqrt(mean over elements of the variance over K).

    Args:
        gradients: shape (K, *input_shape), K >= 2 checkpoints.
    """
    g = np.asarray(gradients, dtype=np.float64)
    if g.shape[0] < 2:
        raise ValueError(f"VoG needs at least 2 checkpoints, got {g.shape[0]}")
    return float(np.sqrt(g.var(axis=0).mean()))


class RunningVariance:
    """Welford's running mean and variance of arrays of a fixed shape, one checkpoint at a time."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float64)
        if self.mean is None:
            self.mean, self.m2 = np.zeros_like(value), np.zeros_like(value)
        elif value.shape != self.mean.shape:
            raise ValueError(f"shape {value.shape} differs from the earlier checkpoints' {self.mean.shape}")
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    def vog(self) -> float:
        """sqrt(mean population variance) over the checkpoints so far; NaN before the second."""
        if self.count < 2 or self.m2 is None:
            return float("nan")
        return float(np.sqrt((self.m2 / self.count).mean()))
