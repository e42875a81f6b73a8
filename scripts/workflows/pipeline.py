"""The whole pipeline in one command: stage 1 on the full data, prune by DAD and at random to the same
size, retrain on both subsets, evaluate all three on the test set, print one table.

    python -m scripts.workflows.pipeline [--work_dir runs/pipeline] [--rate 0.3] [--seeds "[0,1,2]"]
        [--preset configs/presets/hippocampus.yaml] [--overrides "{'epochs': 20}"]
    python -m scripts.workflows.pipeline --help      # every option, with an example for one's own data

Every stage is a plain ``python -m monai.bundle run ...`` of the bundle's own configs, so each can be
rerun by hand with the command the pipeline logs. With several seeds, stage 1 (seed 0) supplies the DAD
ranking once; the full-data model, the DAD-subset model and a fresh random subset are trained per
seed, and the table gives mean ± std over seeds.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.core.strategies import check_settings
from scripts.data.preflight import check_run, check_writable
from scripts.data.record import read_dynamics
from scripts.utils.atomic import write_json_atomic, write_text_atomic
from scripts.utils.bundle_keys import check_bundle_settings
from scripts.utils.cli import fire_strict
from scripts.utils.errors import InputError
from scripts.utils.flags import as_bool
from scripts.workflows.progress import StageProgress, first_missing, refusal_of, run_logged

logger = logging.getLogger("pipeline")
ROOT = Path(__file__).resolve().parents[2]
ARMS = ("full", "dad", "random", "dynamic")  # dynamic: one self-pruning training (run_pipeline(dynamic=True))
# settings the pipeline sets per stage and seed: overriding them would break the stages, so they are refused
PIPELINE_OWNED = {
    "output_dir": "--work_dir",
    "ckpt_dir": "--work_dir",
    "seed": "--seeds",
    "prune_rate": "--rate",
    "prune_strategy": "--strategy",
    "subset_dir": None,
    "stage1_dir": None,
    "stage1_epochs": None,
    "retrain_budget": "--budget",
}
# what retrain.yaml derives itself: the subset's data list, and epochs from stage 1's budget
RETRAIN_OWNED = ("dataset_json", "epochs")
# a full-data model (and a reference or benchmark stage 1) trains every epoch: train.yaml's default
# early_prune would stop it where the stop rule fires
TRAIN_TO_THE_END = {"early_prune": False}
# overrides naming a path the user typed: resolved against the user's working directory (the stages run
# in the bundle root)
PATH_KEYS = ("dataset_dir", "dataset_json")
BUDGETS = ("matched", "proportional")
STAGE_CONFIGS = ("configs/retrain.yaml", "configs/evaluate.yaml", "configs/dynamic.yaml")  # merged onto train_cfg
PRESET_EXAMPLE = "configs/presets/hippocampus.yaml"


def check_overrides(overrides: Mapping[str, Any], train_cfg: Sequence[str] = ("configs/train.yaml",)) -> dict[str, Any]:
    """The user's overrides, refused in one line where they would clobber what a stage sets, or where no
    config of the stages (``train_cfg``: train.yaml and the presets, then the stages' own) takes them."""
    clash = sorted(k for k in overrides if k.split("#")[0] in PIPELINE_OWNED)
    if clash:
        hints = [f"{k} (use {PIPELINE_OWNED[k]})" if PIPELINE_OWNED.get(k) else k for k in clash]
        raise InputError(f"--overrides may not set what the pipeline sets for each stage: {', '.join(hints)}")
    check_bundle_settings(overrides, [*train_cfg, *STAGE_CONFIGS], "--overrides", given_as="'{}'")
    return dict(overrides)


def user_paths(overrides: Mapping[str, Any], cwd: str | os.PathLike | None = None) -> dict[str, Any]:
    """The overrides with the paths a user typed (``dataset_dir``, ``dataset_json``) made absolute against
    ``cwd`` (default: the working directory), once, before the stages run elsewhere."""
    base = Path(cwd or os.getcwd())
    return {k: str(base / str(v)) if k in PATH_KEYS and not Path(str(v)).is_absolute() else v
            for k, v in overrides.items()}  # fmt: skip


def config_files(preset: str | Sequence[str] | None, cwd: str | os.PathLike | None = None) -> list[str]:
    """train.yaml and the presets, each found from the working directory or else the bundle root."""
    presets = [preset] if isinstance(preset, str) else list(preset or [])
    found = []
    for name in presets:
        here = Path(cwd or os.getcwd()) / name
        path = here if here.is_file() else ROOT / name
        if not path.is_file():
            raise InputError(f"--preset {name}: no such file here or in {ROOT}; fix: e.g. --preset {PRESET_EXAMPLE}")
        found.append(str(path.resolve()))
    return ["configs/train.yaml", *found]


def stage_settings(train_cfg: Sequence[str], overrides: Mapping[str, Any]) -> dict[str, int]:
    """epochs, val_interval and delta_t of stage 1 as the configs and overrides set them (literals only)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(ROOT / f) if not Path(f).is_absolute() else f for f in train_cfg])
    out = {}
    for key in ("epochs", "val_interval", "delta_t"):
        value = overrides.get(key, parser.get(key))
        if isinstance(value, (int, float)) or str(value).strip().isdigit():
            out[key] = int(value)
    return out


def check_pipeline(
    work: Path, train_cfg: Sequence[str], overrides: Mapping[str, Any], rate: float, strategy: str, budget: str,
    seeds: Sequence[int],
) -> None:  # fmt: skip
    """Refuse, before any stage runs, a pipeline whose stages cannot follow each other: stage 1 shorter than
    a DAD window or than val_interval (prune would find no window, evaluation no model.pt), a prune rate
    or strategy the prune stage refuses, an unknown budget, no seeds, a work_dir that cannot be written."""
    try:
        check_settings(rate, strategy)
    except ValueError as e:
        raise InputError(f"--rate {rate} --strategy {strategy}: {e}") from None
    if budget not in BUDGETS:
        raise InputError(f"--budget {budget!r}: use one of {BUDGETS}")
    if not seeds:
        raise InputError('--seeds is empty; fix: e.g. --seeds "[0,1,2]"')
    settings = stage_settings(train_cfg, overrides)
    if len(settings) == 3:
        try:
            check_run(**settings)
        except InputError as e:
            raise InputError(f"stage 1 cannot feed the prune stage: {e}") from None
    check_writable({"work_dir": work})


def retrain_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides that reach a retraining: all but those retrain.yaml derives (a user's ``dataset_json``
    points stage 1 at their data; the retraining reads the exported subset)."""
    return {k: v for k, v in overrides.items() if k.split("#")[0] not in RETRAIN_OWNED}


def _cli_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def bundle_run(
    run_id: str,
    config_files: Sequence[str],
    settings: Mapping[str, Any],
    log_file: Path,
    progress: StageProgress | None = None,
) -> float:
    """Run one bundle workflow in a fresh process; returns its wall time in seconds.

    A stage that finished before with the same command (its ``<log>.done.json`` marker, written atomically
    after success) is skipped and its recorded wall time returned, so a rerun of an interrupted pipeline
    goes on where it stopped. ``progress`` prints each stage's start, end and what is left.
    """
    files = [str(ROOT / f) if not Path(f).is_absolute() else f for f in config_files]
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", json.dumps(files)]
    for key, value in settings.items():
        cmd += [f"--{key}", _cli_value(value)]
    done = log_file.with_suffix(".done.json")
    if done.is_file() and json.loads(done.read_text()).get("cmd") == cmd[1:]:
        wall = float(json.loads(done.read_text())["wall_s"])
        logger.info(f"{run_id} {log_file.stem}: done before ({done}), skipped")
        if progress is not None:
            progress.end(run_id, f"{run_id} {log_file.stem} (done before, skipped)", time.perf_counter() - wall)
        return wall
    logger.info("$ " + " ".join(cmd))
    label = f"{run_id} {log_file.stem}"
    start = progress.start(run_id, f"{label} (log: {log_file})") if progress else time.perf_counter()
    made = first_missing(log_file.parent)
    returncode = run_logged(cmd, ROOT, log_file, echo=progress is not None)
    refusal = refusal_of(log_file, made) if returncode != 0 else None
    if refusal is not None:  # the stage's own one-line refusal, printed last (its log is not kept)
        raise InputError(f"{label} refused its input, so nothing ran and its log is not kept; the refusal:\n{refusal}")
    if returncode != 0:
        text = log_file.read_text(errors="replace") if log_file.is_file() else ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        why = f"; its last line: {lines[-1]}" if lines else ""
        raise RuntimeError(f"{run_id} failed (exit {returncode}, {log_file.stem}); see {log_file}{why}")
    wall = progress.end(run_id, label, start) if progress else time.perf_counter() - start
    write_json_atomic(done, {"cmd": cmd[1:], "wall_s": wall})
    return wall


def planned_stages(n_seeds: int, dynamic: bool = False) -> list[str]:
    """The kinds of the bundle runs run_pipeline makes, in order (for the progress estimate)."""
    kinds = ["training", "pruning"]
    for i in range(n_seeds):
        kinds += (["training"] if i else []) + ["pruning", "training", "training"] + ["training"] * dynamic
        kinds += ["evaluating"] * (3 + dynamic)
    return kinds


def _train_s(run_dir: Path, wall_s: float) -> float:
    """Seconds of a training run's loop (``run.json``'s ``train_s``); its wall time for a run from before."""
    path = run_dir / "run.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    return float(info.get("train_s", wall_s))


def _run_size(run_dir: Path) -> tuple[int, int]:
    """(training cases, epochs) of a training run, from its dynamics record."""
    table = read_dynamics(run_dir / "dynamics.csv")
    return len(set(table["case_id"].tolist())), int(np.nanmax(table["epoch"]))


def run_pipeline(
    work_dir: str = "runs/pipeline",
    rate: float = 0.3,
    strategy: str = "ambiguous",
    seeds: Sequence[int] = (0,),
    budget: str = "matched",
    preset: str | Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    dynamic: bool = False,
) -> dict[str, Any]:
    """Stage 1 on the full data, prune by DAD and at random to the same size, retrain both, evaluate all
    three on the test set; prints one table and writes it (table.md) and every number (pipeline.json) to
    work_dir. A rerun with the same options skips the stages that finished. Everything is checked before
    the first stage runs (settings, the data set in stage 1), and a refusal is one line.

    Your own data (a Decathlon folder: dataset.json with labels and a training list; a validation and a
    labelled test part are carved from it when missing), configured from the data (plan.json), 1 seed::

        python -m scripts.workflows.pipeline --work_dir runs/mine --overrides "{'dataset_dir': 'data/My Task'}"

    The DAD subset is ranked where the stop rule fired (else at the last window), and the DAD arm's cost
    counts stage 1 up to there; stage 1 itself trains on to the end (``early_prune`` off) because it is
    also the first seed's full-data model. With ``early_prune: True`` in ``overrides`` stage 1 stops
    where the rule fires, and a full-data model is trained for every seed.

    Args:
        work_dir: folder for every stage's output, logs and the table; relative to the working directory.
        rate: fraction of the training cases pruned, in (0, 1); the random arm drops as many.
        strategy: DAD strategy choosing what to drop, ambiguous (the paper's), easy, hard, ccs or random.
        seeds: one full-data, DAD-subset and random-subset training per seed, e.g. "[0,1,2]"; stage 1
            (the DAD ranking) runs once, with the first seed.
        budget: the retrainings' epochs, "matched" (the paper's, as many case visits as the full-data
            run) or "proportional" (stage 1's epochs on the smaller subset).
        preset: a config merged onto configs/train.yaml for every stage (or a list of them), e.g.
            configs/presets/hippocampus.yaml; without one, classes, spacing, padding and normalisation
            are planned from the data set (plan.json).
        overrides: configs/train.yaml settings for every stage, e.g. "{'dataset_dir': 'data/MyTask'}"
            (paths relative to the working directory), or epochs, patch_size, num_classes; what the
            pipeline sets itself (output_dir, seed, prune_rate and the like) is refused here.
        dynamic: also a dynamic arm per seed, one training with configs/dynamic.yaml merged on
            (docs/dynamic_pruning.md); its cost is its own case visits (measurement passes listed apart)
            and training time, as a multiple of the same seed's full-data training.
    """
    work = Path(os.path.abspath(work_dir))
    presets = [preset] if isinstance(preset, str) else list(preset or [])
    train_cfg = config_files(presets)
    common = user_paths(check_overrides(overrides or {}, train_cfg))
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    check_pipeline(work, train_cfg, common, rate, strategy, budget, seeds)
    results: dict[str, Any] = {
        "rate": rate,
        "strategy": strategy,
        "seeds": seeds,
        "budget": budget,
        "preset": presets,
        "runs": [],
    }
    progress = StageProgress()  # each stage's start and end, wall time and an estimate of what is left
    dynamic = as_bool(dynamic, "dynamic")
    progress.plan(planned_stages(len(seeds), dynamic))

    def run(*args: Any) -> float:
        return bundle_run(*args, progress=progress)

    stage1 = work / "stage1"
    t_stage1 = run(
        "training",
        train_cfg,
        {
            **TRAIN_TO_THE_END,
            **common,
            "seed": seeds[0],
            "output_dir": stage1,
            "ckpt_dir": work / "models" / f"full_seed{seeds[0]}",
        },  # fmt: skip
        work / "logs" / "stage1.log",
    )
    run_info = json.loads((stage1 / "run.json").read_text())
    stage1_epochs = _run_size(stage1)[1]  # fewer than run_info["epochs"] when the stop rule ended stage 1
    t_prune = run(
        "pruning",
        ["configs/prune.yaml"],
        {"stage1_dir": stage1, "output_dir": work / "prune_dad", "prune_rate": rate, "prune_strategy": strategy},
        work / "logs" / "prune_dad.log",
    )
    results["stage1"] = {
        "epochs": stage1_epochs,
        "full_epochs": int(run_info.get("epochs", stage1_epochs)),
        "wall_s": t_stage1,
        "train_s": _train_s(stage1, t_stage1),
        "prune_wall_s": t_prune,
    }
    full_stage1 = stage1_epochs >= results["stage1"]["full_epochs"]  # else stage 1 is no full-data model
    results["prune"] = json.loads((work / "prune_dad" / "prune_summary.json").read_text())

    for seed in seeds:
        arms: dict[str, dict[str, Any]] = {}
        if seed == seeds[0] and full_stage1:
            arms["full"] = {"out": stage1, "ckpt": work / "models" / f"full_seed{seed}", "wall_s": t_stage1}
        else:
            out, ckpt = work / f"full_seed{seed}", work / "models" / f"full_seed{seed}"
            wall = run(
                "training",
                train_cfg,
                {**common, **TRAIN_TO_THE_END, "seed": seed, "output_dir": out, "ckpt_dir": ckpt},
                work / "logs" / f"full_seed{seed}.log",
            )
            arms["full"] = {"out": out, "ckpt": ckpt, "wall_s": wall}
        random_dir = work / f"prune_random_seed{seed}"
        run(
            "pruning",
            ["configs/prune.yaml"],
            {
                "stage1_dir": stage1,
                "output_dir": random_dir,
                "prune_rate": rate,
                "prune_strategy": "random",
                "prune_seed": seed,
                "report": False,
            },
            work / "logs" / f"prune_random_seed{seed}.log",
        )
        for arm, subset in (("dad", work / "prune_dad"), ("random", random_dir)):
            out, ckpt = work / f"retrain_{arm}_seed{seed}", work / "models" / f"{arm}_seed{seed}"
            wall = run(
                "training",
                [*train_cfg, "configs/retrain.yaml"],
                {
                    # the retraining's data list and epochs follow from the subset and stage 1 (retrain.yaml)
                    **retrain_overrides(common),
                    "seed": seed,
                    "subset_dir": subset,
                    "retrain_budget": budget,
                    "output_dir": out,
                    "ckpt_dir": ckpt,
                },
                work / "logs" / f"retrain_{arm}_seed{seed}.log",
            )
            arms[arm] = {"out": out, "ckpt": ckpt, "wall_s": wall}
        if dynamic:
            out, ckpt = work / f"dynamic_seed{seed}", work / "models" / f"dynamic_seed{seed}"
            wall = run("training", [*train_cfg, "configs/dynamic.yaml"],
                       {**common, **TRAIN_TO_THE_END, "seed": seed, "output_dir": out, "ckpt_dir": ckpt},
                       work / "logs" / f"dynamic_seed{seed}.log")  # fmt: skip
            arms["dynamic"] = {"out": out, "ckpt": ckpt, "wall_s": wall}
        for arm, info in arms.items():
            run(
                "evaluating",
                [*train_cfg, "configs/evaluate.yaml"],
                {
                    **common,
                    "dataset_json": run_info["dataset_json"],
                    "output_dir": info["out"],
                    "ckpt_dir": info["ckpt"],
                },
                work / "logs" / f"evaluate_{arm}_seed{seed}.log",
            )
            summary = json.loads((info["out"] / "eval" / "summary.json").read_text())
            n_train, epochs = _run_size(info["out"])
            results["runs"].append(
                {
                    "arm": arm,
                    "seed": seed,
                    "train_cases": n_train,
                    "epochs": epochs,
                    "wall_s": info["wall_s"],
                    "train_s": _train_s(info["out"], info["wall_s"]),
                    "test_dice": summary,
                    **(_dynamic_visits(info["out"]) if arm == "dynamic" else {}),
                }
            )
        add_costs(results, seed)
    table = format_table(results)
    write_json_atomic(work / "pipeline.json", results)
    write_text_atomic(work / "table.md", table + "\n")
    print(table)
    return results


def _dynamic_visits(run_dir: Path) -> dict[str, int]:
    """A dynamic run's training case visits and measured cases (its dynamic_summary.json)."""
    summary = json.loads((run_dir / "dynamic_summary.json").read_text())
    return {"case_visits": int(summary["case_visits"]), "measure_items": int(summary["measure_items"])}


def cost_ratio(
    full_epochs: int, num_full: int, retrain_epochs: int = 0, num_kept: int = 0, stage1_epochs: int = 0
) -> float:
    """A method's training cost as a multiple of one full-data training, in case visits (epochs x cases):
    (stage-1 epochs up to the prune epoch x n_full + retraining epochs x n_kept) / (full epochs x n_full)."""
    if full_epochs < 1 or num_full < 1:
        raise ValueError(f"a full-data training needs epochs and cases, got {full_epochs}, {num_full}")
    return (stage1_epochs * num_full + retrain_epochs * num_kept) / (full_epochs * num_full)


def dad_prune_epoch(results: Mapping[str, Any]) -> int:
    """The epoch the DAD arm's stage 1 is paid up to: the end of its ranked window (where the stop rule
    fired), at most the epochs stage 1 trained."""
    window = results.get("prune", {}).get("window")
    return min(results["stage1"]["epochs"], int(window[1])) if window else results["stage1"]["epochs"]


def add_costs(results: dict[str, Any], seed: int) -> None:
    """Each run of ``seed`` gets ``cost`` (case visits, ``cost_ratio``) and ``wall_ratio`` (time) as a
    multiple of that seed's full-data training. The DAD arm pays for stage 1 up to its prune epoch (the end
    of the ranked window: where the stop rule fired, even when stage 1 went on to be the full-data model;
    its training time pro rata); the random arm needs no stage 1. The time is the training loop's
    (``train_s``; a run's wall time where it has none): one-off start-up (data checks, caching, generating
    the embedded set) and the prune stage are not prorated into it but reported apart (``format_table``)."""
    runs = {r["arm"]: r for r in results["runs"] if r["seed"] == seed}
    full, stage1 = runs["full"], results["stage1"]
    prune_epoch = dad_prune_epoch(results)
    for arm, r in runs.items():
        r["startup_s"] = r["wall_s"] - r.get("train_s", r["wall_s"])
        stage1_epochs = prune_epoch if arm == "dad" else 0
        stage1_time = stage1.get("train_s", stage1["wall_s"]) * prune_epoch / stage1["epochs"] if arm == "dad" else 0.0
        if arm == "full":
            r["cost"], r["wall_ratio"] = 1.0, 1.0
            continue
        if arm == "dynamic":  # its own visits; wall time with every measurement pass in it
            r["cost"] = r["case_visits"] / (full["epochs"] * full["train_cases"])
            r["wall_ratio"] = r.get("train_s", r["wall_s"]) / full.get("train_s", full["wall_s"])
            continue
        r["cost"] = cost_ratio(full["epochs"], full["train_cases"], r["epochs"], r["train_cases"], stage1_epochs)
        r["wall_ratio"] = (stage1_time + r.get("train_s", r["wall_s"])) / full.get("train_s", full["wall_s"])


def format_table(results: Mapping[str, Any]) -> str:
    """One Markdown table: test Dice per center and overall (mean ± std over seeds), cases, epochs, time."""
    runs = results["runs"]
    centers = sorted({c for r in runs for c in r["test_dice"] if c != "overall"}) + ["overall"]
    n_seeds = len(results["seeds"])
    head = ["arm", "train cases", "epochs", "train s", "start-up s", "cost × full", "train time × full"]
    head += [f"Dice {c}" for c in centers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = {
        "full": "full data",
        "dad": f"DAD {results['strategy']}",
        "random": "random",
        "dynamic": "dynamic (one training)",
    }
    for arm in ARMS:
        rs = [r for r in runs if r["arm"] == arm]
        if not rs:
            continue

        def stat(values: list[float], fmt: str = ".4f") -> str:
            if n_seeds == 1:
                return f"{values[0]:{fmt}}"
            return f"{np.mean(values):{fmt}} ± {np.std(values):{fmt}}"

        cells = [
            names[arm],
            str(rs[0]["train_cases"]),
            stat([r["epochs"] for r in rs], ".0f"),
            stat([r.get("train_s", r["wall_s"]) for r in rs], ".0f"),
            stat([r.get("startup_s", 0.0) for r in rs], ".0f"),
            stat([r["cost"] for r in rs], ".2f"),
            stat([r["wall_ratio"] for r in rs], ".2f"),
        ] + [stat([r["test_dice"][c]["mean"] for r in rs]) for c in centers]
        lines.append("| " + " | ".join(cells) + " |")
    stage1 = results["stage1"]
    prune = results["prune"]
    lines.append("")
    lines.append(
        f"Stage 1: {stage1['epochs']} epochs, {stage1['wall_s']:.0f} s (training loop "
        f"{stage1.get('train_s', stage1['wall_s']):.0f} s); pruning {stage1['prune_wall_s']:.0f} s "
        f"({prune['num_kept']}/{prune['num_cases']} cases kept at rate {results['rate']}, "
        f"window epochs {prune['window'][0]}-{prune['window'][1]}: {prune['note']}). "
        f"Seeds: {results['seeds']}" + (" (mean ± std over seeds)." if n_seeds > 1 else ".")
    )
    lines.append(
        "Cost: training case visits (epochs x cases) as a multiple of one full-data training; the DAD arm "
        f"counts stage 1 up to its prune epoch ({dad_prune_epoch(results)} of "
        f"{stage1.get('full_epochs', stage1['epochs'])})"
        f" plus the retraining ({results.get('budget', 'matched')} budget); train time × full likewise in "
        "training-loop seconds (stage 1 pro rata). Not in the ratios, reported apart: each run's one-off "
        "start-up (`start-up s`: process start, data checks, caching; seed 0's stage 1 also generates the "
        f"embedded set when it is missing: {stage1['wall_s'] - stage1.get('train_s', stage1['wall_s']):.0f} s) "
        f"and the prune stage ({stage1['prune_wall_s']:.0f} s, paid once by the DAD arm)."
    )
    if any(r["arm"] == "dynamic" for r in runs):
        lines.append(
            "Dynamic: one training with configs/dynamic.yaml; cost counts its training case visits, wall × full "
            "its whole wall time (measurement passes over dropped cases included: "
            f"{sum(r.get('measure_items', 0) for r in runs if r['arm'] == 'dynamic')} items over all seeds)."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")
    fire_strict(run_pipeline, serialize=lambda _: None)  # the table is printed; the dict is in pipeline.json
