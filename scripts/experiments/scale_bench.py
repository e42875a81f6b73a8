"""What the bundle's bookkeeping costs at the size users have, side by side in one run (a command, not a test).

    python -m scripts.experiments.scale_bench                      # the whole table (about 20-40 minutes)
    python -m scripts.experiments.scale_bench --cases "[200,2000]" --recorded "[10,400]" --ct False

1. **Per-epoch bookkeeping against cases and epochs recorded.** A fake trainer whose step only hands out
   precomputed tiny crop outputs (4 cases x 2 crops of 4^3 per iteration), with the real handlers of
   ``configs/train.yaml``'s stage 1: ``DADTracker``, ``MovingDistanceHandler`` (the noise rule),
   ``SubsetExportHandler``, ``RecordWriter`` and ``ResumeCheckpoint`` (the default 3D U-Net, its optimizer
   and scheduler). Each cell starts as a resumed run: a record of ``recorded`` epochs on disk (written
   beforehand, not timed) and trains ``2 x delta_t`` more epochs on one CPU thread. Printed: the median
   seconds per epoch of the second ``delta_t`` epochs (steady state: the resumed process computed its
   first moving-distance curve in the first block), of those the epoch-end handlers and the checkpoint,
   the seconds of the block's last epoch (it ends a window: the moving distance, the stop rule and, when it
   fires, the subset export), and the ratios of each cell to the fewest-recorded-epochs cell of its size.
2. **The readers on the largest record**: reading it (``DynamicsRecord.load``), and the prune workflow with
   its audit report (``scripts.workflows.prune.run_pruning``) on a stage-1 folder of 1000 cases x 1000
   epochs.
3. **The GPU epoch those costs are compared with.** A small network's GPU step is bound by the tensor
   operations the host launches, not by arithmetic: the default U-Net's training step (4 cases x 2 crops of
   32^3) dispatches about 800 of them (counted here with a ``TorchDispatchMode``), at a few microseconds of
   host time each (``--gpu_op_us``, default 5: on the fast side of PyTorch's eager CUDA launches, so the
   estimated epoch is short and the bookkeeping's share large). The DAD tracker's operations per iteration
   are counted the same way; the epoch-end handlers' host time is the fake trainer's, measured above. The
   seconds per case measured on this machine's CPU are printed beside it (the speed-up they imply).
4. **Stage 1 on a CT-size set** (``scripts.experiments.ct_scale``): peak memory and epoch time with the
   default settings.

Everything goes to ``<work_dir>/scale.json`` too.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from scripts.data.record import DynamicsRecord
from scripts.handlers import DADTracker, MovingDistanceHandler, RecordWriter, ResumeCheckpoint, SubsetExportHandler
from scripts.utils.atomic import write_json_atomic
from scripts.utils.cli import fire_strict

__all__ = ["bookkeeping_cell", "filled_record", "prune_and_report", "scale_bench", "training_step_costs"]

ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES = 3  # background and two foreground classes, as the hippocampus
CASES_PER_BATCH, CROPS = 4, 2
DELTA_T = 10


def filled_record(n_cases: int, epochs: int, seed: int = 0) -> DynamicsRecord:
    """A record of ``n_cases`` cases over ``epochs`` epochs whose Dice drifts up per case, with noise (every
    case measured every epoch, two foreground classes)."""
    rng = np.random.default_rng(seed)
    record = DynamicsRecord([f"case_{i:05d}" for i in range(n_cases)], [f"center{i % 4}" for i in range(n_cases)],
                            NUM_CLASSES)  # fmt: skip
    target = rng.uniform(0.3, 0.95, (n_cases, NUM_CLASSES - 1))
    for e in range(1, epochs + 1):
        label = rng.integers(200, 2000, (n_cases, NUM_CLASSES - 1)).astype(np.float64)
        pred = label * rng.uniform(0.8, 1.2, label.shape)
        level = np.clip(target * (1 - np.exp(-e / 30)) + rng.normal(0, 0.03, label.shape), 0, 1)
        inter = np.minimum(np.minimum(pred, label), level * (pred + label) / 2)
        record.add_pooled_epoch(e, "patches", np.stack([inter, pred, label], axis=1), np.full(n_cases, CROPS))
    return record


def _datalist(path: Path, record: DynamicsRecord) -> Path:
    """A Decathlon list of the record's cases (empty image files: the subset export checks they exist)."""
    folder = path.parent / "images"
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for case, center in zip(record.case_ids, record.centers):
        for kind in ("image", "label"):
            (folder / f"{case}_{kind}.nii.gz").touch()
        entries.append({"image": str(folder / f"{case}_image.nii.gz"), "label": str(folder / f"{case}_label.nii.gz"),
                        "case_id": case, "center": center})  # fmt: skip
    path.write_text(json.dumps({"labels": {"0": "background", "1": "a", "2": "b"}, "training": entries}))
    return path


