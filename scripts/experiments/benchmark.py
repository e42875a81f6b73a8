"""Benchmark of every score's pruning against random and the full data (issue 10, item 5).

    python -m scripts.experiments.benchmark [--work_dir runs/benchmark] [--keep "[0.7,0.5,0.3]"] [--seeds "[0,1,2]"]
        [--arms "['dad:ambiguous','el2n:hard','dad:ccs','random']"] [--preset ...] [--overrides "{...}"]

An arm may end in ``@EPOCH`` ("dad:ambiguous@30"): its subset is ranked at the window ending at that
epoch instead of the last one (what pruning early, where a stop rule fires, would have picked).

One stage-1 run (seed = the first seed) records every score; then, for each arm ("score:strategy",
or "random") and kept fraction, a subset is exported and a fresh network retrained per seed, and
every model is evaluated on the untouched test set. Each finished (arm, kept, seed) is a line of
``results.jsonl``; a rerun skips what is there (resume). Writes ``table.md`` (mean ± std per center
and overall, full data first, the paired difference against random with a 95% t-interval over seeds)
and ``benchmark.png`` (overall test Dice against the kept fraction, as the paper's Figure 4).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.core.dynamics import window_stats
from scripts.core.selection import ranks, regions
from scripts.core.strategies import select_by_score
from scripts.data.record import DynamicsRecord
from scripts.data.subset import Selection, choose_window, export_subset, read_run_info
from scripts.scores import SCORES, ease
from scripts.utils.atomic import write_text_atomic
from scripts.workflows.fault_detection import scores_at

__all__ = [
    "DEFAULT_ARMS",
    "parse_arm",
    "split_window",
    "prune_rate",
    "make_subset",
    "paired_interval",
    "format_table",
    "run_benchmark",
]

logger = logging.getLogger("benchmark")
DEFAULT_ARMS = (
    *(f"{name}:{spec.strategy}" for name, spec in SCORES.items()),
    "dad:ccs",
    "random",
)
# two-sided 95% Student t quantiles by degrees of freedom (normal beyond)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
Runner = Callable[[str, Sequence[str], Mapping[str, Any], Path], float]


def parse_arm(arm: str) -> tuple[str, str]:
    """'score:strategy' -> (score, strategy); 'random' -> ('dad', 'random'); 'score' -> its prescribed strategy."""
    if arm == "random":
        return "dad", "random"
    score, _, strategy = arm.partition(":")
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r} in arm {arm!r}; known: {sorted(SCORES)}")
    return score, strategy or SCORES[score].strategy


def split_window(arm: str) -> tuple[str, int | None]:
    """'dad:ambiguous@30' -> ('dad:ambiguous', 30); an arm without '@' -> (arm, None)."""
    base, at, epoch = arm.partition("@")
    if not at:
        return arm, None
    if not epoch.isdigit() or int(epoch) < 1:
        raise ValueError(f"arm {arm!r}: the window's end epoch after '@' must be a positive integer")
    return base, int(epoch)


def make_subset(
    record: DynamicsRecord, end_epoch: int, delta_t: int, arm: str, rate: float, seed: int, stratify: bool = False
) -> Selection:
    """The selection of one arm at prune ``rate``: ranks and regions by the arm's score (oriented as DAD)."""
    score, strategy = parse_arm(arm)
    table = scores_at(record, end_epoch, delta_t)
    if score not in table:
        raise ValueError(f"the stage-1 record has no {score!r} scores (enable score_patches / score_checkpoints)")
    values = table[score]
    oriented = ease(values, score)
    kept = select_by_score(values, score, rate, strategy, seed, record.centers if stratify else None)
    epochs, dice = record.dice_matrix()
    dad, variability = window_stats(dice, epochs, end_epoch - delta_t, end_epoch)
    return Selection(
        case_ids=list(record.case_ids),
        centers=list(record.centers),
        dad=dad,
        variability=variability,
        region=regions(oriented, rate),
        rank=ranks(oriented),
        kept=kept,
        settings={"arm": arm, "score": score, "strategy": strategy, "rate": rate, "seed": seed, "stratify": stratify,
                  "window": [end_epoch - delta_t + 1, end_epoch], "delta_t": delta_t},
    )  # fmt: skip


