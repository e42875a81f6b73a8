"""Per-case data-pruning scores beside DAD (issue 10; method-notes.md section 4).

One module per score, each a set of plain functions over arrays/tensors with shapes in the docstrings:

- ``el2n``: EL2N and EL2Nx (voxel-normalised ||softmax - onehot||_2, whole crop / foreground voxels).
- ``vog``: variance of gradients of the true-class probability w.r.t. the input over checkpoints.
- ``forgetting``: forgetting events by a Dice threshold, from the Dice matrix of the record.
- ``loss``: mean per-case training loss.
- ``grand``: a LAST-LAYER approximation of GraNd (gradient norm of the loss w.r.t. the last layer).
- ``center_norm``: robust z-score of a score within each center (median / MAD).
- ``label_quality``: cleanlab's segmentation softmin score and MONAI's ``label_quality_score``.

``SCORES`` says, for every score column of the record, which direction is hard and which selection
strategy its paper prescribes (docs/baseline_scores.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SCORES", "ScoreSpec", "hardness", "ease"]


@dataclass(frozen=True)
class ScoreSpec:
    """How a per-case score reads.

    Attributes:
        higher_is_harder: True when a larger value means a harder (or more suspicious) case.
        strategy: the selection strategy its paper prescribes for pruning (``scripts.core.selection``
            names: "ambiguous" keeps the middle band, "hard" keeps the hardest, "easy" drops the hardest).
        reference: where the prescription comes from.
        missing: what a missing (NaN) value means for this score (docs/scores.md). Everywhere a missing
            value is a case the score does not rank: selection puts it first in the hardest-first order
            (so "hard" keeps it, "easy" and CCS's cut drop it) and says so (``scripts.core.strategies``);
            fault detection leaves it out and reports the count beside the AUROC/AUPRC.
    """

    higher_is_harder: bool
    strategy: str
    reference: str
    missing: str = "the case was not scored (not seen in the window, or before the score's first pass)"


SCORES: dict[str, ScoreSpec] = {
    "dad": ScoreSpec(False, "ambiguous", "He et al. 2023 (the paper): keep the ambiguous middle band",
                     "no defined Dice in the window: label and prediction empty at every measured epoch "
                     "(an empty label the network leaves empty), or the case not measured there"),
    "dad_center_z": ScoreSpec(False, "ambiguous", "DAD's band, after a robust z-score within each center",
                              "DAD is missing (a center without spread gets 0, not NaN)"),
    "dad_center_pooled": ScoreSpec(False, "ambiguous", "DAD's band, after a z-score against each center's median "
                                   "and spread shrunk toward all cases' (small centers judged mostly against all)",
                                   "DAD is missing"),
    "el2n": ScoreSpec(True, "hard", "Paul et al. 2021: keep the highest-EL2N (hardest) examples"),
    "el2nx": ScoreSpec(True, "hard", "He et al. 2023 (EL2N on foreground voxels): as EL2N",
                       "no foreground voxel in the label (an empty label: EL2Nx is undefined, not large), "
                       "or the case not seen in the window"),
    "loss": ScoreSpec(True, "hard", "loss-based pruning keeps the high-loss examples, as EL2N"),
    "grand_last_layer": ScoreSpec(True, "hard", "Paul et al. 2021 (GraNd): keep the largest gradient norms",
                                  "no checkpoint pass yet"),
    "vog": ScoreSpec(True, "hard", "Agarwal et al. 2022: high VoG = hard; keep the hardest, as the paper's Fig. 4",
                     "fewer than 2 checkpoint passes so far (a variance over checkpoints needs 2)"),
    "forgetting": ScoreSpec(True, "hard", "Toneva et al. 2019: drop the unforgettable (never-forgotten) examples",
                            "no defined Dice up to the epoch (as DAD)"),
    "cleanlab": ScoreSpec(False, "easy", "cleanlab label quality: drop the lowest-quality labels (likely issues)",
                          "no checkpoint pass yet"),
    "monai_lq": ScoreSpec(True, "easy", "MONAI label_quality_score (|p - y|): drop the worst-agreeing labels",
                          "no checkpoint pass yet"),
}  # fmt: skip


def hardness(values: np.ndarray, score: str) -> np.ndarray:
    """The score oriented so that a larger value is harder (NaN stays NaN). Shape (n,) -> (n,)."""
    values = np.asarray(values, dtype=np.float64)
    return values if SCORES[score].higher_is_harder else -values


def ease(values: np.ndarray, score: str) -> np.ndarray:
    """The score oriented as DAD (low = hard), the orientation ``scripts.core.selection`` strategies take."""
    return -hardness(values, score)
