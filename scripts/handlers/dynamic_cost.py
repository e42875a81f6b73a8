"""The cost of a dynamic-pruning run, epoch by epoch: ``dynamic_cost.csv`` and ``dynamic_summary.json``
(written by ``DynamicPruning`` on its saving rank), and the random arm's budget read back from them.

Per epoch: what the plan did with the cases (visited, cropped, thinned, dropped, measured), the case
visits and crops trained (crops = the network's training passes), the iterations, the crops measured
without gradient, and the seconds of the training loop, the measurement pass and the validation.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.utils.atomic import write_csv_atomic, write_json_atomic

__all__ = ["COST_FIELDS", "BUDGET_COLUMNS", "read_budget", "write_cost"]

COST_FIELDS = ("epoch", "phase", "visits", "visited", "cropped", "thinned", "dropped", "measured", "crops",
               "iterations", "measure_items", "train_s", "measure_s", "val_s", "trained_items")  # fmt: skip
BUDGET_COLUMNS = ("visits", "crops")


def read_budget(path: str | os.PathLike | None, column: str = "visits") -> list[int] | None:
    """Per-epoch visits (or crops) of another dynamic run (its ``dynamic_cost.csv``): the random arm's budget."""
    if path is None:
        return None
    if column not in BUDGET_COLUMNS:
        raise ValueError(f"a budget is read from the column visits or crops, not {column!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the random arm's budget is the per-epoch {column} of a dynamic run's dynamic_cost.csv; "
            "run the dad arm first or pass --dynamic_budget null with another rule"
        )
    with path.open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["epoch"]))
    if rows and column not in rows[0]:
        raise ValueError(f"{path} has no {column!r} column (a cost file of release 0.6.1 or older): rerun that arm")
    return [int(r[column]) for r in rows]


def write_cost(output_dir: str | os.PathLike, cost: Sequence[Mapping[str, Any]], n_cases: int, num_crops: int,
               about: Mapping[str, Any]) -> None:  # fmt: skip
    """The per-epoch rows and their totals (``about``: the settings and seed, copied into the summary)."""
    output_dir = Path(output_dir)
    write_csv_atomic(output_dir / "dynamic_cost.csv", COST_FIELDS, [[r.get(k, "") for k in COST_FIELDS] for r in cost])
    done = len(cost)

    def total(key: str) -> float:
        return sum(float(r.get(key) or 0) for r in cost)

    full_visits, full_crops = n_cases * done, n_cases * num_crops * done
    write_json_atomic(output_dir / "dynamic_summary.json", {
        "epochs": done,
        **about,
        "case_visits": int(total("visits")),
        "crops": int(total("crops")),
        "iterations": int(total("iterations")),
        "measure_items": int(total("measure_items")),
        "full_case_visits": full_visits,
        "full_crops": full_crops,
        "visits_x_full": total("visits") / full_visits if done else None,
        "crops_x_full": total("crops") / full_crops if done else None,
        "train_s": round(total("train_s"), 3),
        "measure_s": round(total("measure_s"), 3),
        "val_s": round(total("val_s"), 3),
        "note": "visits_x_full / crops_x_full: training case visits / crops over a full-data run's (cases x epochs "
                "x num_crops); measure_items are forward-only passes over dropped cases (crops or volumes), counted "
                "apart; train_s is the training loop, val_s the validation runs, measure_s the measurement passes "
                "(seconds on rank 0)",
    })  # fmt: skip
