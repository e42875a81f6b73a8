"""Every per-case score against hand-computed values on tiny tensors."""

import math

import numpy as np
import pytest
import torch
from scripts.scores import SCORES, ease, hardness
from scripts.scores.center_norm import robust_center_zscore
from scripts.scores.el2n import el2n, el2n_sums, el2nx, pooled_mean, voxel_error_norm
from scripts.scores.forgetting import forgetting_at, forgetting_events
from scripts.scores.grand import last_layer, last_layer_grand
from scripts.scores.label_quality import cleanlab_score, monai_label_quality
from scripts.scores.loss import loss_sums, per_item_loss
from scripts.scores.vog import (
    RunningVariance,
    true_class_logit_gradient,
    true_class_probability_gradient,
    vog,
    vog_probability_rms,
)

LN3 = math.log(3.0)


def _two_voxels():
    # one item, 2 classes, 2 voxels: voxel 0 logits (0, 0) -> p = (.5, .5), label 1;
    # voxel 1 logits (ln 3, 0) -> p = (.75, .25), label 0
    logits = torch.tensor([[[0.0, LN3], [0.0, 0.0]]])  # (B=1, C=2, V=2)
    label = torch.tensor([[[1, 0]]])  # (1, 1, 2)
    return logits, label


def test_el2n_and_el2nx_by_hand():
    logits, label = _two_voxels()
    # voxel 0: (.5, .5) - (0, 1) -> norm sqrt(.5); voxel 1: (.75, .25) - (1, 0) -> norm sqrt(.125)
    np.testing.assert_allclose(voxel_error_norm(logits, label)[0], [math.sqrt(0.5), math.sqrt(0.125)], rtol=1e-6)
    assert el2n(logits, label)[0] == pytest.approx((math.sqrt(0.5) + math.sqrt(0.125)) / 2, rel=1e-6)
    assert el2nx(logits, label)[0] == pytest.approx(math.sqrt(0.5), rel=1e-6)  # foreground voxel 0 only


def test_el2nx_softmax_is_over_the_class_axis_not_a_spatial_one():
    logits, label = _two_voxels()
    # the research code's bug: softmax over the voxels gives p(voxel 0) = (.25, .5) -> norm sqrt(.0625 + .25)
    buggy = math.sqrt(0.25**2 + 0.5**2)
    assert el2nx(logits, label)[0] == pytest.approx(math.sqrt(0.5), rel=1e-6)
    assert abs(el2nx(logits, label)[0] - buggy) > 0.1
    # probabilities given directly skip the softmax
    probs = torch.softmax(logits, dim=1)
    assert el2nx(probs, label, probabilities=True)[0] == pytest.approx(math.sqrt(0.5), rel=1e-6)


def test_el2n_sums_pool_over_crops_and_empty_foreground_is_missing():
    logits, label = _two_voxels()
    # a second crop of 2 voxels, p = (.5, .5), label 0: norm sqrt(.5) each
    crop2 = (torch.zeros(1, 2, 2), torch.zeros(1, 1, 2, dtype=torch.long))
    sums = el2n_sums(logits, label) + el2n_sums(*crop2)
    np.testing.assert_allclose(sums[0, 0], [math.sqrt(0.5) * 3 + math.sqrt(0.125), 4], rtol=1e-6)
    np.testing.assert_allclose(sums[0, 1], [math.sqrt(0.5), 1], rtol=1e-6)
    assert np.isnan(el2nx(*crop2)[0])
    assert np.isnan(pooled_mean(np.zeros(2)))


def test_vog_by_hand_and_running_variance():
    grads = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])  # population stds sqrt(8/3) and 0
    assert vog(grads) == pytest.approx(math.sqrt(8 / 3) / 2)  # Agarwal et al.: the mean of per-voxel stds
    assert vog_probability_rms(grads) == pytest.approx(math.sqrt(4 / 3))  # the variant: sqrt(mean variance)
    running = RunningVariance()
    assert math.isnan(running.vog())
    for g in grads:
        running.update(g)
    assert running.vog() == pytest.approx(math.sqrt(8 / 3) / 2)
    assert running.probability_rms() == pytest.approx(math.sqrt(4 / 3))
    # its state goes on exactly where it left off (resume.pt)
    resumed = RunningVariance()
    part = RunningVariance()
    part.update(grads[0])
    part.update(grads[1])
    resumed.load_state_dict(part.state_dict())
    resumed.update(grads[2])
    assert resumed.vog() == pytest.approx(math.sqrt(8 / 3) / 2)
    with pytest.raises(ValueError, match="at least 2"):
        vog(grads[:1])


