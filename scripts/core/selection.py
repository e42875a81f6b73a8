"""Counting and ranking for subset selection (method-notes.md, section 3): how many cases to drop,
shared out per center, the hardest-first order, ranks and regions. Plain arrays in and out.

Scores are DAD values: low = hard to learn, high = easy. The strategies that pick the kept cases live in
``scripts.core.strategies``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np

__all__ = [
    "check_rate",
    "num_dropped",
    "drop_counts",
    "group_drops",
    "hardest_first",
    "per_group",
    "ranks",
    "regions",
    "band_regions",
]


def check_rate(rate: float) -> float:
    if not 0 < rate < 1:
        raise ValueError(f"prune rate must be in (0, 1), got {rate}")
    return float(rate)


def _exact(rate: float) -> Fraction:
    """The rate as the decimal the user wrote: 0.29 is 29/100, not the float just below it."""
    return Fraction(repr(check_rate(rate)))


def num_dropped(n: int, rate: float) -> int:
    """floor(p·n) in exact arithmetic (n = 100, p = 0.29 drops 29; float p·n would give 28.999...)."""
    return math.floor(_exact(rate) * n)


def _band(n_drop: int) -> tuple[int, int]:
    """(hardest, easiest) dropped by the ambiguous band: floor(n_drop/2) hardest (= floor(p·n/2)), the rest easy."""
    return n_drop // 2, n_drop - n_drop // 2


def drop_counts(n: int, rate: float) -> tuple[int, int]:
    """(hardest dropped, easiest dropped) for the ambiguous band: floor(p*n/2) hardest and the rest
    of floor(p*n) from the easy end, so exactly n - floor(p*n) cases are kept."""
    return _band(num_dropped(n, rate))


def group_drops(groups: Sequence[str], rate: float) -> dict[str, int]:
    """Drops per group summing to exactly floor(p·n): each group gets floor(p·n_g), and the drops left
    over go to the groups with the largest remainders p·n_g - floor(p·n_g) (ties: the larger group,
    then the group name), so small centers lose their share too."""
    names, sizes = np.unique(np.asarray(groups).astype(str), return_counts=True)
    p = _exact(rate)
    quotas = {g: p * int(s) for g, s in zip(names.tolist(), sizes.tolist())}
    drops = {g: math.floor(q) for g, q in quotas.items()}
    left = num_dropped(len(groups), rate) - sum(drops.values())
    size = dict(zip(names.tolist(), sizes.tolist()))
    by_remainder = sorted(quotas, key=lambda g: (-(quotas[g] - drops[g]), -size[g], g))
    for g in by_remainder[:left]:
        drops[g] += 1
    return drops


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(int(seed))


def hardest_first(scores: np.ndarray, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Case indices by ascending score (hardest first); a missing score counts as the hardest.

    Ties (equal scores, e.g. integer forgetting counts, or several missing ones) are broken by a seeded
    random key, not by data-list order: lists are sorted by case id, i.e. by center, so a stable sort
    would keep or drop whole centers among tied cases. The key comes from a child of ``seed``'s generator
    (``Generator.spawn``), which leaves the generator's own stream (the random draws of a strategy such
    as CCS) untouched; the n-th call on the same generator gets the n-th child, so ``select``,
    ``regions`` and ``ranks`` with the same seed break the same ties the same way.
    """
    scores = np.asarray(scores, dtype=np.float64)
    key = _generator(seed).spawn(1)[0].random(len(scores))
    return np.lexsort((key, np.where(np.isnan(scores), -np.inf, scores)))


def per_group(
    scores: np.ndarray, rate: float, groups: Sequence[str] | None, fn: Callable[[np.ndarray, int], np.ndarray]
) -> np.ndarray:
    """Apply ``fn(scores, n_drop)`` to all cases, or within each group with its share of the drops."""
    scores = np.asarray(scores, dtype=np.float64)
    if groups is None:
        return fn(scores, num_dropped(len(scores), rate))
    groups = np.asarray(groups).astype(str)
    if len(groups) != len(scores):
        raise ValueError(f"{len(groups)} groups for {len(scores)} scores")
    out = None
    for g, n_drop in group_drops(groups, rate).items():
        idx = np.flatnonzero(groups == g)
        part = fn(scores[idx], n_drop)
        if out is None:
            out = np.empty(len(scores), dtype=part.dtype)
        out[idx] = part
    return out


def _rank(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(len(scores), dtype=np.int64)
    out[hardest_first(scores, rng)] = np.arange(1, len(scores) + 1)
    return out


def ranks(scores: np.ndarray, groups: Sequence[str] | None = None, seed: int = 0) -> np.ndarray:
    """1-based rank of every case, 1 = hardest (lowest DAD); within its group when ``groups`` is given.
    Ties are broken as ``select`` with the same ``seed`` breaks them."""
    scores = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if groups is None:
        return _rank(scores, rng)
    groups = np.asarray(groups).astype(str)
    out = np.empty(len(scores), dtype=np.int64)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = _rank(scores[idx], rng)
    return out


def band_regions(scores: np.ndarray, n_drop: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    order = hardest_first(scores, seed)
    n_hard, n_easy = _band(n_drop)
    out = np.full(len(order), "ambiguous", dtype=object)
    out[order[:n_hard]] = "hard"
    out[order[len(order) - n_easy :]] = "easy"
    return out


def regions(scores: np.ndarray, rate: float, groups: Sequence[str] | None = None, seed: int = 0) -> np.ndarray:
    """'hard' / 'ambiguous' / 'easy' per case: the bands the ambiguous strategy drops and keeps, within
    each group (with that group's share of the drops) when ``groups`` is given, as ``select`` does with
    the same ``seed`` (ties included)."""
    rng = np.random.default_rng(seed)
    return per_group(scores, rate, groups, lambda s, n_drop: band_regions(s, n_drop, rng))
