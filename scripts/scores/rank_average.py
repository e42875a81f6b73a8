"""The rank average of several per-case scores: each score's rank among the cases (hardest = 1), averaged,
as one combined suspicion score. Pure functions over arrays."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scripts.core.stop_rules import rank_data

__all__ = ["rank_average"]


def rank_average(hardness: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mean over the scores of each case's rank fraction, shape (n,); higher = more suspicious.

    Args:
        hardness: {score name: values of shape (n,), oriented so that larger = harder}.

    Each score's values get average ranks (ties share theirs) divided by n, so the hardest case of a
    score has 1 and the easiest 1/n; a case without a value (NaN) in a score is averaged over the others,
    and NaN where it has none.
    """
    columns = [np.asarray(v, dtype=np.float64) for v in hardness.values()]
    if not columns:
        raise ValueError("no score to average")
    n = len(columns[0])
    if any(c.shape != (n,) for c in columns):
        raise ValueError(f"scores of different lengths: {[c.shape for c in columns]}")
    fractions = np.full((len(columns), n), np.nan)
    for i, values in enumerate(columns):
        ok = ~np.isnan(values)
        if ok.any():
            fractions[i, ok] = rank_data(values[ok]) / ok.sum()
    counted = (~np.isnan(fractions)).sum(axis=0)
    total = np.nansum(fractions, axis=0)
    return np.where(counted > 0, total / np.maximum(counted, 1), np.nan)