def _linear_net(w0: float, w1: float) -> torch.nn.Module:
    net = torch.nn.Conv3d(1, 2, kernel_size=1)
    with torch.no_grad():
        net.weight[:] = torch.tensor([w0, w1]).reshape(2, 1, 1, 1, 1)
        net.bias.zero_()
    return net.eval()


def test_vog_of_the_true_class_logit_by_hand():
    # logits (w0 x, w1 x): S = sum over voxels of the true-class logit = w1 x_0 + w0 x_1 (labels 1, 0),
    # so dS/dx = (w1, w0) whatever x and whatever the number of voxels
    image = torch.zeros(1, 1, 1, 1, 2)
    label = torch.tensor([1, 0]).reshape(1, 1, 1, 1, 2)
    g1 = true_class_logit_gradient(_linear_net(0.0, 2.0), image, label)
    g2 = true_class_logit_gradient(_linear_net(0.0, 6.0), image, label)
    assert g1.shape == (1, 1, 1, 2)  # channel-averaged: one value per voxel
    np.testing.assert_allclose(g1.flatten().numpy(), [2.0, 0.0])
    np.testing.assert_allclose(g2.flatten().numpy(), [6.0, 0.0])
    # per-voxel population stds over the 2 checkpoints: 2 and 0 -> VoG 1
    assert vog(np.stack([g1[0].numpy(), g2[0].numpy()])) == pytest.approx(1.0)
    # a box leaves the voxels outside it out of S: only voxel 0 counts
    g = true_class_logit_gradient(_linear_net(3.0, 2.0), image, label, boxes=[(slice(0, 1), slice(0, 1), slice(0, 1))])
    np.testing.assert_allclose(g.flatten().numpy(), [2.0, 0.0])


def test_vog_with_known_input_gradients():
    # logits (w0 x, w1 x) at x = 0: p = (.5, .5); d p1 / dx = p1 p0 (w1 - w0) = (w1 - w0) / 4.
    # S = mean over the V = 2 voxels of p[y], so dS/dx_v = +-(w1 - w0) / 8 (+ for label 1, - for label 0).
    image = torch.zeros(1, 1, 1, 1, 2)
    label = torch.tensor([1, 0]).reshape(1, 1, 1, 1, 2)
    g1 = true_class_probability_gradient(_linear_net(0.0, 2.0), image, label)
    np.testing.assert_allclose(g1.flatten().numpy(), [0.25, -0.25], rtol=1e-6)
    g2 = true_class_probability_gradient(_linear_net(0.0, 6.0), image, label)
    np.testing.assert_allclose(g2.flatten().numpy(), [0.75, -0.75], rtol=1e-6)
    # the probability_rms variant: per-voxel variance ((.75 - .25) / 2)^2 = .0625 at both voxels -> .25
    assert vog_probability_rms(np.stack([g1.numpy(), g2.numpy()])) == pytest.approx(0.25, rel=1e-6)


def _ce(logits, label):
    return torch.nn.functional.cross_entropy(logits, label[:, 0].long())


def test_last_layer_grand_by_hand():
    # zero weights: p = (.5, .5); voxels x = (1, 3), labels (1, 0). dCE/dw_c = mean_v (p_c - y_c) x_v
    # = ((.5*1 - .5*3) / 2, (-.5*1 + .5*3) / 2) = (-.5, .5); dCE/db_c = mean_v (p_c - y_c) = (0, 0).
    net = _linear_net(0.0, 0.0)
    image = torch.tensor([1.0, 3.0]).reshape(1, 1, 1, 1, 2)
    label = torch.tensor([1, 0]).reshape(1, 1, 1, 1, 2)
    assert last_layer(net) is net
    out = last_layer_grand(net, _ce, image, label)
    assert out.shape == (1,) and out[0] == pytest.approx(math.sqrt(0.5), rel=1e-6)
    two = last_layer_grand(net, _ce, image.repeat(2, 1, 1, 1, 1), label.repeat(2, 1, 1, 1, 1))
    np.testing.assert_allclose(two, [math.sqrt(0.5)] * 2, rtol=1e-6)
    seq = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 1), torch.nn.ReLU(), torch.nn.Conv3d(3, 2, 1))
    assert last_layer(seq) is seq[2]


