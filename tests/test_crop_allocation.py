"""Patch-level thinning (issue 26 item 1) on hand-made records: how many crops each visit trains
(counts, by hand and within a binomial bound), their weights (every visit counts K crops, so each case
keeps its expected share), seeds, the same-cost random crops, the per-rank split with the crops and
weights riding along, and the data set that hands a visit its crops."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from monai.data import Dataset
from scripts.core.crop_allocation import crop_counts, random_crop_counts, settled
from scripts.core.dynamic_rule import DynamicSettings, epoch_rng, plan_epoch
from scripts.data.record import DynamicsRecord
from scripts.data.visits import VisitDataset

from tests.test_dynamic_pruning import _RankSampler

# ten cases, hardest first: 0-1 the tail, 2-5 the middle, 6-9 the easy head (easy_fraction 0.4)
DAD = np.array([0.05, 0.10, 0.50, 0.55, 0.60, 0.65, 0.80, 0.85, 0.90, 0.95])


def _settings(**kw) -> DynamicSettings:
    base = dict(epochs=40, warmup=10, window=10, drop_fraction=0.2, easy_fraction=0.4, thin_ratio=0.5,
                anneal_fraction=0.125, measure_interval=5, unit="crop", num_crops=2)  # fmt: skip
    return DynamicSettings(**{**base, **kw})


def _history(n_epochs: int, wobble: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every case at its DAD each epoch; the cases in ``wobble`` alternate +-amplitude (variability = it)."""
    dice = np.repeat(DAD[:, None], n_epochs, axis=1)
    for case, amplitude in (wobble or {}).items():
        dice[case] += amplitude * np.where(np.arange(n_epochs) % 2 == 0, 1.0, -1.0)
    return np.arange(1, n_epochs + 1), dice


def test_crop_counts_by_hand_and_their_mean_within_a_binomial_bound():
    rng = np.random.default_rng(0)
    assert set(crop_counts(100, 2, 0.5, rng).tolist()) == {1}  # keep 1 of 2
    assert set(crop_counts(100, 4, 0.2, rng).tolist()) == {1}  # 0.8 crops: at least one
    assert set(crop_counts(100, 4, 1.0, rng).tolist()) == {4}
    # K = 5, keep 0.5: 2 or 3 crops, 3 with probability 0.5, mean 2.5
    n = 4000
    k = crop_counts(n, 5, 0.5, rng)
    assert set(k.tolist()) == {2, 3}
    assert abs(np.sum(k == 3) - n * 0.5) <= 4 * math.sqrt(n * 0.25)
    with pytest.raises(ValueError, match="keep 1.5"):
        crop_counts(3, 2, 1.5, rng)


def test_settled_cases_are_those_whose_variability_is_at_most_the_median():
    variability = np.array([0.0, 0.1, 0.2, 0.3, 0.4, np.nan])
    # ranked cases 0-4: median 0.2; of the candidates 1, 2, 3 the settled are 1 and 2
    assert settled(np.array([1, 2, 3]), variability, np.arange(5)).tolist() == [1, 2]
    assert settled(np.array([], dtype=int), variability, np.arange(5)).tolist() == []


def test_crop_rule_by_hand_tail_dropped_middle_whole_settled_easy_fewer_crops():
    s = _settings()
    # case 9 still moves (variability 0.04, above the median 0 of the ranked cases): it keeps its 2 crops
    epochs, dice = _history(12, wobble={9: 0.04})
    plan = plan_epoch(13, s, epoch_rng(0, 13), dice=dice, epochs=epochs)
    assert plan.phase == "prune"
    assert plan.status.tolist() == ["dropped"] * 2 + ["visited"] * 4 + ["cropped"] * 3 + ["visited"]
    # every case not dropped is visited once; crops and weights per visit
    assert sorted(plan.visits.tolist()) == list(range(2, 10))
    crops = dict(zip(plan.visits.tolist(), plan.visit_crops.tolist()))
    weights = dict(zip(plan.visits.tolist(), plan.visit_weight.tolist()))
    assert crops == {2: 2, 3: 2, 4: 2, 5: 2, 6: 1, 7: 1, 8: 1, 9: 2}
    assert weights == {2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0, 6: 2.0, 7: 2.0, 8: 2.0, 9: 1.0}
    assert plan.counts()["crops"] == 4 * 2 + 3 * 1 + 2 and plan.counts()["cropped"] == 3
    # warm-up and annealing train every crop of every case (annealing: of every case not dropped)
    assert set(plan_epoch(5, s, epoch_rng(0, 5), dice=dice[:, :4], epochs=epochs[:4]).visit_crops.tolist()) == {2}
    epochs, dice = _history(36, wobble={9: 0.04})
    anneal = plan_epoch(37, s, epoch_rng(0, 37), dice=dice, epochs=epochs)
    assert anneal.phase == "anneal" and sorted(anneal.visits.tolist()) == list(range(2, 10))
    assert set(anneal.visit_crops.tolist()) == {2} and set(anneal.visit_weight.tolist()) == {1.0}


