"""Which hard tail the dynamic rule would drop, replayed on full-data records (issue 18: choosing the
warm-up and the tail from measurements, not by hand).

    python -m scripts.experiments.tail_replay RUN [RUN ...] [--warmups "[5,10]"] [--out tail_replay.md]

Each RUN is a stage-1 output dir trained on every case to the end (``dynamics.csv``, ``run.json``); its
planted faults are read from ``faults.csv`` beside the run's dataset.json (none there: every label
counts as clean). At each pruning decision of the ``dad`` rule (every epoch after the warm-up, ranking
by ``dad_center_pooled`` over the last ``delta_t`` epochs, as ``scripts.core.dynamic_rule`` does) it
counts, per tail rule, the cases the rule would drop, how many of them are planted faults, and the share
of the faults it drops. A clean case dropped is a real, hard case lost to training: on a clean data set
every drop is one.

Tail rules: ``fraction d`` drops the lowest d of all cases (the rule's ``drop_fraction``); ``z < -k``
drops the cases whose pooled z-score is below -k (at most ``cap`` of all cases), so a data set with no
outlying case drops none. A replay, not a training: a dynamic run no longer trains its dropped cases, so
their DAD stays low; the first decision is exactly the run's, later ones approximately.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.core.dynamic_rule import hard_tail
from scripts.core.dynamics import window_stats
from scripts.data.record import DynamicsRecord
from scripts.scores.center_norm import pooled_center_zscore
from scripts.utils.atomic import write_text_atomic
from scripts.workflows.fault_detection import read_fault_manifest

__all__ = ["tail_mask", "replay_run", "run_tail_replay", "TAIL_RULES"]

TAIL_RULES: tuple[tuple[str, float], ...] = (
    ("fraction", 0.05), ("fraction", 0.10), ("fraction", 0.15),
    ("z", 2.0), ("z", 2.5), ("z", 3.0),
)  # fmt: skip


def tail_mask(score: np.ndarray, rule: str, value: float, cap: float = 0.2) -> np.ndarray:
    """Cases a tail rule drops (the dynamic rule's ``hard_tail``): ``("fraction", d)`` the floor(d x n)
    lowest; ``("z", k)`` those below -k, at most floor(cap x n)."""
    if rule not in ("fraction", "z"):
        raise ValueError(f"unknown tail rule {rule!r}: 'fraction' or 'z'")
    rows = hard_tail(score, value, None) if rule == "fraction" else hard_tail(score, cap, value)
    out = np.zeros(len(score), dtype=bool)
    out[rows] = True
    return out


def replay_run(
    run_dir: str | Path, warmup: int, rules: Sequence[tuple[str, float]] = TAIL_RULES, anneal_fraction: float = 0.125
) -> dict[str, Any]:
    """Per tail rule: mean cases dropped, faults among them, and the share of faults dropped, over the
    pruning decisions of epochs warmup + 1 .. the last before annealing; and the first decision alone."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    window, n_epochs = int(info["delta_t"]), int(info["epochs"])
    faults_path = Path(info["dataset_json"]).parent / "faults.csv"
    record = DynamicsRecord.load(run_dir / "dynamics.csv")
    faults = read_fault_manifest(faults_path) if faults_path.is_file() else {}
    faulty = np.array([c in faults for c in record.case_ids], dtype=bool)
    epochs, dice = record.dice_matrix()
    last_prune = n_epochs - math.ceil(anneal_fraction * n_epochs - 1e-9)
    recorded = set(epochs.tolist())
    decisions = [e for e in range(warmup + 1, last_prune + 1) if e - 1 in recorded]
    out: dict[str, Any] = {"run": str(run_dir), "cases": len(faulty), "faults": int(faulty.sum()),
                           "warmup": warmup, "window": window, "decisions": len(decisions), "rules": {}}  # fmt: skip
    for rule, value in rules:
        per = []
        for e in decisions:
            dad = window_stats(dice, epochs, e - 1 - window, e - 1)[0]
            drop = tail_mask(pooled_center_zscore(dad, record.centers), rule, value)
            per.append((drop.sum(), (drop & faulty).sum()))
        per_arr = np.asarray(per, dtype=np.float64).reshape(-1, 2)
        n_f = max(1, int(faulty.sum()))
        out["rules"][f"{rule} {value:g}"] = {
            "first_dropped": int(per_arr[0, 0]) if len(per) else 0,
            "first_faults": int(per_arr[0, 1]) if len(per) else 0,
            "mean_dropped": float(per_arr[:, 0].mean()) if len(per) else 0.0,
            "mean_clean_dropped": float((per_arr[:, 0] - per_arr[:, 1]).mean()) if len(per) else 0.0,
            "mean_recall": float(per_arr[:, 1].mean() / n_f) if len(per) and faulty.any() else float("nan"),
        }
    return out


def format_replay(results: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per (run, warm-up), per rule "dropped (clean) / recall" averaged over decisions."""
    rules = list(results[0]["rules"]) if results else []
    head = ["run", "cases (faults)", "warm-up", *rules]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [Path(r["run"]).as_posix(), f"{r['cases']} ({r['faults']})", str(r["warmup"])]
        for name in rules:
            v = r["rules"][name]
            recall = "" if math.isnan(v["mean_recall"]) else f" / {v['mean_recall']:.2f}"
            cells.append(f"{v['mean_dropped']:.1f} ({v['mean_clean_dropped']:.1f}){recall}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_tail_replay(*runs: str, warmups: Sequence[int] | None = None, out: str | None = None) -> str:
    """The replay table of every run at each warm-up (default: the run's delta_t and half of it)."""
    results = []
    for run in runs:
        window = int(json.loads((Path(run) / "run.json").read_text())["delta_t"])
        for w in warmups or sorted({max(1, window // 2), window}):
            results.append(replay_run(run, int(w)))
    text = (
        "Per tail rule, over the pruning decisions after the warm-up: mean cases dropped (of them clean) / "
        "mean share of the planted faults dropped.\n\n" + format_replay(results)
    )
    if out:
        write_text_atomic(Path(out), text + "\n")
    return text


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    fire_strict(run_tail_replay)
