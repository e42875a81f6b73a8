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
