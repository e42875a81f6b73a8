"""Label-quality scores from the libraries that own them, on a whole volume's softmax.

- cleanlab's segmentation "softmin" score (``cleanlab.segmentation.rank.get_label_quality_scores``):
  it takes 2D images (N, H, W), and the softmin score ignores the spatial layout, so a volume's voxels
  are flattened into one (1, V, 1) image. In [0, 1]; LOW = the label is likely wrong.
- MONAI's ``monai.metrics.label_quality_score``: mean |softmax - onehot(label)| over voxels and
  classes (background included). HIGH = the label disagrees with the model.

Neither is re-implemented here: these are thin adapters of shapes. Both average over the voxels they
are given: pass a case's real voxels only (crop padding away, ``scripts.scores.vog.real_box``), or
padded background enters the average (``CheckpointScorer`` crops).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["cleanlab_score", "monai_label_quality"]


def cleanlab_score(probs: np.ndarray, label: np.ndarray, temperature: float = 0.1) -> float:
    """cleanlab's softmin label-quality score of one volume.

    Args:
        probs: class probabilities, shape (C, *spatial), summing to 1 over C.
        label: class indices, shape (*spatial) or (1, *spatial).
    """
    from cleanlab.segmentation.rank import get_label_quality_scores

    probs = np.asarray(probs, dtype=np.float64)
    label = np.asarray(label).reshape(-1).astype(np.int64)
    if probs.reshape(probs.shape[0], -1).shape[1] != label.size:
        raise ValueError(f"probabilities {probs.shape} and label of {label.size} voxels do not match")
    scores, _ = get_label_quality_scores(
        label.reshape(1, -1, 1),
        probs.reshape(1, probs.shape[0], -1, 1),
        method="softmin",
        verbose=False,
        temperature=temperature,
    )
    return float(scores[0])


def monai_label_quality(probs: torch.Tensor, label: torch.Tensor) -> np.ndarray:
    """MONAI's ``label_quality_score`` (mean reduction, background included) per item.

    Args:
        probs: shape (B, C, *spatial) probabilities; label: class indices (B, 1, *spatial).

    Returns:
        float64 array of shape (B,).
    """
    from monai.metrics import label_quality_score

    probs = torch.as_tensor(probs).float()
    label = torch.as_tensor(label).long().to(probs.device)
    onehot = torch.nn.functional.one_hot(label[:, 0], probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    out = label_quality_score(probs, onehot, include_background=True, scalar_reduction="mean")
    return out.reshape(probs.shape[0], -1).mean(1).double().cpu().numpy()
