"""Benchmark of every score's pruning against random and the full data (issue 10, item 5).

    python -m scripts.experiments.benchmark [--work_dir runs/benchmark] [--keep "[0.7,0.5,0.3]"] [--seeds "[0,1,2]"]
        [--arms "['dad:ambiguous','el2n:hard','dad:ccs','random']"] [--preset ...] [--overrides "{...}"]
    python -m scripts.experiments.benchmark --help      # every option, with an example for one's own data

Where an arm ranks: by default at the window where stage 1's stop rule fired (its ``stop_rule.json``,
as the pipeline prunes), else at the last full window; ``--prune_epoch N`` moves every arm, and an arm
ending in ``@EPOCH`` ("dad:ambiguous@30") or ``@last`` (the last full window) moves that arm. The
table's ``ranked at`` column says where each arm ranked.

One stage-1 run (seed = the first seed) records every score; then, for each arm ("score:strategy",
or "random") and kept fraction, a subset is exported and a fresh network retrained per seed, and
every model is evaluated on the untouched test set. The intervals then cover retraining noise only
(every seed's subset comes from the same stage 1); with ``--stage1_per_seed True`` each seed has its
own scored stage 1 (also that seed's full-data model), and the intervals cover the noise of stage 1
(which cases a score picks) and of the retraining. The table's ``noise`` column says which. Each
finished (arm, kept, seed) is a line of ``results.jsonl``; a rerun skips what is there (resume).
Writes ``table.md`` (mean ± std per center and overall, full data first, the paired difference
against random with a 95% t-interval over seeds, and how many pairs it has) and ``benchmark.png``
(overall test Dice against the kept fraction, as the paper's Figure 4).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.data.record import DynamicsRecord
from scripts.data.subset import Selection, choose_window, export_subset, read_run_info
from scripts.experiments.intervals import paired_interval, t975  # noqa: F401 (re-exported)
from scripts.scores import SCORES
from scripts.utils.atomic import write_text_atomic
from scripts.utils.errors import InputError
from scripts.workflows.prune import select_by_recorded_score

__all__ = [
    "DEFAULT_ARMS",
    "parse_arm",
    "split_window",
    "arm_window",
    "prune_rate",
    "make_subset",
    "paired_interval",
    "t975",
    "format_table",
    "run_benchmark",
]

logger = logging.getLogger("benchmark")
DEFAULT_ARMS = (*(f"{name}:{spec.strategy}" for name, spec in SCORES.items()), "dad:ccs", "random")
Runner = Callable[[str, Sequence[str], Mapping[str, Any], Path], float]
NOISE_RETRAIN = "retraining"  # one stage 1 for every seed: the interval covers the retrainings only
NOISE_BOTH = "stage 1 + retraining"  # a stage 1 per seed


def parse_arm(arm: str) -> tuple[str, str]:
    """'score:strategy' -> (score, strategy); 'random' -> ('dad', 'random'); 'score' -> its prescribed strategy."""
    if arm == "random":
        return "dad", "random"
    score, _, strategy = arm.partition(":")
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r} in arm {arm!r}; known: {sorted(SCORES)}")
    return score, strategy or SCORES[score].strategy


LAST = "last"


def split_window(arm: str) -> tuple[str, int | str | None]:
    """'dad:ambiguous@30' -> ('dad:ambiguous', 30); 'dad:ccs@last' -> ('dad:ccs', 'last'); no '@' -> (arm, None)."""
    base, at, epoch = arm.partition("@")
    if not at:
        return arm, None
    if epoch == LAST:
        return base, LAST
    if not epoch.isdigit() or int(epoch) < 1:
        raise ValueError(f"arm {arm!r}: after '@' give the window's end epoch (a positive integer) or 'last'")
    return base, int(epoch)


def arm_window(
    arm: str, last_epoch: int, delta_t: int, stop_rule: Mapping[str, Any] | None, prune_epoch: int | None = None
) -> tuple[int, str]:
    """(end epoch, why) of the window ``arm`` ranks at: its '@EPOCH' or '@last', else ``prune_epoch``, else
    where the stop rule fired, else the last full window (``choose_window``)."""
    at = split_window(arm)[1]
    if at == LAST:
        return choose_window(last_epoch, delta_t)
    return choose_window(last_epoch, delta_t, stop_rule, epoch=at or prune_epoch)


def make_subset(
    record: DynamicsRecord, end_epoch: int, delta_t: int, arm: str, rate: float, seed: int, stratify: bool = False
) -> Selection:
    """The selection of one arm at prune ``rate``: the prune workflow's selection by the arm's score."""
    score, strategy = parse_arm(arm)
    selection = select_by_recorded_score(record, end_epoch, delta_t, score, rate, strategy, seed, stratify)
    selection.settings = {"arm": arm, **selection.settings}
    return selection


def prune_rate(kept: float) -> float:
    """1 - kept as the decimal the user meant: 1 - 0.9 is 0.0999... in floats, which would drop one case too
    few of 100 (selection floors p·n in exact arithmetic)."""
    return round(1.0 - float(kept), 12)


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
    random at the same fraction: mean ± half-width of the 95% t-interval. ``seeds (pairs)``: the seeds
    of the row and the pairs its interval against random (the random arm: against full) uses; ``ranked
    at``: the end epoch of the window the subset was ranked at; ``noise``: what the interval covers."""
    centers = sorted({c for r in rows for c in r["test_dice"] if c != "overall"}) + ["overall"]
    head = ["arm", "kept", "seeds (pairs)", "ranked at", "noise", *(f"Dice {c}" for c in centers),
            "Δ vs full (95% CI)", "Δ vs random (95% CI)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arm"], float(r["keep"])), []).append(r)
    order = sorted(groups, key=lambda k: (k[0] != "full", -k[1], k[0] != "random", k[0]))
    for arm, keep in order:
        rs = sorted(groups[(arm, keep)], key=lambda r: r["seed"])
        ranked = sorted({str(r["window_end"]) for r in rs if r.get("window_end") is not None})
        noise = sorted({r.get("noise", NOISE_RETRAIN) for r in rs}) if arm not in ("full", "random") else []
        cells = [arm, f"{keep:.0%}", "", ", ".join(ranked) or "–", ", ".join(noise) or "–"]
        for c in centers:
            v = [r["test_dice"][c]["mean"] for r in rs if c in r["test_dice"]]
            cells.append(f"{np.mean(v):.4f} ± {np.std(v):.4f}" if v else "–")
        pairs = 0
        for baseline in ("full", "random"):
            base = {r["seed"]: r["test_dice"]["overall"]["mean"] for r in rows if r["arm"] == baseline
                    and (baseline == "full" or float(r["keep"]) == keep)}  # fmt: skip
            diffs = [r["test_dice"]["overall"]["mean"] - base[r["seed"]] for r in rs if r["seed"] in base]
            if arm == baseline or arm == "full" or not diffs:
                cells.append("")
            else:
                if baseline == "random" or arm == "random":
                    pairs = len(diffs)
                mean, half = paired_interval(diffs)
                cells.append(f"{mean:+.4f} ± {half:.4f}" if not math.isnan(half) else f"{mean:+.4f}")
        cells[2] = f"{len(rs)} ({pairs})" if arm != "full" else str(len(rs))
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
    stage1_per_seed: bool = False,
    runner: Runner | None = None,
    dynamic_arms: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark; returns every result row. ``runner`` runs one bundle workflow
    (default: ``scripts.workflows.pipeline.bundle_run``, a fresh process per run). ``stage1_per_seed``:
    a scored stage 1 per seed (see the module docstring), else one for all seeds. ``dynamic_arms``
    (e.g. "['dynamic','dynamic_random','infobatch']"): the one-training arms of
    ``scripts.experiments.dynamic_benchmark`` too, in work_dir/dynamic, their table after this one's."""
    from scripts.utils.flags import as_bool
    from scripts.workflows.pipeline import (
        TRAIN_TO_THE_END,
        check_overrides,
        check_pipeline,
        config_files,
        retrain_overrides,
        user_paths,
    )

    if runner is None:
        from scripts.workflows.pipeline import bundle_run as runner
    work = Path(work_dir).resolve()
    train_cfg = config_files(preset)
    common = user_paths(check_overrides(overrides or {}, train_cfg))
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    per_seed = as_bool(stage1_per_seed, "stage1_per_seed")
    noise = NOISE_BOTH if per_seed else NOISE_RETRAIN
    keep = [float(k) for k in (keep if isinstance(keep, (list, tuple)) else [keep])]
    for arm in arms:
        try:
            parse_arm(split_window(arm)[0])
        except ValueError as e:
            raise InputError(f"--arms: {e}") from None
    for kept in keep:  # every stage checked before the first runs
        check_pipeline(work, train_cfg, common, prune_rate(kept), "random", "matched", seeds)
    results_path = work / "results.jsonl"
    done = read_results(results_path)
    mixed = {r.get("noise", NOISE_RETRAIN) for r in done.values() if r["arm"] not in ("full", "random")} - {noise}
    if mixed:
        raise ValueError(
            f"{results_path} holds results with a {sorted(mixed)} stage 1, and this run asks for stage1_per_seed="
            f"{per_seed}: their intervals would cover different noise; use another --work_dir"
        )

    def record_result(arm: str, kept: float, seed: int, out: Path, ckpt: Path, dataset_json: str,
                      extra: Mapping[str, Any]) -> None:  # fmt: skip
        runner("evaluating", [*train_cfg, "configs/evaluate.yaml"],
               {**common, "dataset_json": dataset_json, "output_dir": out, "ckpt_dir": ckpt},
               work / "logs" / f"evaluate_{out.name}.log")  # fmt: skip
        summary = json.loads((out / "eval" / "summary.json").read_text())
        row = {"arm": arm, "keep": kept, "seed": seed, "test_dice": summary, **extra}
        with results_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done[_key(arm, kept, seed)] = row

    scored = {"score_patches": True, "score_checkpoints": True, **TRAIN_TO_THE_END}

    def stage1_of(seed: int) -> tuple[Path, Path, int]:
        """(run dir, checkpoint dir, its seed) of the stage 1 whose scores rank ``seed``'s subsets, run if needed."""
        s1 = seed if per_seed else seeds[0]
        out = work / (f"stage1_seed{s1}" if per_seed else "stage1")
        ckpt = work / "models" / f"full_seed{s1}"
        if not (out / "done.json").is_file():
            wall = runner("training", train_cfg, {**common, **scored, "seed": s1, "output_dir": out,
                                                  "ckpt_dir": ckpt}, work / "logs" / f"{out.name}.log")  # fmt: skip
            write_text_atomic(out / "done.json", json.dumps({"wall_s": wall}) + "\n")
        return out, ckpt, s1

    def windows(stage1: Path) -> tuple[DynamicsRecord, dict[str, Any], dict[str, int]]:
        """The stage 1's record, run info and each arm's window end (checked before any retraining on it)."""
        info = read_run_info(stage1)
        record = DynamicsRecord.load(stage1 / "dynamics.csv")
        rule_path = stage1 / "stop_rule.json"
        stop_rule = json.loads(rule_path.read_text()) if rule_path.is_file() else None
        ends = {arm: arm_window(arm, max(record.epochs), int(info["delta_t"]), stop_rule, prune_epoch)[0]
                for arm in arms}  # fmt: skip
        return record, info, ends

    first = windows(stage1_of(seeds[0])[0])  # a bad '@EPOCH' fails before any retraining
    for seed in seeds:
        stage1, ckpt1, s1 = stage1_of(seed)
        record, info, window_end = first if s1 == seeds[0] else windows(stage1)
        delta_t, stage1_epochs = int(info["delta_t"]), max(record.epochs)
        if _key("full", 1.0, seed) not in done:
            out, ckpt = stage1, ckpt1
            if s1 != seed:  # one stage 1 for all seeds: another seed's full-data model is a run of its own
                out, ckpt = work / f"full_seed{seed}", work / "models" / f"full_seed{seed}"
            if s1 != seed:
                runner("training", train_cfg, {**common, **TRAIN_TO_THE_END, "seed": seed, "output_dir": out,
                                               "ckpt_dir": ckpt},
                       work / "logs" / f"full_seed{seed}.log")  # fmt: skip
            record_result("full", 1.0, seed, out, ckpt, info["dataset_json"], {})
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
                extra = {"window_end": window_end[arm], "stage1": stage1.name, "noise": noise}
                record_result(arm, kept, seed, out, ckpt, str(subset_dir / "subset_datalist.json"), extra)
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


