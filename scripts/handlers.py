"""Ignite handlers, in MONAI's style, that record training dynamics and apply the stop rule.

``DADTracker`` fills the per-case dynamics record; ``MovingDistanceHandler`` reads it every Δt epochs.
Both run on every rank; per-case counts are summed across ranks once per epoch (one ``all_reduce``,
where ``monai.handlers.MetricsSaver`` gathers its per-item lists), sampler padding is not counted, so
the record does not depend on how many processes trained, and only ``save_rank`` writes files.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from scripts.atomic import write_csv_atomic, write_json_atomic
from scripts.counts import class_indices, foreground_counts_torch
from scripts.distributed import padding_case_ids
from scripts.flags import as_bool
from scripts.record import DynamicsRecord
from scripts.selection import check_settings
from scripts.stop_rules import RULES, fired_window, window_curve

__all__ = ["DADTracker", "MovingDistanceHandler"]

MODES = ("patches", "volumes")


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

    The counts are computed with torch where the outputs are (CPU or GPU) and stay there until the
    epoch ends; then they are pooled per case, summed across ranks (one ``all_reduce``) and copied to
    the host once. Items a ``DistributedSampler`` repeats as padding are not counted, so the record is
    the same whatever the number of processes.

    Args:
        record: the per-case record to fill (its cases and classes); every epoch gets a row for each
            case, missing where the case was not seen or its Dice is undefined.
        output_dir: where the record is written (``filename``, CSV, rewritten atomically each epoch).
        mode: "patches" or "volumes".
        evaluator: the engine that infers the training volumes ("volumes" mode only).
        interval: epochs between volume evaluations ("volumes" mode only).
        output_transform: engine.state.output -> (logits or probabilities (B, C, ...), label (B, 1, ...)).
        batch_transform: engine.state.batch -> the case id of each item.
        save_rank: the rank that writes the file.
    """

    def __init__(
        self,
        record: DynamicsRecord,
        output_dir: str | os.PathLike,
        filename: str = "dynamics.csv",
        mode: str = "patches",
        evaluator: Engine | None = None,
        interval: int = 1,
        output_transform: Callable = from_engine(["pred", "label"]),
        batch_transform: Callable = from_engine(["case_id"]),
        save_rank: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown DAD mode {mode!r}; expected one of {MODES}")
        if mode == "volumes" and evaluator is None:
            raise ValueError("DAD mode 'volumes' needs an evaluator over the training volumes")
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.record = record
        self.num_classes = record.num_classes
        self.path = Path(output_dir) / filename
        self.mode = mode
        self.evaluator = evaluator
        self.interval = interval
        self.output_transform = output_transform
        self.batch_transform = batch_transform
        self.save_rank = save_rank
        self.logger = logging.getLogger("DADTracker")
        self._rows: list[int] = []  # the record row of every counted item this epoch
        self._counts: list[torch.Tensor] = []  # per-iteration (B, 3, C-1) counts, on the outputs' device
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
        self._rows, self._counts = [], []
        self._padding = padding_case_ids(engine.state.dataloader)

    def _collect(self, engine: Engine) -> None:
        pred, label = self.output_transform(engine.state.output)
        pred, label = _as_batch(pred).detach(), _as_batch(label).detach()
        if pred.shape[1] != self.num_classes:
            raise ValueError(f"prediction has {pred.shape[1]} channels, expected num_classes={self.num_classes}")
        case_ids = [str(c) for c in self.batch_transform(engine.state.batch)]
        if len(case_ids) != pred.shape[0]:
            raise ValueError(f"{len(case_ids)} case ids for a batch of {pred.shape[0]} predictions")
        counts = foreground_counts_torch(class_indices(pred), label, self.num_classes)
        if self._padding:
            keep = [i for i, c in enumerate(case_ids) if c not in self._padding]
            counts, case_ids = counts[keep], [case_ids[i] for i in keep]
        self._rows.extend(self.record.rows_of(case_ids).tolist())
        self._counts.append(counts)

    def _pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's counts pooled per case and summed over ranks: (n_cases, 3, C-1), (n_cases,)."""
        n_cases = len(self.record.case_ids)
        device = self._counts[0].device if self._counts else torch.device("cpu")
        if idist.get_world_size() > 1 and idist.backend() == "nccl":
            device = idist.device()
        pooled = torch.zeros((n_cases, 3 * (self.num_classes - 1) + 1), dtype=torch.int64, device=device)
        if self._counts:
            counts = torch.cat(self._counts).to(device=device, dtype=torch.int64).flatten(1)
            ones = torch.ones((counts.shape[0], 1), dtype=torch.int64, device=device)  # the n_items column
            rows = torch.as_tensor(self._rows, dtype=torch.int64, device=device)
            pooled.index_add_(0, rows, torch.cat([counts, ones], dim=1))
        if idist.get_world_size() > 1:
            pooled = idist.all_reduce(pooled)
        pooled = pooled.cpu().numpy()
        return pooled[:, :-1].reshape(n_cases, 3, self.num_classes - 1), pooled[:, -1]

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if self.mode == "volumes":
            if epoch % self.interval != 0:
                return
            self.evaluator.run()
        self.record.add_pooled_epoch(epoch, self.mode, *self._pooled())
        if idist.get_rank() == self.save_rank:
            self.record.save(self.path)
        latest = self.record.dice_matrix()[1][:, -1]
        measured = latest[~np.isnan(latest)]
        mean = measured.mean() if measured.size else float("nan")
        loss = engine.state.metrics.get("train_loss")  # the trainer's key metric, computed before the handlers run
        loss_text = f"loss {loss:.4f}, " if isinstance(loss, (int, float)) else ""
        self.logger.info(
            f"epoch {epoch}/{engine.state.max_epochs}: {loss_text}mean DAD {mean:.4f} "
            f"({self.mode} Dice of {measured.size}/{latest.size} cases)"
        )


CURVE_FIELDS = (
    "window",
    "epoch_start",
    "epoch_end",
    "measured",
    "distance_abs",
    "distance_signed",
    "distance",
    "max_distance",
    "ratio",
    "window_floor",
    "noise_floor",
    "kept_jaccard",
    "spearman",
    "stop",
)
RULE_NAMES = {
    "distance": "moving_distance",
    "overlap": "subset_overlap",
    "noise": "noise_floor",
    "rank": "rank_correlation",
}


class MovingDistanceHandler:
    """Every ``delta_t`` epochs: DAD and variability per case over the last window, the moving
    distance L to the previous window, and the stop rule: with ``rule="distance"`` (the paper's)
    L <= ``stop_fraction`` x max L so far; with ``rule="overlap"`` (noise-robust, method-notes.md) the
    subsets the ambiguous strategy would keep at two consecutive windows overlap by a Jaccard index
    >= ``overlap_threshold``. Both L forms and the overlap are always written.

    Writes ``curve_filename`` (one row per window) and ``summary_filename`` (the prune epoch, or
    null with a note when the rule has not fired). When the rule fires, ``engine.state.prune_epoch``
    is set and, with ``early_prune``, training stops there.

    Args:
        record: the per-case record a ``DADTracker`` fills (attach the tracker first).
        output_dir: where the curve and summary are written.
        delta_t: window length in epochs (the paper recommends >= 10).
        stop_fraction: the rule's fraction of the largest L (1% in the paper).
        signed: use the paper's signed sum for the rule instead of absolute deltas (both are written).
        early_prune: stop training when the rule fires.
        rule: "distance" (the paper's), "overlap", "noise" or "rank" (``scripts.stop_rules``).
        overlap_threshold: the Jaccard index the overlap rule needs.
        overlap_rate: the prune rate of the subsets compared by the overlap rule.
        noise_factor: the noise rule fires when L <= this x the split-half noise floor.
        rank_threshold: the rank rule fires when consecutive windows' DAD correlate (Spearman) this much.
        measure_interval: epochs between measurements ("volumes" mode's ``dad_interval``, else 1); it
            must divide ``delta_t`` so every window holds the same number of measured epochs (a window
            with none has no L: the curve says so and the rule never counts it as settled).
    """

    def __init__(
        self,
        record: DynamicsRecord,
        output_dir: str | os.PathLike,
        delta_t: int = 10,
        stop_fraction: float = 0.01,
        signed: bool = False,
        early_prune: bool = False,
        rule: str = "distance",
        overlap_threshold: float = 0.9,
        overlap_rate: float = 0.3,
        noise_factor: float = 1.0,
        rank_threshold: float = 0.95,
        curve_filename: str = "moving_distance.csv",
        summary_filename: str = "stop_rule.json",
        save_rank: int = 0,
        measure_interval: int = 1,
    ) -> None:
        if delta_t < 1:
            raise ValueError(f"delta_t must be >= 1, got {delta_t}")
        if measure_interval < 1 or delta_t % measure_interval:
            raise ValueError(
                f"the DAD is measured every {measure_interval} epochs, which does not divide the window of "
                f"delta_t={delta_t} epochs: windows would hold unequal numbers of measurements, or none; "
                "choose dad_interval dividing delta_t"
            )
        if not 0 < stop_fraction < 1:
            raise ValueError(f"stop_fraction must be in (0, 1), got {stop_fraction}")
        if rule not in RULES:
            raise ValueError(f"unknown stop rule {rule!r}; expected one of {RULES}")
        if not 0 < overlap_threshold <= 1:
            raise ValueError(f"overlap_threshold must be in (0, 1], got {overlap_threshold}")
        if not 0 < overlap_rate < 1:
            raise ValueError(f"overlap_rate must be in (0, 1), got {overlap_rate}")
        if noise_factor <= 0:
            raise ValueError(f"noise_factor must be > 0, got {noise_factor}")
        if not -1 < rank_threshold <= 1:
            raise ValueError(f"rank_threshold must be in (-1, 1], got {rank_threshold}")
        if rule == "noise" and delta_t // measure_interval < 2:
            warnings.warn(
                f"the noise stop rule needs at least 2 measured epochs per window to estimate its noise floor; "
                f"with DAD measured every {measure_interval} epochs and delta_t={delta_t} it cannot fire "
                "(use a dad_interval of at most delta_t / 2, or another --stop_rule)",
                stacklevel=2,
            )
        self.rule = rule
        self.noise_factor = noise_factor
        self.rank_threshold = rank_threshold
        self.overlap_threshold = overlap_threshold
        self.overlap_rate = overlap_rate
        self.record = record
        self.delta_t = delta_t
        self.stop_fraction = stop_fraction
        self.signed = as_bool(signed, "signed")
        self.early_prune = as_bool(early_prune, "early_prune")
        self.curve_path = Path(output_dir) / curve_filename
        self.summary_path = Path(output_dir) / summary_filename
        self.save_rank = save_rank
        self.prune_epoch: int | None = None
        self.logger = logging.getLogger("MovingDistanceHandler")

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def curve(self, last_epoch: int) -> list[dict[str, Any]]:
        """The moving-distance curve of the record's complete windows up to ``last_epoch``, with the rule's
        window marked ``stop``."""
        epochs, dice = self.record.dice_matrix()
        rows = window_curve(epochs, dice, last_epoch, self.delta_t, self.overlap_rate, self.signed)
        fired = fired_window(
            rows, self.rule, self.stop_fraction, self.overlap_threshold, self.noise_factor, self.rank_threshold
        )
        for k, row in enumerate(rows[1:]):
            row["stop"] = int(fired == k)
        return rows

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if epoch % self.delta_t != 0:
            return
        rows = self.curve(epoch)
        stop_rows = [r for r in rows if r.get("stop")]
        self.prune_epoch = stop_rows[0]["epoch_end"] if stop_rows else None
        if idist.get_rank() == self.save_rank:
            table = [[_cell(r.get(k)) for k in CURVE_FIELDS] for r in rows]
            write_csv_atomic(self.curve_path, CURVE_FIELDS, table)
            write_json_atomic(self.summary_path, self.summary(epoch))
        last = rows[-1]
        if "distance" in last and np.isnan(last["distance"]):
            self.logger.info(f"epoch {epoch}: no moving distance, a window of the pair has no measured case")
        elif "distance" in last:
            self.logger.info(
                f"epoch {epoch}: moving distance L={last['distance']:.4f} "
                f"({last['ratio']:.2%} of max {last['max_distance']:.4f})"
            )
        if self.prune_epoch == epoch:
            engine.state.prune_epoch = epoch
            self.logger.info(f"stop rule fired: DAD ranking settled at epoch {epoch}")
            if self.early_prune:
                self.logger.info("early_prune: stopping stage-1 training here")
                engine.terminate()

    def summary(self, last_epoch: int) -> dict[str, Any]:
        fired = self.prune_epoch is not None
        what, why_not = {
            "distance": (
                f"L fell to <= {self.stop_fraction:.0%} of its maximum",
                f"L has not fallen to {self.stop_fraction:.0%} of its maximum (random-crop noise may keep it above)",
            ),
            "overlap": (
                f"the kept subsets of consecutive windows overlapped by Jaccard >= {self.overlap_threshold}",
                f"consecutive kept subsets have not overlapped by Jaccard >= {self.overlap_threshold}",
            ),
            "noise": (
                f"L fell to <= {self.noise_factor} x the split-half noise floor",
                f"L has stayed above {self.noise_factor} x the split-half noise floor",
            ),
            "rank": (
                f"consecutive windows' DAD ranked cases alike (Spearman >= {self.rank_threshold})",
                f"consecutive windows' DAD have not reached Spearman {self.rank_threshold}",
            ),
        }[self.rule]
        return {
            "rule": RULE_NAMES[self.rule],
            "noise_factor": self.noise_factor,
            "rank_threshold": self.rank_threshold,
            "delta_t": self.delta_t,
            "stop_fraction": self.stop_fraction,
            "distance": "signed" if self.signed else "absolute",
            "overlap_threshold": self.overlap_threshold,
            "overlap_rate": self.overlap_rate,
            "fired": fired,
            "prune_epoch": self.prune_epoch,
            "last_window_end": last_epoch,
            "note": f"{what} at epoch {self.prune_epoch}"
            if fired
            else f"the stop rule has not fired by epoch {last_epoch}: {why_not}",
        }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.8g}"
    return str(value)


class SubsetExportHandler:
    """Exports the pruned subset the moment the stop rule fires (after ``MovingDistanceHandler``
    set ``engine.state.prune_epoch``), so an ``early_prune`` run ends with its subset on disk.

    Args:
        record: the per-case record a ``DADTracker`` fills.
        dataset_json: the data set the trainer reads (its training list is the record's cases).
        output_dir: where ``subset_datalist.json``, ``selection.csv`` and ``prune_summary.json`` go.
        delta_t, rate, strategy, seed, stratify: as in ``scripts.prune.select_subset``.
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
        from scripts.prune import export_subset, select_subset

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
