"""Evaluation, scoring and inference refuse a checkpoint that is missing or does not fit the network,
in one line naming the file and the fix (scripts.data.preflight.check_checkpoint)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.networks.nets import UNet
from scripts.data.preflight import check_checkpoint
from scripts.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _unet(classes: int = 2, channels: tuple[int, ...] = (4, 8)) -> UNet:
    return UNet(spatial_dims=3, in_channels=1, out_channels=classes, channels=channels, strides=(2,), num_res_units=1)


def test_a_checkpoint_that_fits_is_accepted_plain_or_under_model(tmp_path: Path) -> None:
    net = _unet()
    plain, nested = tmp_path / "model.pt", tmp_path / "resume.pt"
    torch.save(net.state_dict(), plain)
    torch.save({"model": net.state_dict(), "epoch": 3}, nested)
    assert check_checkpoint(plain, _unet()) == str(plain)
    assert check_checkpoint(nested, _unet()) == str(nested)


def test_a_missing_or_unreadable_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.pt: no such file; fix: train one first"):
        check_checkpoint(tmp_path / "nope.pt", _unet())
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(InputError, match=r"notes\.pt: not a PyTorch checkpoint"):
        check_checkpoint(text, _unet())
    no_weights = tmp_path / "counts.pt"
    torch.save({"epoch": 3, "loss": [0.5, 0.4]}, no_weights)
    with pytest.raises(InputError, match=r"counts\.pt: holds no network weights"):
        check_checkpoint(no_weights, _unet())


def test_another_networks_checkpoint_names_what_differs(tmp_path: Path) -> None:
    three = tmp_path / "three.pt"
    torch.save(_unet(classes=3).state_dict(), three)
    with pytest.raises(InputError, match="trained for 3 classes .* this config has 2; fix: pass --num_classes 3"):
        check_checkpoint(three, _unet(classes=2))
    wide = tmp_path / "wide.pt"
    torch.save(_unet(channels=(8, 16)).state_dict(), wide)
    # the first convolution: 8 output channels in the checkpoint, 4 in this network (1 input, 3x3x3 kernel)
    with pytest.raises(InputError, match=r"is \(8, 1, 3, 3, 3\) there and \(4, 1, 3, 3, 3\) here"):
        check_checkpoint(wide, _unet(channels=(4, 8)))


@pytest.mark.parametrize(
    "workflow",
    [
        ["evaluating", "--config_file", "['configs/train.yaml','configs/evaluate.yaml']"],
        ["--config_file", "configs/inference.yaml"],
    ],
    ids=["evaluate", "inference"],
)
def test_a_run_with_a_missing_checkpoint_ends_on_one_line(tmp_path: Path, workflow: list[str], clean: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", *workflow, "--checkpoint", str(tmp_path / "nope.pt"),
           "--output_dir", str(out), "--dataset_dir", str(clean.parent), "--num_workers", "0"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"InputError: checkpoint {tmp_path / 'nope.pt'}: no such")
    assert not out.exists()  # nothing written
