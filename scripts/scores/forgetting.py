"""Forgetting events (Toneva et al. 2019) for segmentation, by a Dice threshold.

A case is *learned* at an epoch when its Dice is >= ``threshold``; a forgetting event is a learned
epoch followed by an unlearned one (epochs whose Dice is undefined are skipped, the comparison is
between consecutive defined values). A case never learned counts as forgotten more often than any
learned one could be: it gets the number of epochs (columns), above the floor(T/2) events that T
epochs allow at most, the finite stand-in for Toneva et al.'s "infinitely forgotten".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["forgetting_events", "forgetting_at"]


def forgetting_events(dice: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Forgetting events per case.

    Args:
        dice: per-case Dice over epochs in order, shape (n_cases, T); NaN where undefined.
        threshold: Dice at or above which a case counts as learned.

    Returns:
        float64 array (n_cases,): event counts; T for a case never learned; NaN with no defined Dice.
    """
    dice = np.asarray(dice, dtype=np.float64)
    out = np.full(dice.shape[0], np.nan)
    for i, row in enumerate(dice):
        values = row[~np.isnan(row)]
        if values.size == 0:
            continue
        learned = values >= threshold
        out[i] = np.sum(learned[:-1] & ~learned[1:]) if learned.any() else dice.shape[1]
    return out


def forgetting_at(dice: np.ndarray, epochs: Sequence[int], epoch: int, threshold: float = 0.5) -> np.ndarray:
    """Forgetting events counted over the recorded epochs <= ``epoch`` (shape (n_cases,))."""
    epochs = np.asarray(epochs)
    return forgetting_events(np.asarray(dice)[:, epochs <= epoch], threshold)
