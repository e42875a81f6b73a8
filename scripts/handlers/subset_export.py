"""``SubsetExportHandler``: exports the pruned subset the moment the stop rule fires."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ignite.distributed as idist
from ignite.engine import Engine, Events
from scripts.core.strategies import check_settings
from scripts.data.record import DynamicsRecord
from scripts.data.subset import export_subset, select_subset
from scripts.utils.flags import as_bool

__all__ = ["SubsetExportHandler"]


class SubsetExportHandler:
    """Exports the pruned subset the moment the stop rule fires (after ``MovingDistanceHandler``
    set ``engine.state.prune_epoch``), so an ``early_prune`` run ends with its subset on disk.

    Args:
        record: the per-case record a ``DADTracker`` fills.
        dataset_json: the data set the trainer reads (its training list is the record's cases).
        output_dir: where ``subset_datalist.json``, ``selection.csv`` and ``prune_summary.json`` go.
        delta_t, rate, strategy, seed, stratify: as in ``scripts.data.subset.select_subset``.
        train_limit: the trainer used only the first N training cases (``num_train_cases``).
    """

    def __init__(
        self,
        record: DynamicsRecord,
        dataset_json: str | os.PathLike,
        output_dir: str | os.PathLike,
        delta_t: int = 10,
        rate: float = 0.3,
        strategy: str = "ambiguous",
        seed: int = 0,
        stratify: bool = False,
        train_limit: int | None = None,
        save_rank: int = 0,
    ) -> None:
        check_settings(rate, strategy)
        self.record = record
        self.dataset_json = dataset_json
        self.output_dir = Path(output_dir)
        self.delta_t = delta_t
        self.options = {"rate": rate, "strategy": strategy, "seed": seed, "stratify": as_bool(stratify, "stratify")}
        self.train_limit = train_limit
        self.save_rank = save_rank
        self.logger = logging.getLogger("SubsetExportHandler")

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if getattr(engine.state, "prune_epoch", None) != epoch or idist.get_rank() != self.save_rank:
            return
        selection = select_subset(self.record, epoch, self.delta_t, **self.options)
        note = f"the stop rule fired at epoch {epoch}"
        export_subset(
            selection,
            self.dataset_json,
            self.output_dir,
            note=note,
            train_limit=self.train_limit,
            stage1_epochs=engine.state.max_epochs,  # the full-data budget, not the early prune epoch
        )
        self.logger.info(f"subset exported to {self.output_dir} at epoch {epoch}")
