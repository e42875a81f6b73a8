"""Stage 1 with the opt-in scores, then the `scoring` workflow from its checkpoint (tiny real runs)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scripts.data.record import read_dynamics
from scripts.data.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--patch_size", "[16,16,16]", "--num_workers", "0"]


def _bundle(workflow: str, configs: str, *overrides: str) -> None:
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", configs, *TINY, *overrides]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


@pytest.mark.slow
def test_stage1_scores_then_scoring_workflow(tmp_path):
    generate_dataset(tmp_path / "data", num_train=6, num_val=2, num_test=2, shape=(32, 32, 32))
    data, models = str(tmp_path / "data"), str(tmp_path / "models")
    _bundle(
        "training", "configs/train.yaml", "--dataset_dir", data, "--output_dir", str(tmp_path / "s1"),
        "--ckpt_dir", models, "--epochs", "2", "--val_interval", "1", "--delta_t", "1",
        "--score_patches", "True", "--score_checkpoints", "True", "--score_interval", "1",
    )  # fmt: skip
    table = read_dynamics(tmp_path / "s1" / "dynamics.csv")
    for col in ("el2n", "el2nx", "loss", "vog", "grand_last_layer", "cleanlab", "monai_lq"):
        assert col in table, col
    second = table["epoch"] == 2
    assert np.isnan(table["vog"][table["epoch"] == 1]).all() and (table["vog"][second] > 0).all()
    assert ((table["el2n"] > 0) & (table["el2n"] < np.sqrt(2))).all()

    out = tmp_path / "scoring"
    _bundle(
        "scoring", "['configs/train.yaml','configs/scoring.yaml']", "--dataset_dir", data,
        "--output_dir", str(out), "--checkpoint", models + "/model.pt",
    )  # fmt: skip
    scored = read_dynamics(out / "dynamics.csv")
    # every labelled case: the 6 training, 2 validation and 2 test cases
    assert list(scored["source"]) == ["volumes"] * 10 and set(scored["epoch"]) == {1}
    assert ((scored["cleanlab"] >= 0) & (scored["cleanlab"] <= 1)).all()
    assert (out / "prune" / "selection.csv").is_file() and (out / "prune" / "report" / "report.md").is_file()
    # the audit report names the model that scored the cases and the epochs it was trained
    title = (out / "prune" / "report" / "report.md").read_text().splitlines()[0]
    assert title.startswith("# Label audit of ") and f"scored by {models}/model.pt (" in title
    assert "| el2nx |" in (out / "fault_detection.md").read_text()


def test_audit_detection_leaves_missing_scores_out_instead_of_counting_them_as_hits():
    from scripts.workflows.scoring import audit_detection

    # el2nx (higher = harder): the empty label "f1" has no value; clean cases c1..c4, fault f2 hardest of all
    ids = ["c1", "c2", "c3", "c4", "f1", "f2"]
    scores = {"el2nx": np.array([0.1, 0.2, 0.3, 0.4, np.nan, 0.35])}
    faults = {"f1": {"kind": "whole_drop", "severity": "severe"}, "f2": {"kind": "erosion", "severity": "mild"}}
    rows = {r["group"]: r for r in audit_detection(ids, scores, faults)}
    # all faults: only f2 is ranked; above 3 of the 4 clean cases -> AUROC 3/4 (a free hit for f1 would give
    # 7/8); f1 counted as missing
    assert rows["all"]["auroc"] == pytest.approx(0.75)
    assert (rows["all"]["n_faults"], rows["all"]["n_missing_faults"], rows["all"]["n_missing_clean"]) == (1, 1, 0)
    # the severe group has only the missing case: no AUROC, and it says so
    assert np.isnan(rows["severity severe"]["auroc"]) and rows["severity severe"]["n_missing_faults"] == 1
    # p@k ranks the defined cases only: k = 10 > 5 counts all five, one of them a fault
    assert rows["all"]["p_at_10"] == pytest.approx(1 / 5)
