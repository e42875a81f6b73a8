"""The harder multi-center set: unequal centers, one noisier, faults listed for the kept cases only."""

import csv
import json

import nibabel as nib
import numpy as np
from scripts.data.synthetic import center_params
from scripts.experiments.harder_set import build


def test_harder_set_is_unequal_noisy_and_lists_its_faults(tmp_path):
    path = build(str(tmp_path / "h"), num_train=36, num_val=6, num_test=6, fault_fraction=0.25, keep_small=0.0,
                 shape=(24, 24, 24))  # fmt: skip
    data = json.loads(open(path).read())
    centers = [e["center"] for e in data["training"]]
    # round-robin over 6 centers gives 6 each; keep_small 0 drops every training case of centers 5 and 6
    assert {c: centers.count(c) for c in set(centers)} == {f"center{i}": 6 for i in range(1, 5)}
    assert data["numTraining"] == 24
    assert any(e["center"] == "center6" for e in data["test"])  # held-out splits keep every center
    with open(tmp_path / "h" / "faults.csv") as f:
        faults = list(csv.DictReader(f))
    with open(tmp_path / "h" / "generated" / "faults.csv") as f:
        planted = list(csv.DictReader(f))
    kept = {e["case_id"] for e in data["training"]}
    assert {r["case_id"] for r in faults} == {r["case_id"] for r in planted} & kept
    assert len(faults) < len(planted)  # some faults were in the dropped centers
    # center 6's images: the generated ones plus noise of 3 x its noise sd
    entry = next(e for e in data["test"] if e["center"] == "center6")
    noisy = np.asarray(nib.load(entry["image"]).dataobj, dtype=np.float64)
    original = np.asarray(
        nib.load(str(tmp_path / "h" / "generated" / "imagesTs" / f"{entry['case_id']}.nii.gz")).dataobj
    )
    assert abs(np.std(noisy - original) / (3 * center_params(6).noise_std) - 1) < 0.05
    other = next(e for e in data["test"] if e["center"] == "center1")
    assert "generated" in other["image"]  # the other centers' images are the generated files
    assert build(str(tmp_path / "h")) == path  # a second call keeps the finished set
