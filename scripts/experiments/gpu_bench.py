"""GPU readiness check: a short training with and without DAD tracking, mixed precision on.

    python -m scripts.experiments.gpu_bench                      # about 2-3 minutes on one recent GPU
    python -m scripts.experiments.gpu_bench --epochs 10 --pairs 1 --work_dir runs/gpu_bench

Needs a CUDA device (exits with a message otherwise). First checks that the tracker's counts stay on
the GPU between iterations (no per-iteration copy to the host), then runs ``scripts.experiments.bench_overhead``
on the default configuration with ``amp: True``: per-pair epoch times, the median tracked/untracked
ratio, training cases per second with and without tracking, and one volumes-mode scoring pass per case.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from ignite.engine import Engine, Events
from scripts.data.record import DynamicsRecord
from scripts.experiments.bench_overhead import run_bench
from scripts.handlers import DADTracker
from scripts.utils.cli import fire_strict

__all__ = ["check_device_accumulation", "gpu_bench"]


def check_device_accumulation(device: torch.device, iterations: int = 3) -> str:
    """Run the tracker on a few CUDA batches; return where the predictions it holds back between iterations live."""
    record = DynamicsRecord(["a", "b"], ["x", "x"], 2)

    def step(engine: Engine, _batch: Any) -> dict[str, torch.Tensor]:
        label = (torch.rand((4, 1, 16, 16, 16), device=device) > 0.5).float()
        return {"pred": torch.cat([-label, label], dim=1), "label": label}

    engine = Engine(step)
    tracker = DADTracker(record, batch_transform=lambda _b: ["a", "a", "b", "b"])
    tracker.attach(engine)
    seen: list[str] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _e: seen.append(str(tracker._pending[-1][0].device)))
    engine.run(list(range(iterations)), max_epochs=1)
    dice = record.dice_matrix()[1][:, -1]
    if not (dice == 1.0).all():
        raise RuntimeError(f"a perfect prediction scored {dice} on {device}")
    return ", ".join(sorted(set(seen)))


def gpu_bench(pairs: int = 2, epochs: int = 20, num_workers: int = 8, work_dir: str = "runs/gpu_bench") -> None:
    if not torch.cuda.is_available():
        sys.exit("gpu_bench: no CUDA device visible (torch.cuda.is_available() is False)")
    device = torch.device("cuda:0")
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}", flush=True)
    print(f"tracker counts between iterations live on: {check_device_accumulation(device)}", flush=True)
    overrides = {"amp": True, "device": "$torch.device('cuda:0')", "num_workers": num_workers}
    run_bench(pairs=pairs, epochs=epochs, overrides=overrides, work_dir=work_dir)


if __name__ == "__main__":
    fire_strict(gpu_bench)
