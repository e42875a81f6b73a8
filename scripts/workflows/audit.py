"""Out-of-fold audit of every labelled case (issue 17): K models on K folds, each scoring the fold it never
saw, merged into one record, one ranking and one report for all cases, with the fold of each case.

    python -m scripts.workflows.audit --dataset_json DATA/dataset.json --folds 5 [--output_dir runs/audit]
        [--seed 0] [--config_file "['configs/presets/hippocampus.yaml']"] [--launcher "torchrun --nproc_per_node 2"]
        [--epochs 40 --patch_size "[32,32,32]" ... any bundle setting]

Folds: ``scripts.data.folds.assign_folds`` (seeded, stratified by center when the list has several). Each
fold is two ordinary bundle runs: ``training`` on the other folds (validating on the held-out one, no test
part carved, ``early_prune False`` so the model trains every epoch) and ``scoring`` of the held-out fold
with its final checkpoint. A finished run leaves a ``.done.json`` marker and is skipped when the audit runs
again with the same settings, so a killed audit goes on with the fold it was in. ``--launcher`` runs the
trainings under torchrun (``configs/multi_gpu_train.yaml`` is added). Writes, in ``output_dir``:
``folds.csv``, ``fold<k>/`` (the data lists, runs, logs, models), ``dynamics.csv`` (every case, its own
fold's scores), ``ranking.csv`` (with ``fold``, ``model``, ``model_epochs``), ``prune/report/``,
``audit.json`` (settings and cost) and, with a ``faults.csv`` beside the data list, the detection tables.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.data.folds import assign_folds, fold_datalists
from scripts.data.lists import AUDIT_LISTS, labelled_cases
from scripts.data.record import DynamicsRecord
from scripts.utils.atomic import write_csv_atomic, write_json_atomic
from scripts.utils.bundle_keys import check_bundle_settings
from scripts.utils.errors import InputError
from scripts.utils.jsonfile import read_json
from scripts.workflows.progress import refusal_of, run_logged
from scripts.workflows.scoring import checkpoint_epochs, finish_audit

__all__ = ["run_audit", "check_fold_settings", "fold_commands", "merge_folds", "run_once", "cli_value", "config_arg",
           "drop_disk_cache"]  # fmt: skip

ROOT = Path(__file__).resolve().parents[2]
logger = logging.getLogger("audit")
FINAL_CHECKPOINT = "checkpoint_final.pt"
TOOL = "python -m scripts.workflows.audit"


def cli_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def config_arg(files: Sequence[str]) -> str:
    return json.dumps([str(ROOT / f) if not Path(f).is_absolute() else f for f in files])


def fold_commands(
    fold_dir: Path,
    config_files: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    launcher: str | None = None,
) -> dict[str, list[str]]:
    """The two bundle commands of one fold: ``training`` (under ``launcher`` when given, e.g. torchrun)
    and ``scoring``. ``config_files`` (presets) merge after train.yaml; ``overrides`` reach both runs."""
    settings = [a for k, v in (overrides or {}).items() for a in (f"--{k}", cli_value(v))]
    multi = ["configs/multi_gpu_train.yaml"] if launcher else []
    train_prefix = [*shlex.split(launcher), "-m"] if launcher else [sys.executable, "-m"]
    training = [
        *train_prefix, "monai.bundle", "run", "training",
        "--config_file", config_arg(["configs/train.yaml", *config_files, *multi]),
        "--dataset_json", str(fold_dir / "datalist.json"), "--output_dir", str(fold_dir / "train"),
        "--ckpt_dir", str(fold_dir / "models"), "--early_prune", "False", "--test_fraction", "0", *settings,
    ]  # fmt: skip
    scoring = [
        sys.executable, "-m", "monai.bundle", "run", "scoring",
        "--config_file", config_arg(["configs/train.yaml", *config_files, "configs/scoring.yaml"]),
        "--dataset_json", str(fold_dir / "heldout.json"), "--output_dir", str(fold_dir / "scoring"),
        "--checkpoint", str(fold_dir / "models" / FINAL_CHECKPOINT), "--scoring_report", "False", *settings,
    ]  # fmt: skip
    return {"training": training, "scoring": scoring}


def check_fold_settings(overrides: Mapping[str, Any], config_files: Sequence[str], launcher: str | None) -> None:
    """Refuse a setting that neither the audit nor the configs its fold runs merge take (``--epoch 8``)."""
    own = [n for n in inspect.signature(run_audit).parameters if n != "overrides"]
    files = ["configs/train.yaml", *config_files, "configs/scoring.yaml"]
    check_bundle_settings(overrides, files + ["configs/multi_gpu_train.yaml"] * bool(launcher), TOOL, own)


def run_once(name: str, cmd: list[str], fold_dir: Path) -> float:
    """Run a fold's command unless its marker says the same command finished; returns its wall time."""
    done = fold_dir / f"{name}.done.json"
    if done.is_file() and json.loads(done.read_text()).get("cmd") == cmd:
        logger.info(f"{fold_dir.name} {name}: done before ({done}), skipped")
        return float(json.loads(done.read_text())["wall_s"])
    if name == "training" and (fold_dir / "models" / "resume.pt").is_file():
        cmd = [*cmd, "--resume", "True"]  # a killed training goes on from its last epoch
    log = fold_dir / f"{name}.log"
    logger.info(f"{fold_dir.name} {name}: $ {shlex.join(cmd)} (log: {log})")
    start = time.perf_counter()
    code = run_logged(cmd, ROOT, log, echo=False)
    refusal = refusal_of(log) if code != 0 else None
    if refusal is not None:  # the run's own one-line refusal, printed last
        raise InputError(f"{fold_dir.name} {name} refused its input, so nothing ran; the refusal:\n{refusal}")
    if code != 0:
        raise RuntimeError(f"{fold_dir.name} {name} failed (exit {code}); see {log}, then run the audit again")
    wall = time.perf_counter() - start
    write_json_atomic(done, {"cmd": cmd[: len(cmd) - 2] if cmd[-2:] == ["--resume", "True"] else cmd, "wall_s": wall})
    return wall


