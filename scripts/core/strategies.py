"""Selection strategies: a registry of ``fn(scores, n_drop, rng) -> kept mask`` and ``select``.

- ``ambiguous`` (the paper's middle band), ``easy``, ``hard``, ``random``: the built-in strategies.

- ``ccs``: coverage-centric selection (Zheng et al., ICLR 2023): drop the hardest ``beta`` of the cases,
  split the rest into ``num_strata`` equal-width strata of the score, and fill the budget stratum by
  stratum, smallest first, each getting an equal share of what is left (seeded random picks inside a
  stratum). Defaults: beta = 0.1, 50 strata (the paper's k); ``register_ccs`` adds variants.
- ``select_by_score``: selects by any score of ``scripts.scores.SCORES`` with the strategy its paper
  prescribes (or one given), after orienting it as DAD (low = hard), with or without per-center groups.

Strategies take scores oriented as DAD (low = hard) and return the kept mask of exactly
n - floor(rate * n) cases (per group when stratified: ``select`` shares the drops out).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
from scripts.core.selection import band_regions, check_rate, hardest_first, num_dropped, per_group
from scripts.scores import SCORES, ease

__all__ = [
    "STRATEGIES",
    "Strategy",
    "register_strategy",
    "check_settings",
    "select",
    "ccs_keep",
    "register_ccs",
    "select_by_score",
    "CCS_BETA",
    "CCS_STRATA",
    "missing_note",
]

# fn(scores (n,), n_drop, rng) -> kept mask (n,) with exactly n - n_drop True
Strategy = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
STRATEGIES: dict[str, Strategy] = {}
logger = logging.getLogger("selection")


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register ``fn(scores, n_drop, rng) -> kept mask`` under ``name``."""

    def wrap(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return wrap


def check_settings(rate: float, strategy: str) -> None:
    """Fail early, before anything is read or written, on a prune rate outside (0, 1) or an unknown strategy."""
    check_rate(rate)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; known: {sorted(STRATEGIES)}")


@register_strategy("ambiguous")
def _ambiguous(scores: np.ndarray, n_drop: int, rng: np.random.Generator) -> np.ndarray:
    return band_regions(scores, n_drop, rng) == "ambiguous"


@register_strategy("easy")
def _easy(scores: np.ndarray, n_drop: int, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros(len(scores), dtype=bool)
    keep[hardest_first(scores, rng)[n_drop:]] = True
    return keep


@register_strategy("hard")
def _hard(scores: np.ndarray, n_drop: int, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros(len(scores), dtype=bool)
    keep[hardest_first(scores, rng)[: len(scores) - n_drop]] = True
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
    keep = per_group(scores, rate, groups, lambda s, n_drop: np.asarray(fn(s, n_drop, rng), dtype=bool))
    expected = len(scores) - num_dropped(len(scores), rate)
    if int(keep.sum()) != expected:
        raise RuntimeError(f"strategy {strategy!r} kept {int(keep.sum())} cases, expected {expected}")
    missing = np.isnan(scores)
    if missing.any():
        logger.warning(missing_note(strategy, int(missing.sum()), int((keep & missing).sum()), len(scores)))
    return keep


def missing_note(strategy: str, n_missing: int, n_kept: int, n: int) -> str:
    """What a selection did with the cases that have no score (NaN): they count as the hardest."""
    return (
        f"{n_missing} of {n} cases have no score (NaN; docs/scores.md says what that means per score); they "
        f"count as the hardest, so the {strategy!r} strategy kept {n_kept} and dropped {n_missing - n_kept} of them"
    )


CCS_BETA = 0.1
CCS_STRATA = 50


def ccs_keep(
    scores: np.ndarray, n_keep: int, rng: np.random.Generator, beta: float = CCS_BETA, num_strata: int = CCS_STRATA
) -> np.ndarray:
    """Coverage-centric selection of ``n_keep`` cases (Zheng et al. 2023, Algorithm 1).

    Args:
        scores: per-case scores, shape (n,), oriented as DAD (low = hard); NaN counts as the hardest.
        n_keep: the budget, 0 <= n_keep <= n.
        rng: draws the cases inside each stratum.
        beta: fraction of the hardest cases dropped first (fewer when the budget would not fit in the rest).
        num_strata: equal-width strata over the remaining cases' score range.

    Returns:
        boolean mask (n,) with exactly ``n_keep`` True.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if not 0 <= n_keep <= n:
        raise ValueError(f"cannot keep {n_keep} of {n} cases")
    if not 0 <= beta < 1 or num_strata < 1:
        raise ValueError(f"need 0 <= beta < 1 and num_strata >= 1, got {beta}, {num_strata}")
    order = hardest_first(scores, rng)
    n_cut = min(math.floor(beta * n), n - n_keep)
    pool = order[n_cut:]
    values = scores[pool]
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        strata = np.zeros(len(pool), dtype=np.int64)
    else:
        lo, hi = finite.min(), finite.max()
        values = np.where(np.isnan(values), lo, values)  # a leftover missing score joins the lowest stratum
        width = (hi - lo) / num_strata
        strata = np.zeros(len(pool)) if width == 0 else np.minimum((values - lo) // width, num_strata - 1)
    keep = np.zeros(n, dtype=bool)
    budget = n_keep
    members = {s: pool[strata == s] for s in np.unique(strata)}
    while members:
        smallest = min(members, key=lambda s: (len(members[s]), s))
        chosen = members.pop(smallest)
        take = min(len(chosen), budget // (len(members) + 1))
        keep[rng.choice(chosen, take, replace=False)] = True
        budget -= take
    return keep


def register_ccs(name: str, beta: float = CCS_BETA, num_strata: int = CCS_STRATA) -> Strategy:
    """Register a CCS strategy with its own hard cutoff and number of strata."""

    def strategy(scores: np.ndarray, n_drop: int, rng: np.random.Generator) -> np.ndarray:
        return ccs_keep(scores, len(scores) - n_drop, rng, beta, num_strata)

    return register_strategy(name)(strategy)


register_ccs("ccs")
register_ccs("ccs_beta0", beta=0.0)


def select_by_score(
    values: Sequence[float],
    score: str,
    rate: float,
    strategy: str | None = None,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> np.ndarray:
    """Kept mask for pruning ``rate`` of the cases by ``score`` (a name in ``scripts.scores.SCORES``).

    Args:
        values: the per-case score in its own orientation, shape (n,).
        score: its name (sets the orientation and the default strategy).
        rate: the fraction to prune.
        strategy: a registered strategy; None uses the score's prescribed one (``SCORES[score].strategy``).
        seed, groups: as in ``select`` (groups: per-center stratification).
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; known: {sorted(SCORES)}")
    name = strategy or SCORES[score].strategy
    if name not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {name!r}; known: {sorted(STRATEGIES)}")
    return select(ease(values, score), rate, name, seed, groups)
