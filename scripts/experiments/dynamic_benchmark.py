"""One-training arms at the same cost (issue 18, item 3): the dynamic-pruning rule against the full data,
uniform random per-epoch subsampling with the same case visits, and InfoBatch's loss-based rule.

    python -m scripts.experiments.dynamic_benchmark [--work_dir runs/dynamic_benchmark] [--seeds "[0,1]"]
        [--arms "['dynamic','dynamic_random','infobatch']"] [--preset ...] [--overrides "{...}"]

Per seed: a plain full-data training (the cost reference, trained to the end), then each arm as one
training with ``configs/dynamic.yaml`` merged on; ``dynamic_random`` reads the ``dynamic`` run's
per-epoch visits (``dynamic_cost.csv``) of the same seed, so both train on exactly as many case visits
each epoch. Every model is evaluated on the untouched test set. Each finished (arm, seed) is a line of
``results.jsonl`` (a rerun skips it); ``table.md`` gives, per arm, cost x full (training case visits,
measurement passes, wall time) and test Dice with paired differences (same seed, 95% t-interval)
against the full data and the same-visit random arm. ``run_benchmark(dynamic_arms=...)`` runs these
arms beside the static ones.

Arms (name: overrides on configs/dynamic.yaml):
- ``dynamic``: the dad rule with its defaults (ranked by dad_center_z); ``dynamic_center_z`` /
  ``dynamic_dad``: ranked by dad_center_z / raw DAD explicitly; ``dynamic_matched``: matched iterations;
  ``dynamic_fraction`` / ``dynamic_outlier``: the hard tail as the lowest 10% of the cases / as the cases
  below z = -3 (at most 20%); ``dynamic_outlier_matched``: the latter with matched iterations;
  ``dynamic_outlier_thin``: the latter thinning r = 0.7 of the easiest 60% (about 0.7x the visits).
- ``dynamic_random``: uniform random per-epoch subsampling, the dynamic arm's visits each epoch.
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
from scripts.experiments.intervals import paired_interval
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
}


def arm_overrides(arm: str, work: Path, seed: int) -> dict[str, Any]:
    """The bundle overrides of one arm's training (the random arm points at the dynamic run's visits)."""
    if arm not in ARMS:
        raise ValueError(f"unknown dynamic arm {arm!r}; known: {sorted(ARMS)}")
    out = dict(ARMS[arm])
    if arm == "dynamic_random":
        out["dynamic_budget"] = str(work / f"dynamic_seed{seed}" / "dynamic_cost.csv")
    return out


def cost_of(run_dir: Path, n_cases: int, epochs: int, wall_s: float, full_wall_s: float) -> dict[str, Any]:
    """Cost x full of one run: training case visits and measurement passes over a full run's n x epochs,
    and wall time over the same seed's full-data run (everything the run did, its measurement passes in)."""
    visits, measured = n_cases * epochs, 0
    path = run_dir / "dynamic_cost.csv"
    if path.is_file():
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        visits = sum(int(r["visits"]) for r in rows)
        measured = sum(int(r["measured"]) for r in rows)
    full = n_cases * epochs
    return {"case_visits": visits, "measured_cases": measured, "visits_x_full": visits / full,
            "measured_x_full": measured / full, "wall_s": wall_s, "wall_x_full": wall_s / full_wall_s}  # fmt: skip


def _interval(diffs: Sequence[float]) -> str:
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        return ""
    if d.size < 2:
        return f"{d.mean():+.4f}"
    mean, half = paired_interval(d)
    return f"{mean:+.4f} ± {half:.4f}"


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
            cells.append("" if arm in (base, "full") else _interval(diffs))
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
    arms = list(arms)
    for arm in arms:
        arm_overrides(arm, Path("."), 0)
    if "dynamic_random" in arms and "dynamic" not in arms:
        raise ValueError("the dynamic_random arm matches the dynamic arm's visits: list 'dynamic' too")
    arms.sort(key=lambda a: a == "dynamic_random")  # after the dynamic arm whose visits it reads
    work = Path(work_dir).resolve()
    presets = [preset] if isinstance(preset, str) else list(preset or [])
    train_cfg = ["configs/train.yaml", *presets]
    common = {**check_overrides(overrides or {}, train_cfg), **TRAIN_TO_THE_END}
    results = work / "results.jsonl"
    done = _read(results)
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    for seed in seeds:
        walls: dict[str, float] = {}
        for arm in ["full", *arms]:
            out, ckpt = work / f"{arm}_seed{seed}", work / "models" / f"{arm}_seed{seed}"
            if (arm, seed) in done:
                walls[arm] = float(done[(arm, seed)]["cost"]["wall_s"])
                continue
            files = train_cfg if arm == "full" else [*train_cfg, "configs/dynamic.yaml"]
            extra = {} if arm == "full" else arm_overrides(arm, work, seed)
            settings = {**common, **extra, "seed": seed, "output_dir": out, "ckpt_dir": ckpt}
            walls[arm] = runner("training", files, settings, work / "logs" / f"{arm}_seed{seed}.log")
            runner("evaluating", [*train_cfg, "configs/evaluate.yaml"], {**common, "output_dir": out, "ckpt_dir": ckpt},
                   work / "logs" / f"evaluate_{arm}_seed{seed}.log")  # fmt: skip
            info = json.loads((out / "run.json").read_text())
            table = read_dynamics(out / "dynamics.csv")
            n_cases, epochs = len(set(table["case_id"].tolist())), int(info["epochs"])
            row = {"arm": arm, "keep": 1.0, "seed": seed,
                   "test_dice": json.loads((out / "eval" / "summary.json").read_text()),
                   "cost": cost_of(out, n_cases, epochs, walls[arm], walls["full"])}  # fmt: skip
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[(arm, seed)] = row
    rows = list(done.values())
    write_text_atomic(work / "table.md", format_cost_table(rows) + "\n")
    return rows


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")
    fire_strict(run_dynamic_benchmark, serialize=lambda _: None)
