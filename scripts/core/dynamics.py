"""Training-dynamics math: per-case Dice, DAD windows, variability, moving distance, stop rule.

Plain functions over numpy arrays (no Ignite, no MONAI), so every number can be checked by hand.
The formulas are the ones pinned down in ``shared/paper/method-notes.md`` sections 1-2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "foreground_counts",
    "pooled_dice",
    "case_dice",
    "window_bounds",
    "window_stats",
    "moving_distance",
    "stop_index",
    "jaccard",
    "overlap_stop_index",
]


def foreground_counts(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-item overlap counts for every foreground class.

    Args:
        pred: predicted class indices, shape (B, *spatial) (or (B, 1, *spatial)).
        label: ground-truth class indices, same shape as ``pred``.
        num_classes: number of classes including background (class 0 is not counted).

    Returns:
        float64 array of shape (B, 3, num_classes - 1): for each item and class, the counts
        (|P ∩ Y|, |P|, |Y|). Counts add up over crops, so summing them pools a case's crops.
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match label shape {label.shape}")
    batch = pred.shape[0]
    pred = pred.reshape(batch, -1)
    label = label.reshape(batch, -1)
    counts = np.zeros((batch, 3, num_classes - 1), dtype=np.float64)
    for c in range(1, num_classes):
        p, y = pred == c, label == c
        counts[:, 0, c - 1] = np.logical_and(p, y).sum(axis=1)
        counts[:, 1, c - 1] = p.sum(axis=1)
        counts[:, 2, c - 1] = y.sum(axis=1)
    return counts


def pooled_dice(counts: np.ndarray) -> np.ndarray:
    """Dice = 2|P∩Y| / (|P| + |Y|) per class from (summed) counts of shape (..., 3, classes).

    Undefined Dice (no foreground in prediction nor label) is NaN: it is neither a hit nor a miss.
    """
    counts = np.asarray(counts, dtype=np.float64)
    inter, psum, ysum = counts[..., 0, :], counts[..., 1, :], counts[..., 2, :]
    denom = psum + ysum
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * inter / np.where(denom > 0, denom, 1.0), np.nan)


def case_dice(class_dice: np.ndarray) -> np.ndarray:
    """A case's Dice: the mean over its foreground classes whose Dice is defined; NaN if none is.

    A class absent from the label but predicted counts as 0 (a false positive is a real miss), so an
    empty label that the network fills in scores 0: such a case may be exactly the fault to find.
    """
    class_dice = np.asarray(class_dice, dtype=np.float64)
    defined = ~np.isnan(class_dice)
    n = defined.sum(axis=-1)
    total = np.where(defined, class_dice, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def window_bounds(last_epoch: int, delta_t: int) -> list[tuple[int, int]]:
    """The complete windows (start, end] of ``delta_t`` epochs up to ``last_epoch`` (epochs from 1).

    Example: last_epoch=25, delta_t=10 -> [(0, 10), (10, 20)].
    """
    if delta_t < 1:
        raise ValueError(f"window length delta_t must be >= 1, got {delta_t}")
    return [(end - delta_t, end) for end in range(delta_t, last_epoch + 1, delta_t)]


def window_stats(dice: np.ndarray, epochs: Sequence[int], start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """DAD score and variability of every case over the epochs in (start, end].

    Args:
        dice: per-case Dice, shape (n_cases, n_epochs); NaN where undefined or not measured.
        epochs: the epoch of each column of ``dice``.
        start, end: the window is start < epoch <= end.

    Returns:
        (dad, variability), each shape (n_cases,): the mean and the population std (ddof=0) of the
        defined values in the window; NaN for a case with no defined value there.
    """
    dice = np.asarray(dice, dtype=np.float64)
    epochs = np.asarray(epochs)
    window = dice[:, (epochs > start) & (epochs <= end)]
    defined = ~np.isnan(window)
    n = defined.sum(axis=1)
    values = np.where(defined, window, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, values.sum(axis=1) / np.maximum(n, 1), np.nan)
        sq_dev = np.where(defined, (window - mean[:, None]) ** 2, 0.0)
        std = np.where(n > 0, np.sqrt(sq_dev.sum(axis=1) / np.maximum(n, 1)), np.nan)
    return mean, std


def moving_distance(
    dad_prev: np.ndarray, var_prev: np.ndarray, dad: np.ndarray, var: np.ndarray, signed: bool = False
) -> float:
    """How far all cases moved on the data map between two consecutive windows.

    Default: L = Σ_i (|Δμ_i| + |Δσ_i|). With ``signed=True`` the paper's Eq. 7 as its research code
    computed it, L = Σ_i (Δμ_i + Δσ_i), where opposite moves cancel. Cases undefined in either
    window are left out; when no case is defined in both windows (e.g. a window with no measured
    epoch) L is undefined: NaN, not 0, so it can never look settled.
    """
    d_mu = np.asarray(dad, dtype=np.float64) - np.asarray(dad_prev, dtype=np.float64)
    d_sigma = np.asarray(var, dtype=np.float64) - np.asarray(var_prev, dtype=np.float64)
    if not signed:
        d_mu, d_sigma = np.abs(d_mu), np.abs(d_sigma)
    moves = d_mu + d_sigma
    defined = ~np.isnan(moves)
    return float(np.sum(moves[defined])) if defined.any() else float("nan")


def stop_index(distances: Sequence[float], fraction: float = 0.01) -> int | None:
    """Index of the first distance that is <= ``fraction`` x the largest distance so far.

    ``distances[k]`` is L between windows k and k+1. The first L has no history to compare with,
    so the earliest index that can fire is 1; a run whose largest L is not positive never fires.
    An undefined L (NaN: a window with no measurement) neither fires nor counts towards the maximum.
    Returns None when the rule has not fired.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"stop fraction must be in (0, 1), got {fraction}")
    largest = -np.inf
    for k, value in enumerate(distances):
        if np.isnan(value):
            continue
        largest = max(largest, value)
        if k >= 1 and largest > 0 and value <= fraction * largest:
            return k
    return None


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of two boolean masks (1 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = np.sum(a | b)
    return float(np.sum(a & b) / union) if union else 1.0


def overlap_stop_index(overlaps: Sequence[float], threshold: float = 0.9) -> int | None:
    """Index of the first overlap (Jaccard of the subsets kept at two consecutive windows) that reaches
    ``threshold``: the noise-robust rule method-notes.md offers beside the 1% rule. None if never; an
    undefined overlap (NaN) never fires."""
    if not 0 < threshold <= 1:
        raise ValueError(f"overlap threshold must be in (0, 1], got {threshold}")
    for k, value in enumerate(overlaps):
        if value >= threshold:
            return k
    return None
