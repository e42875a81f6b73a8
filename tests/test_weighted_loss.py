"""Exact per-crop loss weights (issue 25 item 3) for configs/train.yaml's own DiceCELoss(batch=True):
weight 1 is the configured loss, weight 0 takes the crop out of the batch (zero gradient), integer
weights equal repeating the crop in the batch; the same for the loss's other settings, checked against
MONAI's loss on the repeated batch (an independent computation); and the handler uses it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.losses import DiceCELoss, DiceLoss
from scripts.core.weighted_loss import WeightedLoss

ROOT = Path(__file__).resolve().parents[1]
WEIGHT = torch.tensor([0.2, 1.0, 3.0])  # class weights of the loss
SOFTMAX = {"to_onehot_y": True, "softmax": True}


def _train_yaml_loss() -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(ROOT / "configs" / "train.yaml")
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, DiceCELoss) and loss.dice.batch and loss.dice.squared_pred  # what is tested here
    return loss


def _batch(n: int = 4, classes: int = 3, size: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, classes, size, size, size, generator=g)
    label = torch.randint(0, classes, (n, 1, size, size, size), generator=g)
    return pred, label


def _grad(fn, pred: torch.Tensor) -> torch.Tensor:
    pred = pred.clone().requires_grad_(True)
    fn(pred).backward()
    return pred.grad


def test_weight_one_is_the_configured_loss():
    loss = _train_yaml_loss()
    pred, label = _batch()
    weighted = WeightedLoss(loss)(pred, label, torch.ones(4))
    torch.testing.assert_close(weighted, loss(pred, label), rtol=1e-6, atol=1e-6)


def test_weight_zero_takes_the_crop_out_of_the_batch_with_zero_gradient():
    loss, pred, label = _train_yaml_loss(), *_batch()
    w = torch.tensor([1.0, 0.0, 1.0, 1.0])
    grad = _grad(lambda p: WeightedLoss(loss)(p, label, w), pred)
    assert torch.count_nonzero(grad[1]) == 0  # exactly zero, not small (0.6.1's correction left 0.017 vs 0.341)
    assert grad[0].abs().sum() > 0
    keep = torch.tensor([0, 2, 3])
    torch.testing.assert_close(WeightedLoss(loss)(pred, label, w), loss(pred[keep], label[keep]), rtol=1e-6, atol=1e-6)
    # the gradient of the others is the batch-without-it gradient
    torch.testing.assert_close(grad[keep], _grad(lambda p: loss(p, label[keep]), pred[keep]), rtol=1e-5, atol=1e-8)


def test_integer_weights_equal_repeating_the_crop():
    loss, pred, label = _train_yaml_loss(), *_batch()
    w = torch.tensor([2.0, 1.0, 0.0, 3.0])
    repeat = torch.tensor([0, 0, 1, 3, 3, 3])
    torch.testing.assert_close(WeightedLoss(loss)(pred, label, w), loss(pred[repeat], label[repeat]), rtol=1e-6,
                               atol=1e-6)  # fmt: skip
    grad = _grad(lambda p: WeightedLoss(loss)(p, label, w), pred)
    # the repeated batch's gradient, summed over each crop's copies
    copies = _grad(lambda p: loss(p, label[repeat]), pred[repeat])
    expected = torch.zeros_like(pred).index_add_(0, repeat, copies)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-8)
    # per-crop gradient ratio of weight 2 to weight 1 is not a constant 2 (the Dice is a ratio of batch sums):
    # what the weight means is the repeat, not a factor on a per-crop loss
    ratio = grad[0].norm() / _grad(lambda p: WeightedLoss(loss)(p, label, torch.ones(4)), pred)[0].norm()
    assert not np.isclose(float(ratio), 2.0, rtol=1e-3)


@pytest.mark.parametrize(
    "kind, settings",
    [
        (DiceCELoss, {"to_onehot_y": True, "softmax": True, "batch": False}),
        (DiceCELoss, {**SOFTMAX, "batch": True, "jaccard": True, "label_smoothing": 0.1, "weight": WEIGHT}),
        (DiceCELoss, {"to_onehot_y": True, "sigmoid": True, "batch": True, "lambda_ce": 0.5, "reduction": "sum"}),
        (DiceLoss, {"to_onehot_y": True, "softmax": True, "include_background": False, "batch": True}),
        (DiceLoss, {"to_onehot_y": True, "softmax": True, "squared_pred": True, "batch": False}),
    ],
)
def test_other_settings_of_the_dice_losses_are_exact_too(kind, settings):
    loss = kind(**settings)
    pred, label = _batch(seed=1)
    torch.testing.assert_close(WeightedLoss(loss)(pred, label, torch.ones(4)), loss(pred, label), rtol=1e-6, atol=1e-5)
    repeat = torch.tensor([0, 0, 2, 3, 3, 3])
    w = torch.tensor([2.0, 0.0, 1.0, 3.0])
    torch.testing.assert_close(WeightedLoss(loss)(pred, label, w), loss(pred[repeat], label[repeat]), rtol=1e-6,
                               atol=1e-5)  # fmt: skip


def test_a_loss_that_cannot_be_weighted_exactly_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="MSELoss is not MONAI's DiceCELoss or DiceLoss.*Fix: use one of them"):
        WeightedLoss(torch.nn.MSELoss())
    with pytest.raises(ValueError, match="ignore_index"):
        WeightedLoss(DiceLoss(ignore_index=0))
    with pytest.raises(ValueError, match="3 weights"):
        WeightedLoss(DiceLoss())(*_batch(), torch.ones(3))


def test_the_handler_trains_a_padding_item_at_weight_zero_not_at_all():
    from scripts.handlers.dynamic_pruning import DynamicPruning

    loss, (pred, label) = _train_yaml_loss(), _batch()
    handler = DynamicPruning.__new__(DynamicPruning)
    handler.record = SimpleNamespace(rows_of=lambda ids: np.array([int(c[1:]) for c in ids]))
    handler._trained = np.zeros(4, dtype=np.int64)
    handler.weighted_loss = WeightedLoss(loss)
    handler.batch_transform = lambda b: b["case_id"]
    handler.output_transform = lambda o: (o["pred"], o["label"])
    pred = pred.requires_grad_(True)
    output = {"pred": pred, "label": label, "loss": loss(pred, label)}
    # c0 an easy case (weight 2), c3 a rank's padding (weight 0): the weights VisitDataset stamps on the crops
    batch = {"case_id": ["c0", "c1", "c2", "c3"], "loss_weight": torch.tensor([2.0, 1.0, 1.0, 0.0])}
    engine = SimpleNamespace(state=SimpleNamespace(batch=batch, output=output))
    handler.reweight(engine)
    engine.state.output["loss"].backward()
    assert torch.count_nonzero(pred.grad[3]) == 0
    repeat = torch.tensor([0, 0, 1, 2])
    torch.testing.assert_close(engine.state.output["loss"], loss(pred[repeat], label[repeat]), rtol=1e-6, atol=1e-6)
    assert handler._trained.tolist() == [1, 1, 1, 0]
