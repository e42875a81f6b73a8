"""The DAD tracker and the moving-distance handler on tiny Ignite engines with known outputs."""

import csv
import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from scripts.data.record import DynamicsRecord, read_dynamics
from scripts.handlers import DADTracker, MovingDistanceHandler, RecordWriter

CASES = [
    {"case_id": "a", "center": "c1"},
    {"case_id": "b", "center": "c1"},
    {"case_id": "c", "center": "c2"},
    {"case_id": "never_seen", "center": "c2"},
]


def _logits(classes: np.ndarray, num_classes: int) -> torch.Tensor:
    """Logits whose argmax is ``classes`` (shape (B, *spatial))."""
    return torch.nn.functional.one_hot(torch.as_tensor(classes), num_classes).movedim(-1, 1).float() * 5.0


def _independent_dice(preds: list[np.ndarray], labels: list[np.ndarray], num_classes: int) -> float:
    """Dice of one case from all of its crops laid end to end: per class 2|P∩Y|/(|P|+|Y|),
    then the mean over classes where it is defined."""
    p, y = np.concatenate([x.ravel() for x in preds]), np.concatenate([x.ravel() for x in labels])
    values = []
    for c in range(1, num_classes):
        denom = np.sum(p == c) + np.sum(y == c)
        if denom:
            values.append(2 * np.sum((p == c) & (y == c)) / denom)
    return float(np.mean(values)) if values else float("nan")


@pytest.mark.parametrize("buffer_voxels", [1, 200, 2**24])  # counted every iteration, every few, once an epoch
def test_tracker_patches_equals_independent_dice(tmp_path, buffer_voxels):
    rng = np.random.default_rng(0)
    num_classes, epochs = 3, 2
    # each iteration: a batch of 3 crops from cases (a, a, b) or (c, b, c); 4x4x4 crops
    plan = [["a", "a", "b"], ["c", "b", "c"]]
    batches = []
    for _ in range(epochs):
        for ids in plan:
            label = rng.integers(0, num_classes, size=(3, 4, 4, 4))
            pred = np.where(rng.random(label.shape) < 0.7, label, rng.integers(0, num_classes, size=label.shape))
            if ids[0] == "c":
                label[0] = 0  # case c's first crop: empty label, predicted foreground -> counts as misses
            batches.append((ids, pred, label))

    def step(engine, b):  # the batch is the index of the case list in ``plan``
        _, pred, label = batches[(engine.state.epoch - 1) * len(plan) + b]
        return {"pred": _logits(pred, num_classes), "label": torch.as_tensor(label)[:, None]}

    engine = Engine(step)
    record = DynamicsRecord.from_datalist(CASES, num_classes)
    DADTracker(record, batch_transform=lambda b: plan[b], buffer_voxels=buffer_voxels).attach(engine)
    RecordWriter(record, tmp_path).attach(engine)
    engine.run(list(range(len(plan))), max_epochs=epochs)

    table = read_dynamics(tmp_path / "dynamics.csv")
    assert len(table["epoch"]) == epochs * len(CASES)  # a row per case per epoch
    for e in (1, 2):
        its = batches[(e - 1) * 2 : e * 2]
        for case in ("a", "b", "c"):
            preds = [p[i] for ids, p, y in its for i, cid in enumerate(ids) if cid == case]
            labels = [y[i] for ids, p, y in its for i, cid in enumerate(ids) if cid == case]
            row = (table["epoch"] == e) & (table["case_id"] == case)
            assert table["dice"][row][0] == pytest.approx(_independent_dice(preds, labels, num_classes), abs=1e-7)
            assert table["n_items"][row][0] == len(preds)
        unseen = (table["epoch"] == e) & (table["case_id"] == "never_seen")
        assert np.isnan(table["dice"][unseen][0]) and table["n_items"][unseen][0] == 0
    assert set(table["center"][table["case_id"] == "c"]) == {"c2"}


