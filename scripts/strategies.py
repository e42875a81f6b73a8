"""More selection strategies and score-based selection, registered into ``scripts.selection``.

- ``ccs``: coverage-centric selection (Zheng et al., ICLR 2023): drop the hardest ``beta`` of the cases,
  split the rest into ``num_strata`` equal-width strata of the score, and fill the budget stratum by
  stratum, smallest first, each getting an equal share of what is left (seeded random picks inside a
  stratum). Defaults: beta = 0.1, 50 strata (the paper's k); ``register_ccs`` adds variants.
- ``select_by_score``: selects by any score of ``scripts.scores.SCORES`` with the strategy its paper
  prescribes (or one given), after orienting it as DAD (low = hard), with or without per-center groups.

Strategies take scores oriented as DAD (low = hard) and return the kept mask of exactly
n - floor(rate * n) cases (per group when stratified: ``scripts.selection.select`` shares the drops out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from scripts.scores import SCORES, ease
from scripts.selection import STRATEGIES, Strategy, hardest_first, register_strategy, select

__all__ = ["ccs_keep", "register_ccs", "select_by_score", "CCS_BETA", "CCS_STRATA"]

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
    order = hardest_first(scores)
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
        seed, groups: as in ``scripts.selection.select`` (groups: per-center stratification).
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; known: {sorted(SCORES)}")
    name = strategy or SCORES[score].strategy
    if name not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {name!r}; known: {sorted(STRATEGIES)}")
    return select(ease(values, score), rate, name, seed, groups)
