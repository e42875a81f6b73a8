"""Planted faults: voxel counts by hand on a cube, the plan, and the written data set."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from scripts.experiments.plant_faults import KINDS, SEVERITIES, plan_faults, plant_fault, plant_faults


def _cube() -> np.ndarray:
    label = np.zeros((12, 12, 12), dtype=np.uint8)
    label[2:10, 2:10, 2:10] = 1  # 8^3 = 512 voxels
    return label


@pytest.mark.parametrize(
    "kind, severity, expected",
    [
        ("erosion", "mild", 6**3),
        ("erosion", "severe", 2**3),
        ("dilation", "mild", 512 + 6 * 64),  # one layer on each of the 6 faces
        ("partial_drop", "mild", 6 * 64),  # the far floor(.25 * 8) = 2 slices erased
        ("partial_drop", "severe", 4 * 64),
        ("whole_drop", "mild", 0),  # one foreground class: all of it
        ("whole_drop", "severe", 0),
        ("shift", "mild", 512),
        ("class_swap", "mild", 500),  # box [1, 11)^3 halved: 5x10x10 inverted (244 bg -> fg) + the other 4 slices
        ("class_swap", "severe", 1000 - 512),
    ],
)
def test_fault_voxel_counts(kind, severity, expected):
    label = _cube()
    out = plant_fault(label, kind, severity, np.random.default_rng(0))
    assert int((out != 0).sum()) == expected
    assert int((label != 0).sum()) == 512  # the input is untouched


def test_shift_distance_by_severity():
    label = _cube()
    for severity, dist in (("mild", 1), ("severe", 2)):  # 10% / 25% of the 8-voxel extent, rounded
        out = plant_fault(label, "shift", severity, np.random.default_rng(3))
        moved = [abs(int(np.flatnonzero(out.any(axis=tuple(b for b in range(3) if b != a)))[0]) - 2) for a in range(3)]
        assert sorted(moved) == [0, 0, dist]


def test_multiclass_drop_and_swap():
    label = np.array([[[1, 1, 1, 2, 0]]])
    np.testing.assert_array_equal(
        plant_fault(label, "whole_drop", "mild", np.random.default_rng(0)), [[[1, 1, 1, 0, 0]]]
    )
    np.testing.assert_array_equal(
        plant_fault(label, "class_swap", "mild", np.random.default_rng(0)), [[[2, 2, 2, 1, 0]]]
    )


def test_plan_covers_every_kind_and_severity():
    plan = plan_faults(24, 0.5, seed=1)
    assert len(plan) == 12 and sorted(plan.values()) == sorted((k, s) for k in KINDS for s in SEVERITIES)
    assert plan == plan_faults(24, 0.5, seed=1) and plan != plan_faults(24, 0.5, seed=2)


def test_plant_faults_writes_a_data_set(tmp_path):
    entries = {"training": [], "test": []}
    for i, key in enumerate(["training"] * 3 + ["test"]):
        path = tmp_path / f"case{i}.nii.gz"
        nib.save(nib.Nifti1Image(_cube(), np.eye(4)), str(path))
        entries[key].append({"image": str(path), "label": str(path), "case_id": f"case{i}", "center": "a"})
    (tmp_path / "dataset.json").write_text(json.dumps(entries))
    rows = plant_faults(tmp_path / "dataset.json", tmp_path / "out", fraction=0.5, seed=0)
    assert len(rows) == 2 and all(r["case_id"] != "case3" for r in rows)  # round(1.5) = 2, never a test case
    new = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert new["test"][0]["label"] == str(tmp_path / "case3.nii.gz")
    faulty = {r["case_id"] for r in rows}
    for entry in new["training"]:
        assert ("labelsTr_faulty" in entry["label"]) == (entry["case_id"] in faulty)
    with (tmp_path / "out" / "faults.csv").open() as f:
        assert list(csv.DictReader(f))[0].keys() == {"case_id", "center", "kind", "severity"}
