"""Paired 95% intervals over seeds, shared by the benchmarks (Student's t at any degrees of freedom)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["t975", "paired_interval", "format_paired"]


def t975(dof: int) -> float:
    """The two-sided 95% Student t quantile for ``dof`` degrees of freedom (``scipy.stats.t.ppf(0.975, dof)``)."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def paired_interval(diffs: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval) of paired differences; half-width NaN for one pair."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2:
        return float(d.mean()) if d.size else float("nan"), float("nan")
    t = t975(d.size - 1)
    return float(d.mean()), float(t * d.std(ddof=1) / math.sqrt(d.size))


def format_paired(diffs: Sequence[float]) -> str:
    """A table cell: "+mean ± half-width" of the paired differences (NaN ones left out), the mean alone
    for one pair, empty for none."""
    d = np.asarray([x for x in diffs if np.isfinite(x)], dtype=np.float64)
    if d.size == 0:
        return ""
    if d.size < 2:
        return f"{d.mean():+.4f}"
    mean, half = paired_interval(d)
    return f"{mean:+.4f} ± {half:.4f}"
