"""Dice against training compute (issue 26 item 2): what each benchmark run cost, measured from its own
files, and the table and figure that put every arm on the full data's curve.

Compute of a run (``compute_of``):
- ``crops``: training crops through the network (forward + backward): a dynamic run's
  ``dynamic_cost.csv`` (crops trained at weight > 0, counted by its handler per batch); a full-data run's
  record (the crops the DAD tracker pooled, ``n_items``, in ``patches`` mode).
- ``iterations``: optimizer steps: the handler's count, or epochs x ceil(cases / batch) for a full run.
- ``measure_crops``: forward-only passes over dropped cases (crops or volumes), apart.
- ``train_s``: the training loop's seconds (``run.json``, Ignite's own timer, validation included);
  ``wall_s``: the whole process.

The table gives each as a ratio to the full-data run of the same seed, the test Dice, and paired
differences (95% t-interval over seeds) against the full data, against the full data's shorter
schedules at the same crops (linear interpolation along their curve, per seed; empty outside it) and
against the same-cost random arm.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scripts.data.record import read_dynamics
from scripts.experiments.intervals import format_paired
from scripts.utils.atomic import atomic_output

__all__ = ["SAME_COST", "compute_of", "full_fraction", "format_compute_table", "plot_dice_vs_compute"]

# the random arm spending the same compute as a rule's arm each epoch (visits / crops)
SAME_COST = {"dynamic": "dynamic_random", "dynamic_crops": "dynamic_random_crops"}


def full_fraction(arm: str) -> float | None:
    """The share of the epochs of a full-data arm (``full``: 1.0, ``full_0.6``: 0.6); None for other arms."""
    if arm == "full":
        return 1.0
    if not arm.startswith("full_"):
        return None
    try:
        share = float(arm[len("full_") :])
    except ValueError:
        return None
    return share if 0 < share < 1 else None


def compute_of(run_dir: Path, batch_size: int, wall_s: float) -> dict[str, Any]:
    """The measured compute of one finished training run (see the module docstring)."""
    info = json.loads((run_dir / "run.json").read_text())
    cost = run_dir / "dynamic_cost.csv"
    out: dict[str, Any] = {"wall_s": float(wall_s), "train_s": info.get("train_s"), "epochs": info.get("epochs")}
    if cost.is_file():
        with cost.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and "crops" not in rows[0]:
            raise ValueError(f"{cost} has no crops column (written before release 0.7.0): rerun the arm")
        for key, column in (("crops", "crops"), ("iterations", "iterations"), ("measure_crops", "measure_items")):
            out[key] = int(sum(int(r[column]) for r in rows))
        out["val_s"] = round(sum(float(r["val_s"]) for r in rows), 3)
        return out
    table = read_dynamics(run_dir / "dynamics.csv")
    if set(table["source"].tolist()) != {"patches"}:
        raise ValueError(f"{run_dir}: a full-data run's crops are read from its record in dad_mode patches")
    epochs = sorted(set(table["epoch"].astype(int).tolist()))
    n_cases = len(set(table["case_id"].tolist()))
    out.update(crops=int(np.nansum(table["n_items"])), iterations=len(epochs) * math.ceil(n_cases / batch_size),
               measure_crops=0)  # fmt: skip
    return out


def _by_arm(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, Mapping[str, Any]]]:
    out: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in rows:
        if "compute" in r:
            out.setdefault(r["arm"], {})[int(r["seed"])] = r
    return out


def _dice(row: Mapping[str, Any]) -> float:
    return float(row["test_dice"]["overall"]["mean"])


def _x_full(by_arm: Mapping[str, Mapping[int, Mapping[str, Any]]], arm: str, seed: int, key: str) -> float:
    full = by_arm.get("full", {}).get(seed)
    own = by_arm[arm][seed]["compute"].get(key)
    base = full["compute"].get(key) if full else None
    return float(own) / float(base) if own is not None and base else float("nan")


def _on_full_curve(by_arm: Mapping[str, Mapping[int, Mapping[str, Any]]], seed: int, crops_x: float) -> float:
    """The full data's Dice at ``crops_x`` x its crops, interpolated along its schedules of this seed."""
    points = sorted((_x_full(by_arm, a, seed, "crops"), _dice(rs[seed])) for a, rs in by_arm.items()
                    if full_fraction(a) is not None and seed in rs)  # fmt: skip
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if len(xs) < 2 or not xs[0] <= crops_x <= xs[-1]:
        return float("nan")
    return float(np.interp(crops_x, xs, ys))


