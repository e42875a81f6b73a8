"""The prune workflow's glue: window choice, export round trip, bad input writes nothing."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from scripts.data.record import DynamicsRecord
from scripts.data.subset import choose_window, export_subset, select_subset
from scripts.data.synthetic import generate_dataset
from scripts.utils.flags import as_bool
from scripts.workflows.evaluate import center_summary
from scripts.workflows.prune import run_pruning

N = 10
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data"), num_train=N, num_val=2, num_test=3, shape=(16, 16, 16))


def _stage1(tmp_path, dataset, dice_by_case):
    """A fake stage-1 run dir: 4 epochs whose Dice per case is constant (so DAD = that value)."""
    train = load_decathlon_datalist(dataset, data_list_key="training")
    record = DynamicsRecord.from_datalist(train, 2)
    ids = [d["case_id"] for d in train]
    for epoch in range(1, 5):
        counts = np.array([[[10 * dice_by_case[c]], [10.0], [10.0]] for c in ids])
        record.add_epoch(epoch, "patches", ids, counts)
    run = tmp_path / "stage1"
    record.save(run / "dynamics.csv")
    (run / "run.json").write_text(json.dumps({"dataset_json": str(dataset), "delta_t": 2}))
    return run, ids


def test_choose_window():
    assert choose_window(40, 10) == (40, "the stop rule did not fire: the last full window, ending at epoch 40")
    assert choose_window(45, 10)[0] == 40
    assert choose_window(40, 10, {"fired": True, "prune_epoch": 20})[0] == 20
    assert choose_window(40, 10, {"fired": True, "prune_epoch": 20}, epoch=30)[0] == 30
    with pytest.raises(ValueError, match="outside the record"):
        choose_window(40, 10, epoch=50)
    with pytest.raises(ValueError, match="before a full window"):
        choose_window(5, 10)


def test_run_pruning_exports_the_ambiguous_band(tmp_path, dataset):
    # DAD = 0.05 * (index + 1): case 0 is the hardest; p = 0.4 drops 2 hardest and 2 easiest
    train_ids = [d["case_id"] for d in load_decathlon_datalist(dataset, data_list_key="training")]
    run, ids = _stage1(tmp_path, dataset, {c: 0.05 * (i + 1) for i, c in enumerate(train_ids)})
    out = tmp_path / "prune"
    summary = run_pruning(run, out, rate=0.4, report=False)
    assert summary["num_kept"] == 6 and summary["window"] == [3, 4]
    assert "did not fire" in summary["note"]

    kept = [d["case_id"] for d in load_decathlon_datalist(out / "subset_datalist.json", data_list_key="training")]
    assert kept == ids[2:8]
    original = {d["case_id"]: d for d in load_decathlon_datalist(dataset, data_list_key="training")}
    for entry in load_decathlon_datalist(out / "subset_datalist.json", data_list_key="training"):
        assert entry == original[entry["case_id"]]  # same entries, center kept
    for key in ("validation", "test"):  # the held-out cases are unchanged
        assert load_decathlon_datalist(out / "subset_datalist.json", data_list_key=key) == load_decathlon_datalist(
            dataset, data_list_key=key
        )
    with open(out / "selection.csv") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    assert rows[ids[0]]["rank"] == "1" and rows[ids[0]]["region"] == "hard" and rows[ids[0]]["kept"] == "0"
    assert rows[ids[-1]]["region"] == "easy" and rows[ids[4]]["region"] == "ambiguous"
    assert float(rows[ids[3]]["dad"]) == pytest.approx(0.2) and float(rows[ids[3]]["variability"]) == 0.0


def _files(path):
    return sorted(p.name for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rate": 1.2}, "prune rate"),
        ({"rate": 0.0}, "prune rate"),
        ({"strategy": "median"}, "unknown selection strategy"),
    ],
)
def test_bad_settings_write_nothing(tmp_path, dataset, kwargs, message):
    run, ids = _stage1(tmp_path, dataset, dict.fromkeys(load_ids(dataset), 0.5))
    out = tmp_path / "prune"
    with pytest.raises(ValueError, match=message):
        run_pruning(run, out, **{"rate": 0.3, "report": False, **kwargs})
    assert _files(out) == []


def load_ids(dataset):
    return [d["case_id"] for d in load_decathlon_datalist(dataset, data_list_key="training")]


def test_unknown_case_ids_write_nothing(tmp_path, dataset):
    record = DynamicsRecord(["stranger", *load_ids(dataset)], ["x"] * (N + 1), 2)
    record.add_epoch(1, "patches", ["stranger"], np.array([[[1.0], [2.0], [2.0]]]))
    selection = select_subset(record, 1, 1, 0.3)
    out = tmp_path / "prune"
    with pytest.raises(ValueError, match="stranger"):
        export_subset(selection, dataset, out)
    assert _files(out) == []


def test_missing_record_case_and_empty_record_write_nothing(tmp_path, dataset):
    record = DynamicsRecord(load_ids(dataset)[:-1], ["x"] * (N - 1), 2)
    record.add_epoch(1, "patches", load_ids(dataset)[:1], np.array([[[1.0], [2.0], [2.0]]]))
    out = tmp_path / "prune"
    with pytest.raises(ValueError, match="have no record"):
        export_subset(select_subset(record, 1, 1, 0.3), dataset, out)
    empty = DynamicsRecord(load_ids(dataset), ["x"] * N, 2)
    with pytest.raises(ValueError, match="empty"):
        select_subset(empty, 1, 1, 0.3)
    run = tmp_path / "stage1"
    run.mkdir()
    (run / "dynamics.csv").write_text("epoch,case_id,center,source,n_items,dice\n")
    (run / "run.json").write_text(json.dumps({"dataset_json": str(dataset), "delta_t": 2}))
    with pytest.raises(ValueError, match="empty"):
        run_pruning(run, out, report=False)
    assert _files(out) == []


def test_center_summary_hand_worked():
    # d: an empty label left empty (undefined): not in any mean, not in n, counted as undefined
    dice = {"a": 0.2, "b": 0.4, "c": 0.9, "d": float("nan")}
    summary = center_summary(dice, {"a": "x", "b": "x", "c": "y", "d": "y"})
    assert summary["x"] == pytest.approx({"mean": 0.3, "std": 0.1, "n": 2, "n_undefined": 0})
    assert summary["y"] == pytest.approx({"mean": 0.9, "std": 0.0, "n": 1, "n_undefined": 1})
    assert summary["overall"]["mean"] == pytest.approx(0.5)
    assert summary["overall"]["n"] == 3 and summary["overall"]["n_undefined"] == 1
    with pytest.raises(ValueError, match="missing from the data list"):
        center_summary({"z": 1.0}, {"a": "x"})


@pytest.mark.parametrize(
    "value, expected", [(True, True), ("false", False), ("True", True), ("0", False), (None, False)]
)
def test_as_bool(value, expected):
    assert as_bool(value) is expected


def test_as_bool_rejects_garbage():
    with pytest.raises(ValueError, match="early_prune"):
        as_bool("maybe", "early_prune")


def test_subset_exported_when_the_stop_rule_fires(tmp_path, dataset):
    from ignite.engine import Engine, Events
    from scripts.handlers import MovingDistanceHandler, SubsetExportHandler

    ids = load_ids(dataset)
    record = DynamicsRecord(ids, ["x"] * N, 2)
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _record(e):
        # windows of 2: the ranking moves between windows 1 and 2, then stands still -> fires at epoch 6
        dice = [0.05 * (i + 1) if e.state.epoch <= 2 else 0.05 * (N - i) for i in range(N)]
        record.add_epoch(e.state.epoch, "patches", ids, np.array([[[10 * d], [10.0], [10.0]] for d in dice]))

    MovingDistanceHandler(record, tmp_path / "stage1", delta_t=2, early_prune="true").attach(engine)
    SubsetExportHandler(record, dataset, tmp_path / "subset", delta_t=2, rate=0.4, strategy="hard").attach(engine)
    engine.run([0], max_epochs=20)
    assert engine.state.epoch == 6
    kept = [d["case_id"] for d in load_decathlon_datalist(tmp_path / "subset" / "subset_datalist.json")]
    # in window 5-6 case i has DAD 0.05 * (N - i): the 6 hardest are the last 6 cases
    assert kept == ids[4:]
    assert json.loads((tmp_path / "subset" / "prune_summary.json").read_text())["window"] == [5, 6]


def test_stratified_selection_csv_region_agrees_with_kept():
    # two centers; center "hi" is easy overall, so global bands would call all of it easy and all of
    # "lo" hard, while the per-center selection keeps the middle of each
    ids = [f"c{i}" for i in range(10)]
    centers = ["lo"] * 5 + ["hi"] * 5
    dad = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    record = DynamicsRecord(ids, centers, 2)
    for epoch in (1, 2):
        record.add_epoch(epoch, "patches", ids, np.array([[[10 * d], [10.0], [10.0]] for d in dad]))
    sel = select_subset(record, 2, 2, rate=0.4, strategy="ambiguous", stratify=True)
    # 4 drops, 2 per center: the hardest and the easiest of each
    assert [c for c, k in zip(ids, sel.kept) if k] == ["c1", "c2", "c3", "c6", "c7", "c8"]
    np.testing.assert_array_equal(sel.kept, sel.region == "ambiguous")
    assert list(sel.region[:5]) == ["hard", "ambiguous", "ambiguous", "ambiguous", "easy"]
    assert list(sel.rank) == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]


def test_retraining_reads_the_epochs_stage1_trained(tmp_path, dataset):
    """Stage 1 stopped at epoch 4 (say, by the stop rule); the retraining's budget follows from 4, not from
    a number in retrain.yaml: 10 cases, 6 kept (p = 0.4) -> round(4 * 10 / 6) = 7 epochs."""
    from monai.bundle import ConfigParser
    from scripts.data.subset import record_epochs, stage1_epochs_of

    train_ids = [d["case_id"] for d in load_decathlon_datalist(dataset, data_list_key="training")]
    run, _ = _stage1(tmp_path, dataset, {c: 0.05 * (i + 1) for i, c in enumerate(train_ids)})
    record_epochs(run, 4)
    assert json.loads((run / "run.json").read_text())["epochs_trained"] == 4
    out = tmp_path / "prune"
    assert run_pruning(run, out, rate=0.4, report=False)["stage1_epochs"] == 4
    parser = ConfigParser()
    parser.read_config([ROOT / "configs" / "train.yaml", ROOT / "configs" / "retrain.yaml"])
    parser["subset_dir"] = str(out)
    assert parser.get_parsed_content("stage1_epochs") == 4
    assert parser.get_parsed_content("epochs") == 7
    subset = json.loads((out / "subset_datalist.json").read_text())
    del subset["pruning"]["stage1_epochs"]
    (tmp_path / "old.json").write_text(json.dumps(subset))
    with pytest.raises(ValueError, match="does not record stage 1's epochs"):
        stage1_epochs_of(tmp_path / "old.json")