def test_tracker_hand_worked_and_decollated_output(tmp_path):
    # one case, one 1x1x6 crop given as a decollated list (MONAI engines decollate their output)
    # class 1: Dice 0.5, class 2: Dice 2/3 -> case Dice 7/12
    label = np.array([1, 1, 0, 0, 2, 2]).reshape(1, 1, 6)
    pred = np.array([1, 0, 0, 0, 2, 1]).reshape(1, 1, 6)

    def step(engine, batch):
        return [{"pred": _logits(pred, 3)[0], "label": torch.as_tensor(label)}]

    engine = Engine(step)
    record = DynamicsRecord(["x"], ["k"], 3)
    DADTracker(record, batch_transform=lambda b: ["x"]).attach(engine)
    RecordWriter(record, tmp_path).attach(engine)
    engine.run([0], max_epochs=1)
    with open(tmp_path / "dynamics.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["dice"]) == pytest.approx(7 / 12)
    assert float(row["dice_class1"]) == pytest.approx(0.5)
    assert float(row["dice_class2"]) == pytest.approx(2 / 3)


def test_tracker_rejects_bad_settings(tmp_path):
    record = DynamicsRecord.from_datalist(CASES, 2)
    with pytest.raises(ValueError, match="unknown DAD mode"):
        DADTracker(record, mode="crops")
    with pytest.raises(ValueError, match="evaluator"):
        DADTracker(record, mode="volumes")
    with pytest.raises(ValueError, match="duplicate"):
        DynamicsRecord.from_datalist(CASES + CASES[:1], 2)


def _fill(record: DynamicsRecord, epoch: int, dice: dict[str, float]) -> None:
    """Counts that give exactly ``dice``: |P| = |Y| = 10, |P∩Y| = 10 * dice."""
    ids = list(dice)
    counts = np.array([[[10 * dice[c]], [10.0], [10.0]] for c in ids])
    record.add_epoch(epoch, "patches", ids, counts)


# per-epoch Dice of cases p and q; windows of 2 epochs:
# w1 (1-2): p (0.3, 0.1), q (0.5, 0)   w2 (3-4): p (0.7, 0), q (0.5, 0)   w3 (5-6): unchanged
# L(w1->w2) = |0.4| + |-0.1| = 0.5;  L(w2->w3) = 0 <= 1% of 0.5 -> prune at epoch 6
SCHEDULE = {1: (0.2, 0.5), 2: (0.4, 0.5), 3: (0.7, 0.5), 4: (0.7, 0.5), 5: (0.7, 0.5), 6: (0.7, 0.5)}


def _stop_run(tmp_path, early_prune):
    record = DynamicsRecord(["p", "q"], ["c1", "c2"], 2)
    handler = MovingDistanceHandler(record, tmp_path, delta_t=2, early_prune=early_prune)
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _record(e):
        if e.state.epoch in SCHEDULE:
            _fill(record, e.state.epoch, dict(zip("pq", SCHEDULE[e.state.epoch])))

    handler.attach(engine)
    engine.run([0], max_epochs=8 if not early_prune else 20)
    return engine, handler


def test_moving_distance_curve_and_stop_rule(tmp_path):
    engine, handler = _stop_run(tmp_path, early_prune=False)
    assert engine.state.epoch == 8  # no early stop
    with open(tmp_path / "moving_distance.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch_end"]) for r in rows] == [2, 4, 6, 8]
    assert rows[0]["distance"] == ""
    assert float(rows[1]["distance_abs"]) == pytest.approx(0.5)
    assert float(rows[1]["distance_signed"]) == pytest.approx(0.4 - 0.1)
    assert float(rows[2]["distance"]) == pytest.approx(0.0)
    assert [r["stop"] for r in rows[1:]] == ["0", "1", "0"]
    summary = json.loads((tmp_path / "stop_rule.json").read_text())
    assert summary["fired"] and summary["prune_epoch"] == 6


def test_early_prune_stops_training_at_the_prune_epoch(tmp_path):
    engine, handler = _stop_run(tmp_path, early_prune=True)
    assert engine.state.epoch == 6
    assert engine.state.prune_epoch == 6


def test_rule_not_fired_is_reported(tmp_path):
    record = DynamicsRecord(["p"], ["c1"], 2)
    for e, d in enumerate([0.1, 0.2, 0.4, 0.5], start=1):
        _fill(record, e, {"p": d})
    handler = MovingDistanceHandler(record, tmp_path, delta_t=2)
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([0], max_epochs=4)
    summary = json.loads((tmp_path / "stop_rule.json").read_text())
    assert summary["fired"] is False and summary["prune_epoch"] is None
    assert "not fired" in summary["note"]


