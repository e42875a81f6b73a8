"""The pipeline's handling of user overrides (no training)."""

import pytest

from scripts.pipeline import check_overrides, retrain_overrides, run_pipeline


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
    import scripts.pipeline as pipeline

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
    import scripts.pipeline as pipeline

    monkeypatch.setattr(pipeline, "run_logged", lambda *a, **k: 1)
    log = tmp_path / "logs" / "stage1.log"
    with pytest.raises(RuntimeError, match="training failed"):
        pipeline.bundle_run("training", ["configs/train.yaml"], {}, log)
    assert not log.with_suffix(".done.json").exists()
