"""``DADTracker``: the Ignite handler, in MONAI's style, that fills the per-case dynamics record.

It runs on every rank; per-case counts are summed across ranks once per epoch (one ``all_reduce``,
where ``monai.handlers.MetricsSaver`` gathers its per-item lists), sampler padding is not counted, so
the record does not depend on how many processes trained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine
from scripts.core.counts import class_indices, confusion_torch, counts_of_confusion
from scripts.data.distributed import padding_case_ids
from scripts.data.record import DynamicsRecord

# the default transforms, built once (stateless callables; flake8-bugbear B008)
PRED_LABEL = from_engine(["pred", "label"])
CASE_IDS = from_engine(["case_id"])

__all__ = ["DADTracker", "MODES"]

MODES = ("patches", "volumes")
# predicted voxels held back before their counts are taken in one batched pass (about 80 MB of float32
# labels and uint8 classes): a training iteration then adds 4 tensor operations, not 19 (a GPU epoch of a
# small network is bound by the operations the host launches, about 800 per training step of this bundle's)
BUFFER_VOXELS = 2**24


def _plain(x: Any) -> torch.Tensor:
    """A plain-tensor view: a ``MetaTensor``'s metadata (affine, applied transforms) is of no use to the
    counts, and stacking or computing with it costs far more than they do (60 ms against 0.1 ms to
    stack a batch of 8 crops, measured)."""
    t = torch.as_tensor(x)
    return t if type(t) is torch.Tensor else t.as_subclass(torch.Tensor)


def _as_batch(x: Any) -> torch.Tensor:
    """Outputs are a batched tensor, or a list of per-item tensors once decollated."""
    if isinstance(x, (list, tuple)):
        return torch.stack([_plain(i) for i in x])
    return _plain(x)


class DADTracker:
    """Records each training case's Dice every epoch (the raw signal of the DAD score).

    Modes:
        "patches" (default, free): attached to the trainer, it scores the training forward pass.
            Every crop's overlap counts are kept, and at the end of the epoch the counts of all of a
            case's crops are pooled into one Dice per foreground class.
        "volumes": every ``interval`` epochs it runs ``evaluator`` (sliding-window inference over the
            whole training volumes, no augmentation) and scores its outputs the same way.

    The counts are computed with torch where the outputs are (CPU or GPU), a few iterations' predicted
    classes at a time (``buffer_voxels``), and stay there until the epoch ends; then they are pooled per
    case, summed across ranks (one ``all_reduce``) and copied to the host once. Items a
    ``DistributedSampler`` repeats as padding are not counted, so the record is the same whatever the
    number of processes.

    Args:
        record: the per-case record to fill (its cases and classes); every epoch gets a row for each
            case, missing where the case was not seen or its Dice is undefined. ``RecordWriter`` writes it.
        mode: "patches" or "volumes".
        evaluator: the engine that infers the training volumes ("volumes" mode only).
        interval: epochs between volume evaluations ("volumes" mode only).
        output_transform: engine.state.output -> (logits or probabilities (B, C, ...), label (B, 1, ...)).
        batch_transform: engine.state.batch -> the case id of each item.
        buffer_voxels: predicted voxels held back before their counts are taken together.
    """

    def __init__(
        self,
        record: DynamicsRecord,
        mode: str = "patches",
        evaluator: Engine | None = None,
        interval: int = 1,
        output_transform: Callable = PRED_LABEL,
        batch_transform: Callable = CASE_IDS,
        buffer_voxels: int = BUFFER_VOXELS,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown DAD mode {mode!r}; expected one of {MODES}")
        if mode == "volumes" and evaluator is None:
            raise ValueError("DAD mode 'volumes' needs an evaluator over the training volumes")
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.record = record
        self.num_classes = record.num_classes
        self.mode = mode
        self.evaluator = evaluator
        self.interval = interval
        self.output_transform = output_transform
        self.batch_transform = batch_transform
        self.buffer_voxels = int(buffer_voxels)
        self.logger = logging.getLogger("DADTracker")
        self._rows: list[int] = []  # the record row of every counted item this epoch
        self._counts: list[torch.Tensor] = []  # (items, C*C) confusion counts, on the outputs' device
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (classes, label) not counted yet
        self._pending_voxels = 0
        self._padding: set[str] = set()

    def attach(self, engine: Engine) -> None:
        """Attach to the trainer (in "volumes" mode also hooks the evaluator it runs)."""
        source = engine if self.mode == "patches" else self.evaluator
        if not source.has_event_handler(self._reset, Events.EPOCH_STARTED):
            source.add_event_handler(Events.EPOCH_STARTED, self._reset)
        if not source.has_event_handler(self._collect, Events.ITERATION_COMPLETED):
            source.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._rows, self._counts, self._pending, self._pending_voxels = [], [], [], 0
        self._padding = padding_case_ids(engine.state.dataloader)

    def _collect(self, engine: Engine) -> None:
        pred, label = self.output_transform(engine.state.output)
        pred, label = _as_batch(pred).detach(), _as_batch(label).detach()
        if pred.shape[1] != self.num_classes:
            raise ValueError(f"prediction has {pred.shape[1]} channels, expected num_classes={self.num_classes}")
        case_ids = [str(c) for c in self.batch_transform(engine.state.batch)]
        if len(case_ids) != pred.shape[0]:
            raise ValueError(f"{len(case_ids)} case ids for a batch of {pred.shape[0]} predictions")
        classes = class_indices(pred)
        if self.num_classes <= 256:
            classes = classes.to(torch.uint8)  # held back: a byte per voxel is enough
        if self._padding:
            keep = [i for i, c in enumerate(case_ids) if c not in self._padding]
            classes, label, case_ids = classes[keep], label[keep], [case_ids[i] for i in keep]
        self._rows.extend(self.record.rows_of(case_ids).tolist())
        if self._pending and self._pending[0][0].shape[1:] != classes.shape[1:]:
            self._count_pending()  # whole volumes differ in shape: count what came before
        self._pending.append((classes, label))
        self._pending_voxels += classes.numel()
        if self._pending_voxels >= self.buffer_voxels:
            self._count_pending()

    def _count_pending(self) -> None:
        """The confusion counts of the held-back items, in one batched pass, in item order."""
        if self._pending:
            classes = torch.cat([c for c, _ in self._pending])
            label = torch.cat([y for _, y in self._pending])
            self._counts.append(confusion_torch(classes, label, self.num_classes))
        self._pending, self._pending_voxels = [], 0

    def _pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's counts pooled per case and summed over ranks: (n_cases, 3, C-1), (n_cases,)."""
        self._count_pending()
        n_cases, k = len(self.record.case_ids), self.num_classes
        device = self._counts[0].device if self._counts else torch.device("cpu")
        if idist.get_world_size() > 1 and idist.backend() == "nccl":
            device = idist.device()
        pooled = torch.zeros((n_cases, k * k + 1), dtype=torch.int64, device=device)
        if self._counts:
            counts = torch.cat(self._counts).to(device=device, dtype=torch.int64)
            ones = torch.ones((counts.shape[0], 1), dtype=torch.int64, device=device)  # the n_items column
            rows = torch.as_tensor(self._rows, dtype=torch.int64, device=device)
            pooled.index_add_(0, rows, torch.cat([counts, ones], dim=1))
        if idist.get_world_size() > 1:
            pooled = idist.all_reduce(pooled)
        pooled = pooled.cpu()
        return counts_of_confusion(pooled[:, :-1], k).numpy(), pooled[:, -1].numpy()

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if self.mode == "volumes":
            if epoch % self.interval != 0:
                return
            self.evaluator.run()
        self.record.add_pooled_epoch(epoch, self.mode, *self._pooled())
        latest = self.record.case_dice(epoch)
        measured = latest[~np.isnan(latest)]
        mean = measured.mean() if measured.size else float("nan")
        loss = engine.state.metrics.get("train_loss")  # the trainer's key metric, computed before the handlers run
        loss_text = f"loss {loss:.4f}, " if isinstance(loss, (int, float)) else ""
        self.logger.info(
            f"epoch {epoch}/{engine.state.max_epochs}: {loss_text}mean DAD {mean:.4f} "
            f"({self.mode} Dice of {measured.size}/{latest.size} cases)"
        )
