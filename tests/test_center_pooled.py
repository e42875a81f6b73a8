"""DAD against center statistics shrunk toward all cases' (partial pooling), by hand."""

import numpy as np
import pytest
from scripts.core.detection import auroc
from scripts.scores.center_norm import pooled_center_zscore, robust_center_zscore


def test_pooled_zscore_by_hand():
    # a: 0.9, 0.8, 0.7 (median 0.8, MAD 0.1 -> spread 0.14826); b: 0.2, 0.6 (median 0.4, MAD 0.2 -> 0.29652)
    # all five: median 0.7, deviations 0.2 0.1 0 0.5 0.1 -> MAD 0.1 -> spread 0.14826
    values = np.array([0.9, 0.8, 0.7, 0.2, 0.6])
    groups = ["a", "a", "a", "b", "b"]
    z = pooled_center_zscore(values, groups, prior_cases=2)
    wa, wb = 3 / 5, 2 / 4
    loc_a, sc_a = wa * 0.8 + (1 - wa) * 0.7, wa * 0.14826 + (1 - wa) * 0.14826
    loc_b, sc_b = wb * 0.4 + (1 - wb) * 0.7, wb * 0.29652 + (1 - wb) * 0.14826
    expected = [(0.9 - loc_a) / sc_a, (0.8 - loc_a) / sc_a, (0.7 - loc_a) / sc_a, (0.2 - loc_b) / sc_b,
                (0.6 - loc_b) / sc_b]  # fmt: skip
    np.testing.assert_allclose(z, expected, rtol=1e-4)
    # no pooling: the robust z-score within each center; one center: the same
    np.testing.assert_allclose(pooled_center_zscore(values, groups, 0), robust_center_zscore(values, groups))
    np.testing.assert_allclose(pooled_center_zscore(values), robust_center_zscore(values))
    assert np.isnan(pooled_center_zscore(np.array([np.nan, 0.5]), ["a", "a"])[0])
    with pytest.raises(ValueError, match="prior_cases"):
        pooled_center_zscore(values, groups, -1)


def test_small_center_with_several_faults_keeps_them_hard():
    rng = np.random.default_rng(0)
    # three large centers of 20 clean cases (DAD ~0.85, one of them harder ~0.75) with one fault each, and a
    # small center of 4 cases, 2 of them faulty: within it the faults set the median, so z hides them
    values, groups, faulty = [], [], []
    for name, level in (("big1", 0.85), ("big2", 0.85), ("big3", 0.75)):
        values += list(level + rng.normal(0, 0.02, 20)) + [level - 0.25]
        groups += [name] * 21
        faulty += [False] * 20 + [True]
    values += [0.84, 0.86, 0.55, 0.60]
    groups += ["small"] * 4
    faulty += [False, False, True, True]
    values, faulty = np.array(values), np.array(faulty)
    within = auroc(-robust_center_zscore(values, groups), faulty)
    pooled = auroc(-pooled_center_zscore(values, groups), faulty)
    assert within < 0.95  # the small center's faults sit at its median: ordinary within it
    assert pooled == 1.0  # against mostly everyone's statistics they are the hardest, as the big centers' faults
