"""The bundle as MONAI sees it: metadata, logging config, workflow properties, and a tiny real run."""

import json
import logging.config
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scripts.data.record import read_dynamics

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# the keys MONAI's bundle metadata schema (meta_schema_20220324.json) requires
REQUIRED_METADATA = [
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
]
REQUIRED_TENSOR_FIELDS = ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"]


def test_metadata_has_required_keys():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    assert not missing, f"metadata.json lacks {missing}"
    assert meta["version"] in meta["changelog"], "the current version needs a changelog entry"
    fmt = meta["network_data_format"]
    for kind, name in (("inputs", "image"), ("outputs", "pred")):
        tensor = fmt[kind][name]
        assert not [k for k in REQUIRED_TENSOR_FIELDS if k not in tensor], (kind, name)
    import monai
    import numpy
    import torch

    assert meta["monai_version"] == monai.__version__
    assert meta["numpy_version"] == numpy.__version__
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]


def test_logging_conf_is_accepted():
    logging.config.fileConfig(CONFIGS / "logging.conf", disable_existing_loggers=False)


def test_verify_net_in_out():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "verify_net_in_out",
            "network_def",
            "--meta_file",
            str(CONFIGS / "metadata.json"),
            "--config_file",
            str(CONFIGS / "train.yaml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified with no error" in result.stdout + result.stderr


def test_train_workflow_properties(tmp_path):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.yaml"),
        workflow_type="train",
        logging_file=str(CONFIGS / "logging.conf"),
        output_dir=str(tmp_path / "out"),
        ckpt_dir=str(tmp_path / "models"),
        dataset_dir=str(tmp_path / "data"),
        synthetic={"num_train": 4, "num_val": 1, "num_test": 1, "shape": [16, 16, 16]},
        num_workers=0,
        epochs=7,
        delta_t=7,
    )
    workflow.initialize()
    # MONAI resolves every required property (building the trainer), so this also checks the wiring
    assert workflow.check_properties() == []
    assert workflow.max_epochs == 7
    assert len(workflow.train_dataset) == 4


def test_infer_workflow_properties(tmp_path):
    """The Model Zoo's inference ids (dataset, evaluator, inferer, preprocessing, postprocessing, handlers)
    are top-level, each referenced where MONAI's InferProperties expect it."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "inference.yaml")],
        workflow_type="infer",
        logging_file=str(CONFIGS / "logging.conf"),
        dataset_dir=str(tmp_path / "data"),
        synthetic={"num_train": 2, "num_val": 1, "num_test": 3, "shape": [16, 16, 16]},
        pred_dir=str(tmp_path / "pred"),
        num_workers=0,
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    # by default the images to segment are the configured data set's test list
    assert [d["case_id"] for d in workflow.dataset_data] == [d["case_id"] for d in workflow.dataset.data]
    assert len(workflow.dataset) == 3 and "label" not in workflow.dataset.data[0]
    assert workflow.evaluator.inferer is workflow.inferer
    assert workflow.evaluator.data_loader.dataset is workflow.dataset


def _run_training(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        "configs/train.yaml",
        "--bundle_root",
        str(ROOT),
        "--dataset_dir",
        str(tmp_path / "data"),
        "--output_dir",
        str(tmp_path / "out"),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--synthetic#num_train",
        "6",
        "--synthetic#num_val",
        "2",
        "--synthetic#num_test",
        "2",
        "--synthetic#shape",
        "[32,32,32]",
        "--patch_size",
        "[16,16,16]",
        "--num_workers",
        "0",
        "--val_interval",
        "1",
        *overrides,
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


@pytest.mark.slow
def test_training_end_to_end_patches(tmp_path):
    epochs = 3
    _run_training(tmp_path, "--epochs", str(epochs), "--delta_t", "1")

    # the embedded data set was generated on first run
    dataset = json.loads((tmp_path / "data" / "dataset.json").read_text())
    train = {d["case_id"]: d["center"] for d in dataset["training"]}
    assert len(train) == 6

    assert (tmp_path / "models" / "model.pt").is_file()
    assert (tmp_path / "models" / "checkpoint_final.pt").is_file()

    table = read_dynamics(tmp_path / "out" / "dynamics.csv")
    pairs = list(zip(table["epoch"].astype(int), table["case_id"]))
    assert sorted(pairs) == sorted((e, c) for e in range(1, epochs + 1) for c in train)  # each once
    assert all(train[c] == center for c, center in zip(table["case_id"], table["center"]))
    assert set(table["source"]) == {"patches"}
    assert np.all(table["n_items"] == 2)  # num_crops patches of every case every epoch
    dice = table["dice"]
    assert np.all((dice[~np.isnan(dice)] >= 0) & (dice[~np.isnan(dice)] <= 1))
    np.testing.assert_allclose(table["dice"], table["dice_class1"])  # one foreground class

    with open(tmp_path / "out" / "moving_distance.csv") as f:
        curve = f.read().splitlines()
    assert len(curve) == 1 + epochs  # header + one window per epoch (delta_t = 1)
    summary = json.loads((tmp_path / "out" / "stop_rule.json").read_text())
    assert summary["last_window_end"] == epochs and summary["delta_t"] == 1


@pytest.mark.slow
def test_training_end_to_end_volumes(tmp_path):
    _run_training(tmp_path, "--epochs", "2", "--dad_mode", "volumes", "--dad_interval", "2", "--delta_t", "2")
    table = read_dynamics(tmp_path / "out" / "dynamics.csv")
    assert set(table["epoch"].astype(int)) == {2}  # scored every dad_interval epochs only
    assert set(table["source"]) == {"volumes"}
    assert np.all(table["n_items"] == 1)  # each whole volume once
    assert len(table["case_id"]) == 6
