"""The one-training arms (dynamic, same-visit random, InfoBatch, the crop rule and its random twin, the
full data's shorter schedules) with a fake bundle runner: what each run is told, cost x full from the
runs' own visit counts and wall times, compute (crops, iterations) against the full data's curve,
paired differences, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scripts.data.record import DynamicsRecord
from scripts.experiments.dynamic_benchmark import format_cost_table, run_dynamic_benchmark

N_CASES, EPOCHS = 4, 5
DICE = {"full": {0: 0.70, 1: 0.72}, "dynamic": {0: 0.71, 1: 0.74}, "dynamic_random": {0: 0.66, 1: 0.69},
        "infobatch": {0: 0.69, 1: 0.70}, "full_0.4": {0: 0.60, 1: 0.64}, "full_0.8": {0: 0.68, 1: 0.70},
        "dynamic_crops": {0: 0.705, 1: 0.725}, "dynamic_random_crops": {0: 0.68, 1: 0.69}}  # fmt: skip
WALL = {"full": 100.0, "dynamic": 70.0, "dynamic_random": 65.0, "infobatch": 80.0, "full_0.4": 40.0,
        "full_0.8": 80.0, "dynamic_crops": 90.0, "dynamic_random_crops": 88.0}  # fmt: skip
VISITS = [4, 4, 3, 2, 3]  # the dynamic run's visits per epoch: 16 of 20
CROPS = [8, 8, 6, 6, 8]  # the crop rule's crops per epoch (every case visited, 2 crops or 1): 36 of 40


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict]] = []

    def __call__(self, run_id, configs, settings, log_file):
        self.calls.append((run_id, list(configs), dict(settings)))
        out = Path(settings["output_dir"])
        arm = out.name.rsplit("_seed", 1)[0]
        seed = int(out.name.rsplit("_seed", 1)[1])
        if run_id == "training":
            epochs = int(settings.get("epochs", EPOCHS))
            out.mkdir(parents=True, exist_ok=True)
            (out / "run.json").write_text(json.dumps({"epochs": epochs, "delta_t": 2, "train_s": WALL[arm] / 2}))
            record = DynamicsRecord([f"c{i}" for i in range(N_CASES)], ["a"] * N_CASES, 2)
            for e in range(1, epochs + 1):  # every case's 2 crops each epoch (what a full run's record holds)
                record.add_pooled_epoch(e, "patches", np.ones((N_CASES, 3, 1)), np.full(N_CASES, 2))
            record.save(out / "dynamics.csv")
            if not arm.startswith("full"):
                visits = VISITS if arm in ("dynamic", "dynamic_random") else [4, 3, 3, 3, 4]
                crops = CROPS if "crops" in arm else [2 * v for v in visits]
                visits = [4] * 5 if "crops" in arm else visits
                with (out / "dynamic_cost.csv").open("w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(["epoch", "visits", "measured", "crops", "iterations", "measure_items", "val_s"])
                    w.writerows([[e + 1, v, 1 if arm == "dynamic" and e == 3 else 0, c, -(-v // 4),
                                  2 if arm == "dynamic" and e == 3 else 0, 0.5]
                                 for e, (v, c) in enumerate(zip(visits, crops))])  # fmt: skip
            return WALL[arm]
        (out / "eval").mkdir(parents=True, exist_ok=True)
        summary = {"overall": {"mean": DICE[arm][seed]}}
        (out / "eval" / "summary.json").write_text(json.dumps(summary))
        return 1.0


def test_arms_get_their_rules_and_the_table_gives_cost_and_paired_differences(tmp_path):
    runner = FakeRunner()
    rows = run_dynamic_benchmark(str(tmp_path), arms=["dynamic_random", "dynamic", "infobatch"], seeds=[0, 1],
                                 runner=runner)  # fmt: skip
    trainings = [(c, s) for run_id, c, s in runner.calls if run_id == "training"]
    names = [Path(s["output_dir"]).name for _, s in trainings]
    # the random arm runs after the dynamic arm whose visits it reads, seed by seed
    assert names == [f"{a}_seed{s}" for s in (0, 1) for a in ("full", "dynamic", "infobatch", "dynamic_random")]
    by_name = dict(zip(names, trainings))
    assert by_name["full_seed0"][0] == ["configs/train.yaml"]
    assert by_name["dynamic_seed1"][0] == ["configs/train.yaml", "configs/dynamic.yaml"]
    assert by_name["dynamic_random_seed1"][1]["dynamic_budget"] == str(tmp_path / "dynamic_seed1" / "dynamic_cost.csv")
    info = by_name["infobatch_seed0"][1]
    rule = (info["dynamic_rule"], info["dynamic_thin_ratio"], info["dynamic_anneal_fraction"])
    assert rule == ("infobatch", 0.5, 0.125)
    assert info["score_patches"] is True and all(s["early_prune"] is False for _, s in trainings)

    row = next(r for r in rows if r["arm"] == "dynamic" and r["seed"] == 0)
    assert row["cost"]["visits_x_full"] == pytest.approx(16 / 20)
    assert row["cost"]["measured_x_full"] == pytest.approx(1 / 20)
    assert row["cost"]["wall_x_full"] == pytest.approx(0.7)
    table = (tmp_path / "table.md").read_text()
    line = next(ln for ln in table.splitlines() if ln.startswith("| dynamic |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:5] == ["dynamic", "2", "0.800", "0.050", "0.700"]
    # paired over seeds: vs full +0.01, +0.02 -> mean 0.015, half-width 12.706 * std(ddof=1) / sqrt(2)
    half = 12.706 * np.std([0.01, 0.02], ddof=1) / np.sqrt(2)
    assert cells[6] == f"+0.0150 ± {half:.4f}"
    assert cells[7] == f"+{np.mean([0.05, 0.05]):.4f} ± 0.0000"
    full_cells = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert full_cells[0] == "full" and full_cells[6:] == ["", ""]  # no difference of the reference with itself

    again = FakeRunner()
    run_dynamic_benchmark(str(tmp_path), arms=["dynamic", "dynamic_random", "infobatch"], seeds=[0, 1], runner=again)
    assert again.calls == []  # every (arm, seed) was done


def test_random_arm_needs_the_dynamic_arm_and_unknown_arms_are_named(tmp_path):
    with pytest.raises(ValueError, match="list 'dynamic' too"):
        run_dynamic_benchmark(str(tmp_path), arms=["dynamic_random"], runner=FakeRunner())
    with pytest.raises(ValueError, match="unknown dynamic arm 'fast'"):
        run_dynamic_benchmark(str(tmp_path), arms=["fast"], runner=FakeRunner())
    assert format_cost_table([]).count("\n") == 1  # the header only


def test_cost_table_interval_is_student_t_at_many_seeds():
    # 12 seeds: the paired differences 0.01 * (seed - 5.5) + 0.02; t(0.975, 11) = 2.201 (t table), not 1.96
    rows = []
    for seed in range(12):
        for arm, dice in (("full", 0.70), ("dynamic", 0.72 + 0.01 * (seed - 5.5))):
            cost = {"visits_x_full": 1.0, "measured_x_full": 0.0, "wall_x_full": 1.0}
            rows.append({"arm": arm, "seed": seed, "test_dice": {"overall": {"mean": dice}}, "cost": cost})
    diffs = np.array([0.02 + 0.01 * (s - 5.5) for s in range(12)])
    half = 2.201 * diffs.std(ddof=1) / np.sqrt(12)
    line = next(r for r in format_cost_table(rows).splitlines() if r.startswith("| dynamic |"))
    assert f"+0.0200 ± {half:.4f}" in line


def test_compute_arms_full_schedules_crops_and_the_curve(tmp_path):
    runner = FakeRunner()
    overrides = {"epochs": EPOCHS, "delta_t": 2, "val_interval": 5}
    rows = run_dynamic_benchmark(str(tmp_path), arms=["dynamic_random_crops", "dynamic_crops", "full_0.4", "full_0.8"],
                                 seeds=[0, 1], runner=runner, overrides=overrides)  # fmt: skip
    trainings = {Path(s["output_dir"]).name: (c, s) for run_id, c, s in runner.calls if run_id == "training"}
    names = [Path(s["output_dir"]).name for run_id, _, s in runner.calls if run_id == "training"]
    assert names[:4] == ["full_seed0", "full_0.4_seed0", "full_0.8_seed0", "dynamic_crops_seed0"]
    # the shorter schedules: the full data over round(0.4 x 5) = 2 and 4 epochs, delta_t cut to them
    configs, settings = trainings["full_0.4_seed1"]
    assert configs == ["configs/train.yaml"] and (settings["epochs"], settings["delta_t"]) == (2, 2)
    assert trainings["full_0.8_seed0"][1]["epochs"] == 4 and trainings["full_seed0"][1]["epochs"] == EPOCHS
    assert trainings["dynamic_crops_seed0"][1]["dynamic_unit"] == "crop"
    random = trainings["dynamic_random_crops_seed1"][1]
    assert (random["dynamic_rule"], random["dynamic_unit"]) == ("random", "crop")
    assert random["dynamic_budget"] == str(tmp_path / "dynamic_crops_seed1" / "dynamic_cost.csv")

    by = {(r["arm"], r["seed"]): r for r in rows}
    # full: 4 cases x 5 epochs x 2 crops = 40 crops, 5 x ceil(4 / 4) = 5 iterations (train.yaml's batch 4)
    assert (by["full", 0]["compute"]["crops"], by["full", 0]["compute"]["iterations"]) == (40, 5)
    assert by["full_0.4", 0]["compute"]["crops"] == 16 and by["full_0.4", 0]["cost"]["visits_x_full"] == 0.4
    assert (by["dynamic_crops", 0]["compute"]["crops"], by["dynamic_crops", 0]["compute"]["iterations"]) == (36, 5)
    table = (tmp_path / "compute_table.md").read_text()
    cells = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")] for ln in table.splitlines()[2:]}
    assert cells["full_0.4"][2:6] == ["0.400", "0.400", "0.000", "0.400"]  # iterations, crops, measured, train s
    crops_row = cells["dynamic_crops"]
    assert crops_row[2:5] == ["1.000", "0.900", "0.000"] and crops_row[6] == "0.900"  # wall 90 / 100
    # on the full data's curve at 0.9 x its crops: halfway between full_0.8 and full, per seed
    curve = [DICE["dynamic_crops"][s] - (DICE["full_0.8"][s] + DICE["full"][s]) / 2 for s in (0, 1)]
    half = 12.706 * np.std(curve, ddof=1) / np.sqrt(2)
    assert crops_row[9] == f"{np.mean(curve):+.4f} ± {half:.4f}"
    vs_random = [DICE["dynamic_crops"][s] - DICE["dynamic_random_crops"][s] for s in (0, 1)]
    assert crops_row[10].startswith(f"{np.mean(vs_random):+.4f} ± ")
    assert cells["full_0.4"][9] == ""  # a full schedule is the curve, not on it
    assert (tmp_path / "dice_vs_compute.png").stat().st_size > 1000


def test_a_random_crop_arm_needs_its_reference_and_full_shares_are_checked(tmp_path):
    with pytest.raises(ValueError, match="the dynamic_random_crops arm matches the dynamic_crops arm's cost"):
        run_dynamic_benchmark(str(tmp_path), arms=["dynamic_random_crops"], runner=FakeRunner())
    with pytest.raises(ValueError, match="unknown dynamic arm 'full_1.5'"):
        run_dynamic_benchmark(str(tmp_path), arms=["full_1.5"], runner=FakeRunner())


def test_bookkeeping_cost_rows_are_medians_over_one_training_epoch():
    from scripts.experiments.bench_dynamic_cost import format_rows

    table = format_rows(4.0, {"validation": [1.0, 3.0, 2.0], "measurement": [0.2, 0.1, 0.4]},
                        {"validation": "every 5 epochs"})  # fmt: skip
    lines = table.splitlines()
    assert lines[2] == "| training epoch (loop) | every epoch | 4.000 | 1.000 |"
    assert lines[3] == "| validation | every 5 epochs | 2.000 | 0.500 |"  # median 2 s over a 4 s epoch
    assert lines[4] == "| measurement |  | 0.200 | 0.050 |"
