"""Multi-process training (configs/multi_gpu_train.yaml) with gloo on CPU writes the single-process record."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scripts.data.record import read_dynamics
from scripts.data.synthetic import ensure_dataset

ROOT = Path(__file__).resolve().parents[1]
NUM_CASES = 5  # odd: the training sampler pads one rank, the volumes split 3 / 2


BUNDLE = ["-m", "monai.bundle", "run", "training", "--config_file"]
TWO = "['configs/train.yaml','configs/multi_gpu_train.yaml']"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _settings(tmp_path: Path, out: str) -> list[str]:
    """A tiny frozen run (learning rate 0, instance norm: no running statistics) scored on whole volumes."""
    synthetic = {"num_train": NUM_CASES, "num_val": 3, "num_test": 1, "shape": [24, 24, 24], "seed": 0}
    dataset_json = ensure_dataset(tmp_path / "data", **synthetic, num_centers=3, fault_fraction=0.0)
    return [
        *("--bundle_root", str(ROOT), "--dataset_json", dataset_json),
        *("--output_dir", str(tmp_path / out), "--ckpt_dir", str(tmp_path / out / "models")),
        *("--patch_size", "[16,16,16]", "--num_workers", "0", "--batch_size", "2"),
        *("--epochs", "2", "--val_interval", "2", "--learning_rate", "0.0", "--network_def#norm", "instance"),
        *("--dad_mode", "volumes", "--dad_interval", "1", "--delta_t", "1"),
    ]


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


@pytest.mark.slow
def test_two_gloo_processes_write_the_single_process_record(tmp_path):
    _run([sys.executable, *BUNDLE, "configs/train.yaml", *_settings(tmp_path, "single")])
    _run([*TORCHRUN, *BUNDLE, TWO, *_settings(tmp_path, "multi"), "--backend", "gloo"])

    single = read_dynamics(tmp_path / "single" / "dynamics.csv")
    multi = read_dynamics(tmp_path / "multi" / "dynamics.csv")
    assert len(single["case_id"]) == 2 * NUM_CASES  # a row per case per epoch
    for key in ("epoch", "case_id", "center", "source"):
        np.testing.assert_array_equal(multi[key], single[key])
    np.testing.assert_array_equal(multi["n_items"], np.ones(2 * NUM_CASES))  # each volume scored once, no repeat
    assert np.isfinite(single["dice"]).all() and (single["dice"] > 0).all()  # the comparison compares numbers
    np.testing.assert_allclose(multi["dice"], single["dice"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(multi["dice_class1"], single["dice_class1"], rtol=0, atol=1e-6)
    # a frozen network scores every epoch the same
    np.testing.assert_allclose(single["dice"][:NUM_CASES], single["dice"][NUM_CASES:], rtol=0, atol=1e-6)
    # rank 0 alone wrote the checkpoints and the stop-rule files
    assert (tmp_path / "multi" / "models" / "checkpoint_final.pt").is_file()
    assert json.loads((tmp_path / "multi" / "stop_rule.json").read_text())["last_window_end"] == 2


@pytest.mark.slow
def test_two_gloo_processes_count_each_case_once_in_patches_mode(tmp_path):
    # 5 cases on 2 ranks: the training sampler gives rank 1 a repeat of one case, which is not counted
    patches = ["--dad_mode", "patches", "--epochs", "1", "--val_interval", "1", "--learning_rate", "0.003"]
    patches += ["--num_crops", "2"]
    scores = ["--score_patches", "True"]  # EL2N, EL2Nx and loss pool the same items as the DAD counts
    _run([*TORCHRUN, *BUNDLE, TWO, *_settings(tmp_path, "multi"), *patches, *scores, "--backend", "gloo"])
    table = read_dynamics(tmp_path / "multi" / "dynamics.csv")
    assert sorted(table["case_id"]) == sorted(f"c{i % 3 + 1}_{i:04d}" for i in range(NUM_CASES))
    np.testing.assert_array_equal(table["n_items"], np.full(NUM_CASES, 2))  # each case's 2 crops, once
    # one score row per case, every case scored (the repeat's crops left out: tests/test_score_handlers.py
    # checks on a sampler's rank that a repeated case is not pooled; here the columns come through gloo)
    for column in ("el2n", "loss"):
        assert np.isfinite(table[column]).all() and (table[column] > 0).all()
