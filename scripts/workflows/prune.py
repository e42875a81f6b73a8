"""The prune workflow: rank a stage-1 run's cases at the chosen window, export the subset, write the
audit report (``python -m monai.bundle run pruning --config_file configs/prune.yaml``).

The ranking is DAD by default; ``score`` ranks by any score the record allows instead (``--score
dad_center_z``: DAD's robust z-score within each center, or a recorded baseline score such as ``el2n``),
with ``strategy`` or, when that is None, the score's prescribed strategy (``scripts.scores.SCORES``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from scripts.core.dynamics import window_stats
from scripts.core.selection import ranks, regions
from scripts.core.strategies import check_settings, select_by_score
from scripts.data.record import DynamicsRecord
from scripts.data.subset import Selection, choose_window, export_subset, read_run_info, select_subset
from scripts.report import make_report
from scripts.scores import SCORES, ease
from scripts.utils.flags import as_bool
from scripts.workflows.fault_detection import scores_at

__all__ = ["run_pruning", "select_by_recorded_score"]
logger = logging.getLogger("pruning")


def select_by_recorded_score(
    record: DynamicsRecord,
    end_epoch: int,
    delta_t: int,
    score: str,
    rate: float,
    strategy: str | None = None,
    seed: int = 0,
    stratify: bool = False,
) -> Selection:
    """The selection by ``score`` over the window ending at ``end_epoch``: ranks and regions by the score
    (oriented as DAD, low = hard); the ``dad`` and ``variability`` columns stay DAD's, for the report."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; known: {sorted(SCORES)} (--score)")
    table = scores_at(record, end_epoch, delta_t)
    if score not in table:
        raise ValueError(
            f"the stage-1 record has no {score!r} scores (it has {sorted(table)}); rerun stage 1 with "
            "--score_patches True (el2n, el2nx, loss) or --score_checkpoints True (vog, grand_last_layer, ...)"
        )
    name = strategy or SCORES[score].strategy
    check_settings(rate, name)
    groups = record.centers if stratify else None
    values = table[score]
    oriented = ease(values, score)
    epochs, dice = record.dice_matrix()
    dad, variability = window_stats(dice, epochs, end_epoch - delta_t, end_epoch)
    return Selection(
        case_ids=list(record.case_ids),
        centers=list(record.centers),
        dad=dad,
        variability=variability,
        region=regions(oriented, rate, groups, seed),
        rank=ranks(oriented, groups, seed),
        kept=select_by_score(values, score, rate, name, seed, groups),
        settings={"score": score, "strategy": name, "rate": rate, "seed": seed, "stratify": stratify,
                  "rank_within": "center" if stratify else "all cases",
                  "window": [end_epoch - delta_t + 1, end_epoch], "delta_t": delta_t},
    )  # fmt: skip


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
    score: str = "dad",
    report_title: str = "DAD audit report",
) -> dict[str, Any]:
    """The prune workflow over a stage-1 run's output dir; returns the summary it writes. ``score``: rank
    by this score instead of DAD (``strategy`` None: the score's prescribed strategy). The report's fault
    audit reads ``faults_csv`` (default: ``faults.csv`` beside the data list, when there is one);
    ``report_title`` heads it (the scoring workflow names its models and their epochs there)."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; known: {sorted(SCORES)} (--score)")
    check_settings(rate, strategy or SCORES[score].strategy)
    stratify, report = as_bool(stratify, "stratify"), as_bool(report, "report")
    stage1 = Path(stage1_dir)
    info = read_run_info(stage1)
    dataset_json = dataset_json or info["dataset_json"]
    delta_t = int(delta_t or info["delta_t"])
    record = DynamicsRecord.load(stage1 / "dynamics.csv")
    rule_path = stage1 / "stop_rule.json"
    stop_rule = json.loads(rule_path.read_text()) if rule_path.is_file() else None
    end, why = choose_window(max(record.epochs), delta_t, stop_rule, epoch)
    if score == "dad":
        selection = select_subset(record, end, delta_t, rate, strategy or SCORES["dad"].strategy, seed, stratify)
    else:
        selection = select_by_recorded_score(record, end, delta_t, score, rate, strategy, seed, stratify)
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
            # a scoring run has no training windows, so no curve: leave it out rather than warn
            curve_csv=stage1 / "moving_distance.csv" if (stage1 / "moving_distance.csv").is_file() else None,
            stop_rule_json=rule_path if rule_path.is_file() else None,
            faults_csv=faults if faults.is_file() else None,
            datalist_json=dataset_json,
            title=report_title,
        )
    return summary
