"""The decision rule of dynamic pruning (issue 18): which training cases the next epoch visits, and the
loss weight of each, from the per-case history recorded so far. Pure numerics over plain arrays.

Rules (``DynamicSettings.rule``):

- ``dad`` (this bundle's): after a warm-up on every case, rank the cases by their DAD over the last
  window (``score="dad"``) or by its z-score within each center (``"dad_center_pooled"``, the default:
  center statistics shrunk toward all cases'; ``"dad_center_z"``: the center's own);
  **drop** the hard tail (suspected label faults: with ``tail="outlier"`` the cases whose z-score is
  below -``drop_z``, at most ``drop_fraction`` of them; with ``tail="fraction"`` exactly the lowest
  ``drop_fraction`` of all cases) and
  **thin** the easy head (the highest ``easy_fraction``): each easy case is visited with probability
  1 - r, drawn afresh every epoch, and its loss is weighted 1 / (1 - r) so the easy cases' expected
  share of the gradient is unchanged (InfoBatch's rescaling). Dropped cases are not trained on but are
  measured (a forward pass, no gradient) every ``measure_interval`` epochs, so a dropped case whose DAD
  rises leaves the tail and comes back. For the last ``anneal_fraction`` of the epochs every case not
  dropped is visited with weight 1.
  With ``unit="crop"`` (patch-level thinning, issue 26) the easy head is not skipped: every case not
  dropped is visited every epoch, and each easy case whose Dice has settled (variability at most the
  median) trains a share 1 - r of its K crops, each crop weighted K / k (``scripts.core.crop_allocation``);
  the ambiguous (still moving), middle and unranked cases train all their crops.
- ``random`` (the same-cost baseline): each epoch visits ``budget`` cases drawn uniformly without
  replacement, weight 1; nothing dropped or measured. With ``unit="crop"`` the budget is crops: that
  many of the n x K crop slots drawn uniformly, weight 1.
- ``infobatch`` (Qin et al., ICLR 2024, "InfoBatch: Lossless Training Speed Up by Unbiased Dynamic Data
  Pruning", with its published defaults: prune ratio r = 0.5, annealing delta = 0.875, i.e. the last
  12.5% of the epochs on all data): a case whose latest recorded training loss is below the mean of
  the latest losses is skipped with probability r, and weighted 1 / (1 - r) when kept; cases without a
  recorded loss are visited. No hard tail is dropped.

A case with no measured score in the window is unranked and visited with weight 1 (it is then
measured). Epochs a case was not measured in are NaN in the inputs, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scripts.core.crop_allocation import crop_counts, random_crop_counts, settled
from scripts.core.dynamics import window_stats
from scripts.scores.center_norm import pooled_center_zscore, robust_center_zscore

__all__ = [
    "RULES",
    "RANK_SCORES",
    "TAILS",
    "UNITS",
    "STATUSES",
    "DynamicSettings",
    "EpochPlan",
    "phase_of",
    "plan_epoch",
    "latest_values",
    "epoch_rng",
    "split_for_rank",
    "hard_tail",
]

RULES = ("dad", "random", "infobatch")
RANK_SCORES = ("dad", "dad_center_z", "dad_center_pooled")
TAILS = ("fraction", "outlier")
UNITS = ("case", "crop")
# what happened to a case in an epoch (the record's ``visit`` column); "measured": dropped, not trained
# on, but its Dice measured by a forward pass; "cropped": visited with fewer than its K crops
STATUSES = ("visited", "cropped", "thinned", "dropped", "measured")


@dataclass(frozen=True)
class DynamicSettings:
    """Settings of the rule. The bundle's defaults are configs/dynamic.yaml's (docs/dynamic_pruning.md says
    where each comes from); the defaults here are the plain rule's (a fixed tail share) for direct use.

    Attributes:
        epochs: the run's epoch count (annealing counts back from it).
        rule: "dad", "random" or "infobatch".
        warmup: epochs 1..warmup visit every case (the first window: a ranking needs delta_t epochs).
        window: epochs the DAD ranking is averaged over (the run's delta_t).
        tail: how the hard tail is chosen ("dad" rule): "fraction" (the lowest ``drop_fraction`` of all
            cases) or "outlier" (the cases whose ranking z-score is below -``drop_z``, at most
            ``drop_fraction`` of all cases; a data set without outliers drops none; with ``score="dad"``
            the z-score is DAD's robust z over all cases).
        drop_fraction: share of all cases dropped ("fraction") or the most dropped ("outlier").
        drop_z: the outlier tail's threshold k (> 0).
        easy_fraction: share of all cases thinned as the easy head ("dad" rule).
        thin_ratio: r, the probability an easy case is skipped in an epoch (0 <= r < 1).
        anneal_fraction: last share of the epochs trained on every case not dropped.
        score: ranking score of the "dad" rule: "dad_center_pooled" (default: DAD's z-score against its
            center's median and spread shrunk toward all cases'; on one center the same ranking as DAD),
            "dad_center_z" (within each center alone) or "dad".
        measure_interval: dropped cases are measured in epochs divisible by it.
        matched_iterations: top each epoch's visits up to the number of cases (extra visits drawn
            uniformly, with replacement, from the cases not dropped, each a whole visit at weight 1), so the
            run keeps its iterations.
        num_crops: K, the training crops a case yields per visit (configs/train.yaml's ``num_crops``).
        unit: what the easy head is thinned by: "case" (skip whole visits, the rule of 0.6.x) or "crop"
            (train fewer crops of every visit; the random rule: a budget of crops instead of visits).
        warmup_until_stop_rule: the warm-up also lasts until the stop rule has fired (the ranking settled).
    """

    epochs: int
    rule: str = "dad"
    warmup: int = 10
    window: int = 10
    tail: str = "fraction"
    drop_fraction: float = 0.1
    drop_z: float = 3.0
    easy_fraction: float = 0.4
    thin_ratio: float = 0.5
    anneal_fraction: float = 0.125
    score: str = "dad_center_pooled"
    measure_interval: int = 5
    matched_iterations: bool = False
    warmup_until_stop_rule: bool = False
    num_crops: int = 2
    unit: str = "case"

    def __post_init__(self) -> None:
        problems = []
        if self.rule not in RULES:
            problems.append(f"rule {self.rule!r} is not one of {RULES}")
        if self.score not in RANK_SCORES:
            problems.append(
                f"score {self.score!r} is not one of {RANK_SCORES} (the scores the record holds every epoch)"
            )
        if int(self.epochs) < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if int(self.num_crops) < 1:
            problems.append(f"num_crops must be >= 1, got {self.num_crops}")
        if int(self.warmup) < 0 or int(self.window) < 1 or int(self.measure_interval) < 1:
            problems.append(
                f"need warmup >= 0, window >= 1, measure_interval >= 1; got {self.warmup}, {self.window}, "
                f"{self.measure_interval}"
            )
        if not 0 <= self.thin_ratio < 1:
            problems.append(
                f"thin_ratio r must be in [0, 1) (the kept easy cases are weighted 1/(1-r)), got {self.thin_ratio}"
            )
        for name in ("drop_fraction", "easy_fraction", "anneal_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.unit not in UNITS:
            problems.append(f"unit {self.unit!r} is not one of {UNITS}")
        elif self.unit == "crop" and self.rule == "infobatch":
            problems.append("unit 'crop' is the dad and random rules' (InfoBatch skips whole samples)")
        if self.tail not in TAILS:
            problems.append(f"tail {self.tail!r} is not one of {TAILS}")
        if self.tail == "outlier" and not self.drop_z > 0:
            problems.append(f"the outlier tail needs drop_z > 0, got {self.drop_z}")
        if self.drop_fraction + self.easy_fraction > 1:
            problems.append(f"drop_fraction + easy_fraction = {self.drop_fraction + self.easy_fraction} > 1")
        if problems:
            raise ValueError("dynamic pruning settings: " + "; ".join(problems) + " (configs/dynamic.yaml)")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochPlan:
    """What one epoch does with every case (record order).

    Attributes:
        epoch: the epoch planned (from 1).
        phase: "warmup", "prune" or "anneal".
        status: (n,) one of ``STATUSES`` per case.
        weight: (n,) the loss weight of the case's own visit (0 where not visited); a matched-iterations
            extra visit has its own weight (``visit_weight``).
        visits: the record rows the epoch visits, in a seeded order (a row repeats only with matched
            iterations).
        visit_crops: (len(visits),) the crops each visit trains.
        visit_weight: (len(visits),) the loss weight of each of a visit's crops.
    """

    epoch: int
    phase: str
    status: np.ndarray
    weight: np.ndarray
    visits: np.ndarray
    visit_crops: np.ndarray
    visit_weight: np.ndarray

    @property
    def measure(self) -> np.ndarray:
        """Record rows measured by a forward pass without training (the dropped cases of a measuring epoch)."""
        return np.flatnonzero(self.status == "measured")

    def counts(self) -> dict[str, int]:
        out = {s: int(np.sum(self.status == s)) for s in STATUSES}
        out["visits"] = int(len(self.visits))
        out["crops"] = int(np.sum(self.visit_crops))
        return out


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's draws: a function of (seed, epoch) only, so every rank and a resumed
    run draw the same."""
    return np.random.default_rng([int(seed), int(epoch)])


def phase_of(epoch: int, settings: DynamicSettings, stop_fired: bool = True) -> str:
    """ "warmup" (epoch <= warmup, or the stop rule has not fired when the warm-up waits for it), "anneal"
    (the last ceil(anneal_fraction x epochs) epochs) or "prune". The warm-up comes first: a warm-up that
    reaches the annealing epochs (or a stop rule that never fires) goes on, so no case is dropped before
    the rule has ranked it after the warm-up."""
    if epoch <= settings.warmup or (settings.warmup_until_stop_rule and not stop_fired):
        return "warmup"
    n_anneal = math.ceil(settings.anneal_fraction * settings.epochs - 1e-9)
    if epoch > settings.epochs - n_anneal:
        return "anneal"
    return "prune"


def latest_values(values: np.ndarray, epochs: Sequence[int], before: int) -> np.ndarray:
    """Each case's most recent non-missing value in an epoch < ``before`` (NaN when none). (n, E) -> (n,)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape[0], np.nan)
    for j in np.flatnonzero(np.asarray(epochs) < before)[::-1]:  # newest first: stop once every case has one
        missing = np.isnan(out)
        if not missing.any():
            break
        out[missing] = values[missing, j]
    return out


def hard_tail(score: np.ndarray, drop_fraction: float, drop_z: float | None = None) -> np.ndarray:
    """Rows of the hard tail, hardest first, from a ranking score (low = hard; NaN = unranked, never in
    it): the floor(drop_fraction x n) lowest, or with ``drop_z`` those below -drop_z, at most that many."""
    score = np.asarray(score, dtype=np.float64)
    ranked = np.flatnonzero(~np.isnan(score))
    order = ranked[np.argsort(score[ranked], kind="stable")]
    k = min(math.floor(drop_fraction * len(score) + 1e-9), len(order))
    if drop_z is not None:
        k = min(k, int(np.sum(score[order] < -drop_z)))
    return order[:k]


def _ranking_score(
    dice: np.ndarray, epochs: np.ndarray, epoch: int, settings: DynamicSettings, centers: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """DAD over the window ending at the previous epoch (oriented: low = hard), or its center z-score, and
    the variability over the same window."""
    dad, variability = window_stats(dice, epochs, epoch - 1 - settings.window, epoch - 1)
    if settings.score == "dad_center_z":
        return robust_center_zscore(dad, centers), variability
    if settings.score == "dad_center_pooled":
        return pooled_center_zscore(dad, centers), variability
    return dad, variability


def plan_epoch(
    epoch: int,
    settings: DynamicSettings,
    rng: np.random.Generator,
    dice: np.ndarray | None = None,
    epochs: Sequence[int] | None = None,
    centers: Sequence[str] | None = None,
    loss: np.ndarray | None = None,
    budget: int | None = None,
    stop_fired: bool = True,
    n_cases: int | None = None,
) -> EpochPlan:
    """Plan epoch ``epoch`` from the history of the epochs before it.

    Args:
        epoch: the epoch to plan (from 1).
        settings: the rule and its settings.
        rng: this epoch's generator (``epoch_rng``).
        dice: (n, E) per-case Dice of the recorded epochs, NaN where not measured ("dad" rule).
        epochs: (E,) the epoch of each column of ``dice`` / ``loss``; only columns < ``epoch`` are used.
        centers: (n,) the center of each case (the "dad_center_pooled" and "dad_center_z" scores).
        loss: (n, E) per-case mean training loss, NaN where not visited ("infobatch" rule).
        budget: visits of this epoch ("random" rule: the same-cost arm's per-epoch visits; crops with
            ``unit="crop"``).
        stop_fired: False while a warm-up that waits for the stop rule goes on.
        n_cases: the number of cases when neither ``dice`` nor ``loss`` is given.
    """
    n = next((a.shape[0] for a in (dice, loss) if a is not None), n_cases)
    if n is None:
        raise ValueError("plan_epoch needs dice, loss or n_cases to know the number of cases")
    epochs = np.asarray([] if epochs is None else epochs, dtype=np.int64)
    status = np.full(n, "visited", dtype=object)
    weight = np.ones(n)
    n_crops = int(settings.num_crops)
    crops = np.full(n, n_crops, dtype=np.int64)
    phase = phase_of(epoch, settings, stop_fired)
    r = settings.thin_ratio

    if settings.rule == "random":
        if budget is None:
            raise ValueError("the random rule needs the epoch's budget of visits (the same-cost arm's)")
        full = n * n_crops if settings.unit == "crop" else n
        if not 0 <= budget <= full:
            raise ValueError(f"epoch {epoch}: a budget of {budget} {settings.unit}s for {n} cases")
        if settings.unit == "crop":
            crops = random_crop_counts(n, n_crops, int(budget), rng)
            status[crops == 0] = "thinned"
            status[(crops > 0) & (crops < n_crops)] = "cropped"
        else:
            chosen = np.zeros(n, dtype=bool)
            chosen[rng.choice(n, int(budget), replace=False)] = True
            status[~chosen] = "thinned"
        phase = "prune" if budget < full else phase
    elif phase == "warmup":
        pass
    elif settings.rule == "infobatch":
        if phase == "prune":
            if loss is None:
                raise ValueError("the infobatch rule needs the per-case loss (score_patches with 'loss')")
            latest = latest_values(loss, epochs, epoch)
            known = ~np.isnan(latest)
            if known.any():
                well_learned = known & (latest < np.mean(latest[known]))
                skip = well_learned & (rng.random(n) < r)
                status[skip] = "thinned"
                weight[well_learned & ~skip] = 1.0 / (1.0 - r)
    else:  # the dad rule, in the prune or anneal phase
        if dice is None:
            raise ValueError("the dad rule needs the per-case Dice history")
        score, variability = _ranking_score(dice, epochs, epoch, settings, centers)
        ranked = np.flatnonzero(~np.isnan(score))
        order = ranked[np.argsort(score[ranked], kind="stable")]  # hardest first
        # the outlier tail needs a z-score: raw DAD's is its robust z over all cases (the same order)
        tail_score = robust_center_zscore(score) if settings.score == "dad" else score
        dropped = hard_tail(tail_score, settings.drop_fraction, settings.drop_z if settings.tail == "outlier" else None)
        n_easy = min(math.floor(settings.easy_fraction * n + 1e-9), len(order) - len(dropped))
        status[dropped] = "measured" if epoch % settings.measure_interval == 0 else "dropped"
        if phase == "prune" and n_easy:
            easy = order[len(order) - n_easy :]
            if settings.unit == "crop":  # fewer crops of each settled easy case, each weighted K / k
                few = settled(easy, variability, ranked)
                crops[few] = crop_counts(len(few), n_crops, 1.0 - r, rng)
                weight[few] = n_crops / crops[few]
                status[few[crops[few] < n_crops]] = "cropped"
            else:
                skip = rng.random(n_easy) < r
                status[easy[skip]] = "thinned"
                weight[easy[~skip]] = 1.0 / (1.0 - r)
    trained = np.isin(status, ("visited", "cropped"))
    visited = np.flatnonzero(trained)
    if len(visited) == 0 and settings.rule != "random":
        raise ValueError(
            f"dynamic pruning: epoch {epoch} would visit none of the {n} cases (the drop and easy shares "
            f"{settings.drop_fraction} + {settings.easy_fraction} leave no middle band, and every easy case "
            "was thinned); lower dynamic_easy_fraction or dynamic_drop_fraction (configs/dynamic.yaml)"
        )
    weight[~trained], crops[~trained] = 0.0, 0
    visits, visit_weight, visit_crops = visited, weight[visited], crops[visited]
    if settings.matched_iterations and settings.rule != "random" and 0 < len(visited) < n:
        # every extra draw is a whole visit at weight 1, the same for every case of the pool: a kept easy
        # case's own visit keeps 1/(1-r) (its expected weight 1 over the thinning draw) and an extra adds 1,
        # as it does to a middle case, so the expected shares stay equal (0.6.1 gave an easy case drawn
        # again 1/(1-r) on its extra too: 1.089x a middle case's share, issue 25 item 4)
        pool = np.flatnonzero((status != "dropped") & (status != "measured"))
        extra = rng.choice(pool, n - len(visited), replace=True)
        again = extra[status[extra] == "thinned"]
        weight[again], status[again] = 1.0, "visited"  # a thinned case drawn again is visited (at weight 1)
        visits, visit_weight = np.concatenate([visited, extra]), np.concatenate([visit_weight, np.ones(len(extra))])
        visit_crops = np.concatenate([visit_crops, np.full(len(extra), n_crops)])
    order = rng.permutation(len(visits))
    return EpochPlan(epoch=int(epoch), phase=phase, status=status.astype(str), weight=weight, visits=visits[order],
                     visit_crops=visit_crops[order], visit_weight=visit_weight[order])  # fmt: skip


def split_for_rank(visits: np.ndarray, rank: int, world_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One rank's share of an epoch's visits, laid out as ``DistributedSampler`` does: the list padded
    with its first items to a multiple of ``world_size``, rank r taking positions r, r + R, ...

    Returns:
        (rows, padding): the record rows this rank visits, and a mask of those that are padding (repeats
        that give every rank the same number of batches; the handler gives them loss weight 0 and the
        DAD tracker does not count them, so each case is trained on once per epoch between the ranks).
    """
    visits = np.asarray(visits, dtype=np.int64)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of a world of {world_size}")
    n = len(visits)
    if n == 0:
        return visits, np.zeros(0, dtype=bool)
    total = math.ceil(n / world_size) * world_size
    positions = np.arange(rank, total, world_size)
    return visits[positions % n], positions >= n