def prune_rate(kept: float) -> float:
    """1 - kept as the decimal the user meant: 1 - 0.9 is 0.0999... in floats, which would drop one case too
    few of 100 (selection floors p·n in exact arithmetic)."""
    return round(1.0 - float(kept), 12)


def paired_interval(diffs: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval) of paired differences; half-width NaN for one pair."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2:
        return float(d.mean()) if d.size else float("nan"), float("nan")
    t = T975.get(d.size - 1, 1.96)
    return float(d.mean()), float(t * d.std(ddof=1) / math.sqrt(d.size))


def _key(arm: str, keep: float, seed: int) -> str:
    return f"{arm}|{keep:g}|{seed}"


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The finished runs of ``results.jsonl``, by (arm, kept, seed) key (a torn last line is ignored)."""
    out: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[_key(row["arm"], row["keep"], row["seed"])] = row
    return out


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: test Dice mean ± std per center and overall, full data first, then arms by kept
    fraction, each with its paired differences (overall, same seed) against the full data and against
    random at the same fraction: mean ± half-width of the 95% t-interval."""
    centers = sorted({c for r in rows for c in r["test_dice"] if c != "overall"}) + ["overall"]
    head = ["arm", "kept", "seeds", *(f"Dice {c}" for c in centers), "Δ vs full (95% CI)", "Δ vs random (95% CI)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arm"], float(r["keep"])), []).append(r)
    order = sorted(groups, key=lambda k: (k[0] != "full", -k[1], k[0] != "random", k[0]))
    for arm, keep in order:
        rs = sorted(groups[(arm, keep)], key=lambda r: r["seed"])
        cells = [arm, f"{keep:.0%}", str(len(rs))]
        for c in centers:
            v = [r["test_dice"][c]["mean"] for r in rs if c in r["test_dice"]]
            cells.append(f"{np.mean(v):.4f} ± {np.std(v):.4f}" if v else "–")
        for baseline in ("full", "random"):
            base = {r["seed"]: r["test_dice"]["overall"]["mean"] for r in rows if r["arm"] == baseline
                    and (baseline == "full" or float(r["keep"]) == keep)}  # fmt: skip
            diffs = [r["test_dice"]["overall"]["mean"] - base[r["seed"]] for r in rs if r["seed"] in base]
            if arm == baseline or arm == "full" or not diffs:
                cells.append("")
            else:
                mean, half = paired_interval(diffs)
                cells.append(f"{mean:+.4f} ± {half:.4f}" if not math.isnan(half) else f"{mean:+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Overall test Dice (mean ± std over seeds) against the kept fraction, one line per arm."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    full = [r["test_dice"]["overall"]["mean"] for r in rows if r["arm"] == "full"]
    if full:
        ax.axhline(np.mean(full), color="k", ls="--", lw=1, label="full data")
    for arm in sorted({r["arm"] for r in rows} - {"full"}):
        keeps = sorted({float(r["keep"]) for r in rows if r["arm"] == arm}, reverse=True)
        vals = [[r["test_dice"]["overall"]["mean"] for r in rows if r["arm"] == arm and r["keep"] == k] for k in keeps]
        ax.errorbar([100 * k for k in keeps], [np.mean(v) for v in vals], [np.std(v) for v in vals],
                    marker="o", capsize=3, label=arm)  # fmt: skip
    ax.set_xlabel("training cases kept (%)")
    ax.set_ylabel("test Dice (overall)")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def run_benchmark(
    work_dir: str = "runs/benchmark",
    arms: Sequence[str] = DEFAULT_ARMS,
    keep: Sequence[float] = (0.7, 0.5, 0.3),
    seeds: Sequence[int] = (0, 1, 2),
    preset: str | Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    prune_epoch: int | None = None,
    stratify: bool = False,
    runner: Runner | None = None,
    dynamic_arms: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark; returns every result row. ``runner`` runs one bundle workflow
    (default: ``scripts.workflows.pipeline.bundle_run``, a fresh process per run). ``dynamic_arms``
    (e.g. "['dynamic','dynamic_random','infobatch']"): the one-training arms of
    ``scripts.experiments.dynamic_benchmark`` too, in work_dir/dynamic, their table after this one's."""
    from scripts.workflows.pipeline import TRAIN_TO_THE_END, check_overrides, retrain_overrides

    if runner is None:
        from scripts.workflows.pipeline import bundle_run as runner
    work = Path(work_dir).resolve()
    presets = [preset] if isinstance(preset, str) else list(preset or [])
    train_cfg = ["configs/train.yaml", *presets]
    common = check_overrides(overrides or {})
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    for arm in arms:
        parse_arm(split_window(arm)[0])
    results_path = work / "results.jsonl"
    done = read_results(results_path)

    def record_result(arm: str, kept: float, seed: int, out: Path, ckpt: Path, dataset_json: str) -> None:
        runner("evaluating", [*train_cfg, "configs/evaluate.yaml"],
               {**common, "dataset_json": dataset_json, "output_dir": out, "ckpt_dir": ckpt},
               work / "logs" / f"evaluate_{out.name}.log")  # fmt: skip
        summary = json.loads((out / "eval" / "summary.json").read_text())
        row = {"arm": arm, "keep": kept, "seed": seed, "test_dice": summary}
        with results_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done[_key(arm, kept, seed)] = row

    stage1, ckpt1 = work / "stage1", work / "models" / f"full_seed{seeds[0]}"
    scored = {"score_patches": True, "score_checkpoints": True, **TRAIN_TO_THE_END}
    if not (stage1 / "done.json").is_file():
        wall = runner("training", train_cfg, {**common, **scored, "seed": seeds[0], "output_dir": stage1,
                                              "ckpt_dir": ckpt1}, work / "logs" / "stage1.log")  # fmt: skip
        write_text_atomic(stage1 / "done.json", json.dumps({"wall_s": wall}) + "\n")
    info = read_run_info(stage1)
    record = DynamicsRecord.load(stage1 / "dynamics.csv")
    delta_t = int(info["delta_t"])
    stage1_epochs = max(record.epochs)
    # each arm's window end (its '@EPOCH', else prune_epoch, else the last full window), checked before any run
    window_end = {arm: choose_window(stage1_epochs, delta_t, epoch=split_window(arm)[1] or prune_epoch)[0]
                  for arm in arms}  # fmt: skip

    for seed in seeds:
        if _key("full", 1.0, seed) not in done:
            out, ckpt = (
                (stage1, ckpt1)
                if seed == seeds[0]
                else (work / f"full_seed{seed}", work / "models" / f"full_seed{seed}")
            )
            if seed != seeds[0]:
                runner("training", train_cfg, {**common, **TRAIN_TO_THE_END, "seed": seed, "output_dir": out,
                                               "ckpt_dir": ckpt},
                       work / "logs" / f"full_seed{seed}.log")  # fmt: skip
            record_result("full", 1.0, seed, out, ckpt, info["dataset_json"])
        for kept in keep:
            for arm in arms:
                if _key(arm, kept, seed) in done:
                    continue
                tag = f"{arm.replace(':', '-')}_keep{round(100 * kept)}_seed{seed}"
                subset_dir = work / "subsets" / tag
                selection = make_subset(record, window_end[arm], delta_t, split_window(arm)[0], prune_rate(kept), seed,
                                        stratify)  # fmt: skip
                export_subset(selection, info["dataset_json"], subset_dir, note=f"benchmark arm {arm}",
                              train_limit=info.get("num_train_cases"))  # fmt: skip
                out, ckpt = work / f"retrain_{tag}", work / "models" / tag
                runner("training", [*train_cfg, "configs/retrain.yaml"],
                       {**retrain_overrides(common), "seed": seed, "subset_dir": subset_dir,
                        "stage1_epochs": stage1_epochs, "output_dir": out, "ckpt_dir": ckpt},
                       work / "logs" / f"retrain_{tag}.log")  # fmt: skip
                record_result(arm, kept, seed, out, ckpt, str(subset_dir / "subset_datalist.json"))
    rows = list(done.values())
    table = format_table(rows) + "\n"
    if dynamic_arms:
        from scripts.experiments.dynamic_benchmark import format_cost_table, run_dynamic_benchmark

        dynamic = run_dynamic_benchmark(str(work / "dynamic"), dynamic_arms, seeds, preset, overrides, runner)
        table += "\nOne-training arms (cost × full: case visits, measured cases, wall time):\n\n"
        table += format_cost_table(dynamic) + "\n"
    write_text_atomic(work / "table.md", table)
    plot(rows, work / "benchmark.png")
    return rows


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")
    fire.Fire(run_benchmark, serialize=lambda _: None)
