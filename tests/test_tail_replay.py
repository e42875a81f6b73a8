"""The tail replay on a hand-made full-data record: which cases each tail rule drops, and how many of
them are the planted faults, counted by hand."""

from __future__ import annotations

import json

import numpy as np
from scripts.data.record import DynamicsRecord
from scripts.experiments.tail_replay import replay_run

# 20 cases of one center: 2 planted faults far below a tight rest, then 2 clean hard cases
DAD = np.array([0.05, 0.10, 0.70, 0.72] + [0.80 + 0.01 * i for i in range(16)])


def _run_dir(tmp_path):
    ids = [f"c{i:02d}" for i in range(20)]
    record = DynamicsRecord(ids, ["a"] * 20, 2)
    pooled = np.stack([[[100.0 * d], [100.0], [100.0]] for d in DAD])
    for e in range(1, 9):
        record.add_pooled_epoch(e, "patches", pooled, np.ones(20, dtype=int))
    run = tmp_path / "run"
    record.save(run / "dynamics.csv")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "faults.csv").write_text("case_id,kind,severity\nc00,erode,severe\nc01,erode,severe\n")
    info = {"dataset_json": str(tmp_path / "data" / "dataset.json"), "delta_t": 2, "epochs": 8}
    (run / "run.json").write_text(json.dumps(info))
    return run


def test_replay_counts_drops_and_faults_by_hand(tmp_path):
    out = replay_run(_run_dir(tmp_path), warmup=2, rules=[("fraction", 0.2), ("z", 3.0)], anneal_fraction=0.25)
    assert (out["cases"], out["faults"], out["window"]) == (20, 2, 2)
    assert out["decisions"] == 4  # epochs 3..6: after the warm-up, before the last 2 (annealing)
    fraction = out["rules"]["fraction 0.2"]  # the 4 lowest: both faults and the two hard clean cases
    assert (fraction["mean_dropped"], fraction["mean_clean_dropped"], fraction["mean_recall"]) == (4.0, 2.0, 1.0)
    # median 0.855, MAD 0.05 (x 1.4826 = 0.074): z = -10.9, -10.2 for the faults, -2.1 and -1.8 next
    z = out["rules"]["z 3"]
    assert (z["mean_dropped"], z["mean_clean_dropped"], z["mean_recall"]) == (2.0, 0.0, 1.0)
