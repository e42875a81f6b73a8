"""The prune workflow ranks by any recorded score: ``--score dad_center_z`` drops the cases far below
their own center, where raw DAD drops a hard center's clean cases."""

import csv
import json

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from scripts.data.record import DynamicsRecord
from scripts.data.synthetic import generate_dataset
from scripts.workflows.prune import run_pruning


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """10 cases in 3 centers; center 1 is hard (DAD ~0.30), the others easy (~0.80); one case of center 1
    (0.10) and one of center 2 (0.50) sit far below their own center."""
    root = tmp_path_factory.mktemp("prune_score")
    dataset = generate_dataset(root / "data", num_train=10, num_val=2, num_test=2, shape=(16, 16, 16))
    train = load_decathlon_datalist(dataset, data_list_key="training")
    ids, centers = [d["case_id"] for d in train], [d["center"] for d in train]
    base = {"center1": [0.30, 0.31, 0.29, 0.10], "center2": [0.80, 0.81, 0.50], "center3": [0.79, 0.82, 0.80]}
    taken = {c: iter(v) for c, v in base.items()}
    dad = {case: next(taken[c]) for case, c in zip(ids, centers)}
    record = DynamicsRecord.from_datalist(train, 2)
    for epoch in range(1, 5):
        record.add_epoch(epoch, "patches", ids, np.array([[[100 * dad[c]], [100.0], [100.0]] for c in ids]))
    run = root / "stage1"
    record.save(run / "dynamics.csv")
    (run / "run.json").write_text(json.dumps({"dataset_json": str(dataset), "delta_t": 2}))
    return run, dad, dict(zip(ids, centers))


def _dropped(out_dir):
    with open(out_dir / "selection.csv", newline="") as f:
        return sorted(r["case_id"] for r in csv.DictReader(f) if r["kept"] == "0")


def test_center_z_drops_the_outliers_of_each_center(stage1, tmp_path):
    run, dad, center = stage1
    raw = run_pruning(run, tmp_path / "raw", rate=0.2, strategy="easy", report=False)
    z = run_pruning(run, tmp_path / "z", rate=0.2, strategy="easy", score="dad_center_z", report=False)
    # raw DAD: the two lowest are 0.10 and 0.29, both of the hard center 1
    assert _dropped(tmp_path / "raw") == sorted(c for c, v in dad.items() if v in (0.10, 0.29))
    # within centers (median / MAD): 0.10 in center 1 (z = -0.2 / (1.4826 * 0.01) = -13.5) and 0.50 in
    # center 2 (z = -0.30 / (1.4826 * 0.01) = -20.2)
    assert _dropped(tmp_path / "z") == sorted(c for c, v in dad.items() if v in (0.10, 0.50))
    assert raw["num_kept"] == z["num_kept"] == 8
    assert z["score"] == "dad_center_z" and z["per_center"]["center2"] == {"kept": 2, "dropped": 1}


def test_a_score_the_record_lacks_says_how_to_get_it(stage1, tmp_path):
    run, _, _ = stage1
    with pytest.raises(ValueError, match="score_patches True"):
        run_pruning(run, tmp_path / "x", rate=0.2, score="el2n", report=False)
    with pytest.raises(ValueError, match="unknown score 'dice'"):
        run_pruning(run, tmp_path / "x", rate=0.2, score="dice", report=False)
    assert not (tmp_path / "x").exists()  # nothing written
