"""Variance of Gradients, VoG (Agarwal et al., CVPR 2022; method-notes.md section 4).

The paper's definition, carried over to segmentation: at each of K checkpoints, S_k = the pre-softmax
logit of the ground-truth class, summed over the case's real voxels (a segmentation's per-voxel
predictions, each the paper's "true-class logit"), is differentiated with respect to the INPUT on the
same fixed, non-augmented volume (never a random crop, never the loss gradient as the research code
had it); the gradient is averaged over input channels (the paper averages colour channels) to one
value per voxel. VoG is the MEAN over real voxels of the per-voxel STANDARD DEVIATION over the K
checkpoints (population, 1/K):

    VoG = 1/|R| sum_{v in R} sqrt(1/K sum_k (G_k(v) - mean_k G(v))^2)

A sum (not a mean) over voxels keeps each voxel's gradient independent of the volume's size, and R,
the real (unpadded) voxels, keeps padding out of both the sum and the average (``real_box``). The
class normalisation of the classification paper has no per-case analogue here and is not applied.
Checkpoints arrive one at a time, so the variance is accumulated with Welford's method.

A variant, not the default, is kept under its own name: ``probability_rms`` (the true-class
PROBABILITY's gradient of the voxel mean, and the square root of the mean variance), what this
module computed before release 0.5; it shrinks as 1/V and mixes softmax saturation into the score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "real_box",
    "true_class_logit_gradient",
    "true_class_probability_gradient",
    "vog",
    "vog_probability_rms",
    "RunningVariance",
]

Box = tuple[slice, ...]


def real_box(mask: torch.Tensor | np.ndarray | None, spatial_shape: tuple[int, ...], case: str = "") -> Box:
    """The spatial slices of the real (unpadded) voxels of one item.

    Args:
        mask: the item's padding mask, shape (1, *spatial) or (*spatial), nonzero on real voxels (from
            ``scripts.data.transforms.PaddingMaskd``); None: every voxel is real.
        spatial_shape: the item's spatial shape.
        case: the case id, for the error message.

    Padding adds whole border slabs, so the real voxels form a box; a mask that is not one is refused.
    """
    if mask is None:
        return tuple(slice(0, n) for n in spatial_shape)
    m = torch.as_tensor(mask).detach().cpu().reshape(spatial_shape) != 0
    if not m.any():
        raise ValueError(f"case {case!r}: its padding mask marks no real voxel; the score loader's mask is broken")
    idx = torch.nonzero(m)
    lo, hi = idx.min(0).values.tolist(), (idx.max(0).values + 1).tolist()
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    if not bool(m[box].all()):
        raise ValueError(
            f"case {case!r}: its padding mask is not a box of real voxels (padding adds border slabs only); "
            "build it with scripts.data.transforms.PaddingMaskd after the last padding transform"
        )
    return box


def true_class_logit_gradient(
    network: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, boxes: list[Box] | None = None
) -> torch.Tensor:
    """d S / d image averaged over input channels, S = sum over item i's real voxels v of logits[y_v](v).

    Each item's S depends on its own input only (use ``network.eval()`` so batch norm uses its running
    statistics), so one backward pass gives every item's gradient.

    Args:
        network: maps (B, C_in, *spatial) to logits (B, C, *spatial).
        image: shape (B, C_in, *spatial); label: class indices (B, 1, *spatial).
        boxes: each item's real voxels (``real_box``); None: all voxels.

    Returns:
        the gradient, shape (B, *spatial), detached; crop it to each item's box before ``vog``.
    """
    x = torch.as_tensor(image).detach().float().clone().requires_grad_(True)
    logits = network(x).float()
    true = logits.gather(1, torch.as_tensor(label).long().to(logits.device))
    if boxes is None:
        score = true.sum()
    else:
        score = sum(true[i, 0][box].sum() for i, box in enumerate(boxes))
    (grad,) = torch.autograd.grad(score, x)
    return grad.detach().mean(1)


def true_class_probability_gradient(network: torch.nn.Module, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The ``probability_rms`` variant's gradient: d S / d image, S = the mean over voxels of the softmax
    probability of the true class. Shape (B, C_in, *spatial), detached."""
    x = torch.as_tensor(image).detach().float().clone().requires_grad_(True)
    probs = torch.softmax(network(x).float(), dim=1)
    true = probs.gather(1, torch.as_tensor(label).long().to(probs.device))
    score = true.flatten(1).mean(1).sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad.detach()


def _check_k(k: int) -> None:
    if k < 2:
        raise ValueError(f"VoG needs at least 2 checkpoints, got {k}")


def vog(gradients: np.ndarray) -> float:
    """VoG of one case from its K per-voxel gradients (real voxels only): the mean over voxels of the
    population standard deviation over the K checkpoints (Agarwal et al.).

    Args:
        gradients: shape (K, *spatial), K >= 2 checkpoints.
    """
    g = np.asarray(gradients, dtype=np.float64)
    _check_k(g.shape[0])
    return float(g.std(axis=0).mean())


def vog_probability_rms(gradients: np.ndarray) -> float:
    """The ``probability_rms`` variant: sqrt(mean over elements of the variance over K). Shape (K, ...)."""
    g = np.asarray(gradients, dtype=np.float64)
    _check_k(g.shape[0])
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
        """Mean over elements of the population std over the checkpoints so far; NaN before the second."""
        if self.count < 2 or self.m2 is None:
            return float("nan")
        return float(np.sqrt(np.maximum(self.m2, 0.0) / self.count).mean())

    def probability_rms(self) -> float:
        """sqrt(mean population variance) (the variant's reduction); NaN before the second checkpoint."""
        if self.count < 2 or self.m2 is None:
            return float("nan")
        return float(np.sqrt((self.m2 / self.count).mean()))

    def state_dict(self) -> dict[str, Any]:
        """What ``load_state_dict`` needs to go on exactly where this left off (for resume.pt)."""
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        self.mean = None if state["mean"] is None else np.array(state["mean"], dtype=np.float64)
        self.m2 = None if state["m2"] is None else np.array(state["m2"], dtype=np.float64)
