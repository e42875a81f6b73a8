"""Where a long multi-stage command is: each stage's start and end with its wall time and an estimate
of what remains, and the lines of a stage's log that mark its epochs echoed to the console while the
full output goes to the stage's log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from scripts.utils.errors import DEBUG_NOTE

__all__ = ["StageProgress", "first_missing", "refusal_of", "run_logged", "PROGRESS_PATTERN"]

# epoch summaries (MONAI StatsHandler), the DAD line of every epoch, the moving distance and stop rule
PROGRESS_PATTERN = re.compile(r"Epoch\[\d+\] Metrics|DADTracker|MovingDistanceHandler|Traceback|Error")


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class StageProgress:
    """Counts planned stages; estimates the rest from the mean wall time measured for each kind of stage
    (training, pruning, evaluating), or from the mean of all stages for a kind not run yet."""

    def __init__(self, total: int = 0, out: TextIO | None = None) -> None:
        self.total = total
        self.out = out
        self.done: list[tuple[str, float]] = []  # (kind, seconds)
        self.remaining_kinds: list[str] = []

    def plan(self, kinds: Sequence[str]) -> None:
        self.total, self.done, self.remaining_kinds = len(kinds), [], list(kinds)

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def estimate_left(self) -> float | None:
        """Seconds the stages not yet finished should take; None before any stage has finished."""
        if not self.done:
            return None
        overall = sum(t for _, t in self.done) / len(self.done)
        means = {k: [t for kk, t in self.done if kk == k] for k in {k for k, _ in self.done}}
        return sum(sum(means[k]) / len(means[k]) if k in means else overall for k in self.remaining_kinds)

    def start(self, kind: str, label: str) -> float:
        n = len(self.done) + 1
        total = f"/{self.total}" if self.total else ""
        left = self.estimate_left()
        eta = f"; about {_fmt(left)} left" if left is not None else ""
        self._print(f"[stage {n}{total}] {label}: started {time.strftime('%H:%M:%S')}{eta}")
        return time.perf_counter()

    def end(self, kind: str, label: str, started: float) -> float:
        wall = time.perf_counter() - started
        self.done.append((kind, wall))
        if kind in self.remaining_kinds:
            self.remaining_kinds.remove(kind)
        left = self.estimate_left()
        n = len(self.done)
        total = f"/{self.total}" if self.total else ""
        tail = f"; about {_fmt(left)} left" if self.remaining_kinds and left is not None else ""
        self._print(f"[stage {n}{total}] {label}: done in {_fmt(wall)}{tail}")
        return wall


def run_logged(
    cmd: Sequence[str], cwd: str | os.PathLike, log_file: Path, prefix: str = "  ", echo: bool = True
) -> int:
    """Run ``cmd``, writing all its output to ``log_file`` and (with ``echo``) the progress lines to stdout;
    returns the exit code."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if echo and PROGRESS_PATTERN.search(line):
                print(prefix + line.rstrip().split(" - INFO - ")[-1], flush=True)
        return proc.wait()


def first_missing(folder: Path) -> Path | None:
    """The outermost folder on the way to ``folder`` that does not exist yet (what a run would make), or None."""
    folder, missing = Path(os.path.abspath(folder)), None
    while not folder.exists() and folder != folder.parent:
        folder, missing = folder.parent, folder
    return missing


def refusal_of(log_file: Path, made: Path | None = None) -> str | None:
    """What a stage that refused its input printed last (the lines after ``errors.install_hook``'s note),
    or None when it failed otherwise (its log, with the traceback, is kept then). A refused stage ran
    nothing, so its log, which holds only that refusal, is removed, and with it the folders ``made`` for it
    (``first_missing`` before the run) when they are left empty: the work folder is as it was."""
    text = log_file.read_text(errors="replace") if log_file.is_file() else ""
    if DEBUG_NOTE not in text:
        return None
    refusal = text.rsplit(DEBUG_NOTE, 1)[1].strip()
    log_file.unlink()
    folder = log_file.parent
    while made is not None and folder.is_relative_to(made) and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
    return refusal or None
