"""The record on disk at scale: one append per epoch equal to the whole-file write, a file cut anywhere
refused with its line, a resumed run cutting a torn file back to its checkpoint."""

import csv

import numpy as np
import pytest
import scripts.data.record as record_module
import torch
from ignite.engine import Engine, Events
from scripts.data.checks import DataError
from scripts.data.record import DynamicsRecord, read_dynamics
from scripts.handlers import DADTracker, RecordWriter
from scripts.handlers.score_handlers import CheckpointScorer, ScoreTracker

CASES = ["a", "b", "c", "d"]


def _ce(logits, label):
    return torch.nn.functional.cross_entropy(logits, label[:, 0].long())


def _fake_run(tmp_path, epochs=5, writer=True):
    """A fake trainer over 4 cases (2 crops each, 2 classes) with the DAD tracker, the patch scores every
    epoch, the checkpoint scores every 2nd epoch and a visit column, as a dynamic run writes it."""
    gen = torch.Generator().manual_seed(0)
    record = DynamicsRecord(CASES, ["x", "x", "y", "y"], num_classes=3)
    net = torch.nn.Conv3d(1, 3, kernel_size=1)
    loader = [{"image": torch.randn(1, 1, 2, 2, 2, generator=gen), "label": torch.randint(0, 3, (1, 1, 2, 2, 2),
               generator=gen), "case_id": [c]} for c in CASES]  # fmt: skip

    def step(engine, ids):
        label = torch.randint(0, 3, (len(ids), 1, 3, 3, 3), generator=gen)
        return {"pred": torch.randn(len(ids), 3, 3, 3, 3, generator=gen), "label": label}

    engine = Engine(step)
    batches = [["a", "a", "b", "b"], ["c", "c", "d"]]  # d: one crop; every case seen every epoch
    DADTracker(record, batch_transform=lambda ids: ids).attach(engine)
    ScoreTracker(record, tmp_path, loss_function=_ce, batch_transform=lambda ids: ids).attach(engine)
    CheckpointScorer(record, tmp_path, net, loader, scores=["monai_lq"], interval=2).attach(engine)
    statuses = np.array(["visited", "thinned", "visited", "measured"])
    visits = lambda e: record.set_visits(e.state.epoch, np.roll(statuses, e.state.epoch))  # noqa: E731
    engine.add_event_handler(Events.EPOCH_COMPLETED, visits)
    if writer:
        RecordWriter(record, tmp_path).attach(engine)
    engine.run(batches, max_epochs=epochs)
    return record


def test_the_per_epoch_appends_equal_the_whole_file_write(tmp_path, monkeypatch):
    calls = []
    for name in ("append_rows", "write_table"):
        real = getattr(record_module, name)
        monkeypatch.setattr(record_module, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    record = _fake_run(tmp_path, epochs=5)
    writes = list(calls)
    appended = (tmp_path / "dynamics.csv").read_bytes()
    whole = record.save(tmp_path / "whole.csv").read_bytes()
    assert appended == whole
    header = appended.split(b"\n")[0].decode()
    assert header.endswith("dice_class1,dice_class2,visit,el2n,el2nx,loss,monai_lq")
    # one write per epoch however many handlers fill it: the whole file at epoch 1 and at epoch 2, where the
    # checkpoint score's column first appears (the file is rewritten with it), then one append per epoch
    assert writes == ["write_table", "write_table", "append_rows", "append_rows", "append_rows"]
    table = read_dynamics(tmp_path / "dynamics.csv")
    assert len(table["epoch"]) == 5 * len(CASES)
    assert np.isnan(table["monai_lq"][table["epoch"] == 1]).all() and not np.isnan(table["monai_lq"][4:8]).any()


def test_a_change_to_an_earlier_epoch_rewrites_the_whole_file(tmp_path):
    record = _fake_run(tmp_path, epochs=3)
    record.merge_cases(2, [0], np.array([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]]), np.array([1]))
    record.write(tmp_path / "dynamics.csv")
    assert (tmp_path / "dynamics.csv").read_bytes() == record.save(tmp_path / "whole.csv").read_bytes()
    assert read_dynamics(tmp_path / "dynamics.csv")["dice_class1"][4] == 1.0  # case a at epoch 2


