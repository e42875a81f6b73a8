"""AUROC / AUPRC by hand and against scikit-learn, and the fault-detection table of a tiny record."""

import csv
import json

import numpy as np
import pytest
from scripts.core.detection import auprc, auroc
from scripts.data.record import DynamicsRecord
from scripts.workflows.fault_detection import detection_rows, run_fault_detection, scores_at


def test_auroc_auprc_by_hand_with_a_tie():
    h, y = [3.0, 2.0, 1.0, 2.0], [False, False, False, False]
    assert np.isnan(auroc(h, y)) and np.isnan(auprc(h, y))
    y = [True, False, False, True]
    # pairs (pos, neg): 3>2, 3>1, 2=2 (half), 2>1 -> 3.5 / 4
    assert auroc(h, y) == pytest.approx(0.875)
    # thresholds 3: P=1, R=.5; 2 (tie of a fault and a clean case): P=2/3, R=1 -> .5 + .5 * 2/3
    assert auprc(h, y) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a missing score ranks as the hardest
    assert auroc([np.nan, 0.0, 1.0], [True, False, False]) == 1.0


def test_against_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        h = rng.integers(0, 6, 30).astype(float)  # many ties
        y = rng.random(30) < 0.3
        if y.all() or not y.any():
            continue
        assert auroc(h, y) == pytest.approx(metrics.roc_auc_score(y, h))
        assert auprc(h, y) == pytest.approx(metrics.average_precision_score(y, h))


def _record():
    ids = ["a", "b", "c", "d"]
    record = DynamicsRecord(ids, ["x", "x", "y", "y"], num_classes=2)
    # one crop per case, Dice = 2i / (p + y) with p = y = 10: a .9, b .8, c .2 (faulty), d .7
    for epoch in (1, 2):
        inter = np.array([9.0, 8.0, 2.0, 7.0])
        counts = np.stack([inter, np.full(4, 10.0), np.full(4, 10.0)], axis=1)[:, :, None]
        record.add_epoch(epoch, "patches", ids, counts)
        record.add_scores(epoch, {"el2n": [0.1, 0.2, 0.9, 0.3], "vog": [np.nan, 1.0, 0.5, 2.0]})
    return record


def test_scores_at_and_rows():
    record = _record()
    scores = scores_at(record, 2, 2)
    np.testing.assert_allclose(scores["dad"], [0.9, 0.8, 0.2, 0.7])
    np.testing.assert_allclose(scores["el2n"], [0.1, 0.2, 0.9, 0.3])
    np.testing.assert_array_equal(scores["forgetting"], [0, 0, 2, 0])  # c never learned: T = 2 epochs
    faults = {"c": {"kind": "eroded", "severity": "severe"}}
    rows = {(r["score"], r["kind"]): r for r in detection_rows(record.case_ids, scores, faults, 2)}
    assert rows[("dad", "all")]["auroc"] == 1.0 and rows[("el2n", "eroded/severe")]["auprc"] == 1.0
    # VoG: a is missing (left out, counted); c (.5) is below b (1) and d (2): c is last -> AUROC 0
    assert rows[("vog", "all")]["auroc"] == 0.0
    assert rows[("vog", "all")]["n_clean"] == 2 and rows[("vog", "all")]["n_missing_clean"] == 1
    assert rows[("dad", "all")]["prevalence"] == 0.25
    # per severity across kinds, each against the clean cases a (.9) and d (.7) only
    faults = {"c": {"kind": "eroded", "severity": "severe"}, "b": {"kind": "shifted", "severity": "mild"}}
    rows = {(r["score"], r["kind"]): r for r in detection_rows(record.case_ids, scores, faults, 2)}
    assert rows[("dad", "severity severe")]["auroc"] == 1.0  # c (.2) below both clean cases
    assert rows[("dad", "severity mild")]["auroc"] == 0.5  # b (.8) below a, above d
    assert rows[("dad", "severity mild")]["n_faults"] == 1 and rows[("dad", "severity mild")]["n_clean"] == 2


def test_cli_writes_the_table(tmp_path):
    record = _record()
    record.save(tmp_path / "dynamics.csv")
    (tmp_path / "run.json").write_text(json.dumps({"delta_t": 1, "dataset_json": str(tmp_path / "dataset.json")}))
    with (tmp_path / "faults.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["case_id", "center", "kind"], ["c", "y", "shifted"]])
    rows = run_fault_detection(str(tmp_path))
    assert {r["epoch"] for r in rows} == {1, 2}
    text = (tmp_path / "fault_detection.md").read_text()
    assert "| dad | 1.000 / 1.000 | 1.000 / 1.000 |" in text
    assert (tmp_path / "fault_detection.csv").read_text().startswith("epoch,score,kind")


def test_auprc_with_missing_scores_matches_scikit_learn_whatever_the_case_order():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for _ in range(20):
        h = rng.integers(0, 4, 24).astype(float)
        h[rng.random(24) < 0.3] = np.nan  # missing scores: all tied as the hardest
        y = rng.random(24) < 0.3
        if y.all() or not y.any():
            continue
        # scikit-learn takes no NaN: a finite value above every score ranks the same way
        expected = metrics.average_precision_score(y, np.where(np.isnan(h), 10.0, h))
        for _ in range(3):
            order = rng.permutation(24)
            assert auprc(h[order], y[order]) == pytest.approx(expected)
            assert auroc(h[order], y[order]) == pytest.approx(metrics.roc_auc_score(y, np.where(np.isnan(h), 10.0, h)))
    # the case: two missing scores (one fault), same AP in either order
    assert auprc([np.nan, np.nan, 1.0, 0.5], [True, False, False, True]) == pytest.approx(0.5)
    assert auprc([np.nan, np.nan, 1.0, 0.5], [False, True, False, True]) == pytest.approx(0.5)


def test_a_missing_score_is_no_free_hit():
    # EL2Nx is NaN for an emptied label: ranked as the hardest it "detected" the fault with AUROC 1
    ids = ["a", "b", "c", "d", "e"]
    scores = {"el2nx": np.array([0.2, 0.3, np.nan, 0.1, 0.5]), "el2n": np.array([0.2, 0.3, 0.4, 0.1, 0.5])}
    faults = {"c": {"kind": "emptied", "severity": ""}, "e": {"kind": "eroded", "severity": ""}}
    rows = {(r["score"], r["kind"]): r for r in detection_rows(ids, scores, faults, 1)}
    emptied = rows[("el2nx", "emptied")]
    assert np.isnan(emptied["auroc"]) and np.isnan(emptied["auprc"])  # no defined faulty case: nothing to rank
    assert (emptied["n_faults"], emptied["n_missing_faults"], emptied["n_clean"]) == (0, 1, 3)
    # all faults: e (.5) above the clean a, b, d -> AUROC 1 over the defined cases, c counted as missing
    everything = rows[("el2nx", "all")]
    assert everything["auroc"] == 1.0 and everything["n_faults"] == 1 and everything["n_missing_faults"] == 1
    assert everything["prevalence"] == 0.25
    from scripts.workflows.fault_detection import detection_cell

    assert detection_cell(emptied) == "– (1+0 missing)" and detection_cell(rows[("el2n", "all")]) == "1.000 / 1.000"
    # a score defined everywhere: c (.4) above a, b, d -> AUROC 1 on its own merits
    assert rows[("el2n", "emptied")]["auroc"] == 1.0 and rows[("el2n", "emptied")]["n_missing_faults"] == 0
