"""Out-of-fold audit (issue 17, item 2): fold assignment, the fold data lists, the merged record, the
precision@k and rank-average numerics, and one tiny real audit that goes on where it stopped."""

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata
from scripts.core.detection import precision_at_k
from scripts.data.folds import assign_folds, fold_datalists
from scripts.data.record import DynamicsRecord, read_dynamics
from scripts.scores.rank_average import rank_average
from scripts.workflows.audit import merge_folds, run_audit

IDS = [f"case{i:02d}" for i in range(23)]
CENTERS = ["A"] * 10 + ["B"] * 8 + ["C"] * 5


def test_every_case_is_in_exactly_one_fold_seeded_and_stratified_by_center():
    folds = assign_folds(IDS, 5, seed=3, groups=CENTERS)
    assert folds.shape == (23,) and set(folds.tolist()) == set(range(5))
    sizes = np.bincount(folds, minlength=5)
    assert sizes.sum() == 23 and sizes.max() - sizes.min() <= 1  # 23 = 5+5+5+4+4
    for center, n in (("A", 10), ("B", 8), ("C", 5)):
        per_fold = np.bincount(folds[np.array(CENTERS) == center], minlength=5)
        assert per_fold.sum() == n and per_fold.max() - per_fold.min() <= 1  # A: 2 in each fold
    assert (assign_folds(IDS, 5, seed=3, groups=CENTERS) == folds).all()
    assert not (assign_folds(IDS, 5, seed=4, groups=CENTERS) == folds).all()
    # without centers: 23 cases dealt to 5 folds, sizes 5,5,5,4,4 in some order
    assert sorted(Counter(assign_folds(IDS, 5, seed=0).tolist()).values()) == [4, 4, 5, 5, 5]
    with pytest.raises(ValueError, match="too few for 5 folds"):
        assign_folds(IDS[:4], 5)
    with pytest.raises(ValueError, match=">= 2"):
        assign_folds(IDS, 1)


def test_fold_datalists_train_on_the_other_folds_and_hold_out_one():
    entries = [
        {"case_id": c, "center": g, "image": f"{c}.nii.gz", "label": f"{c}_l.nii.gz"} for c, g in zip(IDS, CENTERS)
    ]
    folds = assign_folds(IDS, 4, seed=0, groups=CENTERS)
    held_all = []
    for k in range(4):
        train, held = fold_datalists(entries, folds, k)
        train_ids = {d["case_id"] for d in train["training"]}
        held_ids = [d["case_id"] for d in held["training"]]
        assert held_ids == [c for c, f in zip(IDS, folds) if f == k]
        assert train_ids == set(IDS) - set(held_ids) and "test" not in train
        assert [d["case_id"] for d in train["validation"]] == held_ids
        held_all += held_ids
    assert sorted(held_all) == sorted(IDS)  # every case held out exactly once
    # the source list's labels and modality go with both lists (the runs plan their classes from them)
    meta = {"labels": {"0": "background", "1": "organ"}, "modality": {"0": "MRI"}, "training": "not this"}
    train, held = fold_datalists(entries, folds, 0, meta=meta)
    for part in (train, held):
        assert part["labels"] == meta["labels"] and part["modality"] == meta["modality"]
    assert [d["case_id"] for d in train["training"]] == [c for c, f in zip(IDS, folds) if f != 0]


def _fold_record(ids, dice_tp):
    """A one-epoch record whose case i has counts (|P∩Y|, |P|, |Y|) = (tp, 10, 10): Dice tp / 10."""
    record = DynamicsRecord(ids, ["A"] * len(ids), 2)
    counts = np.array([[[tp], [10], [10]] for tp in dice_tp], dtype=float)
    record.add_epoch(1, "volumes", ids, counts)
    record.add_scores(1, {"el2n": [0.1 * tp for tp in dice_tp]})
    return record


def test_merged_out_of_fold_record_has_one_row_per_case_with_its_folds_values(tmp_path):
    ids = ["a", "b", "c", "d", "e"]
    folds = [1, 0, 1, 0, 2]
    parts = [_fold_record(["b", "d"], [2, 4]), _fold_record(["a", "c"], [6, 8]), _fold_record(["e"], [10])]
    merged = merge_folds(parts, ids, folds)
    merged.save(tmp_path / "m.csv")
    table = read_dynamics(tmp_path / "m.csv")
    assert table["case_id"].tolist() == ids  # one row per case, in the list's order
    tp = {"a": 6, "b": 2, "c": 8, "d": 4, "e": 10}
    assert np.allclose(table["dice"], [2 * tp[c] / 20 for c in ids])
    assert np.allclose(table["el2n"], [0.1 * tp[c] for c in ids])
    with pytest.raises(ValueError, match="fold 0's scored record"):
        merge_folds([parts[1], parts[0], parts[2]], ids, folds)


def test_precision_at_k_by_hand():
    h = [0.9, 0.8, 0.7, 0.7, 0.1]
    y = [True, False, True, False, True]
    assert precision_at_k(h, y, 1) == 1.0
    assert precision_at_k(h, y, 2) == 0.5
    # 3rd place: one of the two tied 0.7 cases (one faulty): (1 + 1 * 1/2) / 3
    assert precision_at_k(h, y, 3) == pytest.approx(0.5)
    assert precision_at_k(h, y, 4) == pytest.approx(0.5)
    assert precision_at_k(h, y, 20) == pytest.approx(3 / 5)  # k above n: all cases
    assert precision_at_k([np.nan, 0.5, 0.6], [True, False, False], 1) == 1.0  # missing ranks hardest
    with pytest.raises(ValueError, match="positive integer"):
        precision_at_k(h, y, 0)


