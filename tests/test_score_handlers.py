"""The score handlers on tiny engines: values land in the record, joined on (epoch, case_id)."""

import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from scripts.data.record import DynamicsRecord, read_dynamics
from scripts.handlers.record_writer import RecordWriter
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
    RecordWriter(record, tmp_path).attach(engine)
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
        {"image": torch.zeros(1, 1, 1, 1, 2), "label": torch.tensor([1, 0]).reshape(1, 1, 1, 1, 2), "case_id": ["a"]}
    ]
    record = DynamicsRecord(["a"], ["x"], num_classes=2)
    slopes = {1: 2.0, 2: 6.0}  # the "training" sets w1 per epoch; input gradients (w1, w0) = (slope, 0) (test_scores)

    def step(engine, batch):
        with torch.no_grad():
            net.weight[1] = slopes[engine.state.epoch]
        return {}

    engine = Engine(step)
    CheckpointScorer(record, tmp_path, net, loader, loss_function=_ce, interval=1).attach(engine)
    RecordWriter(record, tmp_path).attach(engine)
    engine.run([0], max_epochs=2)
    epochs, vog = record.score_matrix("vog")
    # per-voxel stds over the 2 checkpoints: |6 - 2| / 2 = 2 and 0 -> their mean, 1
    assert list(epochs) == [1, 2] and np.isnan(vog[0, 0]) and vog[0, 1] == pytest.approx(1.0, rel=1e-6)
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


def _scored_twice(tmp_path, item, seed=0):
    """The four checkpoint scores of one case at 2 checkpoints of a 3x3x3 conv (its zero padding equals
    zero-padded input, so the network's outputs at the real voxels do not depend on the padding)."""
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(2, 1, 3, 3, 3, generator=gen) for _ in range(2)]
    biases = [torch.randn(2, generator=gen) for _ in range(2)]
    net = torch.nn.Conv3d(1, 2, kernel_size=3, padding=1)

    def step(engine, batch):
        with torch.no_grad():
            net.weight.copy_(weights[engine.state.epoch - 1])
            net.bias.copy_(biases[engine.state.epoch - 1])
        return {}

    record = DynamicsRecord(["a"], ["x"], num_classes=2)
    engine = Engine(step)
    CheckpointScorer(record, tmp_path, net, [item], loss_function=_ce, interval=1).attach(engine)
    engine.run([0], max_epochs=2)
    return {name: record.score_matrix(name)[1][0] for name in ("vog", "grand_last_layer", "cleanlab", "monai_lq")}


def test_padding_a_case_leaves_its_checkpoint_scores_unchanged(tmp_path):
    from monai.data import MetaTensor
    from monai.transforms import SpatialPadd
    from scripts.data.transforms import PaddingMaskd

    gen = torch.Generator().manual_seed(1)
    image = torch.randn(1, 4, 4, 2, generator=gen)
    label = (torch.rand(1, 4, 4, 2, generator=gen) > 0.5).long()
    plain = {"image": image[None], "label": label[None], "case_id": ["a"]}
    # the same case zero-padded to twice its voxels (4 x 4 x 4), the mask from the transform's trace
    pad = SpatialPadd(["image", "label"], spatial_size=[4, 4, 4])
    padded = pad({"image": MetaTensor(image), "label": MetaTensor(label)})
    padded = PaddingMaskd("image", "mask")(padded)
    assert padded["image"].shape == (1, 4, 4, 4) and int(padded["mask"].sum()) == 32
    padded_item = {k: torch.as_tensor(padded[k])[None] for k in ("image", "label", "mask")}
    expected = _scored_twice(tmp_path / "plain", plain)
    got = _scored_twice(tmp_path / "padded", {**padded_item, "case_id": ["a"]})
    assert np.isnan(expected["vog"][0]) and expected["vog"][1] > 0
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, err_msg=name)
    # VoG by hand over the real voxels: gradient of the summed true-class logit of a linear conv is a
    # correlation of each class's kernel with the label map; compare with torch's own autograd of that sum
    grads = []
    for seed_epoch in range(2):
        gen = torch.Generator().manual_seed(0)
        weights = [torch.randn(2, 1, 3, 3, 3, generator=gen) for _ in range(2)]
        x = image[None].clone().requires_grad_(True)
        logits = torch.nn.functional.conv3d(x, weights[seed_epoch], padding=1)
        logits.gather(1, label[None]).sum().backward()
        grads.append(x.grad[0, 0].numpy())
    assert expected["vog"][1] == pytest.approx(np.std(np.stack(grads), axis=0).mean(), rel=1e-5)


def test_volume_scorer_with_a_padding_mask_scores_the_real_voxels_only(tmp_path):
    batch = _two_voxel_batch()
    # the same two items zero-padded to 4 voxels: confident background logits and label 0 there
    logits = torch.cat([batch["pred"], torch.tensor([[[5.0, 5.0], [-5.0, -5.0]]] * 2)], dim=2)
    label = torch.cat([batch["label"], torch.zeros(2, 1, 2, dtype=torch.long)], dim=2)
    mask = torch.tensor([[[1, 1, 0, 0]]] * 2)
    tables = {}
    for name, output, transform in (
        ("plain", batch, None),
        ("padded", {"pred": logits, "label": label}, lambda b: mask),
    ):
        record = DynamicsRecord(["a", "b"], ["x", "y"], num_classes=2)
        engine = Engine(lambda e, b, output=output: output)
        VolumeScorer(record, tmp_path / name, epoch=1, mask_transform=transform).attach(engine)
        engine.run([[{"case_id": "a"}, {"case_id": "b"}]], max_epochs=1)
        tables[name] = read_dynamics(tmp_path / name / "dynamics.csv")
    for column in ("dice", "el2n", "el2nx", "monai_lq", "cleanlab"):
        np.testing.assert_allclose(tables["padded"][column], tables["plain"][column], rtol=1e-6, err_msg=column)
    assert tables["plain"]["monai_lq"][0] == pytest.approx(0.375, rel=1e-6)  # by hand, test above
