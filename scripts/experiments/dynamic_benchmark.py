"""One-training arms at the same cost (issue 18, item 3; issue 26 item 2): the dynamic-pruning rule, by
cases and by crops, against the full data (and its shorter schedules), uniform random per-epoch
subsampling at the same cost, and InfoBatch's loss-based rule; Dice against measured compute.

    python -m scripts.experiments.dynamic_benchmark [--work_dir runs/dynamic_benchmark] [--seeds "[0,1]"]
        [--arms "['dynamic','dynamic_random','infobatch']"] [--preset ...] [--overrides "{...}"]

Per seed: a plain full-data training (the cost reference, trained to the end), then each arm as one
training with ``configs/dynamic.yaml`` merged on; ``dynamic_random`` reads the ``dynamic`` run's
per-epoch visits (``dynamic_cost.csv``) of the same seed, so both train on exactly as many case visits
each epoch. Every model is evaluated on the untouched test set. Each finished (arm, seed) is a line of
``results.jsonl`` (a rerun skips it); ``table.md`` gives, per arm, cost x full (training case visits,
measurement passes, wall time) and test Dice with paired differences (same seed, 95% t-interval)
against the full data and the same-visit random arm. ``compute_table.md`` and ``dice_vs_compute.png``
put every arm against measured training compute (``scripts.experiments.compute_curves``: iterations,
crops through the network, seconds, as ratios to the same seed's full run), beside the full data's
shorter schedules. ``run_benchmark(dynamic_arms=...)`` runs these arms beside the static ones.

Arms (name: overrides on configs/dynamic.yaml):
- ``dynamic``: the dad rule with its defaults (ranked by dad_center_z); ``dynamic_center_z`` /
  ``dynamic_dad``: ranked by dad_center_z / raw DAD explicitly; ``dynamic_matched``: matched iterations;
  ``dynamic_fraction`` / ``dynamic_outlier``: the hard tail as the lowest 10% of the cases / as the cases
  below z = -3 (at most 20%); ``dynamic_outlier_matched``: the latter with matched iterations;
  ``dynamic_outlier_thin``: the latter thinning r = 0.7 of the easiest 60% (about 0.7x the visits).
- ``full_<share>`` (``full_0.4``, ``full_0.6``, ``full_0.8``): the full data trained for that share of the
  epochs (rounded), with its own learning-rate schedule (PolynomialLR over its own epochs), delta_t and
  val_interval cut to its epochs where longer.
- ``dynamic_crops``: patch-level thinning (``dynamic_unit: crop``): every case not dropped is visited, a
  settled easy case trains 1 - r of its crops (1 of 2), each weighted K / k; ``dynamic_crops_wide``: the
  easiest 70% instead of 40%.
- ``dynamic_random``: uniform random per-epoch subsampling, the dynamic arm's visits each epoch;
  ``dynamic_random_crops``: uniform random crop slots, the dynamic_crops arm's crops each epoch.
- ``infobatch``: Qin et al., ICLR 2024, with the paper's defaults (prune ratio r = 0.5 of the samples whose
  loss is below the mean, kept ones rescaled by 1 / (1 - r), annealing delta = 0.875: the last 12.5% of
  the epochs on all data), from the per-case training loss (``--score_patches True``).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.data.record import read_dynamics
from scripts.experiments.compute_curves import (
    SAME_COST,
    compute_of,
    format_compute_table,
    full_fraction,
    plot_dice_vs_compute,
)
from scripts.experiments.intervals import format_paired
from scripts.utils.atomic import write_text_atomic

__all__ = ["ARMS", "arm_overrides", "cost_of", "format_cost_table", "run_dynamic_benchmark"]

logger = logging.getLogger("dynamic_benchmark")
Runner = Callable[[str, Sequence[str], Mapping[str, Any], Path], float]
INFOBATCH = {"dynamic_rule": "infobatch", "dynamic_warmup": 0, "dynamic_thin_ratio": 0.5,
             "dynamic_anneal_fraction": 0.125, "score_patches": True, "patch_scores": ["loss"]}  # fmt: skip
OUTLIER = {"dynamic_tail": "outlier", "dynamic_drop_z": 3.0, "dynamic_drop_fraction": 0.2}
ARMS: dict[str, dict[str, Any]] = {
    "dynamic": {},
    "dynamic_center_z": {"dynamic_score": "dad_center_z"},
    "dynamic_dad": {"dynamic_score": "dad"},
    "dynamic_center_pooled": {"dynamic_score": "dad_center_pooled"},
    "dynamic_matched": {"dynamic_matched_iterations": True},
    # the hard tail as a fixed 10% of the cases (release 0.5.0's rule) or the outliers below z = -3 (0.6.0's)
    "dynamic_fraction": {"dynamic_tail": "fraction", "dynamic_drop_fraction": 0.1},
    "dynamic_outlier": OUTLIER,
    "dynamic_outlier_matched": {**OUTLIER, "dynamic_matched_iterations": True},
    # thinning enough for about 0.7x the visits: r = 0.7 of the easiest 60%
    "dynamic_outlier_thin": {**OUTLIER, "dynamic_easy_fraction": 0.6, "dynamic_thin_ratio": 0.7},
    # the annealing share around InfoBatch's 12.5%: none, or a quarter of the epochs on every kept case
    "dynamic_outlier_anneal0": {**OUTLIER, "dynamic_anneal_fraction": 0.0},
    "dynamic_outlier_anneal25": {**OUTLIER, "dynamic_anneal_fraction": 0.25},
    # r alone around InfoBatch's 0.5, on the default easiest 40%
    "dynamic_outlier_r3": {**OUTLIER, "dynamic_thin_ratio": 0.3},
    "dynamic_outlier_r7": {**OUTLIER, "dynamic_thin_ratio": 0.7},
    "dynamic_random": {"dynamic_rule": "random"},
    "infobatch": INFOBATCH,
    # patch-level thinning (issue 26): fewer crops of the settled easy cases instead of skipped visits
    "dynamic_crops": {"dynamic_unit": "crop"},
    "dynamic_crops_wide": {"dynamic_unit": "crop", "dynamic_easy_fraction": 0.7},
    "dynamic_random_crops": {"dynamic_rule": "random", "dynamic_unit": "crop"},
}
# the arm whose per-epoch cost (dynamic_cost.csv) each random arm spends
REFERENCE_OF = {random: rule for rule, random in SAME_COST.items()}
SCHEDULE_KEYS = ("epochs", "delta_t", "val_interval", "batch_size")


def arm_overrides(arm: str, work: Path, seed: int) -> dict[str, Any]:
    """The bundle overrides of one arm's training on configs/dynamic.yaml (a random arm points at its
    reference arm's per-epoch cost)."""
    if arm not in ARMS:
        known = sorted(ARMS) + ["full_0.4", "full_0.6", "full_0.8 (any full_<share in (0, 1)>)"]
        raise ValueError(f"unknown dynamic arm {arm!r}; known: {known}")
    out = dict(ARMS[arm])
    if arm in REFERENCE_OF:
        out["dynamic_budget"] = str(work / f"{REFERENCE_OF[arm]}_seed{seed}" / "dynamic_cost.csv")
    return out


