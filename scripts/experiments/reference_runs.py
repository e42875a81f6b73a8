"""Reference runs for the stop rules: when has the DAD ranking really settled? (issue: when to prune)

Trains stage 1 well past convergence (default 3x its epochs) and, for every window, compares what a rule
would see then (L in both forms, the split-half noise floor, Spearman and kept-subset Jaccard with the
previous window) with the ground truth of the end of the run (Spearman of the window's DAD with the final
window's, Jaccard of the subset each strategy keeps with the one it keeps at the end). Then says where
each rule, at several thresholds, would have fired, and how good the subset picked there was.

    python -m scripts.experiments.reference_runs --work_dir runs/reference [--epochs 120] [--preset ...]
        [--overrides ...]
    python -m scripts.experiments.reference_runs analyze --stage1_dir runs/reference/stage1 --out_dir runs/reference
    python -m scripts.experiments.reference_runs seeds runs/seeds/s0 runs/seeds/s1 ... [--out table.md]
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.core.dynamics import jaccard, window_stats
from scripts.core.stop_rules import fired_window, spearman, window_curve
from scripts.core.strategies import select
from scripts.data.record import DynamicsRecord
from scripts.utils.atomic import atomic_output, write_csv_atomic, write_text_atomic
from scripts.utils.cli import fire_strict

logger = logging.getLogger("reference_runs")
STRATEGIES = ("ambiguous", "easy", "hard")
# (rule, settings): the paper's rule and the noise-aware ones at a few thresholds; the noise rule also
# with its slow-minority guard (at most that share of cases moving beyond their own noise)
RULE_GRID = (
    *(("distance", {"stop_fraction": v}) for v in (0.01, 0.05, 0.1)),
    *(("overlap", {"overlap_threshold": v}) for v in (0.8, 0.85, 0.9)),
    *(("noise", {"noise_factor": v}) for v in (1.0, 1.25, 1.5)),
    *(("noise", {"noise_factor": 1.5, "max_movers": v}) for v in (0.05, 0.1)),
    *(("rank", {"rank_threshold": v}) for v in (0.9, 0.95, 0.98)),
)
FIELDS = (
    "epoch_end",
    "distance_abs",
    "distance_signed",
    "noise_floor",
    "movers",
    "ratio",
    "spearman",
    "kept_jaccard",
    "spearman_final",
    *(f"jaccard_final_{s}" for s in STRATEGIES),
)


def curve_against_final(
    epochs: np.ndarray, dice: np.ndarray, delta_t: int, rate: float = 0.3
) -> tuple[list[dict[str, Any]], int]:
    """``window_curve`` up to the last complete window, each row also compared with that window (the
    ground truth a rule is judged by): ``spearman_final`` of the DAD and ``jaccard_final_<strategy>`` of
    the subsets each strategy keeps at ``rate``. Returns (rows, last window's end epoch)."""
    last = (int(epochs.max()) // delta_t) * delta_t
    rows = window_curve(epochs, dice, last, delta_t, overlap_rate=rate)
    final_dad = window_stats(dice, epochs, last - delta_t, last)[0]
    final_kept = {s: select(final_dad, rate, s) for s in STRATEGIES}
    for row in rows:
        dad = window_stats(dice, epochs, row["epoch_end"] - delta_t, row["epoch_end"])[0]
        row["spearman_final"] = spearman(dad, final_dad)
        for s in STRATEGIES:
            row[f"jaccard_final_{s}"] = jaccard(select(dad, rate, s), final_kept[s])
    return rows, last


def analyze(
    stage1_dir: str | Path, out_dir: str | Path, delta_t: int | None = None, rate: float = 0.3
) -> dict[str, Any]:
    """Per-window table, rule firings, figure (``reference.csv``, ``reference.md``, ``reference.png``)."""
    stage1, out = Path(stage1_dir), Path(out_dir)
    delta_t = int(delta_t or json.loads((stage1 / "run.json").read_text())["delta_t"])
    epochs, dice = DynamicsRecord.load(stage1 / "dynamics.csv").dice_matrix()
    rows, last = curve_against_final(epochs, dice, delta_t, rate)
    firings = []
    for rule, settings in RULE_GRID:
        k = fired_window(rows, rule, **settings)
        row = rows[k + 1] if k is not None else None
        firings.append(
            {
                "rule": rule,
                "setting": ", ".join(f"{key}={value}" for key, value in settings.items()),
                "epoch": row["epoch_end"] if row else None,
                "fraction_of_run": row["epoch_end"] / last if row else None,
                "jaccard_final_ambiguous": row["jaccard_final_ambiguous"] if row else None,
                "spearman_final": row["spearman_final"] if row else None,
            }
        )
    write_csv_atomic(out / "reference.csv", FIELDS, [[_cell(r.get(k)) for k in FIELDS] for r in rows])
    write_text_atomic(out / "reference.md", _markdown(rows, firings, last, rate) + "\n")
    _plot(rows, out / "reference.png")
    return {"rows": rows, "firings": firings, "last_epoch": last}


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _markdown(rows: Sequence[Mapping[str, Any]], firings: Sequence[Mapping[str, Any]], last: int, rate: float) -> str:
    head = [
        "window end",
        "L abs",
        "noise floor",
        "movers",
        "L / max",
        "Spearman prev",
        "Jaccard prev",
        "Spearman final",
        "Jaccard final (ambiguous)",
    ]
    keys = [
        "epoch_end",
        "distance_abs",
        "noise_floor",
        "movers",
        "ratio",
        "spearman",
        "kept_jaccard",
        "spearman_final",
        "jaccard_final_ambiguous",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    lines += [
        "",
        f"Where each rule fires (subsets at prune rate {rate}, compared with the end of the run, epoch {last}):",
        "",
        "| rule | setting | fires at epoch | share of the run | Jaccard with final subset | Spearman with final |",
        "|---|---|---|---|---|---|",
    ]
    for f in firings:
        frac = f"{f['fraction_of_run']:.0%}" if f["fraction_of_run"] is not None else "–"
        lines.append(
            f"| {f['rule']} | {f['setting']} | {f['epoch'] or 'never'} | {frac} | "
            f"{_cell(f['jaccard_final_ambiguous']) or '–'} | {_cell(f['spearman_final']) or '–'} |"
        )
    return "\n".join(lines)


def _plot(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["epoch_end"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    top.plot(x[1:], [r["distance_abs"] for r in rows[1:]], "o-", label="L (absolute)")
    top.plot(x[1:], [r["noise_floor"] for r in rows[1:]], "s--", label="split-half noise floor")
    top.set_ylabel("moving distance")
    top.legend()
    bottom.plot(x, [r["jaccard_final_ambiguous"] for r in rows], "o-", label="Jaccard with final subset")
    bottom.plot(x, [r["spearman_final"] for r in rows], "s-", label="Spearman with final DAD")
    bottom.plot(x[1:], [r["kept_jaccard"] for r in rows[1:]], "^:", label="Jaccard with previous window")
    bottom.axhline(0.9, color="grey", lw=0.8)
    bottom.set_xlabel("epoch (window end)")
    bottom.set_ylim(0, 1.02)
    bottom.legend(loc="lower right")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# the rules of the per-seed table: (column, rule, settings)
SEED_TABLE_RULES = (
    ("noise 1.5 (default)", "noise", {"noise_factor": 1.5}),
    ("noise 1.5 + movers <= 0.05", "noise", {"noise_factor": 1.5, "max_movers": 0.05}),
    ("noise 1.0", "noise", {"noise_factor": 1.0}),
    ("distance 0.01 (the paper's)", "distance", {"stop_fraction": 0.01}),
    ("overlap 0.9", "overlap", {"overlap_threshold": 0.9}),
    ("rank 0.95", "rank", {"rank_threshold": 0.95}),
)


def seeds(*stage1_dirs: str, out: str | None = None, rate: float = 0.3) -> str:
    """One row per stage-1 run (e.g. one per seed): where each rule fires (epoch, share of the run, Jaccard of
    its subset with the last window's), then per window L / noise floor and the share of moving cases.
    Written to ``out`` (markdown) when given."""
    head = ["run", *(name for name, _, _ in SEED_TABLE_RULES)]
    fired_lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    window_lines = []
    for d in stage1_dirs:
        stage1 = Path(d)
        delta_t = int(json.loads((stage1 / "run.json").read_text())["delta_t"])
        epochs, dice = DynamicsRecord.load(stage1 / "dynamics.csv").dice_matrix()
        rows, last = curve_against_final(epochs, dice, delta_t, rate)
        cells = [stage1.name]
        for _, rule, settings in SEED_TABLE_RULES:
            k = fired_window(rows, rule, **settings)
            if k is None:
                cells.append("never")
                continue
            end, j = rows[k + 1]["epoch_end"], rows[k + 1]["jaccard_final_ambiguous"]
            cells.append(f"{end} ({end / last:.0%}), J {j:.2f}")
        fired_lines.append("| " + " | ".join(cells) + " |")
        pairs = rows[1:]
        ratio = " / ".join(f"{r['noise_distance'] / r['noise_floor']:.2f}" for r in pairs)
        movers = " / ".join(f"{r['movers']:.2f}" for r in pairs)
        ends = " / ".join(str(r["epoch_end"]) for r in pairs)
        window_lines.append(f"- {stage1.name}: at epochs {ends}: L / floor {ratio}; movers {movers}")
    text = "\n".join([*fired_lines, "", *window_lines])
    if out:
        write_text_atomic(Path(out), text + "\n")
    return text


def run(
    work_dir: str = "runs/reference",
    epochs: int = 120,
    preset: str | Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    rate: float = 0.3,
) -> dict[str, Any]:
    """Train stage 1 for ``epochs`` (skipped when done before) and analyse its record."""
    from scripts.workflows.pipeline import ROOT, TRAIN_TO_THE_END, bundle_run
    from scripts.workflows.progress import StageProgress

    work = Path(work_dir) if Path(work_dir).is_absolute() else ROOT / work_dir
    presets = [preset] if isinstance(preset, str) else list(preset or [])
    # the reference run is the ground truth for the rules: it trains to the end whatever they say
    settings = {
        **dict(overrides or {}),
        **TRAIN_TO_THE_END,
        "epochs": epochs,
        "output_dir": work / "stage1",
        "ckpt_dir": work / "models",
    }
    bundle_run(
        "training", ["configs/train.yaml", *presets], settings, work / "logs" / "stage1.log", progress=StageProgress()
    )
    result = analyze(work / "stage1", work, rate=rate)
    print((work / "reference.md").read_text())
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")
    commands = {"run": run, "analyze": analyze, "seeds": lambda *dirs, **kw: print(seeds(*dirs, **kw))}
    fire_strict(commands, serialize=lambda _: None)
