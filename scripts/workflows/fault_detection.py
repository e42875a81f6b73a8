"""How well each per-case score finds planted label faults: AUROC and AUPRC of ranking faulty cases
as the hardest, overall and per fault kind (and severity when the manifest has one), at several epochs.

    python -m scripts.workflows.fault_detection runs/stage1 --faults data/synthetic/faults.csv --epochs "[10,20,40]"

Plain functions over arrays (``auroc``, ``auprc``, ``scores_at``) plus a fire CLI that reads a stage-1
record (``dynamics.csv`` with any score columns) and writes ``fault_detection.{csv,md}``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.core.detection import auprc, auroc
from scripts.core.dynamics import window_stats
from scripts.data.record import DynamicsRecord
from scripts.scores import SCORES, hardness
from scripts.scores.center_norm import pooled_center_zscore, robust_center_zscore
from scripts.scores.forgetting import forgetting_at
from scripts.utils.atomic import write_csv_atomic, write_text_atomic

__all__ = ["auroc", "auprc", "scores_at", "detection_rows", "read_fault_manifest", "run_fault_detection"]

WINDOW_SCORES = ("el2n", "el2nx", "loss", "cleanlab", "monai_lq")  # means over the window, like DAD
LATEST_SCORES = ("vog", "grand_last_layer")  # checkpoint-pass scores: the latest value up to the epoch
TABLE_FIELDS = ("epoch", "score", "kind", "n_faults", "n_clean", "auroc", "auprc", "prevalence",
                "n_missing_faults", "n_missing_clean")  # fmt: skip


def scores_at(
    record: DynamicsRecord, epoch: int, delta_t: int, forgetting_threshold: float = 0.5
) -> dict[str, np.ndarray]:
    """Every score the record allows, per case, as of ``epoch``, in its own orientation (see ``SCORES``).

    DAD and the window scores are means over (epoch - delta_t, epoch]; ``dad_center_z`` is DAD's robust
    z-score within each center, ``dad_center_pooled`` the same against center statistics shrunk toward
    all cases'; forgetting counts events up to ``epoch``; VoG and last-layer GraNd take
    their latest recorded value up to ``epoch``.
    """
    epochs, dice = record.dice_matrix()
    start = max(0, epoch - delta_t)
    dad = window_stats(dice, epochs, start, epoch)[0]
    out = {
        "dad": dad,
        "dad_center_z": robust_center_zscore(dad, record.centers),
        "dad_center_pooled": pooled_center_zscore(dad, record.centers),
        "forgetting": forgetting_at(dice, epochs, epoch, forgetting_threshold),
    }
    for name in record.score_names:
        cols, matrix = record.score_matrix(name)
        if name in LATEST_SCORES:
            value = np.full(len(record.case_ids), np.nan)
            for j in np.flatnonzero(cols <= epoch):
                value = np.where(np.isnan(matrix[:, j]), value, matrix[:, j])
            out[name] = value
        elif name in SCORES:
            out[name] = window_stats(matrix, cols, start, epoch)[0]
    return out


def read_fault_manifest(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """{case_id: {"kind": ..., "severity": ...}} from a manifest with columns case_id, kind[, severity]."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for r in rows:
        if r.get("case_id"):
            out[r["case_id"].strip()] = {
                "kind": (r.get("kind") or "fault").strip(),
                "severity": (r.get("severity") or "").strip(),
            }
    return out


def detection_rows(
    case_ids: Sequence[str], scores: Mapping[str, np.ndarray], faults: Mapping[str, Mapping[str, str]], epoch: int
) -> list[dict[str, Any]]:
    """AUROC/AUPRC rows for every score: all faults vs clean cases, then each severity (all kinds), each
    kind and each kind/severity, each vs the clean cases only (other faults left out).

    Cases whose score is missing (NaN, e.g. EL2Nx of an empty label) are left out, not ranked as the
    hardest (that gave free hits: an emptied label "detected" with AUROC 1): the metrics are over the
    cases the score defines, ``n_faults``/``n_clean`` count those, and ``n_missing_faults`` /
    ``n_missing_clean`` the ones left out."""
    ids = list(case_ids)
    faulty = np.array([c in faults for c in ids])
    groups: dict[str, np.ndarray] = {"all": faulty}
    for sev in sorted({f["severity"] for f in faults.values() if f["severity"]}):
        groups[f"severity {sev}"] = np.array([c in faults and faults[c]["severity"] == sev for c in ids])
    for kind in sorted({f["kind"] for f in faults.values()}):
        groups[kind] = np.array([c in faults and faults[c]["kind"] == kind for c in ids])
        for sev in sorted({f["severity"] for f in faults.values() if f["kind"] == kind and f["severity"]}):
            groups[f"{kind}/{sev}"] = np.array(
                [c in faults and faults[c]["kind"] == kind and faults[c]["severity"] == sev for c in ids]
            )
    rows = []
    for name, values in scores.items():
        h = hardness(values, name)
        defined = ~np.isnan(h)
        for kind, positive in groups.items():
            if not positive.any():
                continue
            keep = (positive | ~faulty) & defined
            n_pos = int((positive & defined).sum())
            rows.append(
                {
                    "epoch": epoch,
                    "score": name,
                    "kind": kind,
                    "n_faults": n_pos,
                    "n_clean": int((~faulty & defined).sum()),
                    "auroc": auroc(h[keep], positive[keep]),
                    "auprc": auprc(h[keep], positive[keep]),
                    "prevalence": float(n_pos / keep.sum()) if keep.any() else float("nan"),
                    "n_missing_faults": int((positive & ~defined).sum()),
                    "n_missing_clean": int((~faulty & ~defined).sum()),
                }
            )
    return rows


