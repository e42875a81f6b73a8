"""The per-case record: pooling, missing values and the CSV round trip."""

import numpy as np
import pytest
from scripts.data.record import DynamicsRecord, read_dynamics


def test_pooling_missing_and_round_trip(tmp_path):
    record = DynamicsRecord(["a", "b", "c"], ["x", "x", "y"], num_classes=3)
    # a: two crops, class 1 counts (1,2,2)+(3,4,4) -> 2*4/12; class 2 never present -> missing
    # b: one crop, class 1 empty in both, class 2 (0,1,0) -> a false positive: Dice 0
    counts = np.array([[[1, 0], [2, 0], [2, 0]], [[3, 0], [4, 0], [4, 0]], [[0, 0], [0, 1], [0, 0]]], dtype=float)
    record.add_epoch(1, "patches", ["a", "a", "b"], counts)
    epochs, dice = record.dice_matrix()
    assert list(epochs) == [1]
    assert dice[0, 0] == pytest.approx(2 / 3)
    assert dice[1, 0] == 0.0
    assert np.isnan(dice[2, 0])  # c was not seen

    path = record.save(tmp_path / "dynamics.csv")
    table = read_dynamics(path)
    assert list(table["case_id"]) == ["a", "b", "c"]
    assert list(table["n_items"]) == [2, 1, 0]
    assert np.isnan(table["dice_class2"][0]) and table["dice_class2"][1] == 0.0
    loaded = DynamicsRecord.load(path)
    assert loaded.case_ids == record.case_ids and loaded.centers == record.centers
    np.testing.assert_allclose(loaded.dice_matrix()[1], dice, equal_nan=True)


def test_recording_an_epoch_again_replaces_it():
    record = DynamicsRecord(["a"], ["x"], 2)
    record.add_epoch(1, "patches", ["a"], np.array([[[1.0], [2.0], [2.0]]]))
    record.add_epoch(1, "patches", ["a"], np.array([[[2.0], [2.0], [2.0]]]))
    assert len(record.rows()) == 1 and record.dice_matrix()[1][0, 0] == 1.0


def test_bad_input_names_the_problem():
    record = DynamicsRecord(["a"], ["x"], 2)
    with pytest.raises(ValueError, match="not in the training list"):
        record.add_epoch(1, "patches", ["zz"], np.zeros((1, 3, 1)))
    with pytest.raises(ValueError, match="do not fit"):
        record.add_epoch(1, "patches", ["a"], np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match="duplicate"):
        DynamicsRecord(["a", "a"], ["x", "x"], 2)


def test_read_dynamics_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_dynamics(tmp_path / "nope.csv")
    (tmp_path / "other.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_dynamics(tmp_path / "other.csv")
