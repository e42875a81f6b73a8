"""The ``scoring`` workflow's last step, and the audit's: after the volume evaluator has written the
record of a checkpoint's scores over every labelled case (``score_handlers.VolumeScorer``), check that
the record holds exactly the cases that were to be scored, rank them (``ranking.csv``: the scores, the
rank, the model and epochs each score came from, the fold in an out-of-fold audit), prune by DAD (here
the whole-volume Dice of the one scored epoch) with the audit report, and write the fault-detection
tables when the data set has a fault manifest. See ``configs/scoring.yaml`` and docs/audit.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.core.detection import auprc, auroc, precision_at_k
from scripts.data.lists import AUDIT_LISTS, labelled_cases
from scripts.data.record import DynamicsRecord
from scripts.scores import hardness
from scripts.scores.rank_average import rank_average
from scripts.utils.atomic import write_csv_atomic, write_json_atomic, write_text_atomic
from scripts.utils.jsonfile import read_json
from scripts.workflows.fault_detection import detection_cell, read_fault_manifest, run_fault_detection
from scripts.workflows.prune import run_pruning

__all__ = [
    "RANK_AVERAGE_OF",
    "audit_detection",
    "case_scores",
    "checkpoint_epochs",
    "finish_audit",
    "finish_scoring",
    "ranking_rows",
    "suspicion",
]

# the scores the rank average combines (Dice as DAD of the one epoch; the four detectors)
RANK_AVERAGE_OF = ("dad", "el2n", "cleanlab", "monai_lq")
DETECTION_FIELDS = (
    "score",
    "group",
    "n_faults",
    "n_clean",
    "auroc",
    "auprc",
    "p_at_10",
    "p_at_20",
    "n_missing_faults",
    "n_missing_clean",
)
logger = logging.getLogger("scoring")


def checkpoint_epochs(path: str | os.PathLike) -> int | None:
    """The epochs a checkpoint was trained for, when it says (``checkpoint_final.pt`` keeps the LR
    scheduler, whose ``last_epoch`` counts them); None for a bare model state (``model.pt``)."""
    import torch

    try:
        content = torch.load(str(path), map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as err:
        raise ValueError(f"checkpoint {path} cannot be read ({err}): is it a training run's .pt file?") from None
    scheduler = content.get("lr_scheduler") if isinstance(content, Mapping) else None
    if isinstance(scheduler, Mapping) and isinstance(scheduler.get("last_epoch"), int):
        return int(scheduler["last_epoch"])
    return None


def case_scores(record: DynamicsRecord, epoch: int = 1) -> dict[str, np.ndarray]:
    """Every score of one recorded epoch, per case in record order, as recorded: ``dad`` (the case's
    whole-volume Dice), ``dice_class{c}``, the score columns, and ``rank_average``."""
    epochs, dice = record.dice_matrix()
    if epoch not in epochs.tolist():
        raise ValueError(f"the record has no epoch {epoch}; it has {epochs.tolist()}")
    j = epochs.tolist().index(epoch)
    out: dict[str, np.ndarray] = {"dad": dice[:, j]}
    per_class = record.class_dice(epoch)
    for c in range(1, record.num_classes):
        out[f"dice_class{c}"] = per_class[:, c - 1]
    for name in record.score_names:
        out[name] = record.score_matrix(name)[1][:, j]
    out["rank_average"] = rank_average({s: hardness(out[s], s) for s in RANK_AVERAGE_OF if s in out})
    return out


def suspicion(scores: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """A score oriented so that larger = more suspicious (the rank average already is)."""
    return np.asarray(scores[name], dtype=np.float64) if name == "rank_average" else hardness(scores[name], name)


def ranking_rows(
    cases: Sequence[Mapping[str, Any]],
    scores: Mapping[str, np.ndarray],
    models: Sequence[str],
    model_epochs: Sequence[int | None],
    folds: Sequence[int | None] | None = None,
    rank_by: str = "dad",
) -> list[dict[str, Any]]:
    """One row per case, most suspicious first by ``rank_by`` (rank 1; a missing value ranks first, as in
    ``scripts.core.selection.hardest_first``): rank, case, center, list, fold, model and epochs, scores."""
    if rank_by not in scores:
        raise ValueError(f"rank_by {rank_by!r} is not a recorded score; choose one of {sorted(scores)}")
    h = suspicion(scores, rank_by)
    order = np.argsort(-np.where(np.isnan(h), np.inf, h), kind="stable")
    folds = folds if folds is not None else [None] * len(cases)
    rows = []
    for rank, i in enumerate(order, start=1):
        case = cases[i]
        rows.append(
            {
                "rank": rank,
                "case_id": case["case_id"],
                "center": case.get("center", ""),
                "list": case.get("list", ""),
                "fold": "" if folds[i] is None else int(folds[i]),
                "model": str(models[i]),
                "model_epochs": "" if model_epochs[i] is None else int(model_epochs[i]),
                "ranked_by": rank_by,
                **{k: float(v[i]) for k, v in scores.items()},
            }
        )
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.6g}"
    return str(value)


def audit_detection(
    case_ids: Sequence[str], scores: Mapping[str, np.ndarray], faults: Mapping[str, Mapping[str, str]]
) -> list[dict[str, Any]]:
    """AUROC, AUPRC and precision among the 10 and 20 most suspicious cases of each score: all faults vs
    the clean cases, then each severity vs the clean cases (precision@k over all cases in every row).

    A case the score leaves undefined (EL2Nx of an empty label) is left out, never ranked as the most
    suspicious (which would make an emptied label a free hit), and counted in ``n_missing_faults`` /
    ``n_missing_clean``, as ``scripts.workflows.fault_detection`` does."""
    ids = list(case_ids)
    faulty = np.array([c in faults for c in ids])
    groups = {"all": faulty}
    for sev in sorted({f["severity"] for f in faults.values() if f.get("severity")}):
        groups[f"severity {sev}"] = np.array([c in faults and faults[c]["severity"] == sev for c in ids])
    rows = []
    for name in scores:
        if name.startswith("dice_class"):
            continue
        h = suspicion(scores, name)
        defined = ~np.isnan(h)
        for group, positive in groups.items():
            if not positive.any():
                continue
            keep = (positive | ~faulty) & defined
            rows.append(
                {
                    "score": name,
                    "group": group,
                    "n_faults": int((positive & defined).sum()),
                    "n_clean": int((~faulty & defined).sum()),
                    "n_missing_faults": int((positive & ~defined).sum()),
                    "n_missing_clean": int((~faulty & ~defined).sum()),
                    "auroc": auroc(h[keep], positive[keep]),
                    "auprc": auprc(h[keep], positive[keep]),
                    "p_at_10": precision_at_k(h[defined], faulty[defined], 10),
                    "p_at_20": precision_at_k(h[defined], faulty[defined], 20),
                }
            )
    return rows


def _detection_markdown(rows: Sequence[Mapping[str, Any]], note: str) -> str:
    groups = list(dict.fromkeys(r["group"] for r in rows))
    lines = ["# Audit: how well each score finds the planted faults", "", note, ""]
    lines += ["| score | " + " | ".join(f"{g} AUROC / AUPRC" for g in groups) + " | p@10 | p@20 |"]
    lines += ["|---|" + "---|" * (len(groups) + 2)]
    for name in dict.fromkeys(r["score"] for r in rows):
        sub = {r["group"]: r for r in rows if r["score"] == name}
        cells = [detection_cell(sub[g]) if g in sub else "–" for g in groups]
        first = next(iter(sub.values()))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {first['p_at_10']:.2f} | {first['p_at_20']:.2f} |")
    return "\n".join(lines) + "\n"


def _retrainable_subset(subset_json: Path, cases: Sequence[Mapping[str, Any]], dataset_json: str | os.PathLike) -> None:
    """Make the exported subset one a retraining can read: its training list the kept cases of the data
    list's training list only (a scored validation or test case never becomes training data), the data
    list's other labelled lists as they are."""
    subset = json.loads(subset_json.read_text())
    kept = {d["case_id"] for d in subset["training"]}
    training = [dict(c) for c in cases if c.get("list") == "training" and c["case_id"] in kept]
    content = read_json(dataset_json)
    others = {k: labelled_cases(dataset_json, k) for k in AUDIT_LISTS[1:] if content.get(k)}
    subset.update(
        training=[{k: v for k, v in d.items() if k not in ("list", "fold")} for d in training],
        numTraining=len(training),
        **{k: [{f: v for f, v in d.items() if f != "list"} for d in entries] for k, entries in others.items()},
    )
    subset["description"] = (
        f"{len(training)} training cases kept (of the {len(kept)} kept among all {len(cases)} scored cases); "
        "validation and test lists unchanged"
    )
    write_json_atomic(subset_json, subset)