def format_compute_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: per arm, its compute x the full data's (same seed) and test Dice with paired differences."""
    head = ["arm", "seeds", "iterations × full", "crops × full", "measured crops × full", "train s × full",
            "wall × full", "Dice (overall)", "Δ vs full (95% CI)", "Δ vs full data at the same crops (95% CI)",
            "Δ vs same-cost random (95% CI)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_arm = _by_arm(rows)

    def order(arm: str) -> tuple:
        share = full_fraction(arm)
        return (share is None, -(share or 0), arm)

    for arm in sorted(by_arm, key=order):
        rs = by_arm[arm]
        seeds = sorted(rs)
        cells = [arm, str(len(rs))]
        for key in ("iterations", "crops"):
            cells.append(f"{np.nanmean([_x_full(by_arm, arm, s, key) for s in seeds]):.3f}")
        full_crops = {s: by_arm.get("full", {}).get(s, {}).get("compute", {}).get("crops") for s in seeds}
        measured = [rs[s]["compute"]["measure_crops"] / full_crops[s] for s in seeds if full_crops[s]]
        cells.append(f"{np.mean(measured):.3f}" if measured else "")
        for key in ("train_s", "wall_s"):
            cells.append(f"{np.nanmean([_x_full(by_arm, arm, s, key) for s in seeds]):.3f}")
        dice = [_dice(rs[s]) for s in seeds]
        cells.append(f"{np.mean(dice):.4f} ± {np.std(dice):.4f}")
        full = by_arm.get("full", {})
        vs_full = [_dice(rs[s]) - _dice(full[s]) for s in seeds if s in full]
        cells.append("" if arm == "full" else format_paired(vs_full))
        curve = [_dice(rs[s]) - _on_full_curve(by_arm, s, _x_full(by_arm, arm, s, "crops")) for s in seeds]
        cells.append("" if full_fraction(arm) is not None else format_paired(curve))
        random = by_arm.get(SAME_COST.get(arm, ""), {})
        cells.append(format_paired([_dice(rs[s]) - _dice(random[s]) for s in seeds if s in random]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_dice_vs_compute(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Test Dice (mean ± std over seeds) against training crops x the full data's, every arm; the full
    data's schedules joined as its curve."""
    by_arm = _by_arm(rows)
    fig = Figure(figsize=(7.0, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    curve = []
    for arm, rs in sorted(by_arm.items()):
        seeds = sorted(rs)
        x = [_x_full(by_arm, arm, s, "crops") for s in seeds]
        y = [_dice(rs[s]) for s in seeds]
        is_full = full_fraction(arm) is not None
        if is_full:
            curve.append((float(np.nanmean(x)), float(np.mean(y))))
        ax.errorbar(np.nanmean(x), np.mean(y), yerr=np.std(y), xerr=np.nanstd(x), fmt="s" if is_full else "o",
                    color="#7f7f7f" if is_full else None, capsize=3, label=None if is_full else arm)  # fmt: skip
        ax.annotate(arm, (np.nanmean(x), np.mean(y)), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if curve:
        curve.sort()
        xs, ys = zip(*curve)
        ax.plot(xs, ys, "-", color="#7f7f7f", label="full data, shorter schedules")
    ax.set_xlabel("training crops × the full data's (same seed)")
    ax.set_ylabel("test Dice (mean ± std over seeds)")
    ax.set_title(title or "Dice against training compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    path = Path(path)
    FigureCanvasAgg(fig)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        fig.clf()
    return path
