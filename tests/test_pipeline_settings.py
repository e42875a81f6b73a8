"""The pipeline's handling of user overrides (no training)."""

import pytest
from scripts.workflows.pipeline import check_overrides, retrain_overrides, run_pipeline


def test_own_data_list_reaches_stage1_but_not_the_retraining():
    overrides = check_overrides({"dataset_json": "/data/mine.json", "epochs": 20, "patch_size": [16, 16, 16]})
    assert overrides["dataset_json"] == "/data/mine.json"  # stage 1 and evaluation read the user's list
    # the retraining reads the exported subset and derives its epochs from stage 1
    assert retrain_overrides(overrides) == {"patch_size": [16, 16, 16]}


@pytest.mark.parametrize("key, hint", [("output_dir", "--work_dir"), ("seed", "--seeds"), ("prune_rate", "--rate")])
def test_overrides_of_what_the_pipeline_sets_are_refused(tmp_path, key, hint):
    with pytest.raises(ValueError, match=f"{key} \\(use {hint}\\)"):
        run_pipeline(work_dir=str(tmp_path / "work"), overrides={key: 1})
    assert not (tmp_path / "work").exists()


def test_finished_stage_is_skipped_and_a_changed_one_rerun(tmp_path, monkeypatch):
    import scripts.workflows.pipeline as pipeline

    calls = []

    def fake_run_logged(cmd, cwd, log_file, echo=True):
        calls.append(cmd)
        return 0

    monkeypatch.setattr(pipeline, "run_logged", fake_run_logged)
    log = tmp_path / "logs" / "stage1.log"
    first = pipeline.bundle_run("training", ["configs/train.yaml"], {"epochs": 2}, log)
    assert len(calls) == 1 and log.with_suffix(".done.json").is_file()
    # the same command again: skipped, its recorded wall time returned
    assert pipeline.bundle_run("training", ["configs/train.yaml"], {"epochs": 2}, log) == first
    assert len(calls) == 1
    # other settings: run again
    pipeline.bundle_run("training", ["configs/train.yaml"], {"epochs": 3}, log)
    assert len(calls) == 2


def test_failed_stage_leaves_no_done_marker(tmp_path, monkeypatch):
    import scripts.workflows.pipeline as pipeline

    monkeypatch.setattr(pipeline, "run_logged", lambda *a, **k: 1)
    log = tmp_path / "logs" / "stage1.log"
    with pytest.raises(RuntimeError, match="training failed"):
        pipeline.bundle_run("training", ["configs/train.yaml"], {}, log)
    assert not log.with_suffix(".done.json").exists()


def test_cost_ratio_arithmetic():
    from scripts.workflows.pipeline import add_costs, cost_ratio

    # stage 1 stopped at epoch 12 of 40 on 60 cases, then 57 epochs on 42 kept cases (matched budget)
    assert cost_ratio(40, 60, retrain_epochs=57, num_kept=42, stage1_epochs=12) == pytest.approx(
        (12 * 60 + 57 * 42) / (40 * 60)
    )
    # proportional budget: 40 epochs on 42 cases, no stage 1 (the random arm): 0.7 of a full training
    assert cost_ratio(40, 60, retrain_epochs=40, num_kept=42) == pytest.approx(0.7)
    results = {
        "stage1": {"epochs": 12, "wall_s": 30.0},
        "runs": [
            {"arm": "full", "seed": 0, "epochs": 40, "train_cases": 60, "wall_s": 100.0},
            {"arm": "dad", "seed": 0, "epochs": 40, "train_cases": 42, "wall_s": 70.0},
            {"arm": "random", "seed": 0, "epochs": 40, "train_cases": 42, "wall_s": 72.0},
        ],
    }
    add_costs(results, 0)
    full, dad, rnd = results["runs"]
    assert full["cost"] == 1.0 and rnd["cost"] == pytest.approx(0.7)
    assert dad["cost"] == pytest.approx(0.3 + 0.7) and dad["wall_ratio"] == pytest.approx(1.0)
    assert rnd["wall_ratio"] == pytest.approx(0.72)
    # the rule fired at epoch 10 of a 40-epoch stage 1 that went on to be the full model: DAD pays 10 epochs
    results = {
        "stage1": {"epochs": 40, "wall_s": 100.0},
        "prune": {"window": [1, 10]},
        "runs": [
            {"arm": "full", "seed": 0, "epochs": 40, "train_cases": 60, "wall_s": 100.0},
            {"arm": "dad", "seed": 0, "epochs": 57, "train_cases": 42, "wall_s": 100.0},
        ],
    }
    add_costs(results, 0)
    dad = results["runs"][1]
    assert dad["cost"] == pytest.approx((10 * 60 + 57 * 42) / (40 * 60))
    assert dad["wall_ratio"] == pytest.approx((25.0 + 100.0) / 100.0)


def test_retrain_epochs_budgets():
    from scripts.data.subset import retrain_epochs

    assert retrain_epochs("matched", 40, 60, 42) == 57  # round(40 * 60 / 42) = round(57.14)
    assert retrain_epochs("proportional", 40, 60, 42) == 40
    with pytest.raises(ValueError, match="unknown retrain_budget"):
        retrain_epochs("double", 40, 60, 42)


def test_time_ratios_leave_start_up_and_pruning_apart():
    from scripts.workflows.pipeline import add_costs, format_table

    # stage 1 (= the full model): 130 s of which 30 s start-up (generating the data, caching), 100 s of
    # training; the rule fired at epoch 10 of 40; the DAD retraining 110 s of which 10 s start-up
    results = {
        "rate": 0.3, "strategy": "ambiguous", "seeds": [0], "budget": "matched",
        "stage1": {"epochs": 40, "wall_s": 130.0, "train_s": 100.0, "prune_wall_s": 7.0},
        "prune": {"window": [1, 10], "num_kept": 42, "num_cases": 60, "note": "fired"},
        "runs": [
            {"arm": "full", "seed": 0, "epochs": 40, "train_cases": 60, "wall_s": 130.0, "train_s": 100.0,
             "test_dice": {"overall": {"mean": 0.9}}},
            {"arm": "dad", "seed": 0, "epochs": 57, "train_cases": 42, "wall_s": 110.0, "train_s": 100.0,
             "test_dice": {"overall": {"mean": 0.9}}},
        ],
    }  # fmt: skip
    add_costs(results, 0)
    dad = results["runs"][1]
    # training loops only: (100 x 10/40 + 100) / 100; prorating the wall times gave (32.5 + 110) / 130 = 1.10
    assert dad["wall_ratio"] == pytest.approx(1.25)
    assert dad["startup_s"] == pytest.approx(10.0) and results["runs"][0]["startup_s"] == pytest.approx(30.0)
    table = format_table(results)
    assert "| DAD ambiguous | 42 | 57 | 100 | 10 | " in table and "| 1.25 |" in table
    assert "generates the embedded set when it is missing: 30 s" in table and "the prune stage (7 s" in table