def detection_cell(row: Mapping[str, Any]) -> str:
    """AUROC / AUPRC, and how many faulty + clean cases the score left undefined (not ranked) when any."""
    undefined = np.isnan(row["auroc"]) and np.isnan(row["auprc"])
    text = "–" if undefined else f"{row['auroc']:.3f} / {row['auprc']:.3f}"
    if row["n_missing_faults"] or row["n_missing_clean"]:
        text += f" ({row['n_missing_faults']}+{row['n_missing_clean']} missing)"
    return text


def _markdown(rows: Sequence[Mapping[str, Any]], note: str) -> str:
    epochs = sorted({r["epoch"] for r in rows})
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    lines = ["# Fault detection: AUROC / AUPRC of ranking planted faults as the hardest cases", "", note, ""]
    for kind in kinds:
        sub = [r for r in rows if r["kind"] == kind]
        full = max(sub, key=lambda r: r["n_faults"] + r["n_clean"])  # a score that defines every case
        n = full["n_faults"] + full["n_missing_faults"]
        n_clean = full["n_clean"] + full["n_missing_clean"]
        lines += [f"## {kind} ({n} faulty vs {n_clean} clean cases; chance AUPRC {n / (n + n_clean):.3f})"]
        lines += ["", "| score | " + " | ".join(f"epoch {e}" for e in epochs) + " |"]
        lines += ["|---|" + "---|" * len(epochs)]
        for name in dict.fromkeys(r["score"] for r in sub):
            cells = []
            for e in epochs:
                hit = [r for r in sub if r["score"] == name and r["epoch"] == e]
                cells.append(detection_cell(hit[0]) if hit else "–")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def run_fault_detection(
    stage1_dir: str,
    faults: str | None = None,
    epochs: Sequence[int] | None = None,
    delta_t: int | None = None,
    out_dir: str | None = None,
    forgetting_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """The fault-detection table of a stage-1 run (its ``dynamics.csv`` and ``run.json``).

    Args:
        stage1_dir: the stage-1 output dir.
        faults: the fault manifest (default: ``faults.csv`` beside the run's dataset.json).
        epochs: the epochs to evaluate at (default: every multiple of ``delta_t`` recorded).
        delta_t: window length (default: the run's).
        out_dir: where ``fault_detection.csv`` / ``.md`` go (default: ``stage1_dir``).
    """
    stage1 = Path(stage1_dir)
    info_path = stage1 / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    delta_t = int(delta_t or info.get("delta_t", 10))
    if faults is None:
        faults = str(Path(info["dataset_json"]).parent / "faults.csv")
    manifest = read_fault_manifest(faults)
    record = DynamicsRecord.load(stage1 / "dynamics.csv")
    recorded = record.epochs
    if epochs is None:
        epochs = [e for e in recorded if e % delta_t == 0] or recorded[-1:]
    rows: list[dict[str, Any]] = []
    for e in epochs:
        rows += detection_rows(record.case_ids, scores_at(record, int(e), delta_t, forgetting_threshold), manifest, e)
    out = Path(out_dir or stage1)
    write_csv_atomic(
        out / "fault_detection.csv",
        TABLE_FIELDS,
        [[f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k]) for k in TABLE_FIELDS] for r in rows],
    )
    note = (
        f"Record: `{stage1 / 'dynamics.csv'}`; faults: `{faults}`; DAD and window scores over the last "
        f"{delta_t} epochs up to each epoch. Each cell: AUROC / AUPRC (higher is better; chance AUROC 0.5) "
        "over the cases the score defines; '(f+c missing)': f faulty and c clean cases without a value "
        "(NaN, see docs/scores.md), left out rather than ranked as the hardest."
    )
    write_text_atomic(out / "fault_detection.md", _markdown(rows, note) + "\n")
    return rows


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    fire_strict(run_fault_detection, serialize=lambda rows: f"{len(rows)} rows: fault_detection.md / .csv written")
