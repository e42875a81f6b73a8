"""Paths as users give them: a relative --dataset_dir / --dataset_json, with a space and a non-ASCII letter,
from another working directory, is resolved once against that directory; the carved split holds
absolute paths that exist (the failure was `<output_dir>/<relative path>/imagesTr/...`)."""

import json
import shutil
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow
from scripts.data.synthetic import generate_dataset
from scripts.workflows.pipeline import user_paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def own_data(tmp_path):
    """A Decathlon folder 'my data/Hippocampé' with a training list only (10 cases), and a working
    directory 'elsewhere' beside it."""
    folder = tmp_path / "my data" / "Hippocampé"
    made = generate_dataset(tmp_path / "gen", num_train=6, num_val=2, num_test=2, shape=(16, 16, 16))
    content = json.loads(made.read_text())
    shutil.copytree(made.parent, folder)
    own = {k: v for k, v in content.items() if k not in ("validation", "test")}
    own["training"] = content["training"] + content["validation"] + content["test"]
    (folder / "dataset.json").write_text(json.dumps(own))
    (tmp_path / "elsewhere").mkdir()
    return folder


@pytest.mark.parametrize("given", ["dataset_dir", "dataset_json"])
def test_relative_path_with_space_and_non_ascii_from_another_directory(tmp_path, own_data, monkeypatch, given):
    monkeypatch.chdir(tmp_path / "elsewhere")
    relative = "../my data/Hippocampé" + ("/dataset.json" if given == "dataset_json" else "")
    workflow = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "train.yaml"), workflow_type="train", output_dir="runs/stage1",
        ckpt_dir="models", num_workers=0, epochs=1, delta_t=1, val_interval=1, patch_size=[16, 16, 16],
        **{given: relative},
    )  # fmt: skip
    workflow.initialize()
    split = json.loads((tmp_path / "elsewhere" / "runs" / "stage1" / "datalist_split.json").read_text())
    entries = split["training"] + split["validation"] + split["test"]
    assert len(split["training"]) == 7 and len(entries) == 10
    for entry in entries:
        for key in ("image", "label"):
            path = Path(entry[key])
            assert path.is_absolute() and path.is_file(), path
            assert path.parent.parent == own_data  # the user's folder, as named (not resolved elsewhere)
    assert len(workflow.train_dataset) == 7
    run = json.loads((tmp_path / "elsewhere" / "runs" / "stage1" / "run.json").read_text())
    assert run["dataset_json"] == str(tmp_path / "elsewhere" / "runs" / "stage1" / "datalist_split.json")


def test_pipeline_makes_the_users_paths_absolute_once(tmp_path):
    overrides = {"dataset_dir": "my data/Hippocampé", "dataset_json": "/abs/list.json", "epochs": 20}
    assert user_paths(overrides, cwd=tmp_path) == {
        "dataset_dir": str(tmp_path / "my data" / "Hippocampé"),
        "dataset_json": "/abs/list.json",
        "epochs": 20,
    }
