"""Sampler padding and device-side counts: a case is counted once per epoch whatever the ranks."""

from collections import Counter

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.data import DistributedSampler as MonaiDistributedSampler
from scripts.core.counts import class_indices, foreground_counts_torch
from scripts.core.dynamics import foreground_counts
from scripts.data.distributed import padding_case_ids, padding_indices
from scripts.data.record import DynamicsRecord
from scripts.handlers import DADTracker
from torch.utils.data import DistributedSampler


@pytest.mark.parametrize("n, ranks", [(5, 2), (7, 3), (6, 4), (3, 4), (6, 2)])
def test_padding_is_exactly_the_repeats(n, ranks):
    data = list(range(n))
    samplers = [DistributedSampler(data, num_replicas=ranks, rank=r, shuffle=True, seed=3) for r in range(ranks)]
    for s in samplers:
        s.set_epoch(2)
    seen = Counter(i for s in samplers for i in s)
    padded = Counter(i for s in samplers for i in padding_indices(s))
    assert sum(seen.values()) == ranks * -(-n // ranks)  # every rank gets ceil(n / ranks) items
    assert seen - padded == Counter(range(n))  # without the padding: every item exactly once
    for s in samplers:  # the padding never repeats an item on the rank that holds its original
        own = [i for i in s if i not in padding_indices(s)]
        assert not set(own) & set(padding_indices(s))


def test_monai_sampler_without_even_division_pads_nothing():
    samplers = [MonaiDistributedSampler(list(range(5)), even_divisible=False, num_replicas=2, rank=r) for r in (0, 1)]
    assert [len(list(s)) for s in samplers] == [3, 2]
    assert [padding_indices(s) for s in samplers] == [[], []]


def test_padding_case_ids_names_the_repeated_case():
    data = [{"case_id": f"c{i}"} for i in range(5)]
    sampler = DistributedSampler(Dataset(data), num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(sampler.dataset, sampler=sampler, batch_size=2)
    assert padding_case_ids(loader) == {"c0"}  # positions 0..4 then c0 again at position 5 -> rank 1
    assert padding_case_ids(DataLoader(Dataset(data), batch_size=2)) == set()


def test_torch_counts_match_numpy():
    rng = np.random.default_rng(1)
    logits = torch.as_tensor(rng.normal(size=(3, 4, 5, 6, 7)), dtype=torch.float32)
    label = torch.as_tensor(rng.integers(0, 4, size=(3, 1, 5, 6, 7)))
    classes = class_indices(logits)
    assert torch.equal(classes, logits.argmax(dim=1))
    expected = foreground_counts(logits.numpy().argmax(axis=1), label[:, 0].numpy(), 4)
    np.testing.assert_array_equal(foreground_counts_torch(classes, label.float(), 4).numpy(), expected)
    with pytest.raises(ValueError, match="does not match"):
        foreground_counts_torch(classes, label[:, :, :4], 4)
    # label values of no class (-1, 4, 255) are no class's label; each item's counts stay its own
    odd = label.clone()
    odd[0, 0, 0] = -1
    odd[1, 0, 1] = 4
    odd[2, 0, 2] = 255
    expected = foreground_counts(logits.numpy().argmax(axis=1), odd[:, 0].numpy(), 4)
    np.testing.assert_array_equal(foreground_counts_torch(classes, odd, 4).numpy(), expected)


def _rank_record(rank: int, data: list[dict], crops: int) -> np.ndarray:
    """One rank's tracker (no process group: world size 1) over its DistributedSampler share; n_items."""
    sampler = DistributedSampler(Dataset(data), num_replicas=2, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(sampler.dataset, sampler=sampler, batch_size=2)

    def crop_ids(batch):  # every item yields `crops` crops in a row, as RandCropByPosNegLabeld's list
        return [c for c in batch["case_id"] for _ in range(crops)]

    def step(engine, batch):  # every crop predicted exactly
        label = torch.ones((len(crop_ids(batch)), 1, 2, 2, 2))
        return {"pred": torch.stack([-label[:, 0], label[:, 0]], dim=1), "label": label}

    engine = Engine(step)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: sampler.set_epoch(e.state.epoch))
    record = DynamicsRecord.from_datalist(data, 2)
    DADTracker(record, batch_transform=crop_ids).attach(engine)
    engine.run(loader, max_epochs=1)
    _, dice = record.dice_matrix()
    assert np.all((dice == 1.0) | np.isnan(dice))
    return np.array([int(row[4]) for row in record.rows()])  # the n_items column


def test_tracker_skips_padding_so_ranks_add_up_to_one_visit_per_case():
    data = [{"case_id": f"c{i}", "center": "x"} for i in range(5)]
    n0, n1 = _rank_record(0, data, crops=2), _rank_record(1, data, crops=2)
    assert n0.sum() == 3 * 2 and n1.sum() == 2 * 2  # rank 1 got 3 items too, its third (a repeat) is dropped
    np.testing.assert_array_equal(n0 + n1, np.full(5, 2))  # each case once, with its 2 crops


def test_gpu_check_device_accumulation_runs_on_cpu():
    from scripts.experiments.gpu_bench import check_device_accumulation

    # the same check the GPU script runs first; here the counts stay where the outputs are: the CPU
    assert check_device_accumulation(torch.device("cpu")) == "cpu"


def test_metatensor_outputs_are_counted_as_plain_tensors():
    from monai.data import MetaTensor
    from scripts.handlers.dad_tracker import _as_batch

    # decollated MetaTensor items that carry transform history, as MONAI's trainer returns them
    rng = np.random.default_rng(2)
    classes = rng.integers(0, 2, size=(3, 4, 4, 4))
    items = []
    for c in classes:
        item = MetaTensor(torch.nn.functional.one_hot(torch.as_tensor(c), 2).movedim(-1, 0).float())
        item.push_applied_operation({"class": "RandCropByPosNegLabeld", "orig_size": (8, 8, 8)})
        items.append(item)
    batch = _as_batch(items)
    assert type(batch) is torch.Tensor and batch.shape == (3, 2, 4, 4, 4)
    expected = foreground_counts(classes, classes, 2)  # predicted exactly: |P∩Y| = |P| = |Y|
    np.testing.assert_array_equal(foreground_counts_torch(class_indices(batch), _as_batch(items)[:, 1:], 2), expected)