def test_overlap_rule_fires_when_consecutive_subsets_agree(tmp_path):
    # window 1 (epochs 1-2): DAD_i = i/10 -> ambiguous p=0.4 keeps {2..7}
    # windows 2, 3: DAD_i = ((i+3) % 10)/10 -> keeps {0,1,2,3,4,9}; Jaccard(w1, w2) = 3/9, (w2, w3) = 1
    ids = [f"k{i}" for i in range(10)]
    record = DynamicsRecord(ids, ["c"] * 10, 2)
    for epoch in range(1, 7):
        shift = 0 if epoch <= 2 else 3
        _fill(record, epoch, {c: ((i + shift) % 10) / 10 for i, c in enumerate(ids)})
    handler = MovingDistanceHandler(
        record, tmp_path, delta_t=2, rule="overlap", overlap_threshold=0.9, overlap_rate=0.4
    )
    rows = handler.curve(6)
    assert rows[1]["kept_jaccard"] == pytest.approx(3 / 9)
    assert rows[2]["kept_jaccard"] == pytest.approx(1.0)
    assert [r["stop"] for r in rows[1:]] == [0, 1]
    with pytest.raises(ValueError, match="unknown stop rule"):
        MovingDistanceHandler(record, tmp_path, rule="patience")


def test_volumes_mode_scores_the_evaluator_every_interval(tmp_path):
    rng = np.random.default_rng(3)
    volumes = {c: rng.integers(0, 2, size=(1, 1, 6, 6, 6)) for c in ("a", "b")}
    preds = {c: np.where(rng.random(v.shape) < 0.8, v, 1 - v)[:, 0] for c, v in volumes.items()}

    def infer(engine, case):  # one whole volume per iteration, as sliding-window inference gives
        return {"pred": _logits(preds[case], 2), "label": torch.as_tensor(volumes[case])}

    evaluator = Engine(infer)
    runs = []
    evaluator.add_event_handler(Events.STARTED, lambda e: runs.append(1))
    cases = [{"case_id": "a", "center": "c"}, {"case_id": "b", "center": "c"}]
    evaluator_data = ["a", "b"]
    evaluator.run = lambda: Engine.run(evaluator, evaluator_data, max_epochs=1)  # as MONAI evaluators run()
    trainer = Engine(lambda e, b: None)
    record = DynamicsRecord.from_datalist(cases, 2)
    RecordWriter(record, tmp_path).attach(trainer)
    tracker = DADTracker(record, mode="volumes", evaluator=evaluator, interval=2, batch_transform=lambda case: [case])
    tracker.attach(trainer)
    trainer.run([0], max_epochs=5)
    assert len(runs) == 2  # epochs 2 and 4
    table = read_dynamics(tmp_path / "dynamics.csv")
    assert sorted(set(table["epoch"].astype(int))) == [2, 4]
    assert set(table["source"]) == {"volumes"}
    for case in ("a", "b"):
        expected = _independent_dice([preds[case]], [volumes[case][:, 0]], 2)
        assert table["dice"][table["case_id"] == case] == pytest.approx([expected, expected])


def test_window_without_measurements_has_no_distance_and_never_settles(tmp_path):
    # measured only at epochs 15 and 30 (volumes mode, interval 15) with windows of 10: window 1-10 and
    # 31-40 hold no measurement; L next to them is undefined (empty cell), not 0, and the rule does not fire
    record = DynamicsRecord(["p", "q"], ["c1", "c1"], 2)
    _fill(record, 15, {"p": 0.2, "q": 0.6})
    _fill(record, 30, {"p": 0.8, "q": 0.6})
    handler = MovingDistanceHandler(record, tmp_path, delta_t=10)
    rows = handler.curve(40)
    assert [r["measured"] for r in rows] == [0, 2, 2, 0]
    assert np.isnan(rows[1]["distance"]) and np.isnan(rows[3]["distance"])
    assert np.isnan(rows[3]["kept_jaccard"])
    assert rows[2]["distance"] == pytest.approx(0.6)
    assert [r["stop"] for r in rows[1:]] == [0, 0, 0]
    # the settings that produce such windows are refused up front
    with pytest.raises(ValueError, match="every 15 epochs, which does not divide the window of delta_t=10"):
        MovingDistanceHandler(record, tmp_path, delta_t=10, measure_interval=15)
    # one measurement per window leaves the noise rule no floor: said up front, not silently never firing
    with pytest.warns(UserWarning, match="noise stop rule needs at least 2 measured epochs per window"):
        MovingDistanceHandler(record, tmp_path, delta_t=10, rule="noise", measure_interval=10)


def test_stop_index_skips_undefined_distances():
    from scripts.core.dynamics import stop_index

    assert stop_index([1.0, float("nan"), 0.5, 0.005]) == 3
    assert stop_index([float("nan"), 1.0, float("nan")]) is None