def _network() -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """The default configuration's network, optimizer and scheduler (what the resume checkpoint saves)."""
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=3, in_channels=1, out_channels=NUM_CLASSES, channels=(16, 32, 64, 128),
               strides=(2, 2, 2), num_res_units=1, norm="batch")  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    optimizer.step()  # Adam's state exists, as after a real epoch
    return net, optimizer, torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=1000, power=0.9)


class _Clock:
    """Per epoch: its wall seconds (start to the last end handler), of those the end handlers', and the
    checkpoint's."""

    def __init__(self) -> None:
        self.epoch: list[float] = []
        self.end: list[float] = []
        self.checkpoint: list[float] = []

    def attach_first(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._end_start)

    def attach_last(self, engine: Engine) -> None:
        """At the run's start, after ResumeCheckpoint's and RecordWriter's own registration."""
        engine.add_event_handler(Events.STARTED, lambda e: e.add_event_handler(Events.EPOCH_COMPLETED, self._stop))

    def _start(self, _e: Engine) -> None:
        self._t0 = time.perf_counter()

    def _end_start(self, _e: Engine) -> None:
        self._t1 = time.perf_counter()

    def _stop(self, _e: Engine) -> None:
        now = time.perf_counter()
        self.epoch.append(now - self._t0)
        self.end.append(now - self._t1)


def bookkeeping_cell(work_dir: Path, n_cases: int, recorded: int, delta_t: int = DELTA_T) -> dict[str, Any]:
    """Seconds per epoch of the real handlers on a fake trainer resumed after ``recorded`` epochs."""
    out = work_dir / f"book_{n_cases}x{recorded}"
    out.mkdir(parents=True, exist_ok=True)
    record = filled_record(n_cases, recorded)
    record.save(out / "dynamics.csv")  # the resumed run's file (its writer appends to it)
    gen = torch.Generator().manual_seed(0)
    items = CASES_PER_BATCH * CROPS
    label = torch.randint(0, NUM_CLASSES, (items, 1, 4, 4, 4), generator=gen)
    output = {"pred": torch.randn(items, NUM_CLASSES, 4, 4, 4, generator=gen), "label": label}
    batches = [[c for c in record.case_ids[i : i + CASES_PER_BATCH] for _ in range(CROPS)]
               for i in range(0, n_cases, CASES_PER_BATCH)]  # fmt: skip
    engine = Engine(lambda e, batch: output)
    clock = _Clock()
    clock.attach_first(engine)
    DADTracker(record, batch_transform=lambda batch: batch).attach(engine)
    MovingDistanceHandler(record, out, delta_t=delta_t, rule="noise", noise_factor=1.5).attach(engine)
    datalist = _datalist(out / "dataset.json", record)
    SubsetExportHandler(record, datalist, out / "subset", delta_t=delta_t).attach(engine)
    writer = RecordWriter(record, out)  # attached by the resume checkpoint, as configs/train.yaml has it
    net, optimizer, scheduler = _network()
    resume = ResumeCheckpoint(out, {"model": net, "optimizer": optimizer, "lr_scheduler": scheduler}, writer=writer)
    real_save = resume.save

    def timed_save(e: Engine) -> None:
        start = time.perf_counter()
        real_save(e)
        clock.checkpoint.append(time.perf_counter() - start)

    resume.save = timed_save  # type: ignore[method-assign]
    resume.attach(engine)
    clock.attach_last(engine)

    @engine.on(Events.STARTED)
    def resumed(e: Engine) -> None:  # as ResumeCheckpoint.load leaves the trainer
        e.state.epoch, e.state.iteration = recorded, recorded * len(batches)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds waits, and a loaded machine's noise
    try:
        engine.run(batches, max_epochs=recorded + 2 * delta_t)
    finally:
        torch.set_num_threads(threads)
    steady = slice(delta_t, 2 * delta_t)
    table = DynamicsRecord.load(out / "dynamics.csv")  # the file holds every epoch once
    assert table.epochs == list(range(1, recorded + 2 * delta_t + 1)), "the record file lost or repeated epochs"
    return {  # medians over the steady block; its last epoch ends a window (the moving distance), given apart
        "cases": n_cases,
        "recorded": recorded,
        "epoch_s": statistics.median(clock.epoch[steady]),
        "end_handlers_s": statistics.median(clock.end[steady]),
        "checkpoint_s": statistics.median(clock.checkpoint[steady]),
        "window_epoch_s": clock.epoch[2 * delta_t - 1],
        "epochs_s": clock.epoch,
        "stop_rule_fired_at": json.loads((out / "stop_rule.json").read_text()).get("prune_epoch"),
        "iterations": len(batches),
    }


