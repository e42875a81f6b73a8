"""Ignite handlers that record the opt-in baseline scores per case beside DAD, in the same record.

- ``ScoreTracker`` (trainer, every epoch, from the training forward pass like DAD's patch mode):
  EL2N, EL2Nx (pooled over a case's crops) and the mean per-case training loss; the items a
  ``DistributedSampler`` repeats as padding are not counted (as in ``DADTracker``).
- ``CheckpointScorer`` (trainer, every ``interval`` epochs, one extra pass over fixed, non-augmented
  whole training volumes in eval mode): VoG over the checkpoints so far, the last-layer GraNd
  approximation, cleanlab's softmin label quality and MONAI's ``label_quality_score``.
- ``VolumeScorer`` (an evaluator over whole training volumes, e.g. sliding-window inference with a
  trained checkpoint; the ``scoring`` workflow): Dice, EL2N, EL2Nx, cleanlab and MONAI label quality.

The math is in ``scripts.scores``; these classes only collect per-item values, pool them per case and
call ``DynamicsRecord.add_scores``. Attach them after ``DADTracker`` so its Dice row exists first.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine
from monai.utils import evenly_divisible_all_gather, string_list_all_gather
from scripts.core.dynamics import foreground_counts
from scripts.data.distributed import padding_case_ids
from scripts.data.record import DynamicsRecord
from scripts.scores.el2n import el2n_sums, pooled_mean
from scripts.scores.grand import last_layer_grand
from scripts.scores.label_quality import cleanlab_score, monai_label_quality
from scripts.scores.loss import loss_sums
from scripts.scores.vog import RunningVariance, real_box, true_class_logit_gradient
from scripts.utils.atomic import write_json_atomic

# the default transforms, built once (stateless callables; flake8-bugbear B008)
PRED_LABEL = from_engine(["pred", "label"])
CASE_IDS = from_engine(["case_id"])

__all__ = [
    "ScoreTracker", "CheckpointScorer", "VolumeScorer", "ScoreState", "PATCH_SCORES", "CHECKPOINT_SCORES", "COST_FILE"
]  # fmt: skip

PATCH_SCORES = ("el2n", "el2nx", "loss")
CHECKPOINT_SCORES = ("vog", "grand_last_layer", "cleanlab", "monai_lq")


COST_FILE = "score_cost.json"


def _attach_epoch_handlers(engine: Engine, reset: Callable, collect: Callable, end: Callable) -> None:
    """Reset at each epoch's start, collect every iteration, finish at the epoch's end (once each)."""
    for event, fn in (
        (Events.EPOCH_STARTED, reset),
        (Events.ITERATION_COMPLETED, collect),
        (Events.EPOCH_COMPLETED, end),
    ):
        if not engine.has_event_handler(fn, event):
            engine.add_event_handler(event, fn)


class _Timed:
    """Wall time a handler spends per score, written at the end of the run to ``output_dir/score_cost.json``:
    {"wall_s": the run's wall time, "handlers": {handler: {part: s}}, "extra_ratio": {part: s / (wall_s -
    all handlers' s)}}, the extra time each score adds to training without it, measured in the same run."""

    seconds: dict[str, float]
    cost_path: Path

    def _init_timer(self, output_dir: str | os.PathLike) -> None:
        self.seconds = {}
        self.cost_path = Path(output_dir) / COST_FILE
        self._t0: float | None = None

    @contextmanager
    def _timed(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

    def _attach_timer(self, engine: Engine) -> None:
        if not engine.has_event_handler(self._start_clock, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._start_clock)
        if not engine.has_event_handler(self._write_cost, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self._write_cost)

    def _start_clock(self, _engine: Engine) -> None:
        self._t0 = time.perf_counter()

    def _write_cost(self, _engine: Engine) -> None:
        if self._t0 is None or idist.get_rank() != getattr(self, "save_rank", 0):
            return
        wall = time.perf_counter() - self._t0
        cost = json.loads(self.cost_path.read_text()) if self.cost_path.is_file() else {}
        handlers = {**cost.get("handlers", {}), type(self).__name__: self.seconds}
        base = wall - sum(sum(h.values()) for h in handlers.values())
        ratios = {part: s / base for h in handlers.values() for part, s in h.items()} if base > 0 else {}
        write_json_atomic(self.cost_path, {"wall_s": wall, "handlers": handlers, "extra_ratio": ratios})


def _batch(x) -> torch.Tensor:
    if isinstance(x, (list, tuple)):
        return torch.stack([torch.as_tensor(i) for i in x])
    return torch.as_tensor(x)


def _pool(record: DynamicsRecord, case_ids: Sequence[str], sums: np.ndarray) -> np.ndarray:
    """Add up per-item (..., 2) sums per case of the record and divide: shape (n_cases, ...)."""
    index = {c: i for i, c in enumerate(record.case_ids)}
    pooled = np.zeros((len(record.case_ids), *sums.shape[1:]))
    if len(case_ids):
        np.add.at(pooled, np.array([index[c] for c in case_ids]), sums)
    return pooled_mean(pooled)


def _gather(case_ids: list[str], values: np.ndarray) -> tuple[list[str], np.ndarray]:
    if idist.get_world_size() > 1:
        case_ids = string_list_all_gather(case_ids)
        values = evenly_divisible_all_gather(torch.as_tensor(values), concat=True).numpy()
    return case_ids, values


def _check(scores: Sequence[str], known: Sequence[str]) -> list[str]:
    scores = [str(s) for s in scores]
    unknown = [s for s in scores if s not in known]
    if unknown or not scores:
        raise ValueError(f"scores {scores} must be a non-empty subset of {list(known)}")
    return scores


class ScoreTracker(_Timed):
    """EL2N, EL2Nx and per-case loss from the training forward pass, pooled per case every epoch.

    Args:
        record: the record the ``DADTracker`` fills (``RecordWriter`` writes it).
        output_dir: where ``score_cost.json`` is written.
        scores: any of ``PATCH_SCORES``.
        loss_function: the training loss (needed for "loss"), called on one item at a time.
        output_transform: engine.state.output -> (logits (B, C, ...), label (B, 1, ...)).
        batch_transform: engine.state.batch -> the case id of each item.
    """

    def __init__(
        self,
        record: DynamicsRecord,
        output_dir: str | os.PathLike,
        scores: Sequence[str] = PATCH_SCORES,
        loss_function: Callable | None = None,
        output_transform: Callable = PRED_LABEL,
        batch_transform: Callable = CASE_IDS,
        save_rank: int = 0,
    ) -> None:
        self.scores = _check(scores, PATCH_SCORES)
        if "loss" in self.scores and loss_function is None:
            raise ValueError("the 'loss' score needs the training loss_function")
        self.record = record
        self.loss_function = loss_function
        self.output_transform = output_transform
        self.batch_transform = batch_transform
        self.save_rank = save_rank
        self._ids: list[str] = []
        self._sums: list[np.ndarray] = []
        self._padding: set[str] = set()
        self._init_timer(output_dir)

    def attach(self, engine: Engine) -> None:
        self._attach_timer(engine)
        _attach_epoch_handlers(engine, self._reset, self._collect, self)

    def _reset(self, engine: Engine) -> None:
        self._ids, self._sums = [], []
        # the items a DistributedSampler repeats to even out the ranks are left out, as the DAD tracker
        # does: a case's scores pool its own crops once, whatever the number of processes
        self._padding = padding_case_ids(engine.state.dataloader)

    def _collect(self, engine: Engine) -> None:
        pred, label = self.output_transform(engine.state.output)
        pred, label = _batch(pred).detach().float(), _batch(label).detach()
        sums = np.zeros((pred.shape[0], 3, 2))
        with self._timed("el2n+el2nx"):
            sums[:, :2] = el2n_sums(pred, label)
        if "loss" in self.scores:
            with self._timed("loss"):
                sums[:, 2] = loss_sums(self.loss_function, pred, label)
        ids = [str(c) for c in self.batch_transform(engine.state.batch)]
        if len(ids) != sums.shape[0]:
            raise ValueError(f"{len(ids)} case ids for a batch of {sums.shape[0]} predictions")
        if self._padding:
            keep = [i for i, c in enumerate(ids) if c not in self._padding]
            sums, ids = sums[keep], [ids[i] for i in keep]
        self._sums.append(sums)
        self._ids.extend(ids)

    def __call__(self, engine: Engine) -> None:
        with self._timed("patch_record"):
            sums = np.concatenate(self._sums) if self._sums else np.zeros((0, 3, 2))
            ids, sums = _gather(self._ids, sums)
            means = _pool(self.record, ids, sums)
            columns = {"el2n": means[:, 0], "el2nx": means[:, 1], "loss": means[:, 2]}
            self.record.add_scores(engine.state.epoch, {k: columns[k] for k in self.scores})


class ScoreState:
    """The score state that lives across epochs: VoG's running mean and variance per case. A separate
    object so that the resume checkpoint (``scripts.handlers.resume.ResumeCheckpoint``'s ``save_dict``)
    and the ``CheckpointScorer`` share it: a killed run resumes with the VoG accumulated so far."""

    def __init__(self) -> None:
        self.running: dict[str, RunningVariance] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"running": {case: r.state_dict() for case, r in self.running.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.running = {}
        for case, r in state.get("running", {}).items():
            self.running[case] = RunningVariance()
            self.running[case].load_state_dict(r)


class CheckpointScorer(_Timed):
    """Every ``interval`` epochs, scores each training case on its fixed whole volume (no augmentation).

    One forward pass per case in eval mode (batch norm on running statistics), then the gradients
    the chosen scores need; no parameter gradient is accumulated and torch's random state is restored,
    so training goes on exactly as it would without the pass. VoG (``scripts.scores.vog``) accumulates
    the input gradient of the summed true-class logit over the checkpoints so far (NaN until the second
    one), keeping a running mean and variance per case (saved in resume.pt: ``state_dict``).

    Padding: when the loader's items carry a ``mask`` (``scripts.data.transforms.PaddingMaskd``: 1 on
    real voxels, 0 on the voxels padding added), every score is taken over the real voxels only (the
    network still sees the padded volume: its receptive field and normalisation are as in training).

    Args:
        record: the per-case record (``RecordWriter`` writes it).
        output_dir: where ``score_cost.json`` is written.
        network: the network being trained.
        data_loader: the training cases, deterministic transforms only, spatially divisible for the
            network, with ``image``, ``label``, ``case_id`` and, when it pads, ``mask``.
        scores: any of ``CHECKPOINT_SCORES``.
        loss_function: the training loss (for "grand_last_layer").
        interval: epochs between checkpoints.
        device: where the network runs.
        state: the cross-epoch state (VoG's accumulators), shared with the resume checkpoint.
    """

    def __init__(
        self,
        record: DynamicsRecord,
        output_dir: str | os.PathLike,
        network: torch.nn.Module,
        data_loader: Sequence,
        scores: Sequence[str] = CHECKPOINT_SCORES,
        loss_function: Callable | None = None,
        interval: int = 5,
        device: str | torch.device = "cpu",
        save_rank: int = 0,
        state: ScoreState | None = None,
    ) -> None:
        self.scores = _check(scores, CHECKPOINT_SCORES)
        if "grand_last_layer" in self.scores and loss_function is None:
            raise ValueError("the 'grand_last_layer' score needs the training loss_function")
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.record = record
        self.network = network
        self.data_loader = data_loader
        self.loss_function = loss_function
        self.interval = interval
        self.device = torch.device(device)
        self.save_rank = save_rank
        self.state = state if state is not None else ScoreState()
        self.logger = logging.getLogger("CheckpointScorer")
        self._init_timer(output_dir)

    def attach(self, engine: Engine) -> None:
        self._attach_timer(engine)
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    @property
    def running(self) -> dict[str, RunningVariance]:
        return self.state.running

    def state_dict(self) -> dict[str, Any]:
        """VoG's running mean and variance per case: what a resumed run needs to go on with the same VoG."""
        return self.state.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.state.load_state_dict(state)

    def score_case(
        self, image: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None = None, case_ids: Sequence[str] = ()
    ) -> dict[str, list]:
        """The chosen scores of a batch (B, C_in, *spatial) / (B, 1, *spatial) -> {name: [B values]} (VoG: each
        item's per-voxel gradient over its real voxels). ``mask`` (B, 1, *spatial): the padding mask
        (``scripts.data.transforms.PaddingMaskd``); every voxel average is over the real voxels only."""
        label = label.to(self.device)
        spatial = tuple(image.shape[2:])
        names = list(case_ids) or [str(i) for i in range(image.shape[0])]
        boxes = [real_box(None if mask is None else mask[i], spatial, names[i]) for i in range(image.shape[0])]
        out: dict[str, list] = {}
        if {"grand_last_layer", "cleanlab", "monai_lq"} & set(self.scores):
            with self._timed("forward"):
                x = image.to(self.device).float().requires_grad_(True)
                logits = self.network(x)
                probs = torch.softmax(logits.detach().float(), dim=1)
            real = [(probs[i : i + 1, :, *box], label[i : i + 1, :, *box]) for i, box in enumerate(boxes)]
        if "grand_last_layer" in self.scores:
            with self._timed("grand_last_layer"):
                out["grand_last_layer"] = list(
                    last_layer_grand(self.network, self.loss_function, x, label, logits=logits, boxes=boxes)
                )
        if "cleanlab" in self.scores:
            with self._timed("cleanlab"):
                out["cleanlab"] = [cleanlab_score(p[0].cpu().numpy(), y[0].cpu().numpy()) for p, y in real]
        if "monai_lq" in self.scores:
            with self._timed("monai_lq"):
                out["monai_lq"] = [float(monai_label_quality(p, y)[0]) for p, y in real]
        if "vog" in self.scores:
            with self._timed("vog"):
                grad = true_class_logit_gradient(self.network, image.to(self.device), label, boxes)
                out["vog"] = [grad[i][box].cpu().numpy() for i, box in enumerate(boxes)]
        return out

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if epoch % self.interval != 0:
            return
        was_training = self.network.training
        rng_state = torch.get_rng_state()  # iterating a DataLoader draws from it: keep training's stream intact
        self.network.eval()
        ids: list[str] = []
        values: dict[str, list[float]] = {s: [] for s in self.scores}
        try:
            loader = iter(self.data_loader)
            while True:
                with self._timed("volumes_io"):
                    batch = next(loader, None)
                if batch is None:
                    break
                cases = [str(c) for c in batch["case_id"]]
                mask = _batch(batch["mask"]) if "mask" in batch else None
                scored = self.score_case(_batch(batch["image"]), _batch(batch["label"]), mask, cases)
                for i, case in enumerate(cases):
                    ids.append(case)
                    for name in self.scores:
                        if name == "vog":
                            with self._timed("vog"):
                                running = self.running.setdefault(case, RunningVariance())
                                running.update(scored["vog"][i])
                                values["vog"].append(running.vog())
                        else:
                            values[name].append(float(scored[name][i]))
        finally:
            self.network.train(was_training)
            torch.set_rng_state(rng_state)
        with self._timed("checkpoint_record"):
            self.record.add_scores(epoch, {k: np.asarray(v) for k, v in values.items()}, case_ids=ids)
        self.logger.info(f"epoch {epoch}: {', '.join(self.scores)} of {len(ids)} training volumes recorded")


class VolumeScorer:
    """Scores whole training volumes from an evaluator's outputs (logits, no postprocessing).

    At the end of the evaluator's run it writes one record epoch (``epoch``, or the trainer's current
    epoch when ``trainer`` is given): Dice (source "volumes"), EL2N, EL2Nx, cleanlab, MONAI label quality.

    Args:
        record: the per-case record, written to ``output_dir/filename``.
        scores: any of ("el2n", "el2nx", "cleanlab", "monai_lq").
        epoch: the record epoch of the scores when no trainer is given.
        mask_transform: engine.state.batch -> each item's padding mask (1, *spatial) (e.g.
            ``from_engine(["mask"])`` with ``scripts.data.transforms.PaddingMaskd`` in the evaluator's
            transforms): every score and the Dice counts are then over the real voxels only. None: all voxels.
    """

    KNOWN = ("el2n", "el2nx", "cleanlab", "monai_lq")

    def __init__(
        self,
        record: DynamicsRecord,
        output_dir: str | os.PathLike,
        scores: Sequence[str] = KNOWN,
        epoch: int = 1,
        trainer: Engine | None = None,
        filename: str = "dynamics.csv",
        output_transform: Callable = PRED_LABEL,
        batch_transform: Callable = CASE_IDS,
        save_rank: int = 0,
        mask_transform: Callable | None = None,
    ) -> None:
        self.scores = _check(scores, self.KNOWN)
        self.mask_transform = mask_transform
        self.record = record
        self.path = Path(output_dir) / filename
        self.epoch = int(epoch)
        self.trainer = trainer
        self.output_transform = output_transform
        self.batch_transform = batch_transform
        self.save_rank = save_rank
        self._ids: list[str] = []
        self._rows: list[np.ndarray] = []
        self.logger = logging.getLogger("VolumeScorer")

    def attach(self, engine: Engine) -> None:
        _attach_epoch_handlers(engine, self._reset, self._collect, self)

    def _reset(self, _engine: Engine) -> None:
        self._ids, self._rows = [], []

    def _collect(self, engine: Engine) -> None:
        pred, label = self.output_transform(engine.state.output)
        logits, label = _batch(pred).detach().float(), _batch(label).detach()
        k = self.record.num_classes
        if logits.shape[1] != k:
            raise ValueError(f"prediction has {logits.shape[1]} channels, expected num_classes={k}")
        ids = [str(c) for c in self.batch_transform(engine.state.batch)]
        if self.mask_transform is not None:  # item by item, each over its real voxels
            masks = self.mask_transform(engine.state.batch)
            for i, case in enumerate(ids):
                box = (slice(None), slice(None), *real_box(masks[i], tuple(logits.shape[2:]), case))
                self._rows.append(self._row(logits[i : i + 1][box], label[i : i + 1][box]))
            self._ids.extend(ids)
            return
        self._rows.append(self._row(logits, label))
        self._ids.extend(ids)

    def _row(self, logits: torch.Tensor, label: torch.Tensor) -> np.ndarray:
        """Per item: Dice counts, EL2N sums, then the two label-quality values (one flat row each)."""
        k = self.record.num_classes
        probs = torch.softmax(logits, dim=1)
        counts = foreground_counts(probs.argmax(1).cpu().numpy(), label[:, 0].cpu().numpy(), k)
        el2n = el2n_sums(probs, label, probabilities=True)
        lq = [
            cleanlab_score(p.cpu().numpy(), y.cpu().numpy()) if "cleanlab" in self.scores else np.nan
            for p, y in zip(probs, label)
        ]
        mq = monai_label_quality(probs, label) if "monai_lq" in self.scores else np.full(len(lq), np.nan)
        return np.concatenate(
            [counts.reshape(len(lq), -1), el2n.reshape(len(lq), -1), np.stack([lq, mq], axis=1)], axis=1
        )

    def __call__(self, engine: Engine) -> None:
        k = self.record.num_classes
        width = 3 * (k - 1) + 4 + 2
        rows = np.concatenate(self._rows) if self._rows else np.zeros((0, width))
        ids, rows = _gather(self._ids, rows)
        epoch = self.trainer.state.epoch if self.trainer is not None else self.epoch
        self.record.add_epoch(epoch, "volumes", ids, rows[:, : 3 * (k - 1)].reshape(-1, 3, k - 1))
        el2n = _pool(self.record, ids, rows[:, 3 * (k - 1) : 3 * (k - 1) + 4].reshape(-1, 2, 2))
        index = {c: i for i, c in enumerate(self.record.case_ids)}
        columns = {"el2n": el2n[:, 0], "el2nx": el2n[:, 1]}
        for j, name in enumerate(("cleanlab", "monai_lq")):
            col = np.full(len(self.record.case_ids), np.nan)
            if ids:
                col[[index[c] for c in ids]] = rows[:, width - 2 + j]
            columns[name] = col
        self.record.add_scores(epoch, {s: columns[s] for s in self.scores})
        if idist.get_rank() == self.save_rank:
            self.record.save(self.path)
        self.logger.info(f"epoch {epoch}: Dice and {', '.join(self.scores)} of {len(set(ids))} volumes recorded")
