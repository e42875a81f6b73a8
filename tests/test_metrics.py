"""The evaluation Dice has the record's definition, checked on hand-worked one-hot volumes."""

import math

import numpy as np
import pytest
import torch
from scripts.core.metrics import CaseDice, class_dice_of_onehot
from scripts.workflows.evaluate import summarize_by_center


def onehot(classes: np.ndarray, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(classes)[None]
    return torch.nn.functional.one_hot(t.long(), num_classes).movedim(-1, 1).float()


def test_class_dice_hand_worked_and_empty_labels():
    label = np.zeros((4, 4), dtype=np.int64)
    label[0, :3] = 1  # |Y1| = 3
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[0, :2] = 1  # |P1| = 2, overlap 2 -> 2*2/5
    pred[3, 3] = 2  # class 2 predicted, absent from the label: a false positive, Dice 0
    d = class_dice_of_onehot(onehot(pred, 3), onehot(label, 3))
    assert d.shape == (1, 2)
    assert d[0, 0].item() == pytest.approx(0.8)
    assert d[0, 1].item() == 0.0
    # empty label, empty prediction: undefined, not 0 or 1
    empty = np.zeros((4, 4), dtype=np.int64)
    assert math.isnan(class_dice_of_onehot(onehot(empty, 2), onehot(empty, 2))[0, 0].item())


def test_case_dice_metric_mean_over_defined_cases():
    metric = CaseDice()
    a = np.zeros((4, 4), dtype=np.int64)
    a[:2] = 1  # 8 voxels
    half = np.zeros((4, 4), dtype=np.int64)
    half[:1] = 1  # 4 of them: Dice 2*4/12
    empty = np.zeros((4, 4), dtype=np.int64)
    fp = np.zeros((4, 4), dtype=np.int64)
    fp[0, 0] = 1
    metric(y_pred=torch.cat([onehot(a, 2), onehot(half, 2)]), y=torch.cat([onehot(a, 2), onehot(a, 2)]))
    metric(y_pred=torch.cat([onehot(empty, 2), onehot(fp, 2)]), y=torch.cat([onehot(empty, 2), onehot(empty, 2)]))
    # cases: 1.0, 2/3, undefined (skipped), 0 (false positive on an empty label)
    assert metric.aggregate().item() == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)


def test_summary_is_full_precision(tmp_path):
    datalist = [{"case_id": "a", "center": "x"}, {"case_id": "b", "center": "x"}, {"case_id": "c", "center": "y"}]
    details = torch.tensor([[0.123456], [0.654321], [float("nan")]], dtype=torch.float64)
    summary = summarize_by_center(tmp_path, datalist, details)
    assert summary["x"]["mean"] == pytest.approx((0.123456 + 0.654321) / 2, abs=1e-9)
    assert summary["overall"] == pytest.approx(
        {"mean": (0.123456 + 0.654321) / 2, "std": (0.654321 - 0.123456) / 2, "n": 2, "n_undefined": 1}
    )
    rows = (tmp_path / "case_dice.csv").read_text().splitlines()
    assert rows[0] == "case_id,center,dice,dice_class1" and rows[1] == "a,x,0.123456,0.123456"
    assert rows[3] == "c,y,,"
