"""Selection on hand-made rankings."""

import numpy as np
import pytest
from scripts.core.selection import drop_counts, group_drops, num_dropped, ranks, regions
from scripts.core.strategies import select

IDS = list("abcdefghij")
# ascending: b .1, f .2, d .3, h .4, a .5, i .6, e .7, g .8, c .9, j .95
SCORES = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.95]


def kept(mask):
    return sorted(i for i, k in zip(IDS, mask) if k)


def test_drop_counts_exact():
    assert drop_counts(10, 0.4) == (2, 2)
    assert drop_counts(10, 0.33) == (1, 2)  # floor(3.3)=3: floor(1.65)=1 hardest, 2 easiest
    assert drop_counts(7, 0.5) == (1, 2)  # floor(3.5)=3, floor(1.75)=1


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("ambiguous", ["a", "d", "e", "g", "h", "i"]),  # drop b, f (hardest) and c, j (easiest)
        ("easy", ["a", "c", "e", "g", "i", "j"]),  # the 6 highest DAD
        ("hard", ["a", "b", "d", "f", "h", "i"]),  # the 6 lowest DAD
    ],
)
def test_strategies_n10_p04(strategy, expected):
    assert kept(select(SCORES, 0.4, strategy)) == expected


def test_random_is_seeded_and_sized():
    a = select(SCORES, 0.4, "random", seed=1)
    assert a.sum() == 6
    np.testing.assert_array_equal(a, select(SCORES, 0.4, "random", seed=1))
    assert any(not np.array_equal(a, select(SCORES, 0.4, "random", seed=s)) for s in range(2, 6))


def test_regions_and_ranks():
    reg = dict(zip(IDS, regions(SCORES, 0.4)))
    assert {k for k, v in reg.items() if v == "hard"} == {"b", "f"}
    assert {k for k, v in reg.items() if v == "easy"} == {"c", "j"}
    assert dict(zip(IDS, ranks(SCORES)))["b"] == 1 and dict(zip(IDS, ranks(SCORES)))["j"] == 10


def test_missing_score_ranks_hardest():
    scores = [0.5, np.nan, 0.9, 0.3]
    assert ranks(scores)[1] == 1
    assert regions(scores, 0.5)[1] == "hard"


def test_stratified_keeps_each_centers_share():
    centers = ["x"] * 6 + ["y"] * 4
    mask = select(SCORES, 0.5, "ambiguous", groups=centers)
    # x: a..f scores .5 .1 .9 .3 .7 .2 -> drop floor(1.5)=1 hardest (b) and 2 easiest (c, e)
    # y: g..j scores .8 .4 .6 .95 -> drop 1 hardest (h) and 1 easiest (j)
    assert kept(mask) == ["a", "d", "f", "g", "i"]
    assert sum(m for m, c in zip(mask, centers) if c == "x") == 3
    assert sum(m for m, c in zip(mask, centers) if c == "y") == 2


@pytest.mark.parametrize("rate", [0, 1, -0.1, 1.5])
def test_rate_out_of_range(rate):
    with pytest.raises(ValueError, match="prune rate"):
        select(SCORES, rate)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown selection strategy 'median'"):
        select(SCORES, 0.4, "median")


def test_stratified_keeps_the_requested_total():
    # centers of 3/3/3/5/1 at p = 0.3: floor(4.5) = 4 drops in all; floor(p*n_g) gives 0/0/0/1/0, and the
    # 3 left over go to the largest remainders (0.9, 0.9, 0.9), not to the 5-case center (0.5) or the 1 (0.3)
    centers = ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["d"] * 5 + ["e"]
    scores = np.linspace(0.1, 0.9, len(centers))
    assert group_drops(centers, 0.3) == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 0}
    for strategy in ("ambiguous", "easy", "hard", "random"):
        mask = select(scores, 0.3, strategy, groups=centers)
        assert mask.sum() == 11, strategy
        kept_per_center = {c: int(sum(m for m, g in zip(mask, centers) if g == c)) for c in "abcde"}
        assert kept_per_center == {"a": 2, "b": 2, "c": 2, "d": 4, "e": 1}, strategy


def test_stratified_regions_and_ranks_agree_with_kept():
    centers = ["x"] * 6 + ["y"] * 4
    mask = select(SCORES, 0.5, "ambiguous", groups=centers)
    reg = regions(SCORES, 0.5, groups=centers)
    np.testing.assert_array_equal(mask, reg == "ambiguous")
    # x: b .1 (hard), e .7 and c .9 (easy); y: h .4 (hard), j .95 (easy)
    assert {i for i, r in zip(IDS, reg) if r == "hard"} == {"b", "h"}
    assert {i for i, r in zip(IDS, reg) if r == "easy"} == {"c", "e", "j"}
    r = dict(zip(IDS, ranks(SCORES, groups=centers)))
    assert (r["b"], r["f"], r["d"], r["a"], r["e"], r["c"]) == (1, 2, 3, 4, 5, 6)
    assert (r["h"], r["i"], r["g"], r["j"]) == (1, 2, 3, 4)


@pytest.mark.parametrize("n, rate, dropped", [(100, 0.29, 29), (100, 0.57, 57), (300, 0.7, 210), (10, 0.3, 3)])
def test_drop_count_is_exact_decimal(n, rate, dropped):
    # in floats 0.29 * 100 = 28.999999999999996 and floor gives 28
    assert num_dropped(n, rate) == dropped
    assert select(np.arange(n, dtype=float), rate).sum() == n - dropped
    assert sum(drop_counts(n, rate)) == dropped


def test_ties_are_broken_by_a_seeded_key_not_by_data_list_order():
    # the example: 8 + 8 never-forgotten cases of centers a and b (listed first, sorted by id),
    # then 4 forgettable ones; forgetting:hard keeps the hardest 10 = the 4 forgettable + 6 of the 16 tied
    from scripts.core.strategies import select_by_score

    centers = np.array(["a"] * 8 + ["b"] * 8 + ["c"] * 4)
    forgetting = np.array([0.0] * 16 + [1.0, 2.0, 1.0, 3.0])
    kept_a = []
    for seed in range(200):
        keep = select_by_score(forgetting, "forgetting", 0.5, seed=seed)
        assert keep.sum() == 10 and keep[16:].all()  # the forgettable cases are always kept
        kept_a.append(int(keep[centers == "a"].sum()))
        assert kept_a[-1] + keep[centers == "b"].sum() == 6
        np.testing.assert_array_equal(keep, select_by_score(forgetting, "forgetting", 0.5, seed=seed))  # seeded
    # data-list order kept 6 of a and 0 of b every time; a fair draw of 6 of 16 takes 6 * 8/16 = 3 from a
    # on average (hypergeometric, sd 1.03 per draw: the mean of 200 draws is within 3 +- 0.25 at 3.4 sd)
    assert abs(np.mean(kept_a) - 3.0) < 0.25
    assert min(kept_a) < 6
    # ranks and regions break the ties as select does with the same seed
    dad_like = -forgetting  # forgetting oriented as DAD (low = hard)
    for seed in (0, 7):
        keep = select(dad_like, 0.5, "easy", seed=seed)
        order = np.argsort(ranks(dad_like, seed=seed))
        np.testing.assert_array_equal(np.sort(order[10:]), np.flatnonzero(keep))
        amb = select(dad_like, 0.5, "ambiguous", seed=seed)
        np.testing.assert_array_equal(regions(dad_like, 0.5, seed=seed) == "ambiguous", amb)
