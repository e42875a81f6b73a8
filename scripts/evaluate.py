"""Per-center and overall test Dice from MONAI MetricsSaver's per-case file."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.atomic import write_csv_atomic, write_json_atomic

__all__ = ["read_case_dice", "center_summary", "summarize_by_center"]


def read_case_dice(raw_csv: str | os.PathLike) -> dict[str, float]:
    """case id -> Dice (the class mean) from a MetricsSaver ``*_raw.csv`` whose rows are named by case."""
    with open(raw_csv, newline="") as f:
        return {row["filename"]: float(row["mean"]) for row in csv.DictReader(f)}


def center_summary(case_dice: Mapping[str, float], centers: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Mean, std (population) and count of the case Dice per center and over all cases ("overall")."""
    unknown = [c for c in case_dice if c not in centers]
    if unknown:
        raise ValueError(f"evaluated cases missing from the data list: {unknown[:5]}")
    groups: dict[str, list[float]] = {}
    for case, dice in case_dice.items():
        groups.setdefault(centers[case], []).append(dice)
    groups = dict(sorted(groups.items()))
    groups["overall"] = list(case_dice.values())
    return {name: {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)), "n": len(v)} for name, v in groups.items()}


def summarize_by_center(
    eval_dir: str | os.PathLike, datalist: Sequence[Mapping[str, Any]], metric: str = "val_mean_dice"
) -> dict[str, dict[str, float]]:
    """Write ``per_center.csv`` and ``summary.json`` beside MetricsSaver's files; return the summary."""
    eval_dir = Path(eval_dir)
    case_dice = read_case_dice(eval_dir / f"{metric}_raw.csv")
    summary = center_summary(case_dice, {d["case_id"]: d.get("center", "") for d in datalist})
    rows = [[k, f"{v['mean']:.4f}", f"{v['std']:.4f}", v["n"]] for k, v in summary.items()]
    write_csv_atomic(eval_dir / "per_center.csv", ["center", "mean_dice", "std", "n"], rows)
    write_json_atomic(eval_dir / "summary.json", summary)
    return summary
