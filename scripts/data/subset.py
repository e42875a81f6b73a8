"""The pruned subset: one window's DAD ranking of the training cases, which of them are kept, and its
export as a Decathlon data list (``subset_datalist.json``, ``selection.csv``, ``prune_summary.json``),
plus what a retraining reads back from it (stage 1's epochs, the budget)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scripts.core.dynamics import window_stats
from scripts.core.selection import ranks, regions
from scripts.core.strategies import check_settings, select
from scripts.data.lists import load_datalist
from scripts.data.record import DynamicsRecord
from scripts.utils.atomic import write_csv_atomic, write_json_atomic
from scripts.utils.errors import InputError
from scripts.utils.jsonfile import read_json

__all__ = [
    "Selection",
    "choose_window",
    "select_subset",
    "export_subset",
    "kept_case_ids",
    "read_run_info",
    "record_epochs",
    "retrain_epochs",
    "stage1_epochs_of",
    "full_cases_of",
    "SELECTION_FIELDS",
    "BUDGETS",
]

SELECTION_FIELDS = ("case_id", "center", "dad", "variability", "region", "rank", "kept")
LISTS = ("training", "validation", "test")
SUBSET_FIX = (
    "export the subset again (python -m monai.bundle run pruning --config_file configs/prune.yaml --stage1_dir "
    "<stage 1's output_dir>) or point --subset_dir at an intact one"
)
logger = logging.getLogger("pruning")


@dataclass
class Selection:
    """The ranked training cases of one window and which of them are kept."""

    case_ids: list[str]
    centers: list[str]
    dad: np.ndarray
    variability: np.ndarray
    region: np.ndarray
    rank: np.ndarray
    kept: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[list[str]]:
        def cell(v: float) -> str:
            return "" if np.isnan(v) else f"{v:.8g}"

        return [
            [c, k, cell(d), cell(v), r, str(int(n)), str(int(keep))]
            for c, k, d, v, r, n, keep in zip(
                self.case_ids, self.centers, self.dad, self.variability, self.region, self.rank, self.kept
            )
        ]


def choose_window(
    last_epoch: int, delta_t: int, stop_rule: Mapping[str, Any] | None = None, epoch: int | None = None
) -> tuple[int, str]:
    """The end epoch of the window to prune at, and why.

    The user's ``epoch`` wins; otherwise the stop rule's prune epoch; otherwise the last full window.
    """
    if epoch is not None:
        if not delta_t <= epoch <= last_epoch:
            raise ValueError(
                f"epoch {epoch} is outside the record: windows of {delta_t} end in [{delta_t}, {last_epoch}]"
            )
        return int(epoch), f"the window ending at the requested epoch {epoch}"
    if stop_rule and stop_rule.get("fired") and stop_rule.get("prune_epoch") is not None:
        return int(stop_rule["prune_epoch"]), f"the stop rule fired at epoch {stop_rule['prune_epoch']}"
    end = (last_epoch // delta_t) * delta_t
    if end < delta_t:
        raise ValueError(f"the record ends at epoch {last_epoch}, before a full window of {delta_t} epochs")
    return end, f"the stop rule did not fire: the last full window, ending at epoch {end}"


def select_subset(
    record: DynamicsRecord,
    end_epoch: int,
    delta_t: int,
    rate: float,
    strategy: str = "ambiguous",
    seed: int = 0,
    stratify: bool = False,
) -> Selection:
    """DAD and variability of every case over (end_epoch - delta_t, end_epoch], ranked and selected."""
    check_settings(rate, strategy)
    epochs, dice = record.dice_matrix()
    if len(epochs) == 0:
        raise ValueError("the dynamics record is empty: no epoch was recorded")
    dad, variability = window_stats(dice, epochs, end_epoch - delta_t, end_epoch)
    groups = record.centers if stratify else None
    kept = select(dad, rate, strategy, seed, groups=groups)
    return Selection(
        case_ids=list(record.case_ids),
        centers=list(record.centers),
        dad=dad,
        variability=variability,
        # under stratification region and rank are within the center, as the selection is
        region=regions(dad, rate, groups, seed),
        rank=ranks(dad, groups, seed),
        kept=kept,
        settings={
            "strategy": strategy,
            "rate": rate,
            "seed": seed,
            "stratify": stratify,
            "rank_within": "center" if stratify else "all cases",
            "window": [end_epoch - delta_t + 1, end_epoch],
            "delta_t": delta_t,
        },
    )


def _read_lists(dataset_json: str | os.PathLike, train_limit: int | None = None) -> dict[str, list[dict]]:
    """Every labelled list of the data set, with absolute paths (the export lives elsewhere); the
    training list cut to the first ``train_limit`` cases as stage 1 was (``num_train_cases``)."""
    content = read_json(dataset_json)
    present = [k for k in LISTS if content.get(k)]
    return {k: load_datalist(dataset_json, k, limit=train_limit if k == "training" else None) for k in present}


def export_subset(
    selection: Selection,
    dataset_json: str | os.PathLike,
    out_dir: str | os.PathLike,
    note: str = "",
    train_limit: int | None = None,
    stage1_epochs: int | None = None,
) -> dict[str, Any]:
    """Write ``subset_datalist.json`` (Decathlon format: the kept training cases, validation and test
    unchanged), ``selection.csv`` and ``prune_summary.json`` into ``out_dir``, each atomically.

    Everything is checked before anything is written: the record's cases must be exactly the data
    set's training cases (the first ``train_limit`` of them when stage 1 used only those).
    """
    lists = _read_lists(dataset_json, train_limit)
    training = {d["case_id"]: d for d in lists.get("training", [])}
    unknown = [c for c in selection.case_ids if c not in training]
    if unknown:
        raise ValueError(f"{len(unknown)} recorded cases are not training cases of {dataset_json}: {unknown[:5]}")
    recorded = set(selection.case_ids)
    unrecorded = [c for c in training if c not in recorded]
    if unrecorded:
        raise ValueError(f"{len(unrecorded)} training cases of {dataset_json} have no record: {unrecorded[:5]}")

    kept_ids = [c for c, k in zip(selection.case_ids, selection.kept) if k]
    by_center: dict[str, dict[str, int]] = {}
    for center, k in zip(selection.centers, selection.kept):
        counts = by_center.setdefault(center, {"kept": 0, "dropped": 0})
        counts["kept" if k else "dropped"] += 1
    summary = {
        **selection.settings,
        "source_datalist": str(Path(dataset_json).resolve()),
        "num_cases": len(selection.case_ids),
        "num_kept": len(kept_ids),
        "per_center": by_center,
        "missing_dad": [c for c, d in zip(selection.case_ids, selection.dad) if np.isnan(d)],
        # the epochs of a full-data training (stage 1's `epochs`): the retraining's budget follows from them
        "stage1_epochs": stage1_epochs,
        "note": note,
    }
    subset = {
        "name": "DAD-pruned subset",
        "description": f"{len(kept_ids)} of {len(training)} training cases kept by strategy "
        f"{selection.settings.get('strategy')} at prune rate {selection.settings.get('rate')}",
        "tensorImageSize": "3D",
        "numTraining": len(kept_ids),
        "pruning": summary,
        **{k: v for k, v in lists.items() if k != "training"},
        "training": [training[c] for c in kept_ids],
    }
    out = Path(out_dir)
    write_json_atomic(out / "subset_datalist.json", subset)
    write_csv_atomic(out / "selection.csv", SELECTION_FIELDS, selection.rows())
    write_json_atomic(out / "prune_summary.json", summary)
    logger.info(f"kept {len(kept_ids)}/{len(training)} cases ({selection.settings}); wrote {out}")
    return summary


def record_epochs(stage1_dir: str | os.PathLike, epochs_trained: int, train_s: float | None = None) -> None:
    """Add the epochs stage 1 actually trained (fewer than its ``epochs`` when the stop rule ended it) to
    its ``run.json``: what stage 1 cost, beside the full-data budget ``epochs`` the retraining matches;
    and ``train_s``, the seconds of the training loop itself (Ignite's ``state.times["COMPLETED"]``):
    the process's wall time minus it is one-off start-up (data checks, caching, data generation)."""
    info = read_run_info(stage1_dir)
    extra = {} if train_s is None else {"train_s": float(train_s)}
    write_json_atomic(Path(stage1_dir) / "run.json", {**info, "epochs_trained": int(epochs_trained), **extra})


def stage1_epochs_of(subset_json: str | os.PathLike) -> int:
    """The full-data epochs an exported subset records (stage 1's ``epochs``; the retraining's budget)."""
    pruning = _pruning_of(subset_json)
    if not pruning.get("stage1_epochs"):
        raise InputError(f"{subset_json} does not record stage 1's epochs; fix: pass --stage1_epochs N")
    return int(pruning["stage1_epochs"])


def full_cases_of(subset_json: str | os.PathLike) -> int:
    """The training cases of the full data set an exported subset was pruned from (the matched budget's)."""
    pruning = _pruning_of(subset_json)
    if not pruning.get("num_cases"):
        raise InputError(f"{subset_json} does not record the full data set's size; fix: pass --num_full_cases N")
    return int(pruning["num_cases"])


def _pruning_of(subset_json: str | os.PathLike) -> dict[str, Any]:
    """The ``pruning`` section of an exported subset; a file cut mid-write is refused, naming the fix."""
    content = read_json(subset_json, fix=SUBSET_FIX)
    pruning = content.get("pruning") if isinstance(content, dict) else None
    return pruning if isinstance(pruning, dict) else {}


BUDGETS = ("matched", "proportional")


def retrain_epochs(budget: str, stage1_epochs: int, num_full: int, num_kept: int) -> int:
    """Epochs of a retraining on ``num_kept`` of ``num_full`` cases: "matched" keeps the full run's case
    visits (round(E * n_full / n_kept), the paper's fixed iterations); "proportional" trains E epochs."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown retrain_budget {budget!r}; expected one of {BUDGETS}")
    if budget == "proportional":
        return int(stage1_epochs)
    return max(1, round(stage1_epochs * num_full / num_kept))


def read_run_info(stage1_dir: str | os.PathLike) -> dict[str, Any]:
    """The stage-1 run's settings (``run.json``, written when training starts)."""
    path = Path(stage1_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {stage1_dir} a stage-1 training run's output dir?")
    return json.loads(path.read_text())


def kept_case_ids(subset_json: str | os.PathLike) -> Sequence[str]:
    """The training case ids of an exported subset."""
    return [d["case_id"] for d in load_datalist(subset_json, "training", check_files=False)]