def base_schedule(config_files: Sequence[str], overrides: Mapping[str, Any]) -> dict[str, int]:
    """epochs, delta_t, val_interval and batch_size of the benchmark's trainings (the configs, then the
    overrides): what the shorter full-data schedules are cut from and the iterations are counted with."""
    from monai.bundle import ConfigParser
    from scripts.workflows.pipeline import ROOT

    parser = ConfigParser()
    parser.read_config([str(ROOT / f) if not Path(f).is_absolute() else f for f in config_files])
    out = {}
    for key in SCHEDULE_KEYS:
        value = overrides.get(key, parser.get(key))
        try:
            out[key] = int(value)
        except (TypeError, ValueError):
            problem = f"{key} of the benchmark's configs is {value!r}, not a number: pass it in --overrides"
            raise ValueError(problem) from None
    return out


def full_schedule(share: float, base: Mapping[str, int]) -> dict[str, int]:
    """Overrides of a full-data run over ``share`` of the epochs (its LR schedule follows its own epochs)."""
    epochs = max(1, round(share * base["epochs"]))
    return {"epochs": epochs, "delta_t": min(base["delta_t"], epochs),
            "val_interval": min(base["val_interval"], epochs)}  # fmt: skip


def cost_of(run_dir: Path, n_cases: int, epochs: int, wall_s: float, full_wall_s: float,
            full_epochs: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Cost x full of one run: training case visits and measurement passes over a full run's n x epochs
    (``full_epochs``: the full run's, default the run's own), and wall time over the same seed's full-data
    run (everything the run did, its measurement passes in)."""
    visits, measured = n_cases * epochs, 0
    path = run_dir / "dynamic_cost.csv"
    if path.is_file():
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        visits = sum(int(r["visits"]) for r in rows)
        measured = sum(int(r["measured"]) for r in rows)
    full = n_cases * (full_epochs or epochs)
    return {"case_visits": visits, "measured_cases": measured, "visits_x_full": visits / full,
            "measured_x_full": measured / full, "wall_s": wall_s, "wall_x_full": wall_s / full_wall_s}  # fmt: skip


def format_cost_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: per arm, seeds, cost x full (visits, measured cases, wall), test Dice mean ± std and the
    paired differences against the full data and the same-visit random arm (same seed)."""
    head = ["arm", "seeds", "visits × full", "measured × full", "wall × full", "Dice (overall)",
            "Δ vs full (95% CI)", "Δ vs dynamic_random (95% CI)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_arm: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], {})[int(r["seed"])] = r
    order = sorted(by_arm, key=lambda a: (a != "full", a != "dynamic", a))
    for arm in order:
        rs = by_arm[arm]
        dice = {s: r["test_dice"]["overall"]["mean"] for s, r in rs.items()}
        cells = [arm, str(len(rs))]
        for key in ("visits_x_full", "measured_x_full", "wall_x_full"):
            cells.append(f"{np.mean([r['cost'][key] for r in rs.values()]):.3f}")
        cells.append(f"{np.mean(list(dice.values())):.4f} ± {np.std(list(dice.values())):.4f}")
        for base in ("full", "dynamic_random"):
            other = by_arm.get(base, {})
            diffs = [dice[s] - other[s]["test_dice"]["overall"]["mean"] for s in sorted(dice) if s in other]
            cells.append("" if arm in (base, "full") else format_paired(diffs))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _read(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            out[(row["arm"], int(row["seed"]))] = row
    return out


def run_dynamic_benchmark(
    work_dir: str = "runs/dynamic_benchmark",
    arms: Sequence[str] = ("dynamic", "dynamic_random", "infobatch"),
    seeds: Sequence[int] = (0, 1),
    preset: str | Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    runner: Runner | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the one-training arms; returns every result row (the full-data rows included)."""
    from scripts.workflows.pipeline import TRAIN_TO_THE_END, check_overrides

    if runner is None:
        from scripts.workflows.pipeline import bundle_run as runner
    arms = [a for a in arms if a != "full"]
    for arm in arms:
        if full_fraction(arm) is None:
            arm_overrides(arm, Path("."), 0)
    for arm in arms:
        if arm in REFERENCE_OF and REFERENCE_OF[arm] not in arms:
            reference = REFERENCE_OF[arm]
            raise ValueError(f"the {arm} arm matches the {reference} arm's cost: list {reference!r} too")
    # the shorter full schedules first, each random arm after the arm whose cost it reads
    arms.sort(key=lambda a: (full_fraction(a) is None, a in REFERENCE_OF))
    work = Path(work_dir).resolve()
    presets = [preset] if isinstance(preset, str) else list(preset or [])
    train_cfg = ["configs/train.yaml", *presets]
    common = {**check_overrides(overrides or {}, train_cfg), **TRAIN_TO_THE_END}
    base = base_schedule(train_cfg, common)
    results = work / "results.jsonl"
    done = _read(results)
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]

    def full_epochs(seed: int) -> int:  # the reference of visits x full: the full-data run's own epochs
        return int(json.loads((work / f"full_seed{seed}" / "run.json").read_text())["epochs"])

    for seed in seeds:
        walls: dict[str, float] = {}
        for arm in ["full", *arms]:
            out, ckpt = work / f"{arm}_seed{seed}", work / "models" / f"{arm}_seed{seed}"
            if (arm, seed) in done:
                walls[arm] = float(done[(arm, seed)]["cost"]["wall_s"])
                continue
            share = full_fraction(arm)
            files = train_cfg if share is not None else [*train_cfg, "configs/dynamic.yaml"]
            extra = full_schedule(share, base) if share not in (None, 1.0) else {}
            extra = extra if share is not None else arm_overrides(arm, work, seed)
            settings = {**common, **extra, "seed": seed, "output_dir": out, "ckpt_dir": ckpt}
            walls[arm] = runner("training", files, settings, work / "logs" / f"{arm}_seed{seed}.log")
            runner("evaluating", [*train_cfg, "configs/evaluate.yaml"], {**common, "output_dir": out, "ckpt_dir": ckpt},
                   work / "logs" / f"evaluate_{arm}_seed{seed}.log")  # fmt: skip
            info = json.loads((out / "run.json").read_text())
            table = read_dynamics(out / "dynamics.csv")
            n_cases, epochs = len(set(table["case_id"].tolist())), int(info["epochs"])
            row = {"arm": arm, "keep": 1.0, "seed": seed,
                   "test_dice": json.loads((out / "eval" / "summary.json").read_text()),
                   "cost": cost_of(out, n_cases, epochs, walls[arm], walls["full"], full_epochs(seed)),
                   "compute": compute_of(out, base["batch_size"], walls[arm])}  # fmt: skip
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[(arm, seed)] = row
    rows = list(done.values())
    write_text_atomic(work / "table.md", format_cost_table(rows) + "\n")
    write_text_atomic(work / "compute_table.md", format_compute_table(rows) + "\n")
    if any("compute" in r for r in rows):
        plot_dice_vs_compute(rows, work / "dice_vs_compute.png", title=f"Dice against compute ({work.name})")
    return rows


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")
    fire_strict(run_dynamic_benchmark, serialize=lambda _: None)
