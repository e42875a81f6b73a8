"""The moving-distance handler computes each window once, yet its curve and stop rule equal the whole
curve recomputed from the whole record, on random records, whatever changes afterwards."""

import numpy as np
import pytest
import scripts.handlers.moving_distance as md
from scripts.core.stop_rules import RULES, fired_window, window_curve
from scripts.data.record import DynamicsRecord
from scripts.handlers import MovingDistanceHandler


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], float) or isinstance(b[k], float):
            assert a[k] == pytest.approx(b[k], nan_ok=True, rel=1e-12, abs=1e-15), k
        else:
            assert a[k] == b[k], k


def _counts(rng, n, dice_level):
    """Overlap counts (n, 3, 1) of a Dice near ``dice_level`` per case; some cases unmeasured (NaN Dice)."""
    y = rng.integers(5, 50, n).astype(float)
    p = y * rng.uniform(0.5, 1.5, n)
    inter = np.minimum(np.minimum(p, y), np.clip(dice_level + rng.normal(0, 0.1, n), 0, 1) * (p + y) / 2)
    counts = np.stack([inter, p, y], axis=1)[:, :, None]
    counts[rng.random(n) < 0.1] = 0.0  # neither predicted nor labelled: undefined
    return counts


@pytest.mark.parametrize("delta_t,interval,seed", [(2, 1, 0), (3, 1, 1), (5, 1, 2), (4, 2, 3), (10, 5, 4)])
def test_incremental_curve_equals_full_recompute_on_random_records(tmp_path, monkeypatch, delta_t, interval, seed):
    rng = np.random.default_rng(seed)
    n, epochs = 30, 8 * delta_t
    record = DynamicsRecord([f"c{i}" for i in range(n)], [f"k{i % 3}" for i in range(n)], 2)
    handler = MovingDistanceHandler(record, tmp_path, delta_t=delta_t, measure_interval=interval, rule="noise")
    computed = []
    real_row = md.window_row
    monkeypatch.setattr(md, "window_row", lambda *a, **k: computed.append(a[0]) or real_row(*a, **k))
    level = rng.uniform(0.2, 0.6, n)
    for epoch in range(1, epochs + 1):
        if epoch % interval == 0:
            level = np.clip(level + rng.normal(0.02, 0.02, n), 0, 1)
            record.add_pooled_epoch(epoch, "patches", _counts(rng, n, level), rng.integers(1, 3, n))
        if epoch % delta_t:
            continue
        rows = handler.curve(epoch)
        d_epochs, dice = record.dice_matrix()
        full = window_curve(d_epochs, dice, epoch, delta_t, handler.overlap_rate, handler.signed)
        assert len(rows) == len(full) == epoch // delta_t
        for r, f in zip(rows, full):
            _same({k: v for k, v in r.items() if k != "stop"}, f)
        for rule in RULES:
            assert fired_window(rows, rule, noise_factor=1.5) == fired_window(full, rule, noise_factor=1.5)
        # after the window's rows: a measurement merged into this epoch, as dynamic pruning does, and now
        # and then a change to an epoch two windows back; the next curve must see both
        if epoch % interval == 0:
            record.merge_cases(epoch, [0, 1], _counts(rng, 2, 0.9), np.array([1, 1]))
        if epoch // delta_t % 3 == 0 and epoch > 2 * delta_t:
            back = epoch - 2 * delta_t
            if back in record.epochs:
                record.merge_cases(back, [2], _counts(rng, 1, 0.1), np.array([1]))
    windows = epochs // delta_t
    # each window's row once, then again only for the windows a later change touched (never all of them)
    assert sorted(set(computed)) == list(range(1, windows + 1))
    assert len(computed) < windows * (windows + 1) // 2
