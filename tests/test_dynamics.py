"""The DAD math against hand-worked numbers."""

import numpy as np
import pytest
from scripts.core.dynamics import (
    case_dice,
    foreground_counts,
    moving_distance,
    pooled_dice,
    stop_index,
    window_bounds,
    window_stats,
)


def test_foreground_counts_and_dice_two_classes():
    # class 1: P={0,5}, Y={0,1} -> |P∩Y|=1, Dice = 2*1/(2+2) = 0.5
    # class 2: P={4},   Y={4,5} -> |P∩Y|=1, Dice = 2*1/(1+2) = 2/3
    label = np.array([[1, 1, 0, 0, 2, 2]])
    pred = np.array([[1, 0, 0, 0, 2, 1]])
    counts = foreground_counts(pred, label, num_classes=3)
    np.testing.assert_array_equal(counts[0], [[1, 1], [2, 1], [2, 2]])
    dice = pooled_dice(counts)
    np.testing.assert_allclose(dice, [[0.5, 2 / 3]])
    np.testing.assert_allclose(case_dice(dice), [(0.5 + 2 / 3) / 2])


def test_pooling_over_crops_is_not_the_mean_of_crop_dice():
    # crop A: |P∩Y|=1, |P|=2, |Y|=2 (Dice 0.5); crop B: |P∩Y|=3, |P|=4, |Y|=4 (Dice 0.75)
    # pooled: 2*(1+3) / (6+6) = 2/3, not (0.5+0.75)/2
    a = foreground_counts(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 1, 0]]), 2)
    b = foreground_counts(np.array([[1, 1, 1, 1, 0]]), np.array([[1, 1, 1, 0, 1]]), 2)
    np.testing.assert_allclose(pooled_dice(a + b), [[2 / 3]])


def test_undefined_dice_is_missing_and_false_positive_is_zero():
    empty = np.zeros((1, 4), dtype=int)
    assert np.isnan(pooled_dice(foreground_counts(empty, empty, 2))[0, 0])
    # empty label, network predicts foreground: a real miss, Dice 0
    fp = pooled_dice(foreground_counts(np.array([[0, 1, 1, 0]]), empty, 2))
    assert fp[0, 0] == 0.0
    assert np.isnan(case_dice(np.array([np.nan, np.nan])))
    assert case_dice(np.array([0.5, np.nan])) == 0.5


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        foreground_counts(np.zeros((1, 4)), np.zeros((1, 5)), 2)


def test_window_bounds():
    assert window_bounds(25, 10) == [(0, 10), (10, 20)]
    assert window_bounds(9, 10) == []
    with pytest.raises(ValueError):
        window_bounds(10, 0)


def test_window_stats_mean_and_population_std():
    dice = np.array([[0.2, 0.4, 0.6, 0.8], [np.nan, 0.4, np.nan, np.nan]])
    epochs = [1, 2, 3, 4]
    mean, std = window_stats(dice, epochs, 0, 2)
    np.testing.assert_allclose(mean, [0.3, 0.4])
    np.testing.assert_allclose(std, [0.1, 0.0])  # population std of (0.2, 0.4) is 0.1
    mean, std = window_stats(dice, epochs, 2, 4)
    np.testing.assert_allclose(mean[0], 0.7)
    np.testing.assert_allclose(std[0], 0.1)
    assert np.isnan(mean[1]) and np.isnan(std[1])


def test_moving_distance_absolute_and_signed():
    # case A: (0.3, 0.1) -> (0.7, 0.1); case B: (0.5, 0.2) -> (0.4, 0.1); case C undefined later
    prev_mu, prev_sd = np.array([0.3, 0.5, 0.9]), np.array([0.1, 0.2, 0.0])
    mu, sd = np.array([0.7, 0.4, np.nan]), np.array([0.1, 0.1, np.nan])
    assert moving_distance(prev_mu, prev_sd, mu, sd) == pytest.approx(0.4 + 0.0 + 0.1 + 0.1)
    assert moving_distance(prev_mu, prev_sd, mu, sd, signed=True) == pytest.approx(0.4 + 0.0 - 0.1 - 0.1)


@pytest.mark.parametrize(
    "distances, expected",
    [
        ([10.0, 5.0, 0.09], 2),
        ([10.0, 0.1], 1),  # exactly 1% fires
        ([10.0, 0.11, 0.2], None),
        ([2.0, 20.0, 0.2], 2),  # the largest so far includes the current window
        ([0.0, 0.0], None),  # no movement at all is no evidence of settling
        ([0.0], None),
        ([5.0, -1.0], 1),  # the signed form can go negative and trips the rule (paper's code)
    ],
)
def test_stop_index(distances, expected):
    assert stop_index(distances, 0.01) == expected


def test_stop_fraction_range():
    with pytest.raises(ValueError):
        stop_index([1.0], 1.5)


def test_jaccard_and_overlap_rule():
    from scripts.core.dynamics import jaccard, overlap_stop_index

    assert jaccard([1, 1, 0, 0], [0, 1, 1, 0]) == pytest.approx(1 / 3)
    assert jaccard([0, 0], [0, 0]) == 1.0
    assert overlap_stop_index([0.5, 0.89, 0.95], 0.9) == 2
    assert overlap_stop_index([0.5, 0.8], 0.9) is None
