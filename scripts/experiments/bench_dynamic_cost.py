"""What the dynamic mode's bookkeeping costs per epoch, measured side by side in one process (issue 26
item 3): a training epoch, the measurement pass over the dropped cases (as 0.7.0 makes it, and as
0.6.1 made it), the validation run, and the measurement on whole volumes.

    python -m scripts.experiments.bench_dynamic_cost --work_dir runs/bench_dynamic_cost [--epochs 3]
        [--dropped 0.1] [--repeats 3] [--preset configs/presets/hippocampus.yaml] [--overrides "{...}"]

It trains ``epochs`` epochs with configs/dynamic.yaml (the training epoch's seconds: the handler's own
``train_s`` of the epochs after the first, whose loader starts cold), then times, ``repeats`` times
interleaved, the measurement of the first ``dropped`` share of the training cases: from the cached
training data set in batches of ``batch_size`` cases (0.7.0) and re-read from disk one case a pass
(0.6.1), the validation run, and a measurement on whole volumes. Printed: seconds (median) and the
ratio to one training epoch; ``<work_dir>/bench.json`` holds every repeat.
"""

from __future__ import annotations

import csv
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.bundle import ConfigWorkflow
from monai.data import Dataset
from scripts.utils.atomic import write_json_atomic
from scripts.utils.cli import fire_strict

__all__ = ["run_bench", "format_rows"]

ROOT = Path(__file__).resolve().parents[2]


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def format_rows(epoch_s: float, timings: Mapping[str, Sequence[float]], when: Mapping[str, str]) -> str:
    """Markdown: per component its median seconds, the ratio to one training epoch and when it runs."""
    lines = ["| component | when | seconds (median) | × one training epoch |", "|---|---|---|---|",
             f"| training epoch (loop) | every epoch | {epoch_s:.3f} | 1.000 |"]  # fmt: skip
    for name, seconds in timings.items():
        median = statistics.median(seconds)
        lines.append(f"| {name} | {when.get(name, '')} | {median:.3f} | {median / epoch_s:.3f} |")
    return "\n".join(lines)


def run_bench(
    work_dir: str = "runs/bench_dynamic_cost",
    epochs: int = 3,
    dropped: float = 0.1,
    repeats: int = 3,
    preset: str | Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    work = Path(work_dir).resolve()
    presets = [preset] if isinstance(preset, str) else list(preset or [])
    configs = [str(ROOT / c) for c in ["configs/train.yaml", *presets, "configs/dynamic.yaml"]]
    settings = {"bundle_root": str(ROOT), "output_dir": str(work / "run"), "ckpt_dir": str(work / "models"),
                "epochs": int(epochs), "delta_t": 1, "val_interval": int(epochs), "dynamic_warmup": int(epochs),
                **dict(overrides or {})}  # fmt: skip
    workflow = ConfigWorkflow(config_file=configs, workflow_type="train",
                              logging_file=str(ROOT / "configs" / "logging.conf"), **settings)  # fmt: skip
    workflow.initialize()
    workflow.run()
    with (work / "run" / "dynamic_cost.csv").open(newline="") as f:
        cost = list(csv.DictReader(f))
    epoch_s = statistics.median(float(r["train_s"]) for r in cost[1:] or cost)

    parser = workflow.parser
    handler = parser.get_parsed_content("dynamic#handler")
    datalist = parser.get_parsed_content("train_datalist")
    rows = np.arange(max(1, round(dropped * len(datalist))))
    cached, batch = handler.measure_dataset, handler.measure_batch_size
    from_disk = Dataset(datalist, transform=parser.get_parsed_content("train#preprocessing"))
    volumes = Dataset(datalist, transform=parser.get_parsed_content("validate#preprocessing"))
    validator = parser.get_parsed_content("validate#evaluator")
    window = parser.get_parsed_content("validate#inferer")
    crops = handler.inferer

    def measure(dataset: Any, batch_size: int, inferer: Any) -> Callable[[], Any]:
        def run() -> Any:
            handler.measure_dataset, handler.measure_batch_size, handler.inferer = dataset, batch_size, inferer
            return handler._measure(rows)

        return run

    n, n_val = len(rows), len(parser.get_parsed_content("val_datalist"))
    parts = {
        f"measurement, {n} dropped cases' crops, cached, batches of {batch} (0.7.0)": measure(cached, batch, crops),
        f"measurement, {n} dropped cases' crops, from disk, one a pass (0.6.1)": measure(from_disk, 1, crops),
        f"validation, {n_val} volumes": validator.run,
        f"measurement, {n} dropped cases' whole volumes (dynamic_measure volumes)": measure(volumes, 1, window),
    }
    timings: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(int(repeats)):
        for name, fn in parts.items():
            timings[name].append(_timed(fn))
    when = {name: "every val_interval epochs and the last" if name.startswith("validation")
            else "every dynamic_measure_interval epochs" for name in parts}  # fmt: skip
    table = format_rows(epoch_s, timings, when)
    result = {"configs": configs, "settings": settings, "training_epoch_s": epoch_s, "timings": timings,
              "table": table}  # fmt: skip
    write_json_atomic(work / "bench.json", result)
    print(table)
    workflow.finalize()
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    fire_strict(run_bench, serialize=lambda _: None)
