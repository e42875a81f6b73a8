"""Mean per-case training loss: the training loss evaluated on one item at a time, pooled over a
case's crops (and, downstream, over the window's epochs) like the other scores."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["per_item_loss", "loss_sums"]


def per_item_loss(
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor, label: torch.Tensor
) -> np.ndarray:
    """``loss_function(logits[i:i+1], label[i:i+1])`` for every item i, without gradients. Shape (B,).

    Args:
        logits: shape (B, C, *spatial); label: (B, 1, *spatial).
    """
    with torch.no_grad():
        logits = torch.as_tensor(logits).float()
        label = torch.as_tensor(label).to(logits.device)
        return np.array([float(loss_function(logits[i : i + 1], label[i : i + 1])) for i in range(logits.shape[0])])


def loss_sums(
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor, label: torch.Tensor
) -> np.ndarray:
    """(loss, 1) per item, shape (B, 2): sums pool over crops; ``el2n.pooled_mean`` gives the mean."""
    values = per_item_loss(loss_function, logits, label)
    return np.stack([values, np.ones_like(values)], axis=1)