def drop_disk_cache(fold_dir: Path, overrides: Mapping[str, Any]) -> None:
    """Remove a finished fold's disk cache (its training's ``<output_dir>/cache``, which the memory plan fills
    when the data set does not fit in memory: GBs at CT size, and nothing reads it again), so K folds do not
    keep K copies; a ``--cache_dir`` of the user's is left alone."""
    if "cache_dir" not in overrides:
        shutil.rmtree(fold_dir / "train" / "cache", ignore_errors=True)


def merge_folds(
    fold_records: Sequence[DynamicsRecord], case_ids: Sequence[str], folds: Sequence[int]
) -> DynamicsRecord:
    """One record of all cases from the held-out records of the folds (``fold_records[k]`` holds fold k's
    cases), in ``case_ids`` order; refused when a fold's record holds a case of another fold or misses one."""
    folds = np.asarray(folds)
    for k, record in enumerate(fold_records):
        expected = sorted(c for c, f in zip(case_ids, folds) if f == k)
        if sorted(record.case_ids) != expected:
            wrong = sorted(set(record.case_ids) ^ set(expected))
            raise ValueError(f"fold {k}'s scored record does not hold exactly its held-out cases: {wrong[:5]}")
    return DynamicsRecord.merge(fold_records, order=case_ids)


def _settings(
    dataset_json: str | os.PathLike, folds: int, seed: int, lists: Sequence[str], stratify: bool,
    config_files: Sequence[str], overrides: Mapping[str, Any], launcher: str | None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "dataset_json": os.path.abspath(dataset_json),
        "folds": int(folds),
        "seed": int(seed),
        "lists": list(lists),
        "stratify_by_center": bool(stratify),
        "config_files": list(config_files),
        "overrides": dict(overrides),
        "launcher": launcher,
    }


