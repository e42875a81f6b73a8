"""Dynamic pruning's glue: the record's visit column (old records unchanged), the sampler's share of an
epoch per rank (the loss weights: tests/test_weighted_loss.py), and real runs: two gloo ranks against one
process, and a run killed with SIGKILL and resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import Dataset
from scripts.core.dynamic_rule import DynamicSettings, epoch_rng, plan_epoch
from scripts.data.distributed import padding_case_ids
from scripts.data.record import DynamicsRecord, read_dynamics
from scripts.data.synthetic import ensure_dataset
from scripts.handlers.dynamic_cost import read_budget, write_cost
from scripts.handlers.dynamic_pruning import DynamicSampler, keep_the_epoch_count_in_charge

ROOT = Path(__file__).resolve().parents[1]
CASES = [f"c{i}" for i in range(10)]
DAD = np.array([0.05, 0.10, 0.50, 0.55, 0.60, 0.65, 0.80, 0.85, 0.90, 0.95])


def _counts(dice: float) -> np.ndarray:
    """(1, 3, 1) counts whose Dice is ``dice``: |P ∩ Y| = 100 dice, |P| = |Y| = 100."""
    return np.array([[[100.0 * dice], [100.0], [100.0]]])


def _record(n_epochs: int) -> DynamicsRecord:
    record = DynamicsRecord(CASES, ["a"] * 5 + ["b"] * 5, 2)
    for e in range(1, n_epochs + 1):
        record.add_pooled_epoch(e, "patches", np.concatenate([_counts(d) for d in DAD]), np.ones(10, dtype=int))
    return record


def test_visit_column_round_trips_and_old_records_stay_byte_identical(tmp_path):
    old = _record(2)
    old.save(tmp_path / "old.csv")
    text = (tmp_path / "old.csv").read_text()
    assert "visit" not in text.splitlines()[0]
    DynamicsRecord.load(tmp_path / "old.csv").save(tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == text  # a record without visits reads and writes as before

    record = _record(3)
    record.add_scores(1, {"loss": np.arange(10.0)})
    status = np.array(["visited"] * 7 + ["thinned", "dropped", "measured"])
    record.set_visits(2, status)
    record.save(tmp_path / "new.csv")
    header = (tmp_path / "new.csv").read_text().splitlines()[0].split(",")
    assert header[-3:] == ["dice_class1", "visit", "loss"]
    loaded = DynamicsRecord.load(tmp_path / "new.csv")
    assert loaded.score_names == ["loss"]
    epochs, visits = loaded.visit_matrix()
    assert epochs.tolist() == [1, 2, 3]
    assert visits[:, 1].tolist() == status.tolist() and set(visits[:, 0]) == {""}
    table = read_dynamics(tmp_path / "new.csv")
    assert table["visit"][10:20].tolist() == status.tolist()
    loaded.restore(tmp_path / "new.csv", up_to_epoch=1)
    assert set(loaded.visit_matrix()[1].ravel()) == {""}


def test_merge_cases_sets_only_the_measured_cases():
    record = DynamicsRecord(["a", "b", "c"], ["x"] * 3, 2)
    record.add_pooled_epoch(1, "patches", np.concatenate([_counts(0.5), _counts(0.0), _counts(0.9)]),
                            np.array([2, 0, 2]))  # fmt: skip
    assert np.isnan(record.dice_matrix()[1][1, 0])  # not seen: missing, not 0
    # b measured: |P ∩ Y| = 3, |P| = 4, |Y| = 4 -> 2 * 3 / 8 = 0.75
    record.merge_cases(1, [1], np.array([[[3.0], [4.0], [4.0]]]), np.array([1]))
    np.testing.assert_allclose(record.dice_matrix()[1][:, 0], [0.5, 0.75, 0.9])
    with pytest.raises(ValueError, match="epoch 2 is not recorded"):
        record.merge_cases(2, [1], np.array([[[3.0], [4.0], [4.0]]]), np.array([1]))


class _RankSampler(DynamicSampler):
    def __init__(self, *args, rank: int, world: int, **kw):
        super().__init__(*args, **kw)
        self._fake = (rank, world)

    def _world(self):
        return self._fake


def test_two_ranks_share_one_plan_and_visit_each_case_once_between_them():
    settings = DynamicSettings(epochs=40, warmup=2, window=2, drop_fraction=0.2, easy_fraction=0.4)
    record = _record(6)
    dataset = Dataset([{"case_id": c} for c in CASES])
    samplers = [_RankSampler(dataset, record, settings, seed=3, rank=r, world=2) for r in range(2)]
    for epoch in (7, 8, 9):
        for s in samplers:
            s.set_epoch(epoch)
        expected = plan_epoch(epoch, settings, epoch_rng(3, epoch), dice=record.dice_matrix()[1],
                              epochs=record.epochs, centers=record.centers)  # fmt: skip
        for s in samplers:
            np.testing.assert_array_equal(s.plan.status, expected.status)
        assert len(samplers[0]) == len(samplers[1])  # the same number of batches on each rank
        real, crops = Counter(), Counter()
        for s in samplers:
            padded = set(s.padding_indices())
            for row, k, w in s:  # (row, crops, weight) per visit
                if w > 0:
                    real[row] += 1
                    crops[row] += k
                    assert w == expected.weight[row] and k == 2, (row, k, w)
                else:  # a padding repeat: one crop at weight 0, and named as padding for the DAD tracker
                    assert row in padded and k == 1
        assert sorted(real) == sorted(expected.visits.tolist()) and set(real.values()) == {1}
        assert set(crops.values()) == {2}
        # the DAD tracker finds the padding through the loader
        loader = SimpleNamespace(sampler=samplers[1], dataset=dataset)
        padded_ids = padding_case_ids(loader)
        assert len(expected.visits) % 2 == 0 or padded_ids or padding_case_ids(SimpleNamespace(sampler=samplers[0]))


def test_cost_files_total_by_hand_and_give_the_random_arm_its_budget(tmp_path):
    rows = [
        {"epoch": 1, "phase": "warmup", "visits": 10, "crops": 20, "iterations": 3, "measure_items": 0, "train_s": 2.0,
         "measure_s": 0.0, "val_s": 0.0},
        {"epoch": 2, "phase": "prune", "visits": 8, "crops": 13, "iterations": 2, "measure_items": 4, "train_s": 1.5,
         "measure_s": 0.25, "val_s": 0.75},
    ]  # fmt: skip
    write_cost(tmp_path, rows, n_cases=10, num_crops=2, about={"seed": 3})
    summary = json.loads((tmp_path / "dynamic_summary.json").read_text())
    assert (summary["case_visits"], summary["crops"], summary["iterations"], summary["measure_items"]) == (18, 33, 5, 4)
    assert summary["visits_x_full"] == pytest.approx(18 / 20) and summary["crops_x_full"] == pytest.approx(33 / 40)
    assert (summary["train_s"], summary["measure_s"], summary["val_s"], summary["seed"]) == (3.5, 0.25, 0.75, 3)
    assert read_budget(tmp_path / "dynamic_cost.csv") == [10, 8]
    assert read_budget(tmp_path / "dynamic_cost.csv", "crops") == [20, 13]
    (tmp_path / "old.csv").write_text("epoch,visits\n1,10\n")
    with pytest.raises(ValueError, match="no 'crops' column"):
        read_budget(tmp_path / "old.csv", "crops")
    with pytest.raises(FileNotFoundError, match="run the dad arm first"):
        read_budget(tmp_path / "none.csv")


# ---- real runs (tiny: 7-8 cases, 16^3 patches, 24^3 / 32^3 volumes) ----

MODULE = ["-m", "monai.bundle", "run", "training", "--config_file"]
BUNDLE = [sys.executable, *MODULE]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# a fixed share of 15% dropped (no z threshold), so these tiny runs do drop and measure; the ranks and resume
# runs thin by crops (patch-level, issue 26: the same sampler, data set and handler as the case rule, which
# test_a_dynamic_run_with_short_pruned_epochs_trains_every_epoch runs)
DYNAMIC = ["--dynamic_warmup", "1", "--dynamic_drop_fraction", "0.15", "--dynamic_tail", "fraction",
           "--dynamic_measure_interval", "2", "--dynamic_anneal_fraction", "0.25"]  # fmt: skip
CROPS = ["--dynamic_unit", "crop"]


def _frozen(tmp_path: Path, out: str) -> list[str]:
    """A frozen network (learning rate 0, instance norm) scored on whole volumes: one process or two
    write the same record, so the rule must make the same decisions."""
    synthetic = {"num_train": 7, "num_val": 2, "num_test": 1, "shape": [24, 24, 24], "seed": 0, "num_centers": 2,
                 "fault_fraction": 0.3}  # fmt: skip
    return [
        *("--bundle_root", str(ROOT), "--dataset_json", ensure_dataset(tmp_path / "data", **synthetic)),
        *("--output_dir", str(tmp_path / out), "--ckpt_dir", str(tmp_path / out / "models")),
        *("--patch_size", "[16,16,16]", "--num_workers", "0"),
        *("--batch_size", "2", "--epochs", "3", "--val_interval", "3", "--learning_rate", "0.0"),
        *("--network_def#norm", "instance", "--dad_mode", "volumes", "--dad_interval", "1", "--delta_t", "1"),
        *DYNAMIC, *CROPS,
    ]  # fmt: skip


def _run(cmd: list[str]) -> str:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def _cost(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_gloo_ranks_make_the_single_process_decisions(tmp_path):
    _run([*BUNDLE, "['configs/train.yaml','configs/dynamic.yaml']", *_frozen(tmp_path, "single")])
    log = _run([*TORCHRUN, *MODULE, "['configs/train.yaml','configs/multi_gpu_train.yaml','configs/dynamic.yaml']",
                *_frozen(tmp_path, "multi"), "--backend", "gloo"])  # fmt: skip
    assert "the 2 ranks' plans agree" in log  # the handler compared the ranks' plans every epoch
    single, multi = (read_dynamics(tmp_path / d / "dynamics.csv") for d in ("single", "multi"))
    np.testing.assert_array_equal(multi["visit"], single["visit"])
    np.testing.assert_allclose(multi["dice"], single["dice"], rtol=0, atol=1e-6)
    assert {"dropped", "measured"} & set(single["visit"])  # the plan did prune: the comparison compares decisions
    assert "cropped" in set(single["visit"])  # and gave the settled easy cases 1 of their 2 crops
    costs = [_cost(tmp_path / d / "dynamic_cost.csv") for d in ("single", "multi")]
    assert [(r["visits"], r["crops"], r["cropped"]) for r in costs[0]] == [
        (r["visits"], r["crops"], r["cropped"]) for r in costs[1]]  # fmt: skip
    for rows in costs:
        for row in rows:
            # each visit trained its planned crops once between the ranks (the handler checks it per case):
            # 2 per visit, 1 per cropped visit
            assert int(row["trained_items"]) == int(row["crops"]) == 2 * int(row["visits"]) - int(row["cropped"])


def _resume_cmd(tmp_path: Path, *extra: str) -> list[str]:
    synthetic = {"num_train": 8, "num_val": 2, "num_test": 2, "shape": [32, 32, 32], "seed": 0, "num_centers": 2,
                 "fault_fraction": 0.25}  # fmt: skip
    return [
        *BUNDLE, "['configs/train.yaml','configs/dynamic.yaml']",
        *("--dataset_json", ensure_dataset(tmp_path / "data", **synthetic), "--output_dir", str(tmp_path / "out")),
        *("--ckpt_dir", str(tmp_path / "models")),
        *("--patch_size", "[16,16,16]", "--epochs", "6", "--delta_t", "2", "--val_interval", "6"),
        *("--num_workers", "0", "--batch_size", "2"),
        *DYNAMIC, *CROPS, *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_then_resume_restores_the_sampler_and_one_row_per_case_and_epoch(tmp_path):
    cost = tmp_path / "out" / "dynamic_cost.csv"
    proc = subprocess.Popen(_resume_cmd(tmp_path), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if cost.is_file() and len(_cost(cost)) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    checkpoint = torch.load(tmp_path / "models" / "resume.pt", weights_only=False)
    saved = int(checkpoint["epoch"])
    assert 2 <= saved < 6  # the kill may fall between epoch 3's cost row and its checkpoint
    state = checkpoint["trainer"]["dynamic_pruning"]  # the sampler's state rides in the trainer's
    assert [r["epoch"] for r in state["cost"]] == list(range(1, saved + 1))
    before = read_dynamics(tmp_path / "out" / "dynamics.csv")
    before_cost = _cost(cost)[:saved]

    log = _run([*_resume_cmd(tmp_path, "--resume", "True")])
    assert f"continuing after epoch {saved}" in log and f"dynamic pruning restored after epoch {saved}" in log
    after = read_dynamics(tmp_path / "out" / "dynamics.csv")
    pairs = Counter(zip(after["case_id"].tolist(), after["epoch"].astype(int).tolist()))
    assert set(pairs.values()) == {1} and len(pairs) == 8 * 6
    assert "" not in set(after["visit"])  # every (case, epoch) says what happened to it
    keep = before["epoch"] <= saved
    np.testing.assert_array_equal(after["visit"][after["epoch"] <= saved], before["visit"][keep])
    assert _cost(cost)[:saved] == before_cost and [int(r["epoch"]) for r in _cost(cost)] == list(range(1, 7))
    # every epoch's decisions, before and after the kill, are the rule's on the record of the epochs before it
    record = DynamicsRecord.load(tmp_path / "out" / "dynamics.csv")
    settings = DynamicSettings(epochs=6, warmup=1, window=2, drop_fraction=0.15, measure_interval=2,
                               anneal_fraction=0.25, unit="crop", num_crops=2)  # fmt: skip
    epochs, dice = record.dice_matrix()
    visits = record.visit_matrix()[1]
    cost_rows = _cost(cost)
    for e in range(1, 7):
        plan = plan_epoch(e, settings, epoch_rng(42, e), dice=dice[:, : e - 1], epochs=epochs[: e - 1],
                          centers=record.centers)  # fmt: skip
        assert visits[:, e - 1].tolist() == plan.status.tolist(), e
        assert int(cost_rows[e - 1]["crops"]) == int(cost_rows[e - 1]["trained_items"]) == plan.counts()["crops"], e
    assert {"dropped", "measured"} & set(visits.ravel())


def _shrinking_engine(guard: bool) -> Engine:
    """A plain Ignite engine whose epochs shrink after the first, as a dynamic run's do after its warm-up:
    8 iterations in epoch 1, then 2 (what DynamicPruning.epoch_started sets from the sampler)."""
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_STARTED)
    def _length(e: Engine) -> None:
        e.state.epoch_length = 8 if e.state.epoch == 1 else 2

    if guard:
        engine.add_event_handler(Events.EPOCH_COMPLETED, keep_the_epoch_count_in_charge)
    return engine


def test_shorter_epochs_do_not_end_the_run_before_its_last_epoch():
    # Ignite also ends a run once iteration >= epoch_length x max_epochs: with 8 + 2 + 2 iterations that is
    # 12 >= 2 x 6 after epoch 3, so without the guard a 6-epoch run stops after 3 (the bug: a 40-epoch
    # dynamic run of the embedded set stopped after 35, its annealing epochs never trained)
    unguarded = _shrinking_engine(guard=False)
    unguarded.run(range(8), max_epochs=6)
    assert unguarded.state.epoch == 3
    guarded = _shrinking_engine(guard=True)
    guarded.run(range(8), max_epochs=6)
    assert guarded.state.epoch == 6 and guarded.state.iteration == 8 + 5 * 2


@pytest.mark.slow
def test_a_dynamic_run_with_short_pruned_epochs_trains_every_epoch(tmp_path):
    # batch 1, 3 warm-up epochs of 8 iterations, then 1-3 cases an epoch (1 middle case, 6 easy ones
    # thinned at 0.9): Ignite's count (24 + ... >= epoch_length x 6) is reached before epoch 6
    synthetic = {"num_train": 8, "num_val": 2, "num_test": 1, "shape": [24, 24, 24], "seed": 0, "num_centers": 2,
                 "fault_fraction": 0.25}  # fmt: skip
    out = tmp_path / "out"
    _run([
        *BUNDLE, "['configs/train.yaml','configs/dynamic.yaml']",
        *("--dataset_json", ensure_dataset(tmp_path / "data", **synthetic), "--output_dir", str(out)),
        *("--ckpt_dir", str(tmp_path / "models"), "--patch_size", "[16,16,16]", "--num_workers", "0"),
        *("--batch_size", "1", "--epochs", "6", "--delta_t", "1", "--val_interval", "6"),
        *("--dynamic_warmup", "3", "--dynamic_drop_fraction", "0.125", "--dynamic_tail", "fraction"),
        *("--dynamic_easy_fraction", "0.75"),
        *("--dynamic_thin_ratio", "0.9", "--dynamic_anneal_fraction", "0.0"),
    ])  # fmt: skip
    assert json.loads((out / "run.json").read_text())["epochs_trained"] == 6
    cost = _cost(out / "dynamic_cost.csv")
    assert [int(r["epoch"]) for r in cost] == list(range(1, 7))
    # the validation (val_interval 6: at epoch 6 only) is timed apart from the training loop
    assert [float(r["val_s"]) > 0 for r in cost] == [False] * 5 + [True]
    assert all(float(r["train_s"]) > 0 for r in cost)
    # iterations: ceil(visits / batch 1) = the visits; the case rule trains 2 crops a visit
    assert all(int(r["iterations"]) == int(r["visits"]) and int(r["crops"]) == 2 * int(r["visits"]) for r in cost)
