"""Noise-aware stop rules on hand-made sequences and a synthetic record with known noise."""

import math

import numpy as np
import pytest
from scripts.core.dynamics import moving_distance, stop_index, window_stats
from scripts.core.stop_rules import (
    fired_window,
    noise_stop_index,
    rank_data,
    spearman,
    split_half_floor,
    threshold_stop_index,
    window_curve,
)

NAN = float("nan")


def test_noise_rule_fires_on_a_noisy_plateau_where_the_papers_rule_does_not():
    distances = [10.0, 2.1, 1.9, 2.0, 2.05]  # a plateau at the noise floor: never 1% of 10
    floors = [2.0, 2.0, 2.0, 2.0, 2.0]
    assert stop_index(distances, 0.01) is None
    assert noise_stop_index(distances, floors, factor=1.0) == 2
    assert noise_stop_index(distances, floors, factor=1.1) == 1
    assert noise_stop_index(distances, floors, factor=0.5) is None


def test_undefined_windows_never_count_as_settled():
    assert noise_stop_index([NAN, 1.0, 0.5], [1.0, NAN, 1.0], factor=1.0) == 2
    assert noise_stop_index([NAN, NAN], [1.0, 1.0]) is None
    assert threshold_stop_index([NAN, 0.5, 0.97], 0.95) == 2
    assert threshold_stop_index([NAN, 0.9], 0.95) is None
    with pytest.raises(ValueError, match="noise factor"):
        noise_stop_index([1.0], [1.0], factor=0)


def test_spearman_hand_worked_and_ties():
    # d = (0, 1, 1, 0): rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_data([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]
    # a case missing in either window is left out
    assert spearman([1, 2, NAN, 3, 4], [1, 3, 0.5, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(spearman([1, 2], [2, 1]))


def _noisy_record(n_cases=400, n_epochs=20, sigma=0.05, trend=0.0, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.3, 0.8, size=(n_cases, 1))
    epochs = np.arange(1, n_epochs + 1)
    dice = truth + trend * epochs[None, :] + rng.normal(0, sigma, size=(n_cases, n_epochs))
    return epochs, dice


def test_split_half_floor_matches_the_noise_between_windows():
    epochs, dice = _noisy_record()
    # two windows of 10 of pure noise: the L between them is what noise alone gives
    between = moving_distance(*window_stats(dice, epochs, 0, 10), *window_stats(dice, epochs, 10, 20))
    floor = np.mean([split_half_floor(dice, epochs, 0, 10), split_half_floor(dice, epochs, 10, 20)])
    assert floor == pytest.approx(between, rel=0.1)
    # the mean term alone, analytically: n * E|N(0, 2 s^2 / 10)| = n * sqrt(2/pi) * sqrt(2 s^2 / 10)
    mean_part = 400 * math.sqrt(2 / math.pi) * math.sqrt(2 * 0.05**2 / 10)
    assert mean_part < between < 2.5 * mean_part  # plus the variability term, of the same order


def test_noise_rule_compares_like_with_like_with_one_measured_epoch_per_half():
    # volumes mode with dad_interval = delta_t / 2: Dice measured at epochs 2, 4, ..., windows of 4 epochs
    # hold 2 measurements, each half 1 (its sigma is 0, so the split-half floor has no variability term)
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.3, 0.8, size=(400, 1))
    epochs = np.arange(2, 61, 2)
    dice = truth + rng.normal(0, 0.05, size=(400, len(epochs)))  # pure noise: a settled map
    rows = window_curve(epochs, dice, 60, 4)
    pairs = rows[1:]
    # on a settled map the rule fires at the first pair with a factor of 1.2 (it did not below 1.5)
    assert fired_window(rows, "noise", noise_factor=1.2) == 0
    assert {r["noise_terms"] for r in pairs} == {"mean"}
    ratio = np.mean([r["noise_distance"] / r["noise_floor"] for r in pairs])
    assert ratio == pytest.approx(1.0, abs=0.1)  # L with the variability term against this floor: ~1.5
    # the mean term by hand: n * E|N(0, 2 s^2 / 2)| between windows, the same between halves over sqrt(2)
    expected = 400 * math.sqrt(2 / math.pi) * 0.05
    assert np.mean([r["noise_floor"] for r in pairs]) == pytest.approx(expected, rel=0.1)
    # two recorded epochs per half: the full L against the full floor, as before
    assert {r["noise_terms"] for r in window_curve(epochs, dice, 60, 8)[1:]} == {"mean+variability"}


def test_learning_moves_more_than_the_noise():
    epochs, dice = _noisy_record(trend=0.01)  # every case gains 0.1 Dice per window
    rows = window_curve(epochs, dice, 20, 10)
    # a steady trend moves whole windows twice as far as half windows (10 vs 5 epochs apart), over √2
    assert rows[1]["distance"] > 2 * rows[1]["noise_floor"]
    assert fired_window(rows, "noise") is None
    flat = window_curve(*_noisy_record(n_epochs=40), 40, 10)
    assert fired_window(flat, "noise", noise_factor=1.5) is not None


def test_window_curve_columns_and_rules():
    epochs, dice = _noisy_record(n_cases=50, n_epochs=30, sigma=0.01)
    rows = window_curve(epochs, dice, 30, 10, overlap_rate=0.3)
    assert [r["epoch_end"] for r in rows] == [10, 20, 30]
    for row in rows[1:]:
        assert row["spearman"] > 0.95 and row["kept_jaccard"] > 0.7
    assert fired_window(rows, "rank", rank_threshold=0.95) == 0
    assert fired_window(rows, "distance") is None  # a flat noisy curve never falls to 1% of its maximum
    with pytest.raises(ValueError, match="unknown stop rule"):
        fired_window(rows, "median")


def test_reference_analysis_on_a_known_record(tmp_path):
    """A record that settles after epoch 10: the analysis compares every window with the end of the run."""
    import json

    from scripts.data.record import DynamicsRecord
    from scripts.experiments.reference_runs import analyze

    rng = np.random.default_rng(1)
    ids = [f"c{i}" for i in range(40)]
    truth = np.linspace(0.2, 0.9, 40)
    record = DynamicsRecord(ids, ["x"] * 40, 2)
    for epoch in range(1, 41):
        learnt = truth * min(epoch, 10) / 10 + rng.normal(0, 0.005, 40)  # settles at epoch 10
        counts = np.stack([100 * np.clip(learnt, 0, 1), np.full(40, 100.0), np.full(40, 100.0)], axis=1)
        record.add_epoch(epoch, "patches", ids, counts[:, :, None])
    stage1 = tmp_path / "stage1"
    record.save(stage1 / "dynamics.csv")
    (stage1 / "run.json").write_text(json.dumps({"delta_t": 5}))
    result = analyze(stage1, tmp_path)
    rows = result["rows"]
    assert [r["epoch_end"] for r in rows] == list(range(5, 45, 5))
    assert rows[-1]["jaccard_final_ambiguous"] == 1.0 and rows[-1]["spearman_final"] == pytest.approx(1.0)
    assert rows[2]["spearman_final"] > 0.99  # settled from epoch 15 on
    fired = {(f["rule"], f["setting"]): f["epoch"] for f in result["firings"]}
    assert fired[("rank", "rank_threshold=0.95")] == 10  # window 6-10 ranks like window 1-5 already
    assert (tmp_path / "reference.png").stat().st_size > 10_000
    assert "| rank | rank_threshold=0.95 | 10 |" in (tmp_path / "reference.md").read_text()
