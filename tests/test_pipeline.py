"""A tiny end-to-end pipeline (stage 1, prune, retrain x2, evaluate x3), then inference on its model."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "synthetic#num_train": 8,
    "synthetic#num_val": 2,
    "synthetic#num_test": 3,
    "synthetic#shape": [32, 32, 32],
    "patch_size": [16, 16, 16],
    "epochs": 4,
    "delta_t": 2,
    "val_interval": 2,
    "num_workers": 0,
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    overrides = {**TINY, "dataset_dir": str(work / "data")}
    cmd = [sys.executable, "-m", "scripts.workflows.pipeline", "--work_dir", str(work), "--rate", "0.4"]
    cmd += ["--overrides", json.dumps(overrides)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return work, result.stdout


@pytest.mark.slow
def test_pipeline_table_and_outputs(pipeline):
    work, stdout = pipeline
    results = json.loads((work / "pipeline.json").read_text())
    arms = {r["arm"]: r for r in results["runs"]}
    assert set(arms) == {"full", "dad", "random"}
    assert arms["full"]["train_cases"] == 8
    assert arms["dad"]["train_cases"] == arms["random"]["train_cases"] == 8 - 3  # floor(0.4 * 8) = 3 pruned
    for r in arms.values():
        assert set(r["test_dice"]) == {"center1", "center2", "center3", "overall"}
        assert 0.0 <= r["test_dice"]["overall"]["mean"] <= 1.0
    # the retrainings get the full run's budget of case visits: round(4 * 8 / 5) = 6 epochs
    assert arms["full"]["epochs"] == 4 and arms["dad"]["epochs"] == arms["random"]["epochs"] == 6
    table = (work / "table.md").read_text()
    assert "| full data | 8 |" in table and "| DAD ambiguous | 5 |" in table and "| random | 5 |" in table
    assert "| full data | 8 |" in stdout

    # the DAD and random subsets differ from each other only in which cases they keep
    dad = load_decathlon_datalist(work / "prune_dad" / "subset_datalist.json")
    rnd = load_decathlon_datalist(work / "prune_random_seed0" / "subset_datalist.json")
    assert len(dad) == len(rnd) == 5

    report = work / "prune_dad" / "report"
    for name in ("data_map.png", "moving_distance.png", "center_counts.png", "montage.png"):
        image = matplotlib.image.imread(report / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
        assert f"({name})" in (report / "report.md").read_text()


@pytest.mark.slow
def test_inference_masks_match_evaluation(pipeline, tmp_path):
    """The NIfTI masks inference writes score, by a Dice computed here, what evaluation reported."""
    work, _ = pipeline
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "inference",
        "--config_file",
        "['configs/train.yaml','configs/inference.yaml']",
        "--dataset_dir",
        str(work / "data"),
        "--ckpt_dir",
        str(work / "models" / "full_seed0"),
        "--pred_dir",
        str(tmp_path),
        "--patch_size",
        "[16,16,16]",
        "--num_workers",
        "0",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    with open(work / "stage1" / "eval" / "val_mean_dice_raw.csv") as f:
        evaluated = {r["filename"]: float(r["mean"]) for r in csv.DictReader(f)}
    test = load_decathlon_datalist(work / "data" / "dataset.json", data_list_key="test")
    assert len(evaluated) == len(test) == 3
    for entry in test:
        mask = nib.load(tmp_path / f"{entry['case_id']}_seg.nii.gz")
        label = nib.load(entry["label"])
        assert mask.shape == label.shape and np.allclose(mask.affine, label.affine)
        p, y = np.asarray(mask.dataobj) == 1, np.asarray(label.dataobj) == 1
        dice = 2 * np.sum(p & y) / (np.sum(p) + np.sum(y))
        assert dice == pytest.approx(evaluated[entry["case_id"]], abs=1e-4)


@pytest.mark.slow
def test_resampled_evaluation_is_on_the_original_label_grid(pipeline, tmp_path):
    """With a resampling preset (2 mm) the test Dice is taken on each label file's own grid: it equals the
    Dice, computed here, of the masks inference writes on that grid (not the Dice of the resampled grid)."""
    work, _ = pipeline
    # the weights alone, without the plan.json beside them (which says the model trained unresampled, so a
    # 2 mm override would be refused): this test is about the grid Dice is taken on, not the plan
    models = tmp_path / "weights"
    models.mkdir()
    shutil.copy2(work / "models" / "full_seed0" / "model.pt", models / "model.pt")
    spacing = json.dumps(
        [
            {
                "_target_": "Spacingd",
                "keys": ["image", "label"],
                "allow_missing_keys": True,
                "pixdim": [2.0, 2.0, 2.0],
                "mode": ["bilinear", "nearest"],
            }
        ]
    )
    common = [
        "--dataset_dir",
        str(work / "data"),
        "--ckpt_dir",
        str(models),
        "--patch_size",
        "[16,16,16]",
        "--num_workers",
        "0",
        "--spacing_transforms",
        spacing,
    ]
    for run_id, config, extra in (
        ("evaluating", "configs/evaluate.yaml", ["--output_dir", str(tmp_path)]),
        ("inference", "configs/inference.yaml", ["--pred_dir", str(tmp_path / "masks")]),
    ):
        cmd = [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            run_id,
            "--config_file",
            f"['configs/train.yaml','{config}']",
            *common,
            *extra,
        ]
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    with open(tmp_path / "eval" / "case_dice.csv") as f:
        evaluated = {r["case_id"]: float(r["dice"]) for r in csv.DictReader(f)}
    for entry in load_decathlon_datalist(work / "data" / "dataset.json", data_list_key="test"):
        mask = np.asarray(nib.load(tmp_path / "masks" / f"{entry['case_id']}_seg.nii.gz").dataobj) == 1
        label = np.asarray(nib.load(entry["label"]).dataobj) == 1
        assert mask.shape == label.shape
        dice = 2 * np.sum(mask & label) / (np.sum(mask) + np.sum(label))
        assert dice == pytest.approx(evaluated[entry["case_id"]], abs=1e-6)
