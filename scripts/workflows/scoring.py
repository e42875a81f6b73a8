"""The ``scoring`` workflow's last step: after the volume evaluator has written the record of a
checkpoint's scores (``score_handlers.VolumeScorer``), rank and prune by DAD (here the whole-volume
Dice of the one scored epoch), write the audit report, and the fault-detection table when the data
set has a fault manifest. See ``configs/scoring.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from scripts.utils.atomic import write_json_atomic
from scripts.workflows.fault_detection import run_fault_detection
from scripts.workflows.prune import run_pruning

__all__ = ["finish_scoring"]


def finish_scoring(
    output_dir: str | os.PathLike,
    dataset_json: str | os.PathLike,
    checkpoint: str | os.PathLike,
    num_classes: int,
    epoch: int = 1,
    num_train_cases: int | None = None,
    rate: float = 0.3,
    strategy: str = "ambiguous",
    seed: int = 0,
    stratify: bool = False,
    report: bool = True,
) -> dict[str, Any]:
    """Write ``run.json`` (a one-epoch record, window 1), prune into ``output_dir/prune`` (with the
    report in ``prune/report/``) and, if ``faults.csv`` sits beside the data set, write
    ``fault_detection.{csv,md}``. Returns the prune summary."""
    out = Path(output_dir)
    write_json_atomic(
        out / "run.json",
        {
            "dataset_json": os.path.abspath(dataset_json),
            "num_train_cases": num_train_cases,
            "delta_t": 1,
            "num_classes": num_classes,
            "checkpoint": os.path.abspath(checkpoint),
            "workflow": "scoring",
        },
    )
    summary = run_pruning(
        out, out / "prune", rate=rate, strategy=strategy, seed=seed, epoch=epoch, stratify=stratify, report=report
    )
    faults = Path(dataset_json).parent / "faults.csv"
    if faults.is_file():
        run_fault_detection(str(out), faults=str(faults), epochs=[epoch], delta_t=1)
    return summary
