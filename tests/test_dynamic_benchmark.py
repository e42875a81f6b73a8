"""The one-training arms (dynamic, same-visit random, InfoBatch) with a fake bundle runner: what each run
is told, cost x full from the runs' own visit counts and wall times, paired differences, resume."""

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
        "infobatch": {0: 0.69, 1: 0.70}}  # fmt: skip
WALL = {"full": 100.0, "dynamic": 70.0, "dynamic_random": 65.0, "infobatch": 80.0}
VISITS = [4, 4, 3, 2, 3]  # the dynamic run's visits per epoch: 16 of 20


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict]] = []

    def __call__(self, run_id, configs, settings, log_file):
        self.calls.append((run_id, list(configs), dict(settings)))
        out = Path(settings["output_dir"])
        arm = out.name.rsplit("_seed", 1)[0]
        seed = int(out.name.rsplit("_seed", 1)[1])
        if run_id == "training":
            out.mkdir(parents=True, exist_ok=True)
            (out / "run.json").write_text(json.dumps({"epochs": EPOCHS, "delta_t": 2}))
            record = DynamicsRecord([f"c{i}" for i in range(N_CASES)], ["a"] * N_CASES, 2)
            for e in range(1, EPOCHS + 1):
                record.add_pooled_epoch(e, "patches", np.ones((N_CASES, 3, 1)), np.ones(N_CASES, dtype=int))
            record.save(out / "dynamics.csv")
            if arm != "full":
                visits = VISITS if arm in ("dynamic", "dynamic_random") else [4, 3, 3, 3, 4]
                with (out / "dynamic_cost.csv").open("w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(["epoch", "visits", "measured"])
                    w.writerows([[e + 1, v, 1 if arm == "dynamic" and e == 3 else 0] for e, v in enumerate(visits)])
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
