"""Extra score columns joined to the dynamics record on (epoch, case_id)."""

import numpy as np
import pytest
from scripts.data.record import BASE_FIELDS, DynamicsRecord, read_dynamics


def _record():
    record = DynamicsRecord(["a", "b"], ["x", "y"], num_classes=2)
    record.add_epoch(1, "patches", ["a", "b"], np.array([[[1.0], [2.0], [2.0]], [[0.0], [1.0], [1.0]]]))
    return record


def test_record_without_scores_is_unchanged(tmp_path):
    record = _record()
    assert record.fields == [*BASE_FIELDS, "dice_class1"] and record.score_names == []
    header = record.save(tmp_path / "d.csv").read_text().splitlines()[0]
    assert header == "epoch,case_id,center,source,n_items,dice,dice_class1"


def test_scores_join_on_epoch_and_case_and_round_trip(tmp_path):
    record = _record()
    record.add_scores(1, {"el2n": [0.25, np.nan]})
    record.add_scores(1, {"vog": [0.5]}, case_ids=["b"])
    record.add_scores(3, {"vog": [0.1, 0.2]})  # an epoch without Dice: rows with empty Dice
    assert record.fields[-2:] == ["el2n", "vog"] and record.epochs == [1, 3]
    epochs, vog = record.score_matrix("vog")
    np.testing.assert_array_equal(epochs, [1, 3])
    np.testing.assert_array_equal(vog, [[np.nan, 0.1], [0.5, 0.2]])
    path = record.save(tmp_path / "d.csv")
    table = read_dynamics(path)
    np.testing.assert_array_equal(table["el2n"], [0.25, np.nan, np.nan, np.nan])
    assert np.isnan(table["dice"][2])
    loaded = DynamicsRecord.load(path)
    assert loaded.score_names == ["el2n", "vog"]
    np.testing.assert_array_equal(loaded.score_matrix("vog")[1], vog)
    np.testing.assert_array_equal(loaded.dice_matrix()[1], record.dice_matrix()[1])
    assert loaded.rows() == record.rows()


def test_bad_score_columns():
    record = _record()
    with pytest.raises(ValueError, match="clashes"):
        record.add_scores(1, {"dice": [1, 2]})
    with pytest.raises(ValueError, match="values for 2 cases"):
        record.add_scores(1, {"el2n": [1.0]})
    with pytest.raises(ValueError, match="not in the training list"):
        record.add_scores(1, {"el2n": [1.0]}, case_ids=["zz"])
    with pytest.raises(KeyError):
        record.score_matrix("nope")
