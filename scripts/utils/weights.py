"""The network weights of a checkpoint this bundle wrote, whichever of its two forms it is."""

from __future__ import annotations

import os

import torch

__all__ = ["load_state_dict"]


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network weights of a checkpoint: a plain state dict (``model.pt``), or the ``model`` entry of a
    CheckpointSaver dict (``checkpoint_final.pt``, ``resume.pt``). ``ValueError`` when it holds none;
    torch's own error when the file is not a checkpoint at all."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ValueError(f"{path} holds no state dict of network weights")
    return ckpt
