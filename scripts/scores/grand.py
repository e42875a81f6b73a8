"""A LAST-LAYER approximation of GraNd (Paul et al. 2021; method-notes.md section 4).

GraNd is the expected norm of the loss gradient w.r.t. ALL network parameters. This module takes the
norm of the gradient w.r.t. the parameters of the network's last layer only (the last module holding
parameters), which costs one forward pass and a backward pass through that layer alone, at one
checkpoint (no expectation over initialisations). The record names it ``grand_last_layer``. The
research code hard-wired GraNd to 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["last_layer", "grad_norm", "last_layer_grand"]


def last_layer(network: torch.nn.Module) -> torch.nn.Module:
    """The last module (in registration order) that holds parameters of its own."""
    found = [m for m in network.modules() if any(True for _ in m.parameters(recurse=False))]
    if not found:
        raise ValueError("the network has no parameters")
    return found[-1]


def grad_norm(loss: torch.Tensor, params: Sequence[torch.Tensor], retain_graph: bool = False) -> float:
    """||d loss / d params||_2 over all the given parameter tensors together."""
    grads = torch.autograd.grad(loss, list(params), retain_graph=retain_graph, allow_unused=True)
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))


def last_layer_grand(
    network: torch.nn.Module,
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    label: torch.Tensor,
    logits: torch.Tensor | None = None,
    boxes: Sequence[tuple[slice, ...]] | None = None,
) -> np.ndarray:
    """Per item, the gradient norm of ``loss_function(logits_i, label_i)`` w.r.t. the last layer's parameters.

    Args:
        network: the segmentation network (its last layer is found by ``last_layer``).
        loss_function: the training loss, called on one item at a time.
        image: shape (B, C_in, *spatial); label: (B, 1, *spatial).
        logits: ``network(image)`` if already computed with autograd on (saves a forward pass).
        boxes: each item's real (unpadded) voxels (``scripts.scores.vog.real_box``): the loss is taken
            there only, so padding does not dilute it; None: the whole item.

    Returns:
        float64 array of shape (B,).
    """
    params = list(last_layer(network).parameters(recurse=False))
    if logits is None:
        logits = network(torch.as_tensor(image))
    label = torch.as_tensor(label).to(logits.device)
    out = np.empty(logits.shape[0])
    for i in range(logits.shape[0]):
        box = (slice(None), slice(None), *boxes[i]) if boxes is not None else (slice(None),)
        item_logits, item_label = logits[i : i + 1][box], label[i : i + 1][box]
        out[i] = grad_norm(loss_function(item_logits.float(), item_label), params, retain_graph=True)
    return out
