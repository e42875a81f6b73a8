"""Selecting the subset to keep from per-case scores (method-notes.md, section 3).

Scores are DAD values: low = hard to learn, high = easy. Functions take plain arrays and return a
boolean mask of kept cases. Strategies live in a registry so later score-based strategies (EL2N,
VoG, ...) plug in by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "STRATEGIES",
    "register_strategy",
    "drop_counts",
    "hardest_first",
    "ranks",
    "regions",
    "select",
    "check_settings",
]

Strategy = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register ``fn(scores, rate, rng) -> kept mask`` under ``name``."""

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


def drop_counts(n: int, rate: float) -> tuple[int, int]:
    """(hardest dropped, easiest dropped) for the ambiguous band: floor(p*n/2) hardest and the rest
    of floor(p*n) from the easy end, so exactly n - floor(p*n) cases are kept."""
    n_drop = math.floor(_check_rate(rate) * n)
    n_hard = math.floor(rate * n / 2)
    return n_hard, n_drop - n_hard


def hardest_first(scores: np.ndarray) -> np.ndarray:
    """Case indices by ascending score (hardest first); a missing score counts as the hardest,
    ties keep data-list order."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.argsort(np.where(np.isnan(scores), -np.inf, scores), kind="stable")


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of every case, 1 = hardest (lowest DAD)."""
    out = np.empty(len(scores), dtype=np.int64)
    out[hardest_first(scores)] = np.arange(1, len(scores) + 1)
    return out


def regions(scores: np.ndarray, rate: float) -> np.ndarray:
    """'hard' / 'ambiguous' / 'easy' per case: the bands the ambiguous strategy drops and keeps."""
    order = hardest_first(scores)
    n_hard, n_easy = drop_counts(len(order), rate)
    out = np.full(len(order), "ambiguous", dtype=object)
    out[order[:n_hard]] = "hard"
    out[order[len(order) - n_easy :]] = "easy"
    return out


@register_strategy("ambiguous")
def _ambiguous(scores: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    return regions(scores, rate) == "ambiguous"


@register_strategy("easy")
def _easy(scores: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros(len(scores), dtype=bool)
    keep[hardest_first(scores)[math.floor(rate * len(scores)) :]] = True
    return keep


@register_strategy("hard")
def _hard(scores: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros(len(scores), dtype=bool)
    keep[hardest_first(scores)[: len(scores) - math.floor(rate * len(scores))]] = True
    return keep


@register_strategy("random")
def _random(scores: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros(len(scores), dtype=bool)
    keep[rng.choice(len(scores), len(scores) - math.floor(rate * len(scores)), replace=False)] = True
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
        rate: the fraction to prune, 0 < rate < 1; n - floor(rate * n) cases are kept.
        strategy: "ambiguous" (the paper's middle band), "easy", "hard", "random", or a registered name.
        seed: seeds the random strategy.
        groups: per-case group (center); when given, the strategy runs within each group so every
            center keeps its share of the data set.
    """
    check_settings(rate, strategy)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError("scores must be a non-empty 1-D array")
    rng = np.random.default_rng(seed)
    fn = STRATEGIES[strategy]
    if groups is None:
        return fn(scores, rate, rng)
    groups = np.asarray(groups)
    if len(groups) != len(scores):
        raise ValueError(f"{len(groups)} groups for {len(scores)} scores")
    keep = np.zeros(len(scores), dtype=bool)
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        keep[idx] = fn(scores[idx], rate, rng)
    return keep


# More strategies (CCS) live in their own module and register themselves here.
from scripts import strategies as _strategies  # noqa: E402, F401
