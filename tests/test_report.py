"""Tests of the audit report (scripts/report/markdown.py): figures exist and are real PNGs, the Markdown links them and
states the fault headline, the montage picks the right cases, optional inputs may be absent."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import fire
import matplotlib.image as mpimg
import numpy as np
import pytest
from scripts.data.synthetic import generate_dataset
from scripts.report import make_report
from scripts.report.figures import robust_window, target_slice
from scripts.report.inputs import montage_picks, read_selection

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("data_map.png", "moving_distance.png", "center_counts.png", "montage.png")
SEL_HEADER = ["case_id", "center", "dad", "variability", "region", "rank", "kept"]


def _write_csv(path: Path, header, rows) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _selection_rows(train_ids: list[str], train_centers: list[str]) -> list[list]:
    """12 cases over 3 centers: the 6 real training cases hold the 3 lowest and the 3 highest DAD (so the montage
    can show them), 5 extra cases sit in between, and one extra case has no DAD."""
    dads = {
        train_ids[0]: 0.05,
        train_ids[1]: 0.20,
        train_ids[2]: 0.30,
        train_ids[3]: 0.95,
        train_ids[4]: 0.92,
        train_ids[5]: 0.90,
    }
    centers = dict(zip(train_ids, train_centers))
    for i, dad in enumerate((0.40, 0.50, 0.60, 0.70, 0.80)):
        cid = f"x{i % 3 + 1}_{100 + i:04d}"
        dads[cid] = dad
        centers[cid] = f"center{i % 3 + 1}"
    ordered = sorted(dads, key=dads.get)  # hardest first
    n = len(ordered)
    rows = []
    for rank, cid in enumerate(ordered, start=1):
        region = "hard" if rank <= n // 3 else ("ambiguous" if rank <= 2 * n // 3 else "easy")
        kept = int(region == "ambiguous" or rank in (n // 3, n // 3 + 5))  # drop most hard and easy cases
        rows.append([cid, centers[cid], f"{dads[cid]:.3f}", f"{0.01 * rank:.3f}", region, rank, kept])
    rows.append(["x3_0199", "center3", "", "", "", "", 1])  # never measured
    return rows


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report")
    dataset_json = generate_dataset(root / "data", num_train=6, num_val=1, num_test=1, shape=(24, 24, 24), seed=0)
    training = json.loads(Path(dataset_json).read_text())["training"]
    ids = [e["case_id"] for e in training]
    centers = [e["center"] for e in training]
    sel_rows = _selection_rows(ids, centers)
    selection = _write_csv(root / "selection.csv", SEL_HEADER, sel_rows)
    curve = _write_csv(
        root / "moving_distance.csv",
        ["window", "epoch_start", "epoch_end", "distance_abs", "distance_signed", "distance", "max_distance"]
        + ["ratio", "stop"],
        [
            [1, 1, 10, "", "", "", "", "", ""],
            [2, 11, 20, 10.0, 2.0, 10.0, 10.0, 1.0, 0],
            [3, 21, 30, 0.05, -0.3, 0.05, 10.0, 0.005, 1],
            [4, 31, 40, 0.04, 0.01, 0.04, 10.0, 0.004, 0],
        ],
    )
    stop_rule = root / "stop_rule.json"
    stop_rule.write_text(
        json.dumps(
            {
                "rule": "moving_distance",
                "delta_t": 10,
                "stop_fraction": 0.01,
                "distance": "absolute",
                "fired": True,
                "prune_epoch": 30,
                "last_window_end": 40,
                "note": "the stop rule fired at epoch 30",
            }
        )
    )
    hardest_id = sel_rows[0][0]  # rank 1: hard, dropped
    ambiguous_id = next(r[0] for r in sel_rows if r[4] == "ambiguous")  # kept
    faults = _write_csv(
        root / "faults.csv",
        ["case_id", "center", "kind"],
        [[hardest_id, sel_rows[0][1], "missing"], [ambiguous_id, "center2", "shifted"]],
    )
    return {
        "root": root,
        "dataset_json": Path(dataset_json),
        "ids": ids,
        "selection": selection,
        "sel_rows": sel_rows,
        "curve": curve,
        "stop_rule": stop_rule,
        "faults": faults,
    }


def _check_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) > 5000, f"{path} is suspiciously small ({len(data)} bytes)"
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    image = mpimg.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100, image.shape


def test_full_report(inputs, tmp_path):
    out = tmp_path / "out"
    md_path = make_report(
        inputs["selection"],
        out,
        curve_csv=inputs["curve"],
        stop_rule_json=inputs["stop_rule"],
        faults_csv=inputs["faults"],
        datalist_json=inputs["dataset_json"],
        montage_cases=4,
        title="Test audit",
    )
    assert md_path == out / "report.md"
    for name in FIGURES:
        _check_png(out / name)
    assert not list(out.glob(".*.tmp")), "temporary files left behind"
    md = md_path.read_text()
    assert md.startswith("# Test audit")
    for link in ("![data map](data_map.png)", "![moving distance](moving_distance.png)"):
        assert link in md
    for name in FIGURES:
        assert f"]({name})" in md

    # the headline, computed independently from the CSV files
    with inputs["selection"].open() as f:
        sel = list(csv.DictReader(f))
    with inputs["faults"].open() as f:
        fault_ids = {r["case_id"] for r in csv.DictReader(f)}
    n_hard = sum(r["region"] == "hard" for r in sel)
    k_hard = sum(r["region"] == "hard" and r["case_id"] in fault_ids for r in sel)
    k_dropped = sum(r["kept"] == "0" and r["case_id"] in fault_ids for r in sel)
    m = len(fault_ids)
    assert (n_hard, k_hard, k_dropped, m) == (3, 1, 1, 2)
    assert f"{k_hard} of {m} planted faults are among the {n_hard} hardest cases" in md
    assert f"{k_dropped} of {m} planted faults were dropped" in md
    # stop rule, missing DAD, hardest list
    assert "fired" in md and "prune epoch **30**" in md
    assert "x3_0199" in md.split("## Cases with missing DAD")[1]
    hardest_section = md.split("hardest cases (lowest DAD)")[1].split("##")[0]
    assert inputs["sel_rows"][0][0] in hardest_section and "missing" in hardest_section
    # per-center table: kept + dropped per center add up
    for center in ("center1", "center2", "center3"):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {center} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert int(cells[2]) + int(cells[3]) == int(cells[1])


def test_montage_picks_hand_ranking():
    rows = [
        {"case_id": "a", "dad": 0.9, "rank": 6},
        {"case_id": "b", "dad": 0.1, "rank": 1},
        {"case_id": "c", "dad": float("nan"), "rank": None},
        {"case_id": "d", "dad": 0.5, "rank": 3},
        {"case_id": "e", "dad": 0.95, "rank": 7},
        {"case_id": "f", "dad": 0.3, "rank": 2},
        {"case_id": "g", "dad": 0.5, "rank": 4},  # tie with d: rank breaks it
        {"case_id": "h", "dad": 0.7, "rank": 5},
    ]
    assert montage_picks(rows, 2) == (["e", "a"], ["b", "f"])
    assert montage_picks(rows, 3) == (["e", "a", "h"], ["b", "f", "d"])
    # fewer than 2n measured cases: hardest first, easiest takes the rest without repeats
    easiest, hardest = montage_picks(rows, 5)
    assert hardest == ["b", "f", "d", "g", "h"]
    assert easiest == ["e", "a"]
    assert montage_picks(rows, 0) == ([], [])
    assert montage_picks([{"case_id": "z", "dad": float("nan"), "rank": None}], 3) == ([], [])


def test_montage_picks_from_selection_file(inputs):
    rows = read_selection(inputs["selection"])
    easiest, hardest = montage_picks(rows, 3)
    ids = inputs["ids"]
    assert hardest == ids[:3]  # DAD 0.05, 0.20, 0.30
    assert easiest == [ids[3], ids[4], ids[5]]  # DAD 0.95, 0.92, 0.90
    missing = next(r for r in rows if r["case_id"] == "x3_0199")
    assert math.isnan(missing["dad"]) and missing["region"] == "" and missing["rank"] is None


def test_optional_inputs_absent(inputs, tmp_path):
    out = tmp_path / "only_selection"
    md = make_report(inputs["selection"], out).read_text()
    _check_png(out / "data_map.png")
    _check_png(out / "center_counts.png")
    assert not (out / "moving_distance.png").exists()
    assert not (out / "montage.png").exists()
    assert "](montage.png)" not in md and "](moving_distance.png)" not in md
    assert "no datalist_json given" in md
    assert "planted faults are among" not in md
    assert "No stop_rule.json was given" in md


def test_stale_figures_removed_and_missing_paths_noted(inputs, tmp_path):
    out = tmp_path / "rerun"
    make_report(inputs["selection"], out, curve_csv=inputs["curve"], datalist_json=inputs["dataset_json"])
    assert (out / "montage.png").is_file() and (out / "moving_distance.png").is_file()
    with pytest.warns(UserWarning, match="not found"):
        md = make_report(inputs["selection"], out, curve_csv=tmp_path / "nope.csv").read_text()
    assert not (out / "montage.png").exists() and not (out / "moving_distance.png").exists()
    assert "nope.csv" in md


def test_single_window_curve_and_unfired_rule(inputs, tmp_path):
    curve = _write_csv(
        tmp_path / "one.csv",
        ["window", "epoch_start", "epoch_end", "distance_abs", "distance_signed", "distance", "max_distance"]
        + ["ratio", "stop"],
        [[1, 1, 10, "", "", "", "", "", ""]],
    )
    rule = tmp_path / "rule.json"
    rule.write_text(
        json.dumps(
            {
                "rule": "moving_distance",
                "delta_t": 10,
                "stop_fraction": 0.01,
                "distance": "absolute",
                "fired": False,
                "prune_epoch": None,
                "last_window_end": 10,
                "note": "not fired yet",
            }
        )
    )
    out = tmp_path / "one"
    md = make_report(inputs["selection"], out, curve_csv=curve, stop_rule_json=rule).read_text()
    _check_png(out / "moving_distance.png")
    assert "did not fire" in md and "not fired yet" in md


def test_empty_selection_raises(tmp_path):
    empty = _write_csv(tmp_path / "empty_selection.csv", SEL_HEADER, [])
    with pytest.raises(ValueError, match="empty_selection.csv"):
        make_report(empty, tmp_path / "out")
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(ValueError, match="blank.csv"):
        make_report(blank, tmp_path / "out")


def test_cli_via_fire(inputs, tmp_path):
    out = tmp_path / "cli"
    fire.Fire(make_report, command=["--selection_csv", str(inputs["selection"]), "--out_dir", str(out)])
    assert (out / "report.md").is_file()


def test_target_slice_and_window():
    label = np.zeros((6, 6, 5), dtype=np.uint8)
    label[1:3, 1:3, 1] = 1
    label[1:5, 1:5, 3] = 1
    assert target_slice(label, 5) == 3
    assert target_slice(np.zeros((4, 4, 7)), 7) == 3
    img = np.full((40, 40), -1000.0)
    img[10:30, 10:30] = np.linspace(0, 100, 400).reshape(20, 20)
    lo, hi = robust_window(img)
    assert -5 < lo < 5 and 95 < hi <= 100  # the window fits the body, not the air
    assert robust_window(np.zeros((5, 5))) == (0.0, 1.0)