def _saved(tmp_path, epochs=3):
    record = DynamicsRecord(["a", "b"], ["x", "x"], num_classes=2)
    for e in range(1, epochs + 1):
        record.add_epoch(e, "patches", ["a", "b"], np.array([[[e], [7.0], [6.0]], [[1.0], [3.0], [5.0]]]))
    return record, record.save(tmp_path / "dynamics.csv")


def test_a_file_cut_inside_its_last_number_is_refused_with_the_line(tmp_path):
    _, path = _saved(tmp_path)
    text = path.read_text()
    assert text.endswith("0.25\n")  # case b, epoch 3: 2*1/(3+5)
    path.write_text(text[:-3])  # "...,0.2": a number that reads as one, without its newline
    with pytest.raises(DataError, match=rf"{path}, line 7: the row ends without its newline"):
        read_dynamics(path)
    with pytest.raises(DataError, match="line 7"):
        DynamicsRecord.load(path)


def test_a_file_cut_between_rows_of_an_epoch_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))  # epoch 3 keeps case a only
    with pytest.raises(DataError, match=rf"{path}, line 6: epoch 3 has rows for 1 of the 2 cases"):
        read_dynamics(path)


def test_a_cell_that_is_not_a_number_and_a_case_id_with_a_comma(tmp_path):
    record = DynamicsRecord(["a,1", "NA"], ["x", "y"], num_classes=2)
    record.add_epoch(1, "patches", ["a,1", "NA"], np.array([[[1.0], [2.0], [2.0]], [[0.0], [1.0], [0.0]]]))
    path = record.save(tmp_path / "dynamics.csv")
    table = read_dynamics(path)
    assert table["case_id"].tolist() == ["a,1", "NA"] and table["dice"].tolist() == [0.5, 0.0]
    path.write_text(path.read_text().replace(",0.5,", ",0.5x,"))
    with pytest.raises(DataError, match=rf"{path}, line 2: column 'dice': '0.5x' is not a number"):
        read_dynamics(path)


def test_resume_cuts_a_torn_file_back_to_the_checkpoint_and_appends_after_it(tmp_path):
    full, path = _saved(tmp_path, epochs=4)
    whole = path.read_bytes()
    lines = whole.decode().splitlines(keepends=True)
    torn = "".join(lines[:8]) + lines[8][:-4]  # epoch 4: case a whole, case b cut inside its Dice
    path.write_text(torn)
    resumed = DynamicsRecord(["a", "b"], ["x", "x"], num_classes=2)
    assert resumed.restore(path, up_to_epoch=3, cut_file=True) == [1, 2, 3]
    assert path.read_bytes() == "".join(lines[:7]).encode()  # header and epochs 1-3, cut in place
    resumed.add_epoch(4, "patches", ["a", "b"], np.array([[[4.0], [7.0], [6.0]], [[1.0], [3.0], [5.0]]]))
    resumed.write(path)
    assert path.read_bytes() == whole  # exactly one row per (case, epoch)
    with open(path, newline="") as f:
        keys = [(r["case_id"], r["epoch"]) for r in csv.DictReader(f)]
    assert len(keys) == len(set(keys)) == 8


def test_resume_before_any_recorded_epoch_starts_the_file_afresh(tmp_path):
    _, path = _saved(tmp_path, epochs=2)
    resumed = DynamicsRecord(["a", "b"], ["x", "x"], num_classes=2)
    assert resumed.restore(path, up_to_epoch=0, cut_file=True) == []
    resumed.add_epoch(1, "patches", ["a", "b"], np.array([[[1.0], [2.0], [2.0]], [[1.0], [2.0], [2.0]]]))
    resumed.write(path)
    assert read_dynamics(path)["epoch"].tolist() == [1, 1]


def test_views_grow_without_copying_and_cannot_be_written():
    record = DynamicsRecord(["a"], ["x"], 2)
    for e in (1, 2, 4, 3):  # an epoch recorded out of order takes its place
        record.add_epoch(e, "patches", ["a"], np.array([[[e], [8.0], [8.0]]]))
    epochs, dice = record.dice_matrix()
    assert epochs.tolist() == [1, 2, 3, 4] and dice[0].tolist() == [2 / 16, 4 / 16, 6 / 16, 8 / 16]
    with pytest.raises(ValueError):
        dice[0, 0] = 1.0
    window_epochs, window = record.dice_window(1, 3)
    assert window_epochs.tolist() == [2, 3] and window[0].tolist() == [4 / 16, 6 / 16]
