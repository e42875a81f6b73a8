"""Progress of long commands: stage start/end lines with wall time and what is left; the epoch lines of a
stage's output echoed to the console while all of it goes to the log file."""

import io
import sys
import time

from scripts.workflows.pipeline import planned_stages
from scripts.workflows.progress import StageProgress, run_logged


def test_stage_progress_estimates_from_measured_kinds():
    out = io.StringIO()
    progress = StageProgress(out=out)
    progress.plan(["training", "pruning", "training", "evaluating"])
    assert progress.estimate_left() is None  # nothing measured yet
    progress.start("training", "stage1")
    assert out.getvalue().startswith("[stage 1/4] stage1: started ") and "left" not in out.getvalue()
    wall = progress.end("training", "stage1", time.perf_counter() - 10)
    assert abs(wall - 10) < 0.5
    # pruning and evaluating not measured yet: the mean of all stages (10 s) stands in for them
    assert abs(progress.estimate_left() - 30) < 1
    progress.end("pruning", "prune", time.perf_counter() - 2)
    assert abs(progress.estimate_left() - (10 + 6)) < 1  # training 10 s, evaluating the overall mean 6 s
    progress.start("training", "retrain")
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("[stage 1/4] stage1: done in 10 s; about 30 s left")
    assert lines[2].startswith("[stage 2/4] prune: done in 2 s; about 16 s left")
    assert lines[3].startswith("[stage 3/4] retrain: started ") and lines[3].endswith("about 16 s left")


def test_planned_stages_match_the_pipeline():
    # stage 1 + prune; per seed: (a full-data run after the first seed) random prune, 2 retrains, 3 evaluations
    assert planned_stages(1) == ["training", "pruning", "pruning", "training", "training"] + ["evaluating"] * 3
    assert len(planned_stages(3)) == 2 + 6 * 3 + 2


def test_run_logged_echoes_epoch_lines_and_logs_everything(tmp_path, capsys):
    lines = [
        "2026-01-01 00:00:00,000 - INFO - Epoch[1] Metrics -- train_loss: 0.5000",
        "2026-01-01 00:00:00,000 - ignite.engine - INFO - Epoch[1] Complete. Time taken: 00:00:01",
        "2026-01-01 00:00:00,000 - DADTracker - INFO - epoch 1/2: loss 0.5000, mean DAD 0.4000 (patches ...)",
        "noise",
    ]
    code = "import sys; print(sys.argv[1])"
    log = tmp_path / "logs" / "stage.log"
    assert run_logged([sys.executable, "-c", code, "\n".join(lines)], tmp_path, log) == 0
    assert log.read_text().splitlines() == lines
    echoed = capsys.readouterr().out.splitlines()
    assert echoed == ["  Epoch[1] Metrics -- train_loss: 0.5000", "  " + lines[2].split(" - INFO - ")[1]]
    assert run_logged([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, log) == 3
