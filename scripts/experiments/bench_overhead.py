"""What DAD tracking costs: the same training with and without it, interleaved, in one process.

    python -m scripts.experiments.bench_overhead --pairs 3 --epochs 6
    python -m scripts.experiments.bench_overhead --overrides "{'amp': True}" --config_file "['configs/train.yaml', ...]"

Each pair trains the configuration twice from the same seed, once as configured (tracking on) and
once without the DAD handlers (``DADTracker``, ``MovingDistanceHandler``, ``SubsetExportHandler``);
the order alternates from pair to pair so a drifting machine load hits both arms alike. Epoch time
is measured from each epoch's start until every handler of its end has run (validation included,
in both arms). Printed: per-pair epoch times and their ratio, the median ratio, the time spent inside
the DAD handlers themselves (ignite's ``HandlersTimeProfiler``, both arms profiled alike: a direct
measure that a loaded machine does not blur), training cases per
second of each arm, and the time of one volumes-mode scoring pass (sliding-window inference over
every training volume plus the counts) per case. Everything also goes to ``<work_dir>/bench.json``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import HandlersTimeProfiler
from monai.bundle import ConfigWorkflow
from scripts.data.record import DynamicsRecord
from scripts.handlers import DADTracker
from scripts.utils.atomic import write_json_atomic
from scripts.utils.cli import fire_strict

__all__ = ["EpochTimer", "UNTRACKED", "run_bench", "train_once", "volume_pass_seconds"]

ROOT = Path(__file__).resolve().parents[2]
# the trainer's handlers without the three that make up DAD tracking
DAD_HANDLERS = ("DADTracker", "MovingDistanceHandler", "SubsetExportHandler")
UNTRACKED = {
    "train#trainer#train_handlers": "$[h for h in @train#handlers if not isinstance(h, (scripts.handlers.DADTracker,"
    " scripts.handlers.MovingDistanceHandler, scripts.handlers.SubsetExportHandler))]"
}


class EpochTimer:
    """Wall seconds of every epoch, from its start until all of its end handlers have run.

    Attach it after the trainer's own handlers, so that its end-of-epoch hook fires last.
    """

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._completed)

    def _started(self, _engine: Engine) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _completed(self, _engine: Engine) -> None:
        self._sync()
        self.seconds.append(time.perf_counter() - self._start)

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()


def _workflow(config_file: Sequence[str], overrides: Mapping[str, Any]) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=[str(c) for c in config_file],
        workflow_type="train",
        logging_file=str(ROOT / "configs" / "logging.conf"),
        **overrides,
    )


def train_once(config_file: Sequence[str], overrides: Mapping[str, Any], tracked: bool) -> dict[str, Any]:
    """Train once; return the epoch times, the number of training cases and the last mean loss."""
    workflow = _workflow(config_file, {**overrides, **({} if tracked else UNTRACKED)})
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    handlers = workflow.parser.get_parsed_content("train#trainer#train_handlers")
    if any(isinstance(h, DADTracker) for h in handlers) != tracked:
        raise RuntimeError(f"the {'tracked' if tracked else 'untracked'} arm got the wrong handlers: {handlers}")
    timer = EpochTimer()
    timer.attach(trainer)
    profiler = HandlersTimeProfiler()  # times every handler call: the DAD handlers' own share of the run
    profiler.attach(trainer)
    workflow.run()
    result = {
        "tracked": tracked,
        "epoch_seconds": timer.seconds,
        "seconds": sum(timer.seconds),
        "cases": len(workflow.parser.get_parsed_content("train_datalist")),
        "final_loss": float(trainer.state.metrics.get("train_loss", float("nan"))),
    }
    result["cases_per_second"] = result["cases"] * len(timer.seconds) / result["seconds"]
    result["dad_handler_seconds"] = dad_handler_seconds(profiler)
    result["dad_handler_share"] = result["dad_handler_seconds"] / result["seconds"]
    workflow.finalize()
    return result


def dad_handler_seconds(profiler: HandlersTimeProfiler) -> float:
    """Seconds spent inside the DAD handlers (every event, every call) during a profiled run."""
    total = 0.0
    for row in profiler.get_results():
        name, seconds = str(row[0]), row[2]
        if any(name == h or name.startswith(h + ".") for h in DAD_HANDLERS) and isinstance(seconds, float):
            total += seconds
    return total


def volume_pass_seconds(config_file: Sequence[str], overrides: Mapping[str, Any]) -> dict[str, float]:
    """Seconds of one volumes-mode scoring pass (inference over every training volume + counts), per case."""
    workflow = _workflow(config_file, overrides)
    workflow.initialize()
    evaluator = workflow.parser.get_parsed_content("train#volume_evaluator")
    datalist = workflow.parser.get_parsed_content("train_datalist")
    record = DynamicsRecord.from_datalist(datalist, workflow.parser.get_parsed_content("num_classes"))
    driver = Engine(lambda engine, batch: None)  # one "epoch" whose end runs the scoring pass
    DADTracker(record, mode="volumes", evaluator=evaluator).attach(driver)
    start = time.perf_counter()
    driver.run([0], max_epochs=1)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    workflow.finalize()
    return {"seconds": seconds, "cases": len(datalist), "seconds_per_case": seconds / len(datalist)}


def run_bench(
    pairs: int = 3,
    epochs: int = 6,
    config_file: str | Sequence[str] = "configs/train.yaml",
    overrides: Mapping[str, Any] | None = None,
    work_dir: str = "runs/bench",
    warmup_epochs: int = 1,
) -> dict[str, Any]:
    """Interleaved pairs of tracked / untracked trainings (same seed); print and return the ratios.

    A short untimed training first (``warmup_epochs``) pays the process's one-off start-up costs
    (thread pools, kernels, caches), which would otherwise fall on the first arm measured.
    """
    configs = [config_file] if isinstance(config_file, str) else list(config_file)
    configs = [str(c if Path(c).is_absolute() else ROOT / c) for c in configs]
    work = Path(work_dir).resolve()
    base = {"bundle_root": str(ROOT), "epochs": int(epochs), **dict(overrides or {})}
    if warmup_epochs > 0:
        warm = {"output_dir": str(work / "warmup"), "ckpt_dir": str(work / "warmup" / "models")}
        train_once(configs, {**base, **warm, "epochs": int(warmup_epochs)}, tracked=False)
    rows = []
    for k in range(pairs):
        order = (True, False) if k % 2 == 0 else (False, True)
        runs = {}
        for tracked in order:
            arm = "tracked" if tracked else "untracked"
            out = {"output_dir": str(work / f"pair{k}_{arm}"), "ckpt_dir": str(work / f"pair{k}_{arm}" / "models")}
            runs[arm] = train_once(configs, {**base, **out}, tracked)
        ratio = runs["tracked"]["seconds"] / runs["untracked"]["seconds"]
        rows.append({"pair": k + 1, "first": "tracked" if order[0] else "untracked", "ratio": ratio, **runs})
        print(
            f"pair {k + 1} ({rows[-1]['first']} first): tracked {runs['tracked']['seconds']:.2f} s, "
            f"untracked {runs['untracked']['seconds']:.2f} s, ratio {ratio:.3f}; DAD handlers "
            f"{runs['tracked']['dad_handler_seconds']:.2f} s ({runs['tracked']['dad_handler_share']:.2%})",
            flush=True,
        )
    out = {"output_dir": str(work / "volume_pass"), "ckpt_dir": str(work / "volume_pass" / "models")}
    volume = volume_pass_seconds(configs, {**base, **out})
    result = {
        "config_file": configs,
        "overrides": base,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "pairs": rows,
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "cases_per_second": {
            arm: statistics.median(r[arm]["cases_per_second"] for r in rows) for arm in ("tracked", "untracked")
        },
        "dad_handler_share": statistics.median(r["tracked"]["dad_handler_share"] for r in rows),
        "same_training": all(r["tracked"]["final_loss"] == r["untracked"]["final_loss"] for r in rows),
        "volume_pass": volume,
    }
    write_json_atomic(work / "bench.json", result)
    print(_table(result))
    return result


def _table(result: Mapping[str, Any]) -> str:
    lines = [
        "| pair | first | tracked epoch s | untracked epoch s | ratio | DAD handlers s (share) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["pairs"]:
        tracked, untracked = r["tracked"], r["untracked"]
        lines.append(
            f"| {r['pair']} | {r['first']} | {tracked['seconds']:.2f} | {untracked['seconds']:.2f} | {r['ratio']:.3f} "
            f"| {tracked['dad_handler_seconds']:.2f} ({tracked['dad_handler_share']:.2%}) |"
        )
    cps = result["cases_per_second"]
    volume = result["volume_pass"]
    lines += [
        "",
        f"median ratio tracked / untracked: {result['median_ratio']:.3f} ({result['device']})",
        f"time inside the DAD handlers, share of the tracked epoch time (median): {result['dad_handler_share']:.2%}",
        f"training cases per second (median): tracked {cps['tracked']:.2f}, untracked {cps['untracked']:.2f}",
        f"same final training loss in both arms of every pair: {result['same_training']}",
        f"volumes-mode scoring pass: {volume['seconds']:.2f} s for {volume['cases']} cases, "
        f"{volume['seconds_per_case']:.3f} s per case",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    fire_strict(run_bench, serialize=lambda _: None)  # the table is printed; the numbers are in bench.json
