"""Center-normalised scores: a robust z-score of each case's score within its center.

z_i = (x_i - median_c) / (1.4826 * MAD_c), the median and median absolute deviation over the cases of
center c (1.4826 makes the MAD a consistent estimate of a normal std). A center whose MAD is 0 uses
the mean absolute deviation (x 1.2533) instead; a center with no spread gets z = 0. Missing values
stay missing and do not enter the statistics. Applied to DAD it removes each center's offset (a hard
center no longer fills the hard band), so a faulty label stands out within its own center.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["robust_center_zscore"]

MAD_TO_STD = 1.4826
MEAN_AD_TO_STD = 1.2533


def robust_center_zscore(values: np.ndarray, groups: Sequence[str] | None = None) -> np.ndarray:
    """Robust z-score of ``values`` (n,) within each group (all in one group when None). Shape (n,)."""
    values = np.asarray(values, dtype=np.float64)
    groups = np.zeros(len(values), dtype=int) if groups is None else np.asarray(groups)
    if len(groups) != len(values):
        raise ValueError(f"{len(groups)} groups for {len(values)} values")
    out = np.full(len(values), np.nan)
    for g in np.unique(groups):
        idx = np.flatnonzero((groups == g) & ~np.isnan(values))
        if idx.size == 0:
            continue
        x = values[idx]
        med = np.median(x)
        scale = MAD_TO_STD * np.median(np.abs(x - med))
        if scale == 0:
            scale = MEAN_AD_TO_STD * np.mean(np.abs(x - med))
        out[idx] = (x - med) / scale if scale > 0 else 0.0
    return out
