"""The pipeline's dynamic arm: its cost is its own case visits and whole wall time over the full run's."""

import pytest
from scripts.workflows.pipeline import add_costs, format_table, planned_stages


def _dice(v):
    return {"overall": {"mean": v}}


def test_dynamic_arm_cost_and_table_line():
    results = {
        "rate": 0.3, "strategy": "ambiguous", "seeds": [0], "budget": "matched",
        "stage1": {"epochs": 40, "full_epochs": 40, "wall_s": 200.0, "prune_wall_s": 1.0},
        "prune": {"window": [11, 20], "num_kept": 42, "num_cases": 60, "note": "fired"},
        "runs": [
            {"arm": "full", "seed": 0, "train_cases": 60, "epochs": 40, "wall_s": 200.0, "test_dice": _dice(0.70)},
            {"arm": "dynamic", "seed": 0, "train_cases": 60, "epochs": 40, "wall_s": 150.0, "test_dice": _dice(0.71),
             "case_visits": 1800, "measure_items": 24},
        ],
    }  # fmt: skip
    add_costs(results, 0)
    dynamic = results["runs"][1]
    assert dynamic["cost"] == pytest.approx(1800 / (40 * 60))  # 0.75
    assert dynamic["wall_ratio"] == pytest.approx(0.75)
    table = format_table(results)
    line = next(ln for ln in table.splitlines() if ln.startswith("| dynamic (one training)"))
    assert "| 0.75 | 0.75 | 0.7100 |" in line
    assert "24 items" in table


def test_planned_stages_with_the_dynamic_arm():
    assert (
        planned_stages(1, dynamic=True)
        == ["training", "pruning", "pruning", "training", "training", "training"] + ["evaluating"] * 4
    )
    assert planned_stages(2) == planned_stages(2, dynamic=False)
