"""EL2N and EL2Nx for segmentation (Paul et al. 2021; method-notes.md section 4).

EL2N of a voxel is ||softmax(z) - onehot(y)||_2 over the CLASS axis; a crop's EL2N is the mean of that
norm over its voxels (voxel-normalised, so crops and volumes of any size compare), EL2Nx the mean over
its foreground voxels (y != 0) only. The research code applied softmax along a spatial axis for EL2Nx;
here the softmax is always over the class axis (dim 1).

Crops pool like Dice counts: ``el2n_sums`` returns (sum of voxel norms, voxel count) per item, sums
add up over a case's crops and epochs, and ``pooled_mean`` divides.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["voxel_error_norm", "el2n_sums", "pooled_mean", "el2n", "el2nx"]


def voxel_error_norm(logits: torch.Tensor, label: torch.Tensor, probabilities: bool = False) -> torch.Tensor:
    """||softmax(logits) - onehot(label)||_2 of every voxel, over the class axis.

    Args:
        logits: shape (B, C, *spatial) network outputs (or probabilities with ``probabilities=True``).
        label: class indices, shape (B, 1, *spatial) or (B, *spatial).
        probabilities: ``logits`` already sum to 1 over dim 1; no softmax is applied.

    Returns:
        float tensor of shape (B, *spatial).
    """
    logits = torch.as_tensor(logits).float()
    label = torch.as_tensor(label)
    if label.ndim == logits.ndim:
        label = label[:, 0]
    if label.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"label shape {tuple(label.shape)} does not fit logits {tuple(logits.shape)}")
    probs = logits if probabilities else torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(label.long(), logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    return torch.linalg.vector_norm(probs - onehot, dim=1)


def el2n_sums(logits: torch.Tensor, label: torch.Tensor, probabilities: bool = False) -> np.ndarray:
    """Per-item sums for EL2N and EL2Nx, to pool over crops and epochs.

    Args:
        logits: shape (B, C, *spatial); label: (B, 1, *spatial) class indices.

    Returns:
        float64 array of shape (B, 2, 2): ``[:, 0] = (sum of norms, number of voxels)`` over all voxels
        (EL2N) and ``[:, 1]`` the same over foreground voxels (EL2Nx; (0, 0) without foreground).
    """
    norms = voxel_error_norm(logits, label, probabilities).detach().flatten(1).double()
    fg = (torch.as_tensor(label).reshape(norms.shape[0], -1) != 0).to(norms.device)
    out = torch.stack(
        [
            torch.stack([norms.sum(1), torch.full_like(norms[:, 0], norms.shape[1])], dim=1),
            torch.stack([(norms * fg).sum(1), fg.sum(1).double()], dim=1),
        ],
        dim=1,
    )
    return out.cpu().numpy()


def pooled_mean(sums: np.ndarray) -> np.ndarray:
    """sum / count of pooled ``(..., 2)`` sums; NaN where the count is 0 (no voxel, e.g. no foreground)."""
    sums = np.asarray(sums, dtype=np.float64)
    total, count = sums[..., 0], sums[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan)


def el2n(logits: torch.Tensor, label: torch.Tensor, probabilities: bool = False) -> np.ndarray:
    """EL2N of each item: mean over its voxels of the per-voxel error norm. Shape (B,)."""
    return pooled_mean(el2n_sums(logits, label, probabilities)[:, 0])


def el2nx(logits: torch.Tensor, label: torch.Tensor, probabilities: bool = False) -> np.ndarray:
    """EL2Nx of each item: the same mean over foreground voxels (label != 0) only; NaN without any. Shape (B,)."""
    return pooled_mean(el2n_sums(logits, label, probabilities)[:, 1])