def test_every_visit_counts_as_its_k_crops_so_each_case_keeps_its_share():
    # K = 3, r = 0.5: a settled easy case trains 1 or 2 crops (mean 1.5) at weight 3 or 1.5; crops x weight
    # is 3 for every visit of every case, whatever the draw (the weighted loss counts a crop w times)
    s = _settings(num_crops=3, epochs=10_000, window=10_000)
    epochs, dice = _history(10)
    n_epochs, easy_crops = 2000, np.zeros(4)
    for e in range(100, 100 + n_epochs):
        plan = plan_epoch(e, s, epoch_rng(5, e), dice=dice, epochs=epochs)
        np.testing.assert_allclose(plan.visit_crops * plan.visit_weight, 3.0)
        by_case = dict(zip(plan.visits.tolist(), plan.visit_crops.tolist()))
        easy_crops += [by_case[i] for i in range(6, 10)]
        assert all(by_case[i] == 3 for i in range(2, 6))
    # each easy visit: 2 crops with probability 0.5 (else 1): binomial bound on the count of 2-crop visits
    assert np.all(np.abs((easy_crops - n_epochs) - n_epochs * 0.5) <= 4 * math.sqrt(n_epochs * 0.25))


def test_same_seed_and_epoch_same_crops_other_epochs_other_draws():
    s = _settings(num_crops=3)
    epochs, dice = _history(12)
    a = plan_epoch(13, s, epoch_rng(4, 13), dice=dice, epochs=epochs)
    b = plan_epoch(13, s, epoch_rng(4, 13), dice=dice, epochs=epochs)
    for key in ("visits", "visit_crops", "visit_weight", "status"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    draws = {tuple(plan_epoch(e, s, epoch_rng(4, e), dice=dice, epochs=epochs).visit_crops) for e in range(13, 30)}
    assert len(draws) > 3


def test_case_rule_unchanged_beside_the_crop_rule():
    # the case unit (the default) still skips whole easy visits and trains K crops per visit
    epochs, dice = _history(12)
    plan = plan_epoch(13, _settings(unit="case"), epoch_rng(0, 13), dice=dice, epochs=epochs)
    assert set(plan.status[6:]) <= {"thinned", "visited"} and "cropped" not in set(plan.status)
    assert set(plan.visit_crops.tolist()) == {2}


def test_random_crops_spend_exactly_the_budget_uniformly():
    s = _settings(rule="random")
    n_epochs, counts = 1000, np.zeros(10)
    for e in range(1, n_epochs + 1):
        plan = plan_epoch(e, s, epoch_rng(2, e), n_cases=10, budget=13)  # 13 of 20 crop slots
        assert plan.counts()["crops"] == 13 and set(plan.visit_weight.tolist()) == {1.0}
        assert set(plan.status) <= {"visited", "cropped", "thinned"}
        np.add.at(counts, plan.visits, plan.visit_crops)
    # each crop slot kept with probability 13/20: a case's crops per epoch have mean 1.3
    assert np.all(np.abs(counts - n_epochs * 1.3) <= 4 * math.sqrt(n_epochs * 2 * 0.65 * 0.35))
    assert random_crop_counts(4, 2, 8, np.random.default_rng(0)).tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="budget of 21 crops"):
        plan_epoch(1, s, epoch_rng(2, 1), n_cases=10, budget=21)


def test_crop_unit_settings_are_checked():
    with pytest.raises(ValueError, match="unit 'patch' is not one of"):
        _settings(unit="patch")
    with pytest.raises(ValueError, match="unit 'crop' is the dad and random rules'"):
        _settings(rule="infobatch")
    with pytest.raises(ValueError, match="num_crops must be >= 1"):
        _settings(num_crops=0)


def _record(n_epochs: int) -> DynamicsRecord:
    record = DynamicsRecord([f"c{i}" for i in range(10)], ["a"] * 10, 2)
    for e in range(1, n_epochs + 1):
        pooled = np.stack([[[100.0 * d], [100.0], [100.0]] for d in DAD])  # Dice d for case i
        record.add_pooled_epoch(e, "patches", pooled, np.ones(10, dtype=int))
    return record


def test_two_ranks_train_each_planned_crop_once_between_them_at_its_weight():
    s = _settings(window=2, warmup=2, num_crops=3)
    record = _record(6)
    dataset = Dataset([{"case_id": f"c{i}"} for i in range(10)])
    for epoch in (7, 8):
        samplers = [_RankSampler(dataset, record, s, seed=9, rank=r, world=3) for r in range(3)]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        plan = plan_epoch(epoch, s, epoch_rng(9, epoch), dice=record.dice_matrix()[1], epochs=record.epochs,
                          centers=record.centers)  # fmt: skip
        assert len({len(sampler) for sampler in samplers}) == 1  # the same number of batches on every rank
        crops, weights = Counter(), {}
        for sampler in samplers:
            for row, k, w in sampler:
                if w > 0:
                    crops[row] += k
                    weights[row] = w
        expected = Counter()
        for row, k in zip(plan.visits.tolist(), plan.visit_crops.tolist()):
            expected[row] += k
        assert crops == expected  # 8 visits over 3 ranks: one padding repeat, not trained
        assert weights == dict(zip(plan.visits.tolist(), plan.visit_weight.tolist()))
        assert "cropped" in set(plan.status)


def test_visit_dataset_gives_a_visit_its_first_crops_with_the_weight():
    crops = Dataset([[{"case_id": "a", "crop": j} for j in range(3)], {"case_id": "b", "crop": 0}])
    visits = VisitDataset(crops)
    assert [(c["crop"], c["loss_weight"]) for c in visits[(0, 2, 1.5)]] == [(0, 1.5), (1, 1.5)]
    assert [c["loss_weight"] for c in visits[0]] == [1.0, 1.0, 1.0]  # a plain row: all crops, weight 1
    assert visits[(1, 1, 0.0)] == [{"case_id": "b", "crop": 0, "loss_weight": 0.0}]
    with pytest.raises(ValueError, match="item 1 has 1 crops but its visit trains 2"):
        visits[(1, 2, 1.0)]