def scored_by(models: Sequence[str], model_epochs: Sequence[int | None]) -> str:
    """Which models (and their training epochs) scored the cases, for the report's title."""
    pairs = sorted({(str(m), e) for m, e in zip(models, model_epochs)}, key=lambda p: p[0])
    return "; ".join(f"{m} ({e if e is not None else 'unknown'} epochs)" for m, e in pairs)


def finish_audit(
    output_dir: str | os.PathLike,
    cases: Sequence[Mapping[str, Any]],
    models: Sequence[str],
    model_epochs: Sequence[int | None],
    dataset_json: str | os.PathLike,
    num_classes: int,
    folds: Sequence[int | None] | None = None,
    epoch: int = 1,
    rate: float = 0.3,
    strategy: str = "ambiguous",
    seed: int = 0,
    stratify: bool = False,
    report: bool = True,
    rank_by: str = "dad",
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Rank, prune and report the scored cases of ``output_dir/dynamics.csv`` (one model per case:
    ``models``/``model_epochs`` in ``cases`` order; ``folds`` in an out-of-fold audit).

    Writes ``scored_datalist.json`` (the scored cases as one training list, what the prune step ranks),
    ``run.json``, ``ranking.csv``, ``prune/`` with the report, and, when ``faults.csv`` sits beside
    ``dataset_json``, ``fault_detection.{csv,md}`` and ``audit_detection.{csv,md}``. Returns the prune
    summary. The record must hold exactly ``cases``; it is refused otherwise, naming the cases.
    """
    out = Path(output_dir)
    record = DynamicsRecord.load(out / "dynamics.csv")
    ids = [c["case_id"] for c in cases]
    scored, listed = set(record.case_ids), set(ids)
    unscored = [c for c in ids if c not in scored]
    unknown = [c for c in record.case_ids if c not in listed]
    if unscored or unknown:
        raise ValueError(
            f"{out / 'dynamics.csv'} does not hold the cases that were to be scored: {len(unscored)} have no "
            f"record {unscored[:5]}, {len(unknown)} are not in the list {unknown[:5]}; score again into an "
            "empty output_dir"
        )
    record = DynamicsRecord.merge([record], order=ids)
    folds = list(folds) if folds is not None else [None] * len(ids)
    scored = {
        "name": "audited cases",
        "description": f"the {len(ids)} labelled cases scored from {Path(dataset_json).resolve()}",
        "tensorImageSize": "3D",
        "numTraining": len(ids),
        "training": [{**c, **({} if f is None else {"fold": int(f)})} for c, f in zip(cases, folds)],  # fmt: skip
    }
    write_json_atomic(out / "scored_datalist.json", scored)
    write_json_atomic(
        out / "run.json",
        {
            "dataset_json": str((out / "scored_datalist.json").resolve()),
            "source_datalist": os.path.abspath(dataset_json),
            "num_train_cases": None,
            "delta_t": 1,
            "num_classes": num_classes,
            "models": sorted(set(map(str, models))),
            **dict(info or {}),
        },
    )
    record.save(out / "dynamics.csv")
    faults = Path(dataset_json).parent / "faults.csv"
    summary = run_pruning(
        out,
        out / "prune",
        rate=rate,
        strategy=strategy,
        seed=seed,
        epoch=epoch,
        stratify=stratify,
        report=report,
        faults_csv=faults if faults.is_file() else None,
        report_title=f"Label audit of {len(ids)} cases, scored by {scored_by(models, model_epochs)}",
    )
    _retrainable_subset(out / "prune" / "subset_datalist.json", cases, dataset_json)
    scores = case_scores(record, epoch)
    rows = ranking_rows(cases, scores, models, model_epochs, folds, rank_by)
    write_csv_atomic(out / "ranking.csv", list(rows[0]), [[_cell(v) for v in r.values()] for r in rows])
    if faults.is_file():
        run_fault_detection(str(out), faults=str(faults), epochs=[epoch], delta_t=1)
        detection = audit_detection(ids, scores, read_fault_manifest(faults))
        write_csv_atomic(
            out / "audit_detection.csv", DETECTION_FIELDS, [[_cell(r[k]) for k in DETECTION_FIELDS] for r in detection]
        )
        note = (
            f"Record `{out / 'dynamics.csv'}` ({len(ids)} cases), faults `{faults}`; models: "
            f"{scored_by(models, model_epochs)}. AUROC / AUPRC of each severity vs the clean cases over the "
            "cases the score defines ('(f+c missing)': faulty and clean cases without a value, left out); "
            "p@k: faults among the k most suspicious cases."
        )
        write_text_atomic(out / "audit_detection.md", _detection_markdown(detection, note))
    logger.info(f"{len(ids)} cases scored and ranked by {rank_by}: {out / 'ranking.csv'}")
    return summary


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
    lists: str | Sequence[str] = AUDIT_LISTS,
    model_epochs: int | None = None,
    rank_by: str = "dad",
    plan: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The scoring workflow's finish: every labelled case of ``lists`` of ``dataset_json`` (the cases the
    evaluator scored, ``labelled_cases``) ranked, pruned and reported by ``finish_audit``, all from the one
    ``checkpoint`` (trained ``model_epochs`` epochs; None reads them from the checkpoint when it says),
    preprocessed with ``plan`` (its plan.json, recorded in run.json; None: the run's own settings)."""
    cases = labelled_cases(dataset_json, lists, limit=num_train_cases)
    epochs = model_epochs if model_epochs is not None else checkpoint_epochs(checkpoint)
    model = os.path.abspath(checkpoint)
    return finish_audit(
        output_dir,
        cases,
        [model] * len(cases),
        [epochs] * len(cases),
        dataset_json,
        num_classes,
        epoch=epoch,
        rate=rate,
        strategy=strategy,
        seed=seed,
        stratify=stratify,
        report=report,
        rank_by=rank_by,
        info={
            "workflow": "scoring",
            "checkpoint": model,
            "model_epochs": epochs,
            "lists": [lists] if isinstance(lists, str) else list(lists),
            "plan": None if plan is None else os.path.abspath(plan),
        },
    )
