"""How well a score ranks the known faulty cases as the hardest: AUROC and AUPRC over plain arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["auroc", "auprc", "precision_at_k"]


def _prepare(hardness_values: Sequence[float], is_fault: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(hardness_values, dtype=np.float64)
    y = np.asarray(is_fault, dtype=bool)
    if h.shape != y.shape or h.ndim != 1:
        raise ValueError(f"{h.shape} scores for {y.shape} labels")
    # a missing score ranks as the hardest, as in scripts.core.selection.hardest_first
    return np.where(np.isnan(h), np.inf, h), y


def auroc(hardness_values: Sequence[float], is_fault: Sequence[bool]) -> float:
    """Area under the ROC curve of ranking faults as hardest (higher = harder); ties count one half
    (the Mann-Whitney U statistic / (n_pos n_neg)). NaN when either class is empty."""
    h, y = _prepare(hardness_values, is_fault)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    pos, neg = h[y], h[~y]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (n_pos * n_neg))


def auprc(hardness_values: Sequence[float], is_fault: Sequence[bool]) -> float:
    """Average precision of ranking faults as hardest: sum over distinct thresholds of
    (recall_k - recall_{k-1}) x precision_k, tied scores entering together (scikit-learn's
    ``average_precision_score``). NaN without faults."""
    h, y = _prepare(hardness_values, is_fault)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-h, kind="stable")
    h, y = h[order], y[order]
    # the last index of each tie group; compared with !=, not np.diff: two missing (+inf) scores tie, while
    # inf - inf is NaN and would make every missing case its own threshold (AP then depends on case order)
    last = np.r_[np.flatnonzero(h[1:] != h[:-1]), len(h) - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_k(hardness_values: Sequence[float], is_fault: Sequence[bool], k: int) -> float:
    """Precision among the ``k`` hardest cases (what a reviewer sees first): faults among them / k.

    A tie group straddling the k-th place counts its faults in proportion to the places it fills (the
    expected precision under a random order of the tied cases); a missing score ranks as the hardest;
    ``k`` above the number of cases counts all of them. NaN without cases.
    """
    h, y = _prepare(hardness_values, is_fault)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    k = min(int(k), len(h))
    if k == 0:
        return float("nan")
    cut = np.sort(h)[::-1][k - 1]  # the k-th largest hardness
    above, tied = h > cut, h == cut
    places = k - int(above.sum())
    faults = y[above].sum() + places * y[tied].sum() / tied.sum()
    return float(faults / k)
