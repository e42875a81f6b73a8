"""A stage-1 run killed with SIGKILL mid-run and started again with --resume True goes on from its last
epoch checkpoint, and its record ends with exactly one row per (case, epoch), earlier epochs unchanged."""

import csv
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from scripts.data.synthetic import ensure_dataset

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6


def _saved_epoch(path):
    trainer = torch.load(path, weights_only=False)["trainer"]  # Ignite keeps iterations, not epochs
    return trainer["iteration"] // trainer["epoch_length"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cmd(tmp_path, *extra):
    settings = {
        "dataset_json": ensure_dataset(tmp_path / "data", num_train=8, num_val=2, num_test=2, shape=(32, 32, 32)),
        "output_dir": tmp_path / "out",
        "ckpt_dir": tmp_path / "models",
        "patch_size": "[16,16,16]",
        "epochs": EPOCHS,
        "delta_t": 2,
        "early_prune": False,  # every epoch is trained, whatever the stop rule says
        "val_interval": 3,
        "num_workers": 0,
        "score_checkpoints": True,  # VoG and the other checkpoint scores at every epoch: their state resumes too
        "score_interval": 1,
        "checkpoint_scores": "[vog,monai_lq]",
    }
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.yaml"]
    for k, v in settings.items():
        cmd += [f"--{k}", str(v)]
    return cmd + list(extra)


@pytest.mark.slow
def test_sigkill_then_resume_keeps_one_row_per_case_and_epoch(tmp_path):
    record = tmp_path / "out" / "dynamics.csv"
    proc = subprocess.Popen(_cmd(tmp_path), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if record.is_file() and max(int(r["epoch"]) for r in _rows(record)) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # mid-epoch 3, or between epoch 2's record and its checkpoint
    finally:
        proc.wait()
    before = _rows(record)
    saved_epoch = _saved_epoch(tmp_path / "models" / "resume.pt")
    assert 1 <= saved_epoch < EPOCHS

    result = subprocess.run(_cmd(tmp_path, "--resume", "True"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert f"continuing after epoch {saved_epoch}" in result.stdout + result.stderr

    after = _rows(record)
    counts = Counter((r["case_id"], int(r["epoch"])) for r in after)
    cases = {r["case_id"] for r in after}
    assert len(cases) == 8
    assert set(counts) == {(c, e) for c in cases for e in range(1, EPOCHS + 1)}  # none lost
    assert set(counts.values()) == {1}  # none duplicated
    # the epochs completed before the kill are unchanged
    completed = [r for r in before if int(r["epoch"]) <= saved_epoch]
    assert completed and completed == [r for r in after if int(r["epoch"]) <= saved_epoch]
    # the resumed run trained the remaining epochs only (its trainer started after the checkpoint)
    assert _saved_epoch(tmp_path / "models" / "resume.pt") == EPOCHS
    # VoG went on from the accumulators saved before the kill: defined from the second checkpoint on
    # (without them the first checkpoint after the resume was NaN, and VoG then covered only the epochs
    # after it), over all EPOCHS checkpoints at the end
    vog = {(r["case_id"], int(r["epoch"])): r["vog"] for r in after}
    assert all(vog[(c, 1)] == "" for c in cases)  # one checkpoint: no variance yet
    assert all(float(vog[(c, e)]) > 0 for c in cases for e in range(2, EPOCHS + 1))
    running = torch.load(tmp_path / "models" / "resume.pt", weights_only=False)["scores"]["running"]
    assert set(running) == cases and {r["count"] for r in running.values()} == {EPOCHS}


def test_restore_keeps_epochs_up_to_the_checkpoint_and_refuses_another_runs_record(tmp_path):
    import numpy as np
    from scripts.data.record import DynamicsRecord

    saved = DynamicsRecord(["a", "b"], ["x", "x"], 2)
    for epoch in (1, 2, 3):
        saved.add_epoch(epoch, "patches", ["a", "b"], np.array([[[epoch], [4.0], [4.0]], [[1.0], [2.0], [2.0]]]))
    saved.save(tmp_path / "dynamics.csv")
    fresh = DynamicsRecord(["a", "b"], ["x", "x"], 2)
    assert fresh.restore(tmp_path / "dynamics.csv", up_to_epoch=2) == [1, 2]
    epochs, dice = fresh.dice_matrix()
    assert list(epochs) == [1, 2] and dice[0].tolist() == [2 * 1 / 8, 2 * 2 / 8]
    other = DynamicsRecord(["a", "c"], ["x", "x"], 2)
    with pytest.raises(ValueError, match="another data set or run"):
        other.restore(tmp_path / "dynamics.csv", up_to_epoch=2)