def read_seconds(path: Path) -> dict[str, Any]:
    start = time.perf_counter()
    record = DynamicsRecord.load(path)
    seconds = time.perf_counter() - start
    return {"rows": len(record.case_ids) * len(record.epochs), "mb": path.stat().st_size / 1e6, "read_s": seconds}


def prune_and_report(work_dir: Path, n_cases: int = 1000, epochs: int = 1000) -> dict[str, Any]:
    """The prune workflow with its audit report on a stage-1 folder of ``n_cases`` x ``epochs``."""
    from scripts.workflows.prune import run_pruning

    stage1 = work_dir / f"stage1_{n_cases}x{epochs}"
    stage1.mkdir(parents=True, exist_ok=True)
    record = filled_record(n_cases, epochs, seed=1)
    record.save(stage1 / "dynamics.csv")
    datalist = _datalist(stage1 / "dataset.json", record)
    (stage1 / "run.json").write_text(json.dumps({"dataset_json": str(datalist), "delta_t": DELTA_T, "epochs": epochs,
                                                 "num_train_cases": None}))  # fmt: skip
    start = time.perf_counter()
    run_pruning(stage1, work_dir / f"prune_{n_cases}x{epochs}", rate=0.3)
    return {"cases": n_cases, "epochs": epochs, "prune_and_report_s": time.perf_counter() - start}


class _OpCounter:
    """Counts the tensor operations dispatched inside a ``with`` block (each a kernel launch on a GPU)."""

    def __enter__(self) -> _OpCounter:
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                counter.ops += 1
                return func(*args, **(kwargs or {}))

        self.ops, self._mode = 0, _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)


def training_step_costs(iterations: int = 6) -> dict[str, Any]:
    """The default configuration's training step on this machine: its seconds per case (the U-Net's forward,
    loss, backward and step on 4 cases x 2 random crops of 32^3, train.yaml's batch, crops and patch), the
    tensor operations it dispatches, and those the DAD tracker adds to an iteration."""
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    net, optimizer, _ = _network()
    loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, squared_pred=True, batch=True)
    items = CASES_PER_BATCH * CROPS
    image = torch.randn(items, 1, 32, 32, 32)
    label = torch.randint(0, NUM_CLASSES, (items, 1, 32, 32, 32)).float()

    def step() -> torch.Tensor:
        optimizer.zero_grad()
        pred = net(image)
        loss_fn(pred, label).backward()
        optimizer.step()
        return pred

    times = []
    for _ in range(iterations + 1):
        start = time.perf_counter()
        pred = step()
        times.append(time.perf_counter() - start)
    with _OpCounter() as train_ops:
        step()
    record = DynamicsRecord([f"c{i}" for i in range(CASES_PER_BATCH)], ["x"] * CASES_PER_BATCH, NUM_CLASSES)
    tracker = DADTracker(record, batch_transform=lambda batch: batch)
    engine = Engine(lambda e, b: None)
    tracker._reset(engine)
    # the trainer's output as MONAI leaves it: decollated, one dict per crop
    engine.state.output = [{"pred": pred[i].detach(), "label": label[i]} for i in range(items)]
    engine.state.batch = [c for c in record.case_ids for _ in range(CROPS)]
    with _OpCounter() as tracker_ops:
        tracker._collect(engine)
    return {"cpu_threads": torch.get_num_threads(), "cpu_s_per_case": statistics.median(times[1:]) / CASES_PER_BATCH,
            "train_step_ops": train_ops.ops, "tracker_iteration_ops": tracker_ops.ops}  # fmt: skip