def test_rank_average_matches_scipy_ranks():
    a = np.array([3.0, 1.0, 2.0, 2.0])
    b = np.array([0.1, 0.4, np.nan, 0.2])
    got = rank_average({"a": a, "b": b})
    ra = rankdata(a) / 4
    rb = np.full(4, np.nan)
    rb[[0, 1, 3]] = rankdata(b[[0, 1, 3]]) / 3
    assert np.allclose(got, [(ra[0] + rb[0]) / 2, (ra[1] + rb[1]) / 2, ra[2], (ra[3] + rb[3]) / 2])


@pytest.mark.slow
def test_a_two_fold_audit_scores_every_case_once_and_goes_on_where_it_stopped(tmp_path):
    from scripts.data.synthetic import generate_dataset

    content = json.loads(generate_dataset(tmp_path / "data", 4, 1, 1, 2, (32, 32, 32), 0.0).read_text())
    only = {k: v for k, v in content.items() if k not in ("validation", "test")}
    only["training"] = content["training"]
    (tmp_path / "data" / "train_only.json").write_text(json.dumps(only))
    settings = dict(epochs=1, val_interval=1, patch_size=[16, 16, 16], num_workers=0, delta_t=1, batch_size=2)
    out = tmp_path / "audit"
    result = run_audit(str(tmp_path / "data" / "train_only.json"), str(out), folds=2, report=False, **settings)
    with (out / "ranking.csv").open() as f:
        ranking = list(csv.DictReader(f))
    with (out / "folds.csv").open() as f:
        folds = {r["case_id"]: r["fold"] for r in csv.DictReader(f)}
    assert sorted(r["case_id"] for r in ranking) == sorted(folds) and len(folds) == 4
    assert all(r["fold"] == folds[r["case_id"]] and r["model"].startswith(f"fold{r['fold']}:") for r in ranking)
    assert {r["model_epochs"] for r in ranking} == {"1"}
    assert read_dynamics(out / "dynamics.csv")["case_id"].tolist() == [d["case_id"] for d in _cases(only)]
    assert result["cost"]["trainings"] == 2 and result["fold_sizes"] == [2, 2]
    for k in range(2):  # each held-out fold scored with the plan its fold's model trained with (issue 25)
        fold = out / f"fold{k}"
        scored = json.loads((fold / "scoring" / "run.json").read_text())
        assert scored["plan"] == str((fold / "models" / "plan.json").resolve())
        beside, trained = (json.loads((fold / d / "plan.json").read_text()) for d in ("models", "train"))
        assert beside == trained
    logs = {p: p.stat().st_mtime_ns for p in out.glob("fold*/*.log")}
    run_audit(str(tmp_path / "data" / "train_only.json"), str(out), folds=2, report=False, **settings)
    assert {p: p.stat().st_mtime_ns for p in out.glob("fold*/*.log")} == logs  # nothing ran again


def _cases(content):
    return [{"case_id": Path(d["image"]).name.removesuffix(".nii.gz")} for d in content["training"]]


def test_a_fold_list_trains_on_every_other_case_with_test_fraction_0(tmp_path):
    from scripts.data.lists import ensure_splits

    for name in ("a", "b", "c", "d"):
        for kind in ("img", "lab"):
            (tmp_path / f"{name}_{kind}.nii.gz").write_bytes(b"")
    entries = [{"image": f"{n}_img.nii.gz", "label": f"{n}_lab.nii.gz", "case_id": n} for n in "abcd"]
    train, _ = fold_datalists(entries, [0, 1, 0, 1], 1)
    (tmp_path / "fold.json").write_text(json.dumps(train))
    split = json.loads(Path(ensure_splits(tmp_path / "fold.json", tmp_path / "split.json", 0.1, 0.0)).read_text())
    assert [d["case_id"] for d in split["training"]] == ["a", "c"] and split["test"] == []
    assert [d["case_id"] for d in split["validation"]] == ["b", "d"]
    with pytest.raises(ValueError, match="too few to carve"):
        ensure_splits(tmp_path / "fold.json", tmp_path / "split2.json", 0.1, 0.2)  # 2 cases: no test part of 20%


def test_fold_trainings_run_under_a_launcher_with_the_multi_gpu_config(tmp_path):
    from scripts.workflows.audit import fold_commands

    cmds = fold_commands(
        tmp_path / "fold0", ["configs/presets/hippocampus.yaml"], {"epochs": 3}, "torchrun --nproc_per_node 2"
    )
    train, score = cmds["training"], cmds["scoring"]
    assert train[:4] == ["torchrun", "--nproc_per_node", "2", "-m"] and train[4:7] == [
        "monai.bundle",
        "run",
        "training",
    ]
    configs = json.loads(train[train.index("--config_file") + 1])
    assert [Path(c).name for c in configs] == ["train.yaml", "hippocampus.yaml", "multi_gpu_train.yaml"]
    assert train[train.index("--epochs") + 1] == "3" and train[train.index("--test_fraction") + 1] == "0"
    assert score[score.index("--checkpoint") + 1] == str(tmp_path / "fold0" / "models" / "checkpoint_final.pt")
    assert "multi_gpu_train.yaml" not in score[score.index("--config_file") + 1]  # scoring: one process


def test_the_report_title_names_each_model_once_with_its_epochs():
    from scripts.workflows.scoring import scored_by

    assert scored_by(["f1.pt", "f0.pt", "f1.pt"], [20, 20, 20]) == "f0.pt (20 epochs); f1.pt (20 epochs)"
    assert scored_by(["m.pt"], [None]) == "m.pt (unknown epochs)"
