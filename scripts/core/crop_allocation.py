"""Crops per visit for patch-level thinning (issue 26 item 1). Pure numerics over plain arrays.

In 3D segmentation the unit of work is the crop: a visit of a case trains K crops (``num_crops``),
and the network's cost is the crops it sees. Instead of skipping a whole easy case, the crop rule
trains fewer of its crops, k of K, each at loss weight K / k: with the exact weighted loss
(``scripts.core.weighted_loss``: a crop of weight w counts as w copies) a visit then always counts as
K crops, and since the kept crops are a random sample of the case's crops (the first k of K
independent draws of ``RandCropByPosNegLabeld``), the case's expected contribution to the batch sums
is that of K crops. So every case keeps its expected share; only the number of crops through the
network falls.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["crop_counts", "settled", "random_crop_counts"]


def crop_counts(size: int, num_crops: int, keep: float, rng: np.random.Generator) -> np.ndarray:
    """Crops of ``size`` visits that keep a share ``keep`` of their ``num_crops`` = K on average: each
    visit trains floor(keep K) or one more, the more with probability frac(keep K), so the mean is keep K;
    at least 1 (keep K < 1 trains one crop: skipping the visit is the case rule's) and at most K."""
    if not 0 <= keep <= 1 or num_crops < 1:
        raise ValueError(f"keep {keep} must be in [0, 1] and num_crops {num_crops} >= 1")
    x = keep * num_crops
    low = math.floor(x + 1e-9)
    k = low + (rng.random(size) < x - low)
    return np.clip(k, 1, num_crops).astype(np.int64)


def settled(candidates: np.ndarray, variability: np.ndarray, ranked: np.ndarray) -> np.ndarray:
    """The candidates (record rows) whose Dice has settled: variability over the window (the data map's
    sigma) at most the median of all ranked cases'. The others still move (dataset cartography's
    ambiguous cases) and keep all their crops."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if len(candidates) == 0 or len(ranked) == 0:
        return candidates[:0]
    median = np.nanmedian(np.asarray(variability, dtype=np.float64)[ranked])
    return candidates[np.asarray(variability)[candidates] <= median]


def random_crop_counts(n_cases: int, num_crops: int, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Crops per case for the same-cost random arm at the crop level: ``budget`` of the n x K crop slots
    drawn uniformly without replacement, so every case keeps the same expected share (weight 1)."""
    if not 0 <= budget <= n_cases * num_crops:
        raise ValueError(f"a budget of {budget} crops for {n_cases} cases of {num_crops} crops")
    slots = rng.choice(n_cases * num_crops, int(budget), replace=False)
    return np.bincount(slots // num_crops, minlength=n_cases).astype(np.int64)
