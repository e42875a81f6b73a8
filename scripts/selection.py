"""Selecting the subset to keep from per-case scores (method-notes.md, section 3).

Scores are DAD values: low = hard to learn, high = easy. Functions take plain arrays and return a
boolean mask of kept cases. Strategies live in a registry so later score-based strategies (EL2N,
VoG, ...) plug in by name; each receives the number of cases to drop, so per-center selection can
share the drops out exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np

__all__ = [
    "STRATEGIES",
    "register_strategy",
    "num_dropped",
    "drop_counts",
    "group_drops",
    "hardest_first",
    "ranks",
    "regions",
    "select",
    "check_settings",
]

# fn(scores (n,), n_drop, rng) -> kept mask (n,) with exactly n - n_drop True
Strategy = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register ``fn(scores, n_drop, rng) -> kept mask`` under ``name``."""

    def wrap(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return wrap


def _check_rate(rate: float) -> float:
    if not 0 < rate < 1:
        raise ValueError(f"prune rate must be in (0, 1), got {rate}")
    return float(rate)


def check_settings(rate: float, strategy: str) -> None:
    """Fail early, before anything is read or written, on a prune rate outside (0, 1) or an unknown strategy."""
    _check_rate(rate)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; known: {sorted(STRATEGIES)}")


def _exact(rate: float) -> Fraction:
    """The rate as the decimal the user wrote: 0.29 is 29/100, not the float just below it."""
    return Fraction(repr(_check_rate(rate)))


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


def hardest_first(scores: np.ndarray) -> np.ndarray:
    """Case indices by ascending score (hardest first); a missing score counts as the hardest,
    ties keep data-list order."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.argsort(np.where(np.isnan(scores), -np.inf, scores), kind="stable")


def _per_group(
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


def _rank(scores: np.ndarray) -> np.ndarray:
    out = np.empty(len(scores), dtype=np.int64)
    out[hardest_first(scores)] = np.arange(1, len(scores) + 1)
    return out


def ranks(scores: np.ndarray, groups: Sequence[str] | None = None) -> np.ndarray:
    """1-based rank of every case, 1 = hardest (lowest DAD); within its group when ``groups`` is given."""
    scores = np.asarray(scores, dtype=np.float64)
    if groups is None:
        return _rank(scores)
    groups = np.asarray(groups).astype(str)
    out = np.empty(len(scores), dtype=np.int64)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = _rank(scores[idx])
    return out


def _regions(scores: np.ndarray, n_drop: int) -> np.ndarray:
    order = hardest_first(scores)
    n_hard, n_easy = _band(n_drop)
    out = np.full(len(order), "ambiguous", dtype=object)
    out[order[:n_hard]] = "hard"
    out[order[len(order) - n_easy :]] = "easy"
    return out


def regions(scores: np.ndarray, rate: float, groups: Sequence[str] | None = None) -> np.ndarray:
    """'hard' / 'ambiguous' / 'easy' per case: the bands the ambiguous strategy drops and keeps, within
    each group (with that group's share of the drops) when ``groups`` is given, as ``select`` does."""
    return _per_group(scores, rate, groups, _regions)


@register_strategy("ambiguous")
def _ambiguous(scores: np.ndarray, n_drop: int, rng: np.random.Generator) -> np.ndarray:
    return _regions(scores, n_drop) == "ambiguous"


@register_strategy("easy")
def _easy(scores: np.ndarray, n_drop: int, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros(len(scores), dtype=bool)
    keep[hardest_first(scores)[n_drop:]] = True
    return keep


@register_strategy("hard")
def _hard(scores: np.ndarray, n_drop: int, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros(len(scores), dtype=bool)
    keep[hardest_first(scores)[: len(scores) - n_drop]] = True
    return keep


@register_strategy("random")
def _random(scores: np.ndarray, n_drop: int, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros(len(scores), dtype=bool)
    keep[rng.choice(len(scores), len(scores) - n_drop, replace=False)] = True
    return keep


def select(
    scores: Sequence[float],
    rate: float,
    strategy: str = "ambiguous",
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> np.ndarray:
    """Boolean mask of the cases to keep.

    Args:
        scores: per-case DAD (n,), NaN where missing.
        rate: the fraction to prune, 0 < rate < 1; exactly n - floor(rate * n) cases are kept.
        strategy: "ambiguous" (the paper's middle band), "easy", "hard", "random", or a registered name.
        seed: seeds the random strategy.
        groups: per-case group (center); when given, the strategy runs within each group, which drops
            its share of the floor(rate * n) (``group_drops``), so every center keeps its share.
    """
    check_settings(rate, strategy)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError("scores must be a non-empty 1-D array")
    rng = np.random.default_rng(seed)
    fn = STRATEGIES[strategy]
    keep = _per_group(scores, rate, groups, lambda s, n_drop: np.asarray(fn(s, n_drop, rng), dtype=bool))
    expected = len(scores) - num_dropped(len(scores), rate)
    if int(keep.sum()) != expected:
        raise RuntimeError(f"strategy {strategy!r} kept {int(keep.sum())} cases, expected {expected}")
    return keep


# More strategies (CCS) live in their own module and register themselves here.
from scripts import strategies as _strategies  # noqa: E402, F401
