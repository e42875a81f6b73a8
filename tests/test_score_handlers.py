"""The score handlers on tiny engines: values land in the record, joined on (epoch, case_id)."""

import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from scripts.data.record import DynamicsRecord, read_dynamics
from scripts.handlers.score_handlers import CheckpointScorer, ScoreTracker, VolumeScorer

LN3 = math.log(3.0)


def _ce(logits, label):
    return torch.nn.functional.cross_entropy(logits, label[:, 0].long())


def _two_voxel_batch():
    # items of 2 voxels: a -> voxel errors sqrt(.5) (fg) and sqrt(.125); b -> all-zero logits, label 0
    logits = torch.tensor([[[0.0, LN3], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    label = torch.tensor([[[1, 0]], [[0, 0]]])
    return {"pred": logits, "label": label}


def test_score_tracker_pools_crops_per_case(tmp_path):
    record = DynamicsRecord(["a", "b", "c"], ["x", "x", "y"], num_classes=2)
    # decollated batches, as the trainer holds them: two crops of a and of b, c unseen
    batches = [[{"case_id": "a"}, {"case_id": "b"}]] * 2
    engine = Engine(lambda e, b: _two_voxel_batch())
    ScoreTracker(record, tmp_path, loss_function=_ce).attach(engine)
    engine.run(batches, max_epochs=1)
    table = read_dynamics(tmp_path / "dynamics.csv")
    np.testing.assert_allclose(table["el2n"][:2], [(math.sqrt(0.5) + math.sqrt(0.125)) / 2, math.sqrt(0.5)], 1e-6)
    assert table["el2nx"][0] == pytest.approx(math.sqrt(0.5)) and np.isnan(table["el2nx"][1])
    # loss of a = mean CE of its voxels: (ln 2 - ln .75) / 2
    assert table["loss"][0] == pytest.approx((math.log(2) - math.log(0.75)) / 2, rel=1e-6)
    assert np.isnan(table["el2n"][2])
    assert set(json.loads((tmp_path / "score_cost.json").read_text())["extra_ratio"]) == {
        "el2n+el2nx",
        "loss",
        "patch_record",
    }
    with pytest.raises(ValueError, match="loss_function"):
        ScoreTracker(record, tmp_path, scores=["loss"])
    with pytest.raises(ValueError, match="subset"):
        ScoreTracker(record, tmp_path, scores=["vog"])


def test_checkpoint_scorer_vog_over_two_checkpoints(tmp_path):
    net = torch.nn.Conv3d(1, 2, kernel_size=1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
    loader = [
        {
            "image": torch.zeros(1, 1, 1, 1, 2),
            "label": torch.tensor([1, 0]).reshape(1, 1, 1, 1, 2),
            "case_id": ["a"],
        }
    ]
    record = DynamicsRecord(["a"], ["x"], num_classes=2)
    slopes = {1: 2.0, 2: 6.0}  # the "training" sets w1 - w0 per epoch; input gradients +-slope/8 (test_scores)

    def step(engine, batch):
        with torch.no_grad():
            net.weight[1] = slopes[engine.state.epoch]
        return {}

    engine = Engine(step)
    CheckpointScorer(record, tmp_path, net, loader, loss_function=_ce, interval=1).attach(engine)
    engine.run([0], max_epochs=2)
    epochs, vog = record.score_matrix("vog")
    assert list(epochs) == [1, 2] and np.isnan(vog[0, 0]) and vog[0, 1] == pytest.approx(0.25, rel=1e-6)
    # at x = 0 the logits are 0 whatever the weights: p = (.5, .5) everywhere
    np.testing.assert_allclose(record.score_matrix("monai_lq")[1], [[0.5, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(record.score_matrix("cleanlab")[1], [[0.5, 0.5]], rtol=1e-6)
    # GraNd: dCE/dw = mean (p - y) x = 0 at x = 0; dCE/db = mean (p - y) = (0, 0): norm 0
    np.testing.assert_allclose(record.score_matrix("grand_last_layer")[1], [[0.0, 0.0]], atol=1e-7)
    assert net.training  # the train mode is restored
    cost = json.loads((tmp_path / "score_cost.json").read_text())
    parts = cost["handlers"]["CheckpointScorer"]
    assert {"forward", "vog", "grand_last_layer", "cleanlab", "monai_lq", "volumes_io"} <= set(parts)
    assert cost["wall_s"] > 0 and all(r > 0 for r in cost["extra_ratio"].values())
    assert "vog" in read_dynamics(tmp_path / "dynamics.csv")


def test_volume_scorer_records_dice_and_scores(tmp_path):
    record = DynamicsRecord(["a", "b"], ["x", "y"], num_classes=2)
    engine = Engine(lambda e, b: _two_voxel_batch())
    VolumeScorer(record, tmp_path, epoch=7).attach(engine)
    engine.run([[{"case_id": "a"}, {"case_id": "b"}]], max_epochs=1)
    table = read_dynamics(tmp_path / "dynamics.csv")
    assert list(table["epoch"]) == [7, 7] and list(table["source"]) == ["volumes", "volumes"]
    # a: argmax (tie -> class 0 at voxel 0, class 0 at voxel 1) vs label (1, 0): Dice 0; b: undefined
    assert table["dice"][0] == 0.0 and np.isnan(table["dice"][1])
    assert table["el2nx"][0] == pytest.approx(math.sqrt(0.5), rel=1e-6)
    assert table["monai_lq"][0] == pytest.approx(0.375, rel=1e-6)
    assert 0 < table["cleanlab"][0] < 1


def test_score_tracker_leaves_out_the_distributed_samplers_padding(tmp_path):
    from monai.data import DataLoader, Dataset
    from torch.utils.data import DistributedSampler

    data = [{"case_id": f"c{i}", "v": float(i)} for i in range(5)]
    dataset = Dataset(data)
    per_rank = {}
    for rank in (0, 1):
        # 5 cases on 2 ranks: positions 0..5, rank 1 gets 1, 3 and 5 = a repeat of c0 (whose original is on rank 0)
        loader = DataLoader(dataset, sampler=DistributedSampler(dataset, 2, rank, shuffle=False), batch_size=2)

        def step(engine, batch):
            v = torch.as_tensor(batch["v"]).float()
            logits = torch.zeros(len(v), 2, 1, 1, 2)
            logits[:, 1] = v[:, None, None, None]  # a case's logit: its index (any value per case would do)
            return {"pred": logits, "label": torch.ones(len(v), 1, 1, 1, 2, dtype=torch.long)}

        record = DynamicsRecord([d["case_id"] for d in data], ["x"] * 5, num_classes=2)
        engine = Engine(step)
        tracker = ScoreTracker(record, tmp_path / str(rank), ["el2n", "el2nx"], batch_transform=lambda b: b["case_id"])
        tracker.attach(engine)
        engine.run(loader, max_epochs=1)
        per_rank[rank] = record.score_matrix("el2n")[1][:, 0]
    # c0 was scored on rank 0 only; rank 1's repeat of it is padding and not counted
    assert np.isfinite(per_rank[0][[0, 2, 4]]).all() and np.isnan(per_rank[0][[1, 3]]).all()
    assert np.isfinite(per_rank[1][[1, 3]]).all() and np.isnan(per_rank[1][[0, 2, 4]]).all()
    # EL2N of a case with logits (0, i) and label 1: |p - onehot| = sqrt(2) (1 - sigmoid(i))
    expected = np.sqrt(2) / (1 + np.exp(np.arange(5.0)))
    combined = np.where(np.isnan(per_rank[0]), per_rank[1], per_rank[0])
    np.testing.assert_allclose(combined, expected, rtol=1e-6)
