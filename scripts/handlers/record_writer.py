"""``RecordWriter``: the one handler that writes the dynamics record, once per epoch.

The DAD tracker, the score handlers and dynamic pruning fill the in-memory record during an epoch; this
handler then writes that epoch's rows, whatever number of handlers added columns to them. It registers its
epoch handler when the run starts, so it runs after every handler attached before the run; the resume
checkpoint (``scripts.handlers.resume.ResumeCheckpoint``) calls it first too, so a checkpoint's epoch is
always on disk before the checkpoint is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ignite.distributed as idist
from ignite.engine import Engine, Events
from scripts.data.record import DynamicsRecord

__all__ = ["RecordWriter"]


class RecordWriter:
    """Appends each epoch's rows of ``record`` to ``output_dir/filename`` (``DynamicsRecord.write``: the whole
    file is rewritten only when an earlier epoch or the columns changed, e.g. a score's first epoch).

    Args:
        record: the per-case record the other handlers fill.
        output_dir: where the record file is.
        filename: the record file's name.
        save_rank: the rank that writes (every rank holds the same record).
    """

    def __init__(
        self, record: DynamicsRecord, output_dir: str | os.PathLike, filename: str = "dynamics.csv", save_rank: int = 0
    ) -> None:
        self.record = record
        self.path = Path(output_dir) / filename
        self.save_rank = save_rank
        self.logger = logging.getLogger("RecordWriter")

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self._attach_last, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._attach_last)

    def _attach_last(self, engine: Engine) -> None:
        """At the start of the run: after every epoch handler attached so far, i.e. after those that fill it."""
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        if idist.get_rank() == self.save_rank:
            self.record.write(self.path)

    def restore(self, up_to_epoch: int) -> list[int]:
        """A resumed run: the record takes the file's epochs up to the checkpoint's, and the file is cut back
        to them (by the writing rank; the others only read it). Returns the epochs kept; none without a file."""
        if not self.path.is_file():
            return []
        kept = self.record.restore(self.path, up_to_epoch, cut_file=idist.get_rank() == self.save_rank)
        self.logger.info(f"resume: dynamics record restored for epochs {kept[:1]}..{kept[-1:]} of {self.path}")
        return kept