def test_per_item_loss_by_hand():
    logits = torch.tensor([[[0.0], [0.0]], [[LN3], [0.0]]])  # (B=2, C=2, V=1)
    label = torch.tensor([[[1]], [[0]]])
    np.testing.assert_allclose(per_item_loss(_ce, logits, label), [math.log(2), -math.log(0.75)], rtol=1e-6)
    np.testing.assert_allclose(loss_sums(_ce, logits, label)[:, 1], [1, 1])


def test_forgetting_events_by_hand():
    dice = np.array(
        [
            [0.6, 0.4, 0.7, 0.3],  # learned, forgotten, learned, forgotten: 2 events
            [0.2, np.nan, 0.3, 0.1],  # never learned: T = 4
            [0.8, 0.9, np.nan, 0.4],  # learned, learned, (skip), forgotten: 1 event
            [np.nan] * 4,  # never measured
            [0.5, 0.5, 0.5, 0.5],  # at the threshold counts as learned: 0
        ]
    )
    np.testing.assert_array_equal(forgetting_events(dice, 0.5), [2, 4, 1, np.nan, 0])
    np.testing.assert_array_equal(forgetting_at(dice, [1, 2, 3, 4], 2, 0.5), [1, 2, 0, np.nan, 0])


def test_robust_center_zscore_by_hand():
    values = np.array([1, 2, 3, 4, 100, 5, 5, 5, 1, 1, 1, 3, np.nan], dtype=float)
    groups = ["a"] * 5 + ["b"] * 3 + ["c"] * 5
    z = robust_center_zscore(values, groups)
    # a: median 3, MAD 1 -> scale 1.4826
    np.testing.assert_allclose(z[:5], np.array([-2, -1, 0, 1, 97]) / 1.4826)
    np.testing.assert_array_equal(z[5:8], [0, 0, 0])  # no spread
    # c: median 1, MAD 0 -> mean absolute deviation .5 x 1.2533
    np.testing.assert_allclose(z[8:12], np.array([0, 0, 0, 2]) / (0.5 * 1.2533))
    assert np.isnan(z[12])


def test_monai_label_quality_by_hand():
    logits, label = _two_voxels()
    probs = torch.softmax(logits, dim=1)
    # |p - onehot|: voxel 0 (.5, .5), voxel 1 (.25, .25) -> mean over voxels and classes .375
    assert monai_label_quality(probs, label)[0] == pytest.approx(0.375, rel=1e-6)


def test_cleanlab_softmin_on_a_small_3d_volume():
    # (C=2, 2, 2, 2) probabilities whose self-confidence p[label] is .9 at 7 voxels and .3 at one
    label = np.ones((2, 2, 2), dtype=int)
    label[0, 0, 0] = 0
    p1 = np.full((2, 2, 2), 0.9)
    p1[0, 0, 0] = 0.7  # label 0 there: self-confidence 1 - .7 = .3
    probs = np.stack([1 - p1, p1])
    # softmin (temperature .1): sum_v s_v w_v with w = softmax((1 - s) / .1)
    s = np.array([0.3] + [0.9] * 7)
    w = np.exp((1 - s) / 0.1) / np.exp((1 - s) / 0.1).sum()
    assert cleanlab_score(probs, label) == pytest.approx(float((s * w).sum()), rel=1e-6)
    flipped = cleanlab_score(probs, 1 - label)
    assert flipped < cleanlab_score(probs, label)  # a wrong label scores lower


def test_score_orientation():
    assert SCORES["el2n"].higher_is_harder and not SCORES["dad"].higher_is_harder
    np.testing.assert_array_equal(hardness([1.0, 2.0], "dad"), [-1.0, -2.0])
    np.testing.assert_array_equal(ease([1.0, 2.0], "el2n"), [-1.0, -2.0])
