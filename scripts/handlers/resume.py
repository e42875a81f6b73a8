"""Resuming a killed stage-1 run: a checkpoint of everything training needs (model, optimizer, scheduler,
the trainer's epoch, the scores' cross-epoch state such as VoG's accumulators) written atomically at the
end of every epoch, after every other epoch handler and after the epoch's record rows are on disk, and
loaded, with the dynamics record file cut back to the same epoch, when the run is started again with
``resume``.

Epochs after the checkpoint (one the kill interrupted, or whose rows were written just before the kill)
are cut from the record file and trained again, so the record ends with exactly one row per (case, epoch).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from scripts.handlers.record_writer import RecordWriter
from scripts.utils.atomic import atomic_output
from scripts.utils.flags import as_bool

__all__ = ["ResumeCheckpoint"]


class ResumeCheckpoint:
    """Ignite handler: save ``save_dict`` and the trainer's state every epoch; with ``resume``, load them
    when training starts (Ignite's ``Checkpoint.load_objects``, as MONAI's ``CheckpointLoader`` does).

    The save is registered when the run starts, so it comes after every epoch handler attached before the
    run (a handler's state of the epoch, e.g. dynamic pruning's, is in the checkpoint of that epoch).

    Args:
        ckpt_dir: where ``filename`` is written.
        save_dict: objects with ``state_dict``/``load_state_dict`` (model, optimizer, lr scheduler).
        writer: the dynamics record's writer, attached with this handler: it writes the epoch's rows before
            each checkpoint, and on resume restores the record and cuts its file back to the checkpoint's epoch.
        resume: load the checkpoint when training starts (a missing checkpoint starts from epoch 1).
        map_location: where tensors are loaded.
        save_rank: the rank that writes.
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        writer: RecordWriter | None = None,
        resume: bool = False,
        filename: str = "resume.pt",
        map_location: Any = "cpu",
        save_rank: int = 0,
    ) -> None:
        self.path = Path(ckpt_dir) / filename
        self.save_dict = dict(save_dict)
        self.writer = writer
        self.resume = as_bool(resume, "resume")
        self.map_location = map_location
        self.save_rank = save_rank
        self.logger = logging.getLogger("ResumeCheckpoint")

    def attach(self, engine: Engine) -> None:
        if self.writer is not None:
            self.writer.attach(engine)
        if self.resume and not engine.has_event_handler(self.load, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.load)
        if not engine.has_event_handler(self._attach_last, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._attach_last)

    def _attach_last(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.save, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        if self.writer is not None:
            self.writer(engine)  # the epoch's rows first (a no-op when the writer ran already)
        if idist.get_rank() != self.save_rank:
            return
        state = {k: v.state_dict() for k, v in self.save_dict.items()}
        state["trainer"] = engine.state_dict()
        state["epoch"] = engine.state.epoch  # Ignite would infer iteration // epoch_length: wrong if epochs vary
        with atomic_output(self.path) as tmp:
            torch.save(state, tmp)

    def load(self, engine: Engine) -> None:
        if not self.path.is_file():
            self.logger.info(f"resume: no checkpoint at {self.path}, training from epoch 1")
            return
        checkpoint = torch.load(self.path, map_location=self.map_location, weights_only=False)
        max_epochs = engine.state.max_epochs  # the command's epochs win over the checkpoint's
        missing = [k for k in self.save_dict if k not in checkpoint]
        if missing:  # e.g. a checkpoint from before the score state was saved
            self.logger.warning(f"resume: {self.path} has no {missing}: those start afresh")
        present = {k: v for k, v in self.save_dict.items() if k in checkpoint}
        Checkpoint.load_objects({**present, "trainer": engine}, checkpoint)
        engine.state.max_epochs = max_epochs
        if "epoch" in checkpoint:  # checkpoints from before it was saved: Ignite's iteration // epoch_length
            engine.state.epoch = int(checkpoint["epoch"])
        epoch = engine.state.epoch
        if self.writer is not None:
            self.writer.restore(up_to_epoch=epoch)
        self.logger.info(f"resume: continuing after epoch {epoch} from {self.path}")
