"""The scoring workflow audits every labelled case of any data list (issue 17, item 1): a training-only
list (the usual MSD layout, which stage 1 would carve) and a list with validation and test lists."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.networks.nets import UNet
from scripts.data.lists import labelled_cases
from scripts.data.record import read_dynamics
from scripts.data.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(path: Path) -> Path:
    """An untrained network of the bundle's architecture, saved as the training saves model.pt."""
    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1, norm="batch")
    torch.save(net.state_dict(), path)
    return path


def _score(dataset_json: Path, out: Path, checkpoint: Path) -> None:
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "scoring", "--config_file",
        "['configs/train.yaml','configs/scoring.yaml']", "--dataset_json", str(dataset_json),
        "--output_dir", str(out), "--checkpoint", str(checkpoint), "--patch_size", "[16,16,16]",
        "--num_workers", "0", "--scoring_report", "False", "--model_epochs", "7",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def _ranking(out: Path) -> list[dict[str, str]]:
    with (out / "ranking.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_labelled_cases_takes_every_labelled_list_and_refuses_a_case_twice(tmp_path):
    data = json.loads(generate_dataset(tmp_path / "d", 4, 2, 2, 2, (16, 16, 16), 0.0).read_text())
    data["test"].append({"image": data["test"][0]["image"]})  # an unlabelled test image: not audited
    (tmp_path / "d" / "dataset.json").write_text(json.dumps(data))
    cases = labelled_cases(tmp_path / "d" / "dataset.json")
    assert [c["list"] for c in cases] == ["training"] * 4 + ["validation"] * 2 + ["test"] * 2
    assert [c["case_id"] for c in labelled_cases(tmp_path / "d" / "dataset.json", ["validation"])] == [
        Path(d["label"]).name.removesuffix(".nii.gz") for d in data["validation"]
    ]
    data["validation"].append(data["training"][0])
    (tmp_path / "d" / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="in both the training and the validation list"):
        labelled_cases(tmp_path / "d" / "dataset.json")


@pytest.mark.slow
def test_scoring_ranks_every_case_of_a_training_only_list_and_of_all_lists(tmp_path):
    ckpt = _checkpoint(tmp_path / "model.pt")
    full = generate_dataset(tmp_path / "data", 6, 2, 2, 2, (32, 32, 32), 0.2)
    content = json.loads(full.read_text())
    # the MSD layout: a training list only, too few cases for stage 1 to carve both parts (it refused 8)
    only = {k: v for k, v in content.items() if k not in ("validation", "test")}
    only["training"] = content["training"] + content["validation"]
    (tmp_path / "data" / "train_only.json").write_text(json.dumps(only))
    _score(tmp_path / "data" / "train_only.json", tmp_path / "s1", ckpt)
    expected = sorted(Path(d["image"]).name.removesuffix(".nii.gz") for d in only["training"])
    rows = _ranking(tmp_path / "s1")
    assert sorted(r["case_id"] for r in rows) == expected and len(expected) == 8
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, 9))
    dice = [float(r["dad"]) for r in rows]
    assert dice == sorted(dice)  # rank 1 = the lowest Dice
    assert {r["model"] for r in rows} == {str(ckpt)} and {r["model_epochs"] for r in rows} == {"7"}
    table = read_dynamics(tmp_path / "s1" / "dynamics.csv")
    assert sorted(table["case_id"].tolist()) == expected
    with (tmp_path / "s1" / "prune" / "selection.csv").open() as f:
        assert sorted(r["case_id"] for r in csv.DictReader(f)) == expected

    _score(full, tmp_path / "s2", ckpt)  # training, validation and labelled test lists: all 10 cases
    rows = _ranking(tmp_path / "s2")
    assert len(rows) == 10
    assert sorted(r["list"] for r in rows) == ["test"] * 2 + ["training"] * 6 + ["validation"] * 2
    assert (tmp_path / "s2" / "audit_detection.md").is_file()  # the synthetic set has its faults.csv
    # the exported subset stays retrainable: kept training cases only, validation and test as they were
    subset = json.loads((tmp_path / "s2" / "prune" / "subset_datalist.json").read_text())
    names = {
        k: [Path(d["image"]).name.removesuffix(".nii.gz") for d in content[k]]
        for k in ("training", "validation", "test")
    }
    assert {d["case_id"] for d in subset["training"]} <= set(names["training"])
    assert [d["case_id"] for d in subset["validation"]] == names["validation"]
    assert [d["case_id"] for d in subset["test"]] == names["test"]
