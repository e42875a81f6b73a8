"""The dynamic-pruning rule on hand-made records: warm-up, the hard tail dropped, thinning at rate r
(binomial bound), annealing, a dropped case that recovers comes back, center-normalised ranking, the
InfoBatch and random baselines, and the per-rank split."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scripts.core.dynamic_rule import (
    DynamicSettings,
    epoch_rng,
    hard_tail,
    latest_values,
    phase_of,
    plan_epoch,
    split_for_rank,
)
from torch.utils.data import DistributedSampler

# ten cases with a fixed DAD: case 0 the hardest ... case 9 the easiest
DAD = np.array([0.05, 0.10, 0.50, 0.55, 0.60, 0.65, 0.80, 0.85, 0.90, 0.95])


def _history(values: np.ndarray, n_epochs: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(1, n_epochs + 1), np.repeat(values[:, None], n_epochs, axis=1)


def _settings(**kw) -> DynamicSettings:
    base = dict(epochs=40, warmup=10, window=10, drop_fraction=0.2, easy_fraction=0.4, thin_ratio=0.5,
                anneal_fraction=0.125, measure_interval=5)  # fmt: skip
    return DynamicSettings(**{**base, **kw})


def test_warmup_visits_every_case_at_weight_one():
    s = _settings()
    epochs, dice = _history(DAD, 9)
    for e in range(1, 11):
        plan = plan_epoch(e, s, epoch_rng(0, e), dice=dice[:, : e - 1], epochs=epochs[: e - 1])
        assert plan.phase == "warmup"
        assert sorted(plan.visits.tolist()) == list(range(10))
        np.testing.assert_array_equal(plan.weight, np.ones(10))


def test_hard_tail_dropped_easy_head_thinned_middle_kept():
    s = _settings()
    epochs, dice = _history(DAD, 12)
    plan = plan_epoch(13, s, epoch_rng(0, 13), dice=dice, epochs=epochs)
    assert plan.phase == "prune"
    # floor(0.2 * 10) = 2 hardest dropped (13 is not a measuring epoch), 4 easiest thinned or visited at 2
    assert plan.status[:2].tolist() == ["dropped", "dropped"]
    assert set(plan.status[2:6]) == {"visited"} and np.all(plan.weight[2:6] == 1.0)
    for i in range(6, 10):
        assert (plan.status[i], plan.weight[i]) in {("thinned", 0.0), ("visited", 2.0)}
    assert sorted(plan.visits.tolist()) == np.flatnonzero(plan.status == "visited").tolist()
    # epoch 15 is a measuring epoch: the dropped cases are measured, still not trained on
    plan15 = plan_epoch(15, s, epoch_rng(0, 15), dice=dice, epochs=epochs)
    assert plan15.status[:2].tolist() == ["measured", "measured"] and plan15.measure.tolist() == [0, 1]
    assert not set(plan15.visits.tolist()) & {0, 1}


def test_thinning_rate_within_a_binomial_bound_over_many_epochs():
    r, n_epochs = 0.3, 2000
    s = _settings(epochs=10_000, thin_ratio=r, window=10_000)  # the window reaches back to the history
    epochs, dice = _history(DAD, 10)
    visits = np.zeros(10)
    for e in range(100, 100 + n_epochs):
        plan = plan_epoch(e, s, epoch_rng(7, e), dice=dice, epochs=epochs)
        visits += plan.status == "visited"
        easy_visited = plan.status[6:] == "visited"
        np.testing.assert_allclose(plan.weight[6:][easy_visited], 1 / (1 - r))
    p = 1 - r
    bound = 4 * math.sqrt(n_epochs * p * (1 - p))  # 4 sigma: a false alarm once in ~16000 cases
    for i in range(6, 10):
        assert abs(visits[i] - n_epochs * p) <= bound, (i, visits[i])
    assert np.all(visits[2:6] == n_epochs) and np.all(visits[:2] == 0)
    # every epoch its own draw: the easy cases' visit patterns are not all the same
    assert len({tuple(plan_epoch(e, s, epoch_rng(7, e), dice=dice, epochs=epochs).status[6:]) for e in range(20)}) > 4


def test_annealing_trains_every_kept_case_for_the_last_epochs():
    s = _settings()  # 40 epochs, anneal 12.5%: epochs 36-40
    assert [phase_of(e, s) for e in (10, 11, 35, 36, 40)] == ["warmup", "prune", "prune", "anneal", "anneal"]
    epochs, dice = _history(DAD, 35)
    for e in range(36, 41):
        plan = plan_epoch(e, s, epoch_rng(0, e), dice=dice, epochs=epochs)
        assert set(plan.status[:2]) <= {"dropped", "measured"}
        assert sorted(plan.visits.tolist()) == list(range(2, 10))
        np.testing.assert_array_equal(plan.weight[2:], np.ones(8))


def _one_outlier(n_cases: int = 50) -> np.ndarray:
    """DAD of 50 cases: one far below the others (robust z about -60), the rest spread evenly."""
    return np.r_[0.05, np.linspace(0.80, 0.90, n_cases - 1)]


def test_a_warmup_waiting_for_a_stop_rule_that_never_fires_drops_nothing():
    # issue 25 item 2: 32 epochs, annealing over the last ceil(0.125 x 32) = 4 (29-32); the stop rule never
    # fires, so the warm-up never ends and the outlier (case 0) is never judged: before the fix epoch 29
    # entered the annealing phase and dropped it
    s = _settings(epochs=32, tail="outlier", warmup_until_stop_rule=True)
    values = _one_outlier()
    for e in range(1, 33):
        epochs, dice = _history(values, e - 1)
        plan = plan_epoch(e, s, epoch_rng(0, e), dice=dice, epochs=epochs, stop_fired=False)
        assert plan.phase == "warmup", e
        assert set(plan.status) == {"visited"} and sorted(plan.visits.tolist()) == list(range(50)), e
        np.testing.assert_array_equal(plan.weight, np.ones(50))
    # the same run once the rule has fired: the annealing epochs drop the outlier (it was judged)
    epochs, dice = _history(values, 30)
    fired = plan_epoch(31, s, epoch_rng(0, 31), dice=dice, epochs=epochs, stop_fired=True)
    assert fired.phase == "anneal" and fired.status[0] == "dropped" and set(fired.status[1:]) == {"visited"}


def test_a_warmup_that_reaches_the_annealing_epochs_comes_first():
    # warm-up 30 of 32 epochs, annealing 29-32: epochs 29 and 30 are still warm-up (every case, weight 1);
    # 31 and 32 anneal on the ranking made after the warm-up
    s = _settings(epochs=32, warmup=30, tail="outlier")
    assert [phase_of(e, s) for e in (28, 29, 30, 31, 32)] == ["warmup"] * 3 + ["anneal"] * 2
    values = _one_outlier()
    for e in (29, 30):
        epochs, dice = _history(values, e - 1)
        plan = plan_epoch(e, s, epoch_rng(0, e), dice=dice, epochs=epochs)
        assert set(plan.status) == {"visited"} and len(plan.visits) == 50, e
    epochs, dice = _history(values, 30)
    assert plan_epoch(31, s, epoch_rng(0, 31), dice=dice, epochs=epochs).status[0] == "dropped"


def test_a_dropped_case_whose_dad_rises_comes_back():
    s = _settings(drop_fraction=0.1, easy_fraction=0.0)
    epochs, dice = _history(DAD, 15)
    assert plan_epoch(16, s, epoch_rng(0, 16), dice=dice, epochs=epochs).status[0] == "dropped"
    # case 0 is measured at epochs 15, 20, 25 (missing in between) and its Dice rises to 0.7
    later = np.full((10, 10), np.nan)
    later[1:] = DAD[1:, None]
    later[0, [4, 9]] = 0.7  # epochs 20 and 25
    dice2 = np.concatenate([dice, later], axis=1)
    epochs2 = np.arange(1, 26)
    plan = plan_epoch(26, s, epoch_rng(0, 26), dice=dice2, epochs=epochs2)
    # window 16-25: case 0's DAD is mean(0.7, 0.7) = 0.7, not diluted by the missing epochs; case 1 is the tail now
    assert plan.status[0] == "visited" and plan.status[1] == "dropped"


def test_unmeasured_epochs_are_missing_not_zero():
    s = _settings(drop_fraction=0.1, easy_fraction=0.0, window=4, warmup=0, measure_interval=7)
    # case 0: 0.3 in two of the last four epochs, missing in the others; case 1: 0.2 every epoch
    dice = np.tile(DAD[:, None], (1, 4))
    dice[0] = [0.3, np.nan, 0.3, np.nan]
    dice[1] = 0.2
    plan = plan_epoch(5, s, epoch_rng(0, 5), dice=dice, epochs=[1, 2, 3, 4])
    # with the gaps read as 0, case 0 (mean 0.15) would be the tail; read as missing its DAD is 0.3
    assert plan.status[1] == "dropped" and plan.status[0] == "visited"
    # a case never measured in the window is unranked and visited at weight 1
    dice[2] = np.nan
    plan = plan_epoch(5, s, epoch_rng(0, 5), dice=dice, epochs=[1, 2, 3, 4])
    assert plan.status[2] == "visited" and plan.weight[2] == 1.0
    np.testing.assert_array_equal(latest_values(np.array([[1.0, np.nan, 3.0, np.nan]]), [1, 2, 3, 4], 5), [3.0])


def test_center_normalised_ranking_drops_within_each_center():
    # center a is hard overall (DAD ~0.3), center b easy (~0.8); each has one case far below its center
    values = np.array([0.30, 0.31, 0.29, 0.32, 0.05, 0.80, 0.81, 0.79, 0.82, 0.55])
    centers = ["a"] * 5 + ["b"] * 5
    epochs, dice = _history(values, 12)
    raw = plan_epoch(13, _settings(drop_fraction=0.2, easy_fraction=0.0, score="dad"), epoch_rng(0, 13), dice=dice,
                     epochs=epochs, centers=centers)  # fmt: skip
    z = plan_epoch(13, _settings(drop_fraction=0.2, easy_fraction=0.0, score="dad_center_z"), epoch_rng(0, 13),
                   dice=dice, epochs=epochs, centers=centers)  # fmt: skip
    # raw DAD's two lowest: 0.05 (case 4) and 0.29 (case 2, a clean case of the hard center)
    assert np.flatnonzero(raw.status == "dropped").tolist() == [2, 4]
    # within centers: case 4 (z = (0.05 - 0.30) / (1.4826 * 0.01)) and case 9 ((0.55 - 0.80) / (1.4826 * 0.01))
    assert np.flatnonzero(z.status == "dropped").tolist() == [4, 9]


def test_infobatch_thins_losses_below_the_mean():
    r = 0.5
    s = _settings(rule="infobatch", warmup=0, thin_ratio=r, epochs=10_000, anneal_fraction=0.125)
    loss = np.array([[0.1], [0.2], [0.3], [0.9], [1.0], [np.nan]])  # mean of the known: 0.5
    counts = np.zeros(6)
    n_epochs = 1000
    for e in range(2, 2 + n_epochs):
        plan = plan_epoch(e, s, epoch_rng(1, e), loss=loss, epochs=[1])
        counts += plan.status == "visited"
        assert set(plan.weight[:3][plan.status[:3] == "visited"]) <= {2.0}
        np.testing.assert_array_equal(plan.weight[3:], np.ones(3))
    bound = 4 * math.sqrt(n_epochs * r * (1 - r))
    assert all(abs(counts[i] - n_epochs * (1 - r)) <= bound for i in range(3))
    assert np.all(counts[3:] == n_epochs)  # above the mean, or without a loss yet: always visited
    assert plan_epoch(9_000, s, epoch_rng(1, 9_000), loss=loss, epochs=[1]).phase == "anneal"  # last 12.5% (8751+)


def test_random_rule_visits_exactly_the_budget_uniformly():
    s = _settings(rule="random")
    counts = np.zeros(10)
    for e in range(1, 501):
        plan = plan_epoch(e, s, epoch_rng(3, e), n_cases=10, budget=7)
        assert len(plan.visits) == 7 and len(set(plan.visits.tolist())) == 7
        counts += plan.status == "visited"
    bound = 4 * math.sqrt(500 * 0.7 * 0.3)
    assert np.all(np.abs(counts - 350) <= bound)


def test_matched_iterations_keeps_the_epochs_visits():
    s = _settings(matched_iterations=True)
    epochs, dice = _history(DAD, 12)
    plan = plan_epoch(13, s, epoch_rng(0, 13), dice=dice, epochs=epochs)
    assert len(plan.visits) == 10 and not set(plan.visits.tolist()) & {0, 1}


def test_matched_iterations_keep_the_easy_cases_expected_share():
    # issue 25 item 4. 10 cases: 2 dropped, 4 middle, 4 easy thinned at r = 0.5. An epoch's own visits are
    # 4 + Binomial(4, 1/2), topped up to 10 with extra whole visits drawn from the 8 kept cases: E[extras] =
    # 10 - 4 - 2 = 4, 0.5 per case. Expected weight per case and epoch (in whole visits): 1 for its own visit
    # (an easy case's 1/(1-r) = 2 half the time) + 0.5 = 1.5 for easy and middle alike. 0.6.1 kept the easy
    # weight 2 on the extras too: 2 (1 - r)(1 + 0.5) + r 0.5 = 1.75, a share 1.17x the middle's.
    r, n_epochs = 0.5, 3000
    s = _settings(matched_iterations=True, thin_ratio=r, epochs=10_000, window=10_000)
    epochs, dice = _history(DAD, 10)
    per_epoch = np.zeros((n_epochs, 10))
    for j, e in enumerate(range(100, 100 + n_epochs)):
        plan = plan_epoch(e, s, epoch_rng(11, e), dice=dice, epochs=epochs)
        assert len(plan.visits) == 10 and set(plan.visit_crops.tolist()) == {2}
        np.add.at(per_epoch[j], plan.visits, plan.visit_weight)
    mean = per_epoch.mean(axis=0)
    sigma = per_epoch.std(axis=0, ddof=1) / math.sqrt(n_epochs)  # the standard error of each case's mean
    assert np.all(per_epoch[:, :2] == 0)  # the dropped cases
    for i in range(2, 10):  # middle 2-5, easy 6-9
        assert abs(mean[i] - 1.5) <= 4 * sigma[i], (i, mean[i], sigma[i])
    assert np.all(4 * sigma[2:] < 0.1)  # the bound is tight enough to tell 1.5 from 0.6.1's 1.75
    ratio = mean[6:].mean() / mean[2:6].mean()
    assert abs(ratio - 1.0) < 0.04, ratio  # about 5 standard errors of the ratio (0.6.1: 1.17)


def test_split_for_rank_is_distributed_samplers_layout_and_covers_each_visit_once():
    visits = np.array([7, 3, 9, 0, 5])
    shares = [split_for_rank(visits, r, 2) for r in range(2)]
    for r, (rows, _) in enumerate(shares):
        torch_sampler = DistributedSampler(visits.tolist(), num_replicas=2, rank=r, shuffle=False)
        assert rows.tolist() == [visits[i] for i in torch_sampler]
    assert len(shares[0][0]) == len(shares[1][0]) == 3
    real = sorted(np.concatenate([rows[~pad] for rows, pad in shares]).tolist())
    assert real == sorted(visits.tolist())
    assert sum(int(pad.sum()) for _, pad in shares) == 1


def test_same_seed_and_epoch_same_plan_different_epoch_different_draw():
    s = _settings()
    epochs, dice = _history(DAD, 12)
    a = plan_epoch(13, s, epoch_rng(5, 13), dice=dice, epochs=epochs)
    b = plan_epoch(13, s, epoch_rng(5, 13), dice=dice, epochs=epochs)
    np.testing.assert_array_equal(a.visits, b.visits)
    np.testing.assert_array_equal(a.status, b.status)


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"rule": "loss"}, "rule 'loss'"),
        ({"score": "el2n"}, "score 'el2n'"),
        ({"tail": "outlier", "drop_z": 0.0}, "the outlier tail needs drop_z > 0"),
        ({"tail": "z"}, "tail 'z' is not one of"),
        ({"thin_ratio": 1.0}, "thin_ratio"),
        ({"drop_fraction": 0.7, "easy_fraction": 0.5}, "drop_fraction + easy_fraction"),
        ({"measure_interval": 0}, "measure_interval"),
    ],
)
def test_bad_settings_name_the_problem(bad, words):
    with pytest.raises(ValueError, match="dynamic pruning settings") as err:
        _settings(**bad)
    assert words in str(err.value) and "configs/dynamic.yaml" in str(err.value)


def test_on_one_center_the_center_rankings_are_dads():
    rng = np.random.default_rng(0)
    values = rng.uniform(0.1, 0.9, 25)
    epochs, dice = _history(values, 12)
    plans = [plan_epoch(13, _settings(score=s), epoch_rng(4, 13), dice=dice, epochs=epochs, centers=["a"] * 25)
             for s in ("dad", "dad_center_z", "dad_center_pooled")]  # fmt: skip
    for other in plans[1:]:
        np.testing.assert_array_equal(plans[0].status, other.status)
        np.testing.assert_array_equal(plans[0].visits, other.visits)
    assert np.flatnonzero(plans[0].status == "dropped").tolist() == sorted(np.argsort(values)[:5].tolist())


def test_hard_tail_by_fraction_or_by_outlier_z_by_hand():
    score = np.array([-5.0, -3.5, -2.9, 0.0, 1.0, np.nan, 0.5, -0.2, 2.0, 0.1])
    assert hard_tail(score, 0.3).tolist() == [0, 1, 2]  # the 3 lowest of 10; NaN is never in the tail
    assert hard_tail(score, 0.3, drop_z=3.0).tolist() == [0, 1]  # only the two below -3
    assert hard_tail(score, 0.1, drop_z=3.0).tolist() == [0]  # at most 10% of the cases
    assert hard_tail(score, 0.3, drop_z=6.0).tolist() == []  # no outlier: nothing dropped


def test_outlier_tail_drops_nothing_on_a_data_set_without_outliers():
    # DAD spread widely, no case far below the others: robust z of the hardest is (0.05 - 0.625) /
    # (1.4826 x 0.2) = -1.94 > -3, so the z rule keeps every case where a fixed 20% tail drops two
    s = _settings(tail="outlier", drop_z=3.0)
    epochs, dice = _history(DAD, 12)
    plan = plan_epoch(12, s, epoch_rng(0, 12), dice=dice[:, :11], epochs=epochs[:11])
    assert not np.isin(plan.status, ["dropped", "measured"]).any()
    fixed = plan_epoch(12, _settings(), epoch_rng(0, 12), dice=dice[:, :11], epochs=epochs[:11])
    assert sorted(np.flatnonzero(np.isin(fixed.status, ["dropped", "measured"])).tolist()) == [0, 1]
    # one case far below a tight rest: median 0.855, MAD 0.04, z = (0.05 - 0.855) / (1.4826 x 0.04) = -13.6
    # for it and -0.93 for the next (0.80): only it is dropped
    outlier = np.array([0.05, 0.80, 0.82, 0.84, 0.85, 0.86, 0.88, 0.90, 0.92, 0.95])
    epochs, dice = _history(outlier, 12)
    plan = plan_epoch(12, s, epoch_rng(0, 12), dice=dice[:, :11], epochs=epochs[:11])
    assert np.flatnonzero(np.isin(plan.status, ["dropped", "measured"])).tolist() == [0]
    # ranked by raw DAD, the tail is judged on DAD's robust z over all cases: the same one case
    raw = plan_epoch(
        12, _settings(tail="outlier", score="dad"), epoch_rng(0, 12), dice=dice[:, :11], epochs=epochs[:11]
    )
    assert np.flatnonzero(np.isin(raw.status, ["dropped", "measured"])).tolist() == [0]


def test_an_epoch_that_would_visit_no_case_is_refused_with_the_fix():
    # 10 cases, 2 dropped + 8 easy: no middle band; with r = 0.999 every easy case is thinned (the
    # trainer would crash on an epoch without a batch)
    s = _settings(drop_fraction=0.2, easy_fraction=0.8, thin_ratio=0.999)
    epochs, dice = _history(DAD, 12)
    with pytest.raises(ValueError, match="would visit none of the 10 cases.*lower dynamic_easy_fraction"):
        plan_epoch(12, s, epoch_rng(0, 12), dice=dice[:, :11], epochs=epochs[:11])
