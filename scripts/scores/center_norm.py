"""Center-normalised scores: a robust z-score of each case's score within its center.

z_i = (x_i - median_c) / (1.4826 * MAD_c), the median and median absolute deviation over the cases of
center c (1.4826 makes the MAD a consistent estimate of a normal std). A center whose MAD is 0 uses
the mean absolute deviation (x 1.2533) instead; a center with no spread gets z = 0. Missing values
stay missing and do not enter the statistics. Applied to DAD it removes each center's offset (a hard
center no longer fills the hard band), so a faulty label stands out within its own center.

A small center's median and MAD are poor estimates, and a small center with several faulty labels drags
its own median down until its faults look ordinary. ``pooled_center_zscore`` shrinks each center's
median and spread toward those of all cases (partial pooling): weight n_c / (n_c + k) on the center's
own, k = ``prior_cases`` (10: a center of 10 cases counts half). Large centers keep their own offset,
small ones are judged mostly against everyone; on one center it is the robust z-score itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["robust_center_zscore", "pooled_center_zscore", "PRIOR_CASES"]

MAD_TO_STD = 1.4826
MEAN_AD_TO_STD = 1.2533
PRIOR_CASES = 10


def _location_scale(x: np.ndarray) -> tuple[float, float]:
    """Median and robust spread (1.4826 MAD, else 1.2533 x the mean absolute deviation, else 0)."""
    med = float(np.median(x))
    scale = MAD_TO_STD * float(np.median(np.abs(x - med)))
    if scale == 0:
        scale = MEAN_AD_TO_STD * float(np.mean(np.abs(x - med)))
    return med, scale


def robust_center_zscore(values: np.ndarray, groups: Sequence[str] | None = None) -> np.ndarray:
    """Robust z-score of ``values`` (n,) within each group (all in one group when None). Shape (n,)."""
    return pooled_center_zscore(values, groups, prior_cases=0)  # weight 1 on each center's own statistics


def pooled_center_zscore(
    values: np.ndarray, groups: Sequence[str] | None = None, prior_cases: float = PRIOR_CASES
) -> np.ndarray:
    """Robust z-score of ``values`` (n,) against each group's median and spread shrunk toward all cases':
    location w m_c + (1 - w) m, scale w s_c + (1 - w) s, w = n_c / (n_c + prior_cases). Shape (n,)."""
    if prior_cases < 0:
        raise ValueError(f"prior_cases must be >= 0, got {prior_cases}")
    values = np.asarray(values, dtype=np.float64)
    groups = np.zeros(len(values), dtype=int) if groups is None else np.asarray(groups)
    if len(groups) != len(values):
        raise ValueError(f"{len(groups)} groups for {len(values)} values")
    out = np.full(len(values), np.nan)
    defined = ~np.isnan(values)
    if not defined.any():
        return out
    med_all, scale_all = _location_scale(values[defined])
    for g in np.unique(groups):
        idx = np.flatnonzero((groups == g) & defined)
        if idx.size == 0:
            continue
        med, scale = _location_scale(values[idx])
        w = idx.size / (idx.size + prior_cases)
        location, spread = w * med + (1 - w) * med_all, w * scale + (1 - w) * scale_all
        out[idx] = (values[idx] - location) / spread if spread > 0 else 0.0
    return out