def _table(cells: Sequence[dict[str, Any]]) -> str:
    fewest = {}
    for c in sorted(cells, key=lambda c: c["recorded"], reverse=True):
        fewest[c["cases"]] = c  # the cell of the fewest epochs recorded, per number of cases
    lines = [
        "| cases | epochs recorded | s / epoch | of which end handlers | of which resume checkpoint | "
        "x the fewest recorded | window epoch s | x the fewest recorded |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        ratio = c["epoch_s"] / fewest[c["cases"]]["epoch_s"]
        window = c["window_epoch_s"] / fewest[c["cases"]]["window_epoch_s"]
        lines.append(f"| {c['cases']} | {c['recorded']} | {c['epoch_s']:.3f} | {c['end_handlers_s']:.3f} | "
                     f"{c['checkpoint_s']:.3f} | {ratio:.2f} | {c['window_epoch_s']:.3f} | {window:.2f} |")  # fmt: skip
    return "\n".join(lines)


def scale_bench(
    work_dir: str = "runs/scale",
    cases: Sequence[int] = (200, 2000, 20000),
    recorded: Sequence[int] = (10, 100, 400, 1000),
    prune_cases: int = 1000,
    prune_epochs: int = 1000,
    gpu_op_us: float = 5.0,
    gpu_cases: int = 1000,
    ct: bool = True,
    ct_cases: int = 40,
    ct_shape: Sequence[int] = (512, 512, 300),
    ct_epochs: int = 2,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); print the tables; return and write what it measured."""
    logging.getLogger("ignite").setLevel(logging.WARNING)
    for name in ("DADTracker", "MovingDistanceHandler", "SubsetExportHandler", "RecordWriter", "ResumeCheckpoint",
                 "pruning"):  # fmt: skip
        logging.getLogger(name).setLevel(logging.WARNING)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"bookkeeping": []}
    for n in cases:
        for e in recorded:
            cell = bookkeeping_cell(work, int(n), int(e))
            result["bookkeeping"].append(cell)
            print(f"{n} cases, {e} recorded: {cell['epoch_s']:.3f} s per epoch", flush=True)
    largest = max(result["bookkeeping"], key=lambda c: c["cases"] * c["recorded"])
    result["read_largest"] = read_seconds(work / f"book_{largest['cases']}x{largest['recorded']}" / "dynamics.csv")
    result["prune"] = prune_and_report(work, prune_cases, prune_epochs)
    gpu = training_step_costs()
    at = next((c for c in result["bookkeeping"] if c["cases"] == gpu_cases and c["recorded"] == max(recorded)), None)
    at = at or bookkeeping_cell(work, gpu_cases, max(recorded))
    # a small network's GPU step is bound by the operations the host launches: the epoch is its iterations x
    # the step's operations x the host time per operation; the tracker adds its own operations per iteration,
    # and the epoch-end handlers their host time as measured here
    gpu["op_us"] = gpu_op_us
    gpu["gpu_epoch_s"] = at["iterations"] * gpu["train_step_ops"] * gpu_op_us * 1e-6
    gpu["implied_speedup"] = gpu["cpu_s_per_case"] * gpu_cases / gpu["gpu_epoch_s"]
    tracking = at["iterations"] * gpu["tracker_iteration_ops"] * gpu_op_us * 1e-6
    end = at["end_handlers_s"] - at["checkpoint_s"]
    gpu["at"] = at
    gpu["dad_bookkeeping_s"] = tracking + end
    gpu["share"] = {"per_iteration_tracking": tracking / gpu["gpu_epoch_s"], "epoch_end_handlers": end /
                    gpu["gpu_epoch_s"], "dad_bookkeeping": (tracking + end) / gpu["gpu_epoch_s"],
                    "resume_checkpoint": at["checkpoint_s"] / gpu["gpu_epoch_s"]}  # fmt: skip
    result["gpu_epoch"] = gpu
    if ct:
        from scripts.experiments.ct_scale import measure_ct_stage1

        result["ct"] = measure_ct_stage1(work / "ct", n_cases=ct_cases, shape=tuple(ct_shape), epochs=ct_epochs)
    write_json_atomic(work / "scale.json", result)
    print(
        "\nPer-epoch bookkeeping (fake trainer, the real handlers; median of the steady epochs, and the epoch that "
        "ends a window):"
    )
    print(_table(result["bookkeeping"]))
    r = result["read_largest"]
    print(f"\nRead the largest record: {r['rows']} rows ({r['mb']:.0f} MB) in {r['read_s']:.1f} s")
    p = result["prune"]
    print(f"Prune + audit report on {p['cases']} cases x {p['epochs']} epochs: {p['prune_and_report_s']:.1f} s")
    sh = gpu["share"]
    print(f"GPU epoch of {gpu_cases} cases (launch-bound): {at['iterations']} iterations x {gpu['train_step_ops']} "
          f"operations x {gpu_op_us:g} us = {gpu['gpu_epoch_s']:.2f} s ({gpu['implied_speedup']:.0f}x the "
          f"{gpu['cpu_s_per_case']:.3f} s per case measured on this CPU); at {at['recorded']} epochs recorded the "
          f"DAD bookkeeping is {sh['dad_bookkeeping']:.2%} of it ({gpu['tracker_iteration_ops']} operations per "
          f"iteration: {sh['per_iteration_tracking']:.2%}; epoch-end handlers: {sh['epoch_end_handlers']:.2%}), "
          f"the resume checkpoint {sh['resume_checkpoint']:.2%}")  # fmt: skip
    if ct:
        print(f"CT-size stage 1: {json.dumps(result['ct'])}")
    return result


if __name__ == "__main__":
    fire_strict(scale_bench, serialize=lambda _: None)  # the tables are printed; the numbers are in scale.json
