"""Stop rules that account for noise: when has the DAD ranking settled? (method-notes.md, section 2)

Random crops and augmentation make every epoch's Dice noisy, so the moving distance L between windows
never reaches 0: it levels off at a noise floor, and the paper's "L <= 1% of its maximum" may never hold.
These rules compare the movement with that floor, or ask whether the ranking itself still changes.
Plain functions over arrays, as in ``scripts.core.dynamics``.

- ``split_half_floor``: the floor of L, measured inside one window: its first and second half are two
  independent estimates of the same data map when nothing moves, so their distance, scaled, is the L
  that noise alone gives between two whole windows.
- ``noise_stop_index``: the first window pair whose L is within ``factor`` x that floor.
- ``movers_share``: the share of cases whose own DAD moved beyond its noise between two windows. L is a
  sum over cases, so a slow-learning minority can still be moving while L is near its floor; the noise
  rule's guard (``max_movers``) waits until few cases do.
- ``spearman``: the rank correlation of two windows' DAD; ``threshold_stop_index`` fires when it (or the
  Jaccard overlap of the kept subsets) reaches a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scripts.core.dynamics import moving_distance, window_stats

__all__ = [
    "RULES",
    "split_half_floor",
    "half_epochs",
    "noise_stop_index",
    "movers_share",
    "moving_cases",
    "MOVER_Z",
    "spearman",
    "threshold_stop_index",
    "rank_data",
    "window_curve",
    "window_row",
    "window_columns",
    "add_running_max",
    "fired_window",
]


def half_epochs(epochs: Sequence[int], start: int, end: int) -> int:
    """Recorded epochs in the smaller half of the window (start, end], as ``split_half_floor`` splits it."""
    inside = np.asarray(epochs)
    inside = inside[(inside > start) & (inside <= end)]
    return len(inside) // 2


def split_half_floor(
    dice: np.ndarray, epochs: Sequence[int], start: int, end: int, signed: bool = False, variability: bool = True
) -> float:
    """Noise floor of L for the window (start, end]: L between its two halves, divided by √2.

    With per-epoch noise of variance s² and no trend, a mean over m epochs has variance s²/m. Two whole
    windows (m = Δt each) differ by variance 2s²/Δt; two half windows (m = Δt/2) by 4s²/Δt, twice as
    much, so the halves' distance over √2 estimates the distance between windows that noise alone makes
    (the same holds to first order for the variability term). A trend inside the window raises it.
    NaN when either half has no measured case.

    With one recorded epoch per half (volumes mode with ``dad_interval = delta_t / 2``) each half's σ is
    0, so the halves' distance has no variability term while L between windows of two epochs has one:
    the floor is biased low (L/floor about 1.5 on pure noise). ``window_curve`` then compares like with
    like, the mean term alone on both sides (``variability=False``: σ left out of the distance).

    Args:
        dice: per-case Dice (n_cases, n_epochs), NaN where not measured.
        epochs: the epoch of each column.
        start, end: the window (start, end].
        signed: the paper's signed sum instead of absolute moves.
        variability: include the Δσ term (False: Σ|Δμ| only).
    """
    epochs = np.asarray(epochs)
    inside = np.sort(epochs[(epochs > start) & (epochs <= end)])
    if len(inside) < 2:
        return float("nan")
    middle = inside[len(inside) // 2 - 1]
    first = window_stats(dice, epochs, start, middle)
    second = window_stats(dice, epochs, middle, end)
    return _distance(first, second, signed, variability) / math.sqrt(2.0)


def _distance(prev: tuple[np.ndarray, np.ndarray], cur: tuple[np.ndarray, np.ndarray], signed: bool,
              variability: bool) -> float:  # fmt: skip
    if variability:
        return moving_distance(*prev, *cur, signed=signed)
    return moving_distance(prev[0], np.zeros_like(prev[1]), cur[0], np.zeros_like(cur[1]), signed=signed)


# |z| beyond which a case counts as moving: a 0.3% two-sided tail for a normal z (about 1% for the
# t with the 18 degrees of freedom of two 10-epoch windows), so on a settled map ~1% of cases "move"
MOVER_Z = 3.0


def moving_cases(
    dice: np.ndarray, epochs: Sequence[int], prev: tuple[int, int], cur: tuple[int, int], z: float = MOVER_Z
) -> np.ndarray:
    """Per case: 1.0 when its DAD moved by more than ``z`` standard errors between windows ``prev`` and
    ``cur``, 0.0 when not, NaN when it has fewer than 2 measured epochs in either window.

    Each case's own epochs give its standard error: |Δμ_i| / sqrt(s²_prev/n_prev + s²_cur/n_cur), with s²
    the sample variance of its Dice inside each window (Welch's t). On a settled map this is a t-statistic
    and about 1% of cases pass ``z`` = 3; a case still learning has a trend that noise does not explain.
    A case whose Dice is constant in both windows moves when the two constants differ.
    """
    epochs = np.asarray(epochs)
    dice = np.asarray(dice, dtype=np.float64)
    (m0, sd0), (m1, sd1) = window_stats(dice, epochs, *prev), window_stats(dice, epochs, *cur)
    n0, n1 = (np.sum(~np.isnan(dice[:, (epochs > a) & (epochs <= b)]), axis=1) for a, b in (prev, cur))
    usable = (n0 >= 2) & (n1 >= 2)
    move = np.abs(m1 - m0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # sample variance / n = population variance (window_stats' sd²) / (n - 1)
        se = np.sqrt(sd0**2 / (n0 - 1) + sd1**2 / (n1 - 1))
        moving = np.where(se > 0, move > z * se, move > 0).astype(np.float64)
    return np.where(usable, moving, np.nan)


def movers_share(
    dice: np.ndarray, epochs: Sequence[int], prev: tuple[int, int], cur: tuple[int, int], z: float = MOVER_Z
) -> float:
    """Share of the cases ``moving_cases`` can judge that moved beyond their noise; NaN when it can judge none."""
    moving = moving_cases(dice, epochs, prev, cur, z)
    judged = ~np.isnan(moving)
    return float(np.mean(moving[judged])) if judged.any() else float("nan")


def noise_stop_index(
    distances: Sequence[float],
    floors: Sequence[float],
    factor: float = 1.0,
    movers: Sequence[float] | None = None,
    max_movers: float | None = None,
) -> int | None:
    """Index of the first L that is <= ``factor`` x its noise floor: the data map moves no more than noise
    would make it move. With ``max_movers`` the pair must also have at most that share of cases moving
    beyond their own noise (``movers``, see ``movers_share``): a slow minority keeps the rule waiting.
    Undefined values (NaN) never fire. None when the rule has not fired."""
    if factor <= 0:
        raise ValueError(f"noise factor must be > 0, got {factor}")
    if max_movers is not None and not 0 <= max_movers <= 1:
        raise ValueError(f"max_movers must be a share in [0, 1], got {max_movers}")
    if max_movers is not None and movers is None:
        raise ValueError("max_movers needs the movers share of every window pair")
    for k, (value, floor) in enumerate(zip(distances, floors)):
        if np.isnan(value) or np.isnan(floor) or value > factor * floor:
            continue
        if max_movers is not None and not movers[k] <= max_movers:  # NaN never passes
            continue
        return k
    return None


def rank_data(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank (as scipy.stats.rankdata's 'average')."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two per-case scores over the cases defined in both; NaN when fewer
    than 3 such cases or when either is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = ~(np.isnan(a) | np.isnan(b))
    if both.sum() < 3:
        return float("nan")
    ra, rb = rank_data(a[both]), rank_data(b[both])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(np.sum(ra**2) * np.sum(rb**2)))
    return float(np.sum(ra * rb) / denom) if denom > 0 else float("nan")


def threshold_stop_index(values: Sequence[float], threshold: float) -> int | None:
    """Index of the first value >= ``threshold`` (a rank correlation or subset overlap between consecutive
    windows); NaN never fires. None when none does."""
    for k, value in enumerate(values):
        if not np.isnan(value) and value >= threshold:
            return k
    return None


RULES = ("distance", "overlap", "noise", "rank")


def window_row(
    window: int,
    start: int,
    end: int,
    cur: tuple[np.ndarray, np.ndarray],
    prev: tuple[np.ndarray, np.ndarray] | None = None,
    overlap_rate: float = 0.3,
    signed: bool = False,
) -> dict[str, Any]:
    """The curve's row of window (start, end] from that window's columns and the previous window's alone:
    its measured cases and noise floor and, against the previous window, L (both forms), the noise terms,
    the Jaccard overlap of the kept subsets, the Spearman correlation and the movers share. What depends on
    all rows (the largest L so far, the ratio) is ``add_running_max``'s.

    Args:
        window: the window's number (from 1).
        cur, prev: (epochs, dice) of the recorded epochs in (start, end] and in (start - delta_t, start]
            (``DynamicsRecord.dice_window``); prev None for the first window.
    """
    from scripts.core.dynamics import jaccard
    from scripts.core.strategies import select

    epochs, dice = cur
    stats = window_stats(dice, epochs, start, end)
    measured = int(np.sum(~np.isnan(stats[0])))
    row: dict[str, Any] = {"window": window, "epoch_start": start + 1, "epoch_end": end, "measured": measured}
    row["window_floor"] = split_half_floor(dice, epochs, start, end, signed=signed)
    row["half_epochs"] = half_epochs(epochs, start, end)
    if prev is None:
        return row
    delta_t = end - start
    prev_epochs, prev_dice = prev
    prev_stats = window_stats(prev_dice, prev_epochs, start - delta_t, start)
    prev_measured = int(np.sum(~np.isnan(prev_stats[0])))
    prev_half = half_epochs(prev_epochs, start - delta_t, start)
    row["distance_abs"] = moving_distance(*prev_stats, *stats, signed=False)
    row["distance_signed"] = moving_distance(*prev_stats, *stats, signed=True)
    row["distance"] = row["distance_signed" if signed else "distance_abs"]
    # the noise both windows of the pair carry; like with like when a half has one epoch
    full = min(prev_half, row["half_epochs"]) >= 2
    row["noise_terms"] = "mean+variability" if full else "mean"
    if full:
        row["noise_distance"] = row["distance"]
        floors = [split_half_floor(prev_dice, prev_epochs, start - delta_t, start, signed=signed), row["window_floor"]]
    else:
        row["noise_distance"] = _distance(prev_stats, stats, signed, variability=False)
        floors = [split_half_floor(d, e, a, b, signed, variability=False)
                  for (e, d), (a, b) in ((prev, (start - delta_t, start)), (cur, (start, end)))]  # fmt: skip
    row["noise_floor"] = float(np.mean(floors))
    # subsets picked from a window without measurements mean nothing: no overlap either
    empty = measured == 0 or prev_measured == 0
    kept, prev_kept = select(stats[0], overlap_rate, "ambiguous"), select(prev_stats[0], overlap_rate, "ambiguous")
    row["kept_jaccard"] = float("nan") if empty else jaccard(prev_kept, kept)
    row["spearman"] = spearman(prev_stats[0], stats[0])
    both = np.concatenate([prev_epochs, epochs]), np.concatenate([prev_dice, dice], axis=1)
    row["movers"] = movers_share(both[1], both[0], (start - delta_t, start), (start, end))
    return row


def add_running_max(rows: Sequence[dict[str, Any]]) -> None:
    """Each pair row's largest L so far (``max_distance``, undefined L left out) and its L over that
    (``ratio``), in place: a pass over scalars."""
    largest = -np.inf
    for row in rows[1:]:
        largest = largest if np.isnan(row["distance"]) else max(largest, row["distance"])
        row["max_distance"] = largest if largest > -np.inf else float("nan")
        row["ratio"] = row["distance"] / largest if largest > 0 else float("nan")


def window_columns(epochs: np.ndarray, dice: np.ndarray, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, dice) of the epochs in (start, end] of a whole record's matrix."""
    inside = (np.asarray(epochs) > start) & (np.asarray(epochs) <= end)
    return np.asarray(epochs)[inside], np.asarray(dice)[:, inside]


def window_curve(
    epochs: np.ndarray, dice: np.ndarray, last_epoch: int, delta_t: int, overlap_rate: float = 0.3, signed: bool = False
) -> list[dict[str, Any]]:
    """Every complete window of ``delta_t`` epochs up to ``last_epoch``: its measured cases and noise
    floor, and against the previous window L (both forms), the Jaccard overlap of the subsets the
    ambiguous strategy keeps at ``overlap_rate``, and the Spearman correlation of the DAD (``window_row``
    for each window, then ``add_running_max``). The whole curve recomputed from the whole record; the
    moving-distance handler computes each window's row once (the same rows).

    The noise rule compares ``noise_distance`` with ``noise_floor``: L and the split-half floor, or,
    when a half of either window holds a single recorded epoch (its σ is 0, see ``split_half_floor``),
    the mean term of both alone (``noise_terms`` says which). ``movers`` is the pair's
    ``movers_share`` (the noise rule's optional guard).

    Args:
        epochs, dice: ``DynamicsRecord.dice_matrix()``: epochs (n_epochs,), Dice (n_cases, n_epochs).
    """
    from scripts.core.dynamics import window_bounds

    rows: list[dict[str, Any]] = []
    prev = None
    for w, (start, end) in enumerate(window_bounds(last_epoch, delta_t), start=1):
        cur = window_columns(epochs, dice, start, end)
        rows.append(window_row(w, start, end, cur, prev, overlap_rate, signed))
        prev = cur
    add_running_max(rows)
    return rows


def fired_window(
    rows: Sequence[dict[str, Any]],
    rule: str,
    stop_fraction: float = 0.01,
    overlap_threshold: float = 0.9,
    noise_factor: float = 1.0,
    rank_threshold: float = 0.95,
    max_movers: float | None = None,
) -> int | None:
    """Index into ``rows[1:]`` (the window pairs) where ``rule`` fires, or None:
    "distance" (the paper's: L <= stop_fraction x its maximum so far), "overlap" (kept subsets' Jaccard
    >= overlap_threshold), "noise" (L <= noise_factor x the split-half noise floor, like with like, see
    ``window_curve``; with ``max_movers``, also at most that share of cases moving beyond their noise),
    "rank" (Spearman of consecutive windows' DAD >= rank_threshold)."""
    from scripts.core.dynamics import stop_index

    pairs = rows[1:]
    if rule == "distance":
        return stop_index([r["distance"] for r in pairs], stop_fraction)
    if rule == "overlap":
        return threshold_stop_index([r["kept_jaccard"] for r in pairs], overlap_threshold)
    if rule == "noise":
        distances, floors = [r["noise_distance"] for r in pairs], [r["noise_floor"] for r in pairs]
        movers = [r.get("movers", float("nan")) for r in pairs]
        return noise_stop_index(distances, floors, noise_factor, movers, max_movers)
    if rule == "rank":
        return threshold_stop_index([r["spearman"] for r in pairs], rank_threshold)
    raise ValueError(f"unknown stop rule {rule!r}; expected one of {RULES}")
