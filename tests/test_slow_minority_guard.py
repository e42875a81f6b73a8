"""The noise stop rule's slow-minority guard: cases that still move beyond their own noise (issue 15)."""

import json

import numpy as np
import pytest
from ignite.engine import Engine
from scripts.core.stop_rules import fired_window, movers_share, moving_cases, noise_stop_index, window_curve
from scripts.data.record import DynamicsRecord
from scripts.experiments.slow_minority import simulate
from scripts.handlers import MovingDistanceHandler


def test_moving_cases_by_hand():
    # windows (0, 2] and (2, 4]; one row per case
    dice = np.array(
        [
            [0.4, 0.6, 0.8, 1.0],  # means 0.5 -> 0.9, s^2 0.02 each: se sqrt(0.01 + 0.01) = 0.1414, z = 2.83
            [0.5, 0.5, 0.5, 0.5],  # no spread, no move
            [0.2, 0.2, 0.3, 0.3],  # no spread, a move of 0.1: moving
            [0.2, np.nan, 0.3, 0.3],  # one measured epoch in the first window: not judged
        ]
    )
    epochs = [1, 2, 3, 4]
    np.testing.assert_array_equal(moving_cases(dice, epochs, (0, 2), (2, 4), z=3.0), [0, 0, 1, np.nan])
    np.testing.assert_array_equal(moving_cases(dice, epochs, (0, 2), (2, 4), z=2.5), [1, 0, 1, np.nan])
    assert movers_share(dice, epochs, (0, 2), (2, 4), z=3.0) == pytest.approx(1 / 3)
    assert np.isnan(movers_share(dice[3:], epochs, (0, 2), (2, 4)))


def test_guard_waits_for_few_movers():
    distances, floors = [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]  # L within the floor at every pair
    assert noise_stop_index(distances, floors, 1.5, [0.2, 0.01, 0.0], max_movers=0.05) == 1
    assert noise_stop_index(distances, floors, 1.5, [0.2, np.nan, 0.04], max_movers=0.05) == 2  # NaN never passes
    assert noise_stop_index(distances, floors, 1.5, [0.2, 0.2, 0.2], max_movers=0.05) is None
    assert noise_stop_index(distances, floors, 1.5) == 0  # no guard: the rule as before
    with pytest.raises(ValueError, match="share"):
        noise_stop_index(distances, floors, 1.5, [0.0] * 3, max_movers=5)
    with pytest.raises(ValueError, match="movers share"):
        noise_stop_index(distances, floors, 1.5, None, max_movers=0.05)


def test_settled_map_has_about_one_percent_movers():
    rng = np.random.default_rng(0)
    epochs = np.arange(1, 41)
    dice = rng.uniform(0.3, 0.9, (2000, 1)) + rng.normal(0, 0.05, (2000, 40))  # pure noise
    shares = [r["movers"] for r in window_curve(epochs, dice, 40, 10)[1:]]
    # |t| > 3 with Welch's 18 degrees of freedom: 2 x 0.0039 (t table) = 0.8%
    assert all(0.003 < s < 0.016 for s in shares)


@pytest.mark.parametrize("seed", range(3))
def test_unguarded_rule_fires_while_the_slow_cases_still_move(seed):
    epochs, dice, slow = simulate(slow_share=0.15, seed=seed)
    rows = window_curve(epochs, dice, 60, 10)
    k = fired_window(rows, "noise", noise_factor=1.5)
    assert k is not None and rows[k + 1]["epoch_end"] <= 40  # fires while tau = 25 cases are far from plateau
    end = rows[k + 1]["epoch_end"]
    moving = moving_cases(dice, epochs, (end - 20, end - 10), (end - 10, end))
    # the guard sees who moves: most of the slow learners, hardly any of the settled majority
    assert np.mean(moving[slow]) >= 0.5 and np.mean(moving[~slow]) <= 0.03
    guarded = fired_window(rows, "noise", noise_factor=1.5, max_movers=0.05)
    assert guarded is None or guarded > k
    # with no slow minority the guard does not delay the rule
    flat_rows = window_curve(*simulate(slow_share=0.0, seed=seed)[:2], 60, 10)
    assert fired_window(flat_rows, "noise", noise_factor=1.5, max_movers=0.05) == fired_window(
        flat_rows, "noise", noise_factor=1.5
    )


def test_handler_writes_movers_and_applies_the_guard(tmp_path):
    epochs, dice, _ = simulate(n_cases=40, epochs=40, slow_share=0.25, seed=1)
    ids = [f"c{i}" for i in range(40)]
    record = DynamicsRecord(ids, ["x"] * 40, 2)
    for e in range(40):  # counts that give exactly the simulated Dice: |P| = |Y| = 1000
        counts = np.stack([1000 * dice[:, e], np.full(40, 1000.0), np.full(40, 1000.0)], axis=1)[..., None]
        record.add_epoch(e + 1, "patches", ids, counts)
    results = {}
    for name, guard in (("plain", None), ("guarded", 0.0)):
        handler = MovingDistanceHandler(record, tmp_path / name, delta_t=10, rule="noise", noise_factor=1.5,
                                        noise_max_movers=guard)  # fmt: skip
        engine = Engine(lambda e, b: None)
        handler.attach(engine)
        engine.run([0], max_epochs=40)
        results[name] = json.loads((tmp_path / name / "stop_rule.json").read_text())
        header = (tmp_path / name / "moving_distance.csv").read_text().splitlines()[0].split(",")
        assert "movers" in header
    assert results["guarded"]["noise_max_movers"] == 0.0
    plain, guarded = results["plain"]["prune_epoch"], results["guarded"]["prune_epoch"]
    assert guarded is None or (plain is not None and guarded > plain)
    if guarded is None:
        assert "still moving" in results["guarded"]["note"]
    with pytest.raises(ValueError, match="noise_max_movers"):
        MovingDistanceHandler(record, tmp_path, noise_max_movers=1.5)


def test_seeds_table_reports_each_run(tmp_path):
    from scripts.experiments.reference_runs import seeds

    rng = np.random.default_rng(0)
    dirs = []
    for name, trend in (("settled", 0.0), ("learning", 0.02)):
        d = tmp_path / name
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"delta_t": 10}))
        ids = [f"c{i}" for i in range(60)]
        truth = rng.uniform(0.2, 0.5, 60)
        record = DynamicsRecord(ids, ["x"] * 60, 2)
        for e in range(1, 31):
            dice = np.clip(truth + trend * e + rng.normal(0, 0.03, 60), 0, 1)
            counts = np.stack([1000 * dice, np.full(60, 1000.0), np.full(60, 1000.0)], axis=1)[..., None]
            record.add_epoch(e, "patches", ids, counts)
        record.save(d / "dynamics.csv")
        dirs.append(str(d))
    text = seeds(*dirs, out=str(tmp_path / "t.md"))
    settled = next(line for line in text.splitlines() if line.startswith("| settled"))
    learning = next(line for line in text.splitlines() if line.startswith("| learning"))
    # pure noise: the noise rule (with or without the guard) fires at the first pair, epoch 20 of 30
    assert all(cell.startswith("20 (67%), J ") for cell in settled.split(" | ")[1:3])
    # every case gains 0.2 Dice per window (7 noise sd): no noise rule fires, every case moves
    assert learning.split(" | ")[1:3] == ["never", "never"]
    assert "movers 1.00 / 1.00" in text
    assert (tmp_path / "t.md").read_text().strip() == text
