"""CCS by hand, every strategy's counts with and without per-center groups, and score-based selection."""

import math

import numpy as np
import pytest
from scripts.core.strategies import STRATEGIES, ccs_keep, select, select_by_score


def test_ccs_drops_the_hardest_then_fills_strata_evenly():
    scores = np.arange(10.0)  # 0 is the hardest
    keep = ccs_keep(scores, 5, np.random.default_rng(0), beta=0.1, num_strata=3)
    # beta drops case 0; strata of width 8/3 over 1..9: {1,2,3}, {4,5,6}, {7,8,9}; budget 5 -> 1, 2, 2
    assert keep.sum() == 5 and not keep[0]
    assert [keep[1:4].sum(), keep[4:7].sum(), keep[7:10].sum()] == [1, 2, 2]


def test_ccs_covers_a_sparse_stratum():
    scores = np.array([0, 1, 1, 1, 1, 1, 1, 10.0])
    keep = ccs_keep(scores, 4, np.random.default_rng(0), beta=0.1, num_strata=2)
    # floor(.1 * 8) = 0 cut; strata [0, 5) with 7 cases and [5, 10] with 1: the lone case is kept, 3 from the rest
    assert keep[7] and keep.sum() == 4


def test_ccs_cut_never_leaves_less_than_the_budget():
    keep = ccs_keep(np.arange(10.0), 9, np.random.default_rng(0), beta=0.5, num_strata=4)
    assert keep.sum() == 9 and not keep[0]
    assert ccs_keep(np.full(4, np.nan), 2, np.random.default_rng(0)).sum() == 2
    with pytest.raises(ValueError, match="cannot keep"):
        ccs_keep(np.arange(3.0), 4, np.random.default_rng(0))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_every_strategy_keeps_the_right_counts(strategy, rate):
    rng = np.random.default_rng(1)
    scores = rng.random(23)
    scores[[2, 5]] = np.nan
    keep = select(scores, rate, strategy, seed=3)
    assert keep.sum() == 23 - math.floor(rate * 23)
    groups = np.array(["a"] * 10 + ["b"] * 7 + ["c"] * 6)
    keep = select(scores, rate, strategy, seed=3, groups=groups)
    # per center its largest-remainder share of the floor(rate * 23) drops (hand-worked):
    # 0.3: 3, 2.1, 1.8 -> 3, 2, 1 (6 = floor(6.9), none left); 0.5: 5, 3.5, 3 -> 5, 3, 3 (11);
    # 0.7: 7, 4.9, 4.2 -> 7, 4, 4 and the 16th drop to b, the largest remainder (0.9)
    drops = {0.3: (3, 2, 1), 0.5: (5, 3, 3), 0.7: (7, 5, 4)}[rate]
    assert keep.sum() == 23 - math.floor(rate * 23)
    for (g, n), d in zip((("a", 10), ("b", 7), ("c", 6)), drops):
        assert keep[groups == g].sum() == n - d


def test_select_by_score_uses_each_papers_direction():
    values = np.array([0.1, 0.5, 0.9, 0.3])
    # EL2N (higher = harder), prescribed "hard": keep the 2 highest
    np.testing.assert_array_equal(select_by_score(values, "el2n", 0.5), [False, True, True, False])
    # cleanlab quality (low = likely wrong), prescribed "easy": drop the 2 lowest
    np.testing.assert_array_equal(select_by_score(values, "cleanlab", 0.5), [False, True, True, False])
    # MONAI label quality (higher = worse), "easy": drop the 2 highest
    np.testing.assert_array_equal(select_by_score(values, "monai_lq", 0.5), [True, False, False, True])
    # DAD, "ambiguous": drop floor(2/2) = 1 hardest (0.1) and 1 easiest (0.9)
    np.testing.assert_array_equal(select_by_score(values, "dad", 0.5), [False, True, False, True])
    keep = select_by_score(values, "vog", 0.5, strategy="ccs", groups=["x", "x", "y", "y"])
    assert keep[:2].sum() == 1 and keep[2:].sum() == 1
    with pytest.raises(ValueError, match="unknown score"):
        select_by_score(values, "nope", 0.5)


def test_a_selection_says_what_it_did_with_missing_scores(caplog):
    import logging

    import numpy as np
    from scripts.core.strategies import select_by_score

    # EL2Nx of two empty labels is NaN: "hard" keeps them as the hardest, and says so
    values = np.array([0.1, np.nan, 0.3, 0.2, np.nan, 0.5])
    with caplog.at_level(logging.WARNING, logger="selection"):
        keep = select_by_score(values, "el2nx", 0.5)
    assert keep.tolist() == [False, True, False, False, True, True]  # the two missing, then the highest (0.5)
    assert "2 of 6 cases have no score" in caplog.text and "'hard' strategy kept 2 and dropped 0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="selection"):
        select_by_score(values, "el2nx", 0.5, strategy="easy")  # drops the hardest: both missing cases go
    assert "'easy' strategy kept 0 and dropped 2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="selection"):
        select_by_score(np.nan_to_num(values), "el2nx", 0.5)
    assert "no score" not in caplog.text  # nothing to say without missing scores