def main(
    work_dir: str = "runs/benchmark",
    arms: Sequence[str] = DEFAULT_ARMS,
    keep: Sequence[float] = (0.7, 0.5, 0.3),
    seeds: Sequence[int] = (0, 1, 2),
    preset: str | Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    prune_epoch: int | None = None,
    stratify: bool = False,
    stage1_per_seed: bool = False,
    dynamic_arms: Sequence[str] = (),
) -> None:
    """Every score's pruning against random and the full data, at several kept fractions and seeds.

    One stage 1 (the first seed; one per seed with --stage1_per_seed True) records every score; for each
    arm and kept fraction a subset is exported
    and retrained per seed, and every model is evaluated on the untouched test set. Writes table.md
    (test Dice per center, paired differences with 95% intervals), benchmark.png and results.jsonl; a
    rerun skips the finished runs. Everything is checked before the first run.

    Your own data (a Decathlon folder with dataset.json), planned from the data, two arms, one fraction::

        python -m scripts.experiments.benchmark --work_dir runs/bench_mine --arms "['dad:ambiguous','random']"
            --keep "[0.7]" --seeds "[0,1]" --overrides "{'dataset_dir': 'data/MyTask'}"

    Args:
        work_dir: folder for every run, log, subset and the table; relative to the working directory.
        arms: pruning arms, each "score:strategy" (e.g. "el2n:hard", "dad:ccs") or "random"; a suffix
            @EPOCH ranks that arm at the window ending at that epoch (e.g. @30), @last at the last full
            window; without a suffix an arm ranks where stage 1's stop rule fired. Default all scores.
        keep: fractions of the training cases kept, each in (0, 1), e.g. "[0.7,0.5,0.3]".
        seeds: one retraining per arm, fraction and seed, and one full-data training per seed.
        preset: a config merged onto configs/train.yaml for every run, e.g. configs/presets/hippocampus.yaml;
            without one, classes, spacing, padding and normalisation are planned from the data (plan.json).
        overrides: configs/train.yaml settings for every run, e.g. "{'dataset_dir': 'data/MyTask'}" (paths
            relative to the working directory) or epochs and patch_size; run-owned ones are refused.
        prune_epoch: rank every arm without a suffix at the window ending here (default where the stop
            rule fired, else the last full window).
        stratify: prune the same fraction within each center.
        stage1_per_seed: a scored stage 1 per seed, so the intervals cover stage 1's noise too (the
            table's noise column says which).
        dynamic_arms: also the one-training arms of scripts.experiments.dynamic_benchmark in
            work_dir/dynamic, e.g. "['dynamic','dynamic_random','infobatch']" (docs/dynamic_pruning.md).
    """
    run_benchmark(
        work_dir,
        arms,
        keep,
        seeds,
        preset,
        overrides,
        prune_epoch,
        stratify,
        stage1_per_seed,
        dynamic_arms=dynamic_arms,
    )


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")
    fire_strict(main, serialize=lambda _: None)
