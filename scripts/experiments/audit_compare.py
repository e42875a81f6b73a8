"""Which audit finds the planted faults (issue 17): in-sample stage-1 scores, in-sample scoring of the
final stage-1 model, and the out-of-fold audit, each by AUROC / AUPRC per severity and precision among
the 10 and 20 most suspicious cases, with its cost in trainings and wall time.

    python -m scripts.experiments.audit_compare --dataset_json FAULTY/dataset.json --work_dir runs/audit_compare
        [--folds 3] [--config_file "['configs/presets/hippocampus.yaml']"] [--epochs 8 ... any bundle setting]

The data list needs ``faults.csv`` beside it (``scripts.experiments.plant_faults`` or the embedded set).
Writes ``work_dir/comparison.{csv,md}``; every run is resumable (its ``.done.json`` marker).
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.data.record import DynamicsRecord
from scripts.scores import hardness
from scripts.scores.rank_average import rank_average
from scripts.utils.atomic import write_csv_atomic, write_text_atomic
from scripts.utils.bundle_keys import check_bundle_settings
from scripts.workflows.audit import cli_value, config_arg, run_audit, run_once
from scripts.workflows.fault_detection import read_fault_manifest, scores_at
from scripts.workflows.scoring import RANK_AVERAGE_OF, audit_detection, case_scores

__all__ = ["compare_audits"]

SHOWN = ("dad", "el2n", "cleanlab", "monai_lq", "rank_average")
TOOL = "python -m scripts.experiments.audit_compare"
FIELDS = ("arm", "score", "n_cases", "group", "auroc", "auprc", "p_at_10", "p_at_20", "trainings", "wall_s")


def _stage1_scores(record: DynamicsRecord, epoch: int, delta_t: int) -> dict[str, Any]:
    scores = {k: v for k, v in scores_at(record, epoch, delta_t).items() if k in RANK_AVERAGE_OF}
    scores["rank_average"] = rank_average({k: hardness(v, k) for k, v in scores.items()})
    return scores


def _rows(arm: str, ids: Sequence[str], scores: Mapping[str, Any], faults: Mapping, trainings: float, wall: float):
    rows = []
    for r in audit_detection(ids, {k: v for k, v in scores.items() if k in SHOWN}, faults):
        rows.append({"arm": arm, "n_cases": len(ids), "trainings": trainings, "wall_s": wall, **r})
    return rows


def _markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    groups = list(dict.fromkeys(r["group"] for r in rows))
    head = "| arm | score | " + " | ".join(f"{g} AUROC / AUPRC" for g in groups) + " | p@10 | p@20 | trainings | wall |"
    lines = [
        "# Audit comparison: planted faults found by each audit",
        "",
        head,
        "|---|---|" + "---|" * (len(groups) + 4),
    ]
    for arm, score in dict.fromkeys((r["arm"], r["score"]) for r in rows):
        sub = {r["group"]: r for r in rows if r["arm"] == arm and r["score"] == score}
        first = next(iter(sub.values()))
        cells = [f"{sub[g]['auroc']:.3f} / {sub[g]['auprc']:.3f}" if g in sub else "–" for g in groups]
        tail = f"{first['p_at_10']:.2f} | {first['p_at_20']:.2f} | {first['trainings']:.2f} | {first['wall_s']:.0f} s"
        lines.append(f"| {arm} (n={first['n_cases']}) | {score} | " + " | ".join(cells) + f" | {tail} |")
    return "\n".join(lines) + "\n"


def compare_audits(
    dataset_json: str,
    work_dir: str = "runs/audit_compare",
    folds: int = 3,
    seed: int = 0,
    config_file: str | Sequence[str] = (),
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Run the three audits on one data list with planted faults and tabulate them (see the module doc)."""
    config_files = [config_file] if isinstance(config_file, str) else list(config_file)
    own = [n for n in inspect.signature(compare_audits).parameters if n != "overrides"]
    check_bundle_settings(overrides, ["configs/train.yaml", *config_files, "configs/scoring.yaml"], TOOL, own)
    work = Path(work_dir)
    faults = read_fault_manifest(Path(dataset_json).parent / "faults.csv")
    settings = [a for k, v in overrides.items() for a in (f"--{k}", cli_value(v))]
    stage1, insample = work / "stage1", work / "insample"
    train_cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", config_arg(["configs/train.yaml", *config_files]), "--dataset_json", dataset_json,
        "--output_dir", str(stage1), "--ckpt_dir", str(stage1 / "models"), "--early_prune", "False",
        "--test_fraction", "0", "--score_patches", "True", "--score_checkpoints", "True", *settings,
    ]  # fmt: skip
    train_wall = run_once("training", train_cmd, stage1)
    score_cmd = [
        sys.executable, "-m", "monai.bundle", "run", "scoring",
        "--config_file", config_arg(["configs/train.yaml", *config_files, "configs/scoring.yaml"]),
        "--dataset_json", dataset_json, "--output_dir", str(insample),
        "--checkpoint", str(stage1 / "models" / "checkpoint_final.pt"), "--scoring_report", "False", *settings,
    ]  # fmt: skip
    score_wall = run_once("scoring", score_cmd, insample)
    oof = run_audit(dataset_json, str(work / "oof"), folds=folds, seed=seed, config_file=config_files, report=False,
                    **overrides)  # fmt: skip

    info = json.loads((stage1 / "run.json").read_text())
    record = DynamicsRecord.load(stage1 / "dynamics.csv")
    last, delta_t = max(record.epochs), int(info["delta_t"])
    rows = _rows("in-sample stage 1", record.case_ids, _stage1_scores(record, last, delta_t), faults, 1, train_wall)
    final = DynamicsRecord.load(insample / "dynamics.csv")
    rows += _rows("in-sample final model", final.case_ids, case_scores(final), faults, 1, train_wall + score_wall)
    merged = DynamicsRecord.load(work / "oof" / "dynamics.csv")
    trainings = sum(oof["cost"]["training_cases_each"]) / len(merged.case_ids)  # in full-data trainings
    rows += _rows(f"out-of-fold ({folds} folds)", merged.case_ids, case_scores(merged), faults, trainings,
                  oof["cost"]["total_wall_s"])  # fmt: skip
    cells = [[f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in FIELDS] for r in rows]
    write_csv_atomic(work / "comparison.csv", FIELDS, cells)
    write_text_atomic(work / "comparison.md", _markdown(rows))
    print(_markdown(rows))
    return rows


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    fire_strict(compare_audits, serialize=lambda rows: f"{len(rows)} rows: comparison.md written")
