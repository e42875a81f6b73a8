"""Per-center and overall test Dice from the evaluator's per-case class Dice (``scripts.core.metrics.CaseDice``).

The summary is computed from full-precision values (MetricsSaver's CSV rounds to 4 decimals); ``n`` counts
the cases whose Dice is defined and ``n_undefined`` those with no foreground in label nor prediction.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.core.dynamics import case_dice as mean_over_classes
from scripts.utils.atomic import write_csv_atomic, write_json_atomic

__all__ = ["read_case_dice", "center_summary", "summarize_by_center"]


def read_case_dice(raw_csv: str | os.PathLike) -> dict[str, float]:
    """case id -> Dice (the class mean) from a MetricsSaver ``*_raw.csv`` whose rows are named by case."""
    with open(raw_csv, newline="") as f:
        return {row["filename"]: float(row["mean"]) for row in csv.DictReader(f)}


def center_summary(case_dice: Mapping[str, float], centers: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Mean, std (population) and count of the defined case Dice per center and over all cases
    ("overall"); ``n_undefined`` counts the cases whose Dice is undefined (NaN)."""
    unknown = [c for c in case_dice if c not in centers]
    if unknown:
        raise ValueError(f"evaluated cases missing from the data list: {unknown[:5]}")
    groups: dict[str, list[float]] = {}
    for case, dice in case_dice.items():
        groups.setdefault(centers[case], []).append(dice)
    groups = dict(sorted(groups.items()))
    groups["overall"] = list(case_dice.values())
    out = {}
    for name, values in groups.items():
        v = np.asarray(values, dtype=np.float64)
        d = v[~np.isnan(v)]
        out[name] = {
            "mean": float(d.mean()) if d.size else float("nan"),
            "std": float(d.std()) if d.size else float("nan"),
            "n": int(d.size),
            "n_undefined": int(v.size - d.size),
        }
    return out


def summarize_by_center(
    eval_dir: str | os.PathLike, datalist: Sequence[Mapping[str, Any]], class_dice: Any
) -> dict[str, dict[str, float]]:
    """Write ``case_dice.csv`` (full precision), ``per_center.csv`` and ``summary.json``; return the summary.

    Args:
        eval_dir: where to write (beside MetricsSaver's files).
        datalist: the evaluated cases, in the order the evaluator saw them (``shuffle: false``).
        class_dice: the evaluator's ``state.metric_details[...]`` of ``CaseDice``, shape (N, classes - 1).
    """
    eval_dir = Path(eval_dir)
    values = np.asarray(class_dice.cpu() if hasattr(class_dice, "cpu") else class_dice, dtype=np.float64)
    values = values.reshape(len(values), -1)
    if len(values) != len(datalist):
        raise ValueError(f"{len(values)} evaluated cases for a data list of {len(datalist)}")
    ids = [d["case_id"] for d in datalist]
    per_case = mean_over_classes(values)
    case_rows = [
        [c, d.get("center", ""), _cell(v), *(_cell(x) for x in row)]
        for c, d, v, row in zip(ids, datalist, per_case, values)
    ]
    class_fields = [f"dice_class{k}" for k in range(1, values.shape[1] + 1)]
    write_csv_atomic(eval_dir / "case_dice.csv", ["case_id", "center", "dice", *class_fields], case_rows)
    summary = center_summary(dict(zip(ids, per_case.tolist())), {d["case_id"]: d.get("center", "") for d in datalist})
    rows = [[k, _cell(v["mean"]), _cell(v["std"]), v["n"], v["n_undefined"]] for k, v in summary.items()]
    write_csv_atomic(eval_dir / "per_center.csv", ["center", "mean_dice", "std", "n", "n_undefined"], rows)
    write_json_atomic(eval_dir / "summary.json", summary)
    return summary


def _cell(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.8g}"