def run_audit(
    dataset_json: str,
    output_dir: str = "runs/audit",
    folds: int = 5,
    seed: int = 0,
    lists: str | Sequence[str] = AUDIT_LISTS,
    stratify: bool = True,
    config_file: str | Sequence[str] = (),
    launcher: str | None = None,
    rank_by: str = "dad",
    report: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Run (or go on with) the out-of-fold audit; returns what it writes to ``output_dir/audit.json``.
    ``overrides`` are bundle settings for every fold's runs (``epochs=8``); one the configs do not take
    (``epoch=8``) is refused before anything runs."""
    lists = [lists] if isinstance(lists, str) else list(lists)
    config_files = [config_file] if isinstance(config_file, str) else list(config_file)
    check_fold_settings(overrides, config_files, launcher)
    out = Path(output_dir)
    cases = labelled_cases(dataset_json, lists)
    ids, centers = [c["case_id"] for c in cases], [c.get("center", "") for c in cases]
    stratify = bool(stratify) and len(set(centers)) > 1
    assignment = assign_folds(ids, folds, seed, centers if stratify else None)
    settings = _settings(dataset_json, folds, seed, lists, stratify, config_files, overrides, launcher)
    state = out / "audit.json"
    if state.is_file() and json.loads(state.read_text()).get("settings") != settings:
        raise ValueError(
            f"{out} holds an audit with other settings ({state}); give another --output_dir, or the same settings "
            "to go on with it"
        )
    write_json_atomic(state, {"settings": settings, "status": "running"})
    write_csv_atomic(
        out / "folds.csv",
        ("case_id", "center", "list", "fold"),
        [[c["case_id"], c.get("center", ""), c["list"], str(int(f))] for c, f in zip(cases, assignment)],
    )
    source = read_json(dataset_json)  # its labels and modality go with every fold's list
    cost: dict[str, list[float]] = {"training_wall_s": [], "scoring_wall_s": []}
    records, checkpoints = [], []
    for k in range(int(folds)):
        fold_dir = out / f"fold{k}"
        train, heldout = fold_datalists(cases, assignment, k, name=Path(dataset_json).parent.name, meta=source)
        write_json_atomic(fold_dir / "datalist.json", train)
        write_json_atomic(fold_dir / "heldout.json", heldout)
        commands = fold_commands(fold_dir, config_files, overrides, launcher)
        for name in ("training", "scoring"):
            cost[f"{name}_wall_s"].append(run_once(name, commands[name], fold_dir))
        drop_disk_cache(fold_dir, overrides)
        records.append(DynamicsRecord.load(fold_dir / "scoring" / "dynamics.csv"))
        checkpoints.append(fold_dir / "models" / FINAL_CHECKPOINT)
    record = merge_folds(records, ids, assignment)
    record.save(out / "dynamics.csv")
    fold_epochs = [checkpoint_epochs(p) for p in checkpoints]
    info = json.loads((out / "fold0" / "scoring" / "run.json").read_text())
    result = {
        "settings": settings,
        "status": "done",
        "num_cases": len(ids),
        "fold_sizes": np.bincount(assignment, minlength=int(folds)).tolist(),
        "checkpoints": [str(p.resolve()) for p in checkpoints],
        "model_epochs": fold_epochs,
        "cost": {
            "trainings": int(folds),
            "training_cases_each": [int((assignment != k).sum()) for k in range(int(folds))],
            **cost,
            "total_wall_s": float(sum(cost["training_wall_s"]) + sum(cost["scoring_wall_s"])),
        },
    }
    finish_audit(
        out,
        cases,
        [f"fold{f}:{checkpoints[f].resolve()}" for f in assignment],
        [fold_epochs[f] for f in assignment],
        dataset_json,
        int(info["num_classes"]),
        folds=assignment.tolist(),
        report=report,
        rank_by=rank_by,
        info={"workflow": "audit", "folds": int(folds), "audit": str(state.resolve())},
    )
    write_json_atomic(state, result)
    logger.info(f"audit of {len(ids)} cases over {folds} folds: {out / 'ranking.csv'}")
    return result


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    fire_strict(run_audit, serialize=lambda r: f"{r['num_cases']} cases audited over {r['settings']['folds']} folds")
