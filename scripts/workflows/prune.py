"""The prune workflow: rank a stage-1 run's cases at the chosen window, export the subset, write the
audit report (``python -m monai.bundle run pruning --config_file configs/prune.yaml``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from scripts.core.strategies import check_settings
from scripts.data.record import DynamicsRecord
from scripts.data.subset import choose_window, export_subset, read_run_info, select_subset
from scripts.report import make_report
from scripts.utils.flags import as_bool

__all__ = ["run_pruning"]
logger = logging.getLogger("pruning")


def run_pruning(
    stage1_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    rate: float = 0.3,
    strategy: str = "ambiguous",
    seed: int = 0,
    epoch: int | None = None,
    stratify: bool = False,
    dataset_json: str | os.PathLike | None = None,
    delta_t: int | None = None,
    report: bool = True,
    faults_csv: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The prune workflow over a stage-1 run's output dir; returns the summary it writes. The report's
    fault audit reads ``faults_csv`` (default: ``faults.csv`` beside the data list, when there is one)."""
    check_settings(rate, strategy)
    stratify, report = as_bool(stratify, "stratify"), as_bool(report, "report")
    stage1 = Path(stage1_dir)
    info = read_run_info(stage1)
    dataset_json = dataset_json or info["dataset_json"]
    delta_t = int(delta_t or info["delta_t"])
    record = DynamicsRecord.load(stage1 / "dynamics.csv")
    rule_path = stage1 / "stop_rule.json"
    stop_rule = json.loads(rule_path.read_text()) if rule_path.is_file() else None
    end, why = choose_window(max(record.epochs), delta_t, stop_rule, epoch)
    selection = select_subset(record, end, delta_t, rate, strategy, seed, stratify)
    summary = export_subset(
        selection,
        dataset_json,
        out_dir,
        note=why,
        train_limit=info.get("num_train_cases"),
        stage1_epochs=int(info.get("epochs") or max(record.epochs)),  # runs from before run.json had epochs
    )
    if report:
        faults = Path(faults_csv) if faults_csv else Path(dataset_json).parent / "faults.csv"
        make_report(
            Path(out_dir) / "selection.csv",
            Path(out_dir) / "report",
            curve_csv=stage1 / "moving_distance.csv",
            stop_rule_json=rule_path if rule_path.is_file() else None,
            faults_csv=faults if faults.is_file() else None,
            datalist_json=dataset_json,
        )
    return summary


