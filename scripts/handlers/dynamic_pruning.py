"""Dynamic pruning of stage 1 (issue 18), the Ignite glue around ``scripts.core.dynamic_rule``.

- ``DynamicSampler``: the training loader's sampler. When an epoch starts (``set_epoch``, which MONAI's
  engines call before any handler runs) it plans the epoch from the dynamics record with the pure rule
  and a generator drawn from (seed, epoch) alone, so every rank and a resumed run make the same
  decisions; it yields this rank's share of the epoch's visits (``DistributedSampler``'s layout, the
  padding repeats named by ``padding_indices`` so the DAD tracker leaves them out), each as
  ``(row, crops, weight)`` for ``scripts.data.visits.VisitDataset``, so the weights ride in the batch.
- ``DynamicPruning``: the handler. At each epoch start it sets the epoch's length (fewer iterations);
  after each loss it weights the items of the batch (easy cases 1/(1-r), padding 0) with the trainer's
  loss weighted exactly (``scripts.core.weighted_loss``: an item of weight w counts as w copies); at each epoch
  end, after the DAD tracker, it measures the dropped cases (a forward pass, no gradient, shared out
  across ranks and summed once), writes every case's visit status into the record and the cost of the
  epoch (``scripts.handlers.dynamic_cost``: visits, crops, iterations, seconds of the training loop, the
  measurement and the validation). Its state rides in the trainer's state
  (``engine.state.dynamic_pruning``, an Ignite user key), so ``ResumeCheckpoint`` saves and restores it.
"""

from __future__ import annotations

import logging
import math
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader
from monai.engines.utils import IterationEvents
from monai.handlers import from_engine
from scripts.core.counts import class_indices, foreground_counts_torch
from scripts.core.dynamic_rule import DynamicSettings, EpochPlan, epoch_rng, plan_epoch, split_for_rank
from scripts.core.weighted_loss import WeightedLoss
from scripts.data.record import DynamicsRecord
from scripts.data.visits import WEIGHT_KEY
from scripts.handlers.dynamic_cost import COST_FIELDS, read_budget, write_cost
from scripts.utils.flags import as_bool
from torch.utils.data import DistributedSampler, Subset

# the default transform, built once (a stateless callable; flake8-bugbear B008)
PRED_LABEL = from_engine(["pred", "label"])

__all__ = ["DynamicSampler", "DynamicPruning", "COST_FIELDS", "read_budget", "keep_the_epoch_count_in_charge"]

STATE_KEY = "dynamic_pruning"


def keep_the_epoch_count_in_charge(engine: Engine) -> None:
    """Keep Ignite's iteration count from ending a run whose epochs shrink: Ignite also stops once
    ``iteration >= epoch_length x max_epochs``, a count meant for epochs of equal length, which the
    shorter pruned epochs after a full warm-up reach before the last epoch. Raise the epoch length (the
    next epoch sets its own when it starts) so that only ``max_epochs`` ends the run."""
    state = engine.state
    if state.epoch_length is not None and state.max_epochs:
        state.epoch_length = max(state.epoch_length, state.iteration // state.max_epochs + 1)


def _batch_case_ids(batch: Any) -> list[str]:
    """The case id of every item of a batch, collated (a dict, as when the loss is computed) or decollated."""
    if isinstance(batch, Mapping):
        return [str(c) for c in batch["case_id"]]
    return [str(item["case_id"]) for item in batch]


def _batch_weights(batch: Any) -> np.ndarray:
    """The loss weight of every item of a batch (``VisitDataset`` stamps them), collated or decollated."""
    items = [batch] if isinstance(batch, Mapping) else list(batch)
    if any(WEIGHT_KEY not in item for item in items):
        raise KeyError(
            f"the training batch has no {WEIGHT_KEY!r}: the training loader's data set must be "
            "scripts.data.visits.VisitDataset over the one DynamicSampler reads (configs/dynamic.yaml sets it)"
        )
    if isinstance(batch, Mapping):
        return torch.as_tensor(batch[WEIGHT_KEY]).flatten().cpu().numpy().astype(np.float64)
    return np.array([float(item[WEIGHT_KEY]) for item in items])


class DynamicSampler(DistributedSampler):
    """Per-epoch subset sampler of the training data set (its indices are the record's rows).

    Args:
        dataset: the training data set, in the record's case order.
        record: the dynamics record the rule reads (filled by ``DADTracker`` on every rank alike).
        settings: ``DynamicSettings`` or its keyword arguments.
        seed: seeds every epoch's draws (with the epoch).
        budget: per-epoch visits for the "random" rule (a list, epoch 1 first), else None.
        loss_score: the record's loss column the "infobatch" rule reads.
    """

    def __init__(
        self,
        dataset: Any,
        record: DynamicsRecord,
        settings: DynamicSettings | Mapping[str, Any],
        seed: int = 0,
        budget: Sequence[int] | None = None,
        loss_score: str = "loss",
    ) -> None:
        super().__init__(dataset, num_replicas=1, rank=0, shuffle=False, seed=seed)
        if len(dataset) != len(record.case_ids):
            raise ValueError(
                f"the training data set has {len(dataset)} items but the record {len(record.case_ids)} cases"
            )
        self.record = record
        self.settings = settings if isinstance(settings, DynamicSettings) else DynamicSettings(**settings)
        self.budget = None if budget is None else [int(b) for b in budget]
        self.loss_score = loss_score
        self.stop_fired = False
        self.plan: EpochPlan | None = None
        self._slots = np.arange(0, dtype=np.int64)  # this rank's positions in the plan's visits
        self._padding = np.zeros(0, dtype=bool)

    def _world(self) -> tuple[int, int]:
        return idist.get_rank(), idist.get_world_size()

    def plan_for(self, epoch: int) -> EpochPlan:
        """The plan of ``epoch`` from the record's epochs before it (a pure function of record, seed, epoch)."""
        s = self.settings
        dice = loss = None
        if s.rule == "infobatch":
            if self.loss_score not in self.record.score_names and self.record.epochs:
                raise ValueError(
                    f"the infobatch rule reads the per-case loss column {self.loss_score!r}, which the record "
                    f"lacks (it has {self.record.score_names}); run with --score_patches True"
                )
            epochs = np.asarray(self.record.epochs, dtype=np.int64)
            loss = (self.record.score_matrix(self.loss_score)[1] if self.loss_score in self.record.score_names
                    else np.full((len(self.record.case_ids), 0), np.nan))  # fmt: skip
        else:  # the dad rule ranks by the window before the epoch: its epochs only, whatever the epochs recorded
            epochs, dice = self.record.dice_window(epoch - 1 - s.window, epoch - 1)
        budget = None
        if s.rule == "random":
            if not self.budget or epoch > len(self.budget):
                raise ValueError(
                    f"the random rule has no budget for epoch {epoch} (budget of {len(self.budget or [])} epochs)"
                )
            budget = self.budget[epoch - 1]
        return plan_epoch(epoch, s, epoch_rng(self.seed, epoch), dice=dice, epochs=epochs,
                          centers=self.record.centers, loss=loss, budget=budget,
                          stop_fired=self.stop_fired, n_cases=len(self.record.case_ids))  # fmt: skip

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.plan is None or self.plan.epoch != epoch:
            self.plan = self.plan_for(epoch)
        rank, world = self._world()
        self.rank, self.num_replicas = rank, world
        self._slots, self._padding = split_for_rank(np.arange(len(self.plan.visits)), rank, world)

    def _ensure(self) -> None:
        if self.plan is None:
            self.set_epoch(max(self.epoch, 1))

    def visits_of_rank(self) -> list[tuple[int, int, float]]:
        """This rank's visits this epoch, ``(row, crops, weight)`` each; a padding repeat (which only keeps
        the ranks' batch counts equal) trains one crop at weight 0."""
        self._ensure()
        plan = self.plan
        out = []
        for k, pad in zip(self._slots, self._padding):
            row = int(plan.visits[k])
            out.append((row, 1, 0.0) if pad else (row, int(plan.visit_crops[k]), float(plan.visit_weight[k])))
        return out

    def __iter__(self):  # type: ignore[override]
        return iter(self.visits_of_rank())

    def __len__(self) -> int:
        self._ensure()
        return len(self._slots)

    def padding_indices(self) -> list[int]:
        """Data set indices this rank yields as padding this epoch (``scripts.data.distributed``)."""
        self._ensure()
        return self.plan.visits[self._slots[self._padding]].tolist()


class DynamicPruning:
    """The trainer's handler of dynamic pruning (see the module docstring).

    Args:
        sampler: the training loader's ``DynamicSampler``.
        record: the dynamics record (the same object the sampler and the DAD tracker hold).
        output_dir: where ``dynamic_cost.csv`` and ``dynamic_summary.json`` are written.
        network: the network measured on the dropped cases (a DDP wrapper is unwrapped).
        measure_dataset: the training cases with the measurement transform (record order): training
            crops by default (the patch Dice's scale), or whole volumes.
        inferer: inference for the measurement pass (``SimpleInferer`` on crops, sliding window on volumes).
        measure_batch_size: cases per forward pass of the measurement (crops: the training batch size;
            whole volumes, which differ in size: 1).
        validator: the validation engine, timed for the cost rows (its runs are ``ValidateAtEnd``'s).
        loss_function: the trainer's loss (MONAI's DiceCELoss or DiceLoss), recomputed with each item's weight
            when a batch holds an item whose weight is not 1.
        device: where the measured batches go.
        amp: autocast the measurement pass (CUDA only).
        batch_size: the training loader's batch size (the epoch's iteration count).
        output_transform / batch_transform: the trainer's (pred, label) and the batch's case ids.
        save_rank: the rank that writes.
    """

    def __init__(
        self,
        sampler: DynamicSampler,
        record: DynamicsRecord,
        output_dir: str | os.PathLike,
        network: torch.nn.Module,
        measure_dataset: Any,
        inferer: Callable,
        loss_function: Callable,
        batch_size: int,
        device: Any = "cpu",
        amp: bool = False,
        output_transform: Callable = PRED_LABEL,
        batch_transform: Callable | None = None,
        save_rank: int = 0,
        measure_batch_size: int = 1,
        validator: Engine | None = None,
    ) -> None:
        self.sampler = sampler
        self.record = record
        self.output_dir = Path(output_dir)
        self.network = network
        self.measure_dataset = measure_dataset
        self.inferer = inferer
        self.weighted_loss = WeightedLoss(loss_function)
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if isinstance(device, str) else device
        self.amp = as_bool(amp, "amp")
        self.output_transform = output_transform
        self.batch_transform = batch_transform or _batch_case_ids
        self.save_rank = save_rank
        self.logger = logging.getLogger("DynamicPruning")
        self.measure_batch_size = int(measure_batch_size)
        self.validator = validator
        self._trained = np.zeros(len(record.case_ids), dtype=np.int64)  # items trained at weight > 0, this rank
        self._t0 = self._t_last = self._val_t0 = 0.0
        self._iterations, self._val_s = 0, 0.0

    # ---- state, saved with the trainer's (ResumeCheckpoint) ----
    def _state(self, engine: Engine) -> dict[str, Any]:
        return getattr(engine.state, STATE_KEY)

    def attach(self, engine: Engine) -> None:
        setattr(engine.state, STATE_KEY, {"seed": int(self.sampler.seed), "settings": self.sampler.settings.as_dict(),
                                          "stop_fired": False, "cost": []})  # fmt: skip
        if STATE_KEY not in engine.state_dict_user_keys:
            engine.state_dict_user_keys.append(STATE_KEY)
        for event, fn in (
            (Events.STARTED, self.started),
            (Events.EPOCH_STARTED, self.epoch_started),
            (IterationEvents.LOSS_COMPLETED, self.reweight),
            (Events.ITERATION_COMPLETED, self.iteration_completed),
        ):
            if not engine.has_event_handler(fn, event):
                engine.add_event_handler(event, fn)
        if self.validator is not None and not self.validator.has_event_handler(self._validation_started):
            self.validator.add_event_handler(Events.STARTED, self._validation_started)
            self.validator.add_event_handler(Events.COMPLETED, self._validation_completed)
        # after the DAD tracker (attached before); ResumeCheckpoint and RecordWriter register their epoch
        # handlers when the run starts, so the checkpoint and the record of an epoch hold its visits and cost
        if not engine.has_event_handler(self.epoch_completed, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def started(self, engine: Engine) -> None:
        """After ``ResumeCheckpoint`` (attached before): check a restored state belongs to this run."""
        state = self._state(engine)
        if engine.state.epoch and state["cost"]:
            if state["seed"] != self.sampler.seed or state["settings"] != self.sampler.settings.as_dict():
                raise ValueError(
                    f"resume: the checkpoint's dynamic-pruning settings {state['settings']} (seed {state['seed']})"
                    f" differ from this run's {self.sampler.settings.as_dict()} (seed {self.sampler.seed});"
                    " resume with the same settings or start a fresh run (--resume False)"
                )
            state["cost"] = [r for r in state["cost"] if r["epoch"] <= engine.state.epoch]
            self.logger.info(f"resume: dynamic pruning restored after epoch {engine.state.epoch}")
        self.sampler.stop_fired = bool(state["stop_fired"])
        keep_the_epoch_count_in_charge(engine)  # a checkpoint saved before the guard existed

    def epoch_started(self, engine: Engine) -> None:
        self.sampler.set_epoch(engine.state.epoch)  # idempotent: MONAI's engine called it already
        engine.state.epoch_length = max(1, math.ceil(len(self.sampler) / self.batch_size))
        if getattr(engine, "_dataloader_iter", None) is None:
            # a (resumed) run sets its loader up after this event and would start the epoch at
            # iteration % epoch_length; the variable epoch lengths make that remainder meaningless
            engine._init_iter = 0
        self._trained[:] = 0
        self._iterations, self._val_s = 0, 0.0
        self._check_same_plan(engine.state.epoch)
        self._t0 = self._t_last = time.perf_counter()

    def iteration_completed(self, engine: Engine) -> None:
        self._iterations += 1
        self._t_last = time.perf_counter()  # the training loop's end, before the epoch's handlers run

    def _validation_started(self, _: Engine) -> None:
        self._val_t0 = time.perf_counter()

    def _validation_completed(self, _: Engine) -> None:
        self._val_s += time.perf_counter() - self._val_t0

    def reweight(self, engine: Engine) -> None:
        """Replace the batch loss by the trainer's loss with each item's weight (an item of weight w counts
        as w copies of it, 0 as none: exact for the batch Dice-CE, where a sum of per-item losses is not).
        A batch of weight-1 items keeps the trainer's loss as it is."""
        case_ids = [str(c) for c in self.batch_transform(engine.state.batch)]
        w = _batch_weights(engine.state.batch)
        if len(w) != len(case_ids):
            raise ValueError(f"{len(w)} loss weights for a batch of {len(case_ids)} items")
        np.add.at(self._trained, self.record.rows_of(case_ids)[w > 0], 1)
        if np.all(w == 1.0):
            return
        pred, label = self.output_transform(engine.state.output)
        pred = torch.stack(list(pred)) if isinstance(pred, (list, tuple)) else pred
        label = torch.stack(list(label)) if isinstance(label, (list, tuple)) else label
        engine.state.output["loss"] = self.weighted_loss(pred, label, torch.as_tensor(w, dtype=torch.float32))

    def _check_same_plan(self, epoch: int) -> None:
        """Every rank planned the same epoch (the same record and seed make the same draws): compare a
        digest of the plan across ranks, once per epoch, and stop on a mismatch rather than train apart."""
        world = idist.get_world_size()
        if world < 2:
            return
        plan = self.sampler.plan
        arrays = (plan.visits.astype(np.int64), plan.visit_crops.astype(np.int64), plan.visit_weight.astype(np.float64))
        digest = zlib.crc32(b"".join(a.tobytes() for a in arrays) + "|".join(plan.status).encode())
        device = idist.device() if idist.backend() == "nccl" else torch.device("cpu")
        digests = idist.all_gather(torch.tensor([digest], dtype=torch.int64, device=device)).cpu().tolist()
        if len(set(digests)) != 1:
            raise RuntimeError(
                f"epoch {epoch}: the ranks planned different visits (digests {digests}); their dynamics records "
                "or dynamic settings differ. Every rank must run the same config and DADTracker must gather all ranks"
            )
        if epoch == 1 or epoch == self.sampler.settings.epochs:
            self.logger.info(f"epoch {epoch}: the {world} ranks' plans agree")

    def _check_trained_once(self, epoch: int) -> int:
        """Items trained at weight > 0 per case, summed over ranks: each visit of a case trains its planned
        crops once between the ranks; padding repeats are not trained (weight 0)."""
        trained = torch.as_tensor(self._trained)
        if idist.get_world_size() > 1:
            device = idist.device() if idist.backend() == "nccl" else torch.device("cpu")
            trained = idist.all_reduce(trained.to(device)).cpu()
        trained = trained.numpy()
        plan = self.sampler.plan
        planned = np.bincount(plan.visits, weights=plan.visit_crops, minlength=len(trained)).astype(np.int64)
        if not np.array_equal(trained, planned):
            bad = np.flatnonzero(trained != planned)[:5]
            raise RuntimeError(
                f"epoch {epoch}: cases {[self.record.case_ids[i] for i in bad]} were trained on "
                f"{trained[bad].tolist()} crops against {planned[bad].tolist()} planned; the loader's sampler is "
                "not this handler's DynamicSampler, or its data set not the VisitDataset over it?"
            )
        return int(trained.sum())

    @torch.no_grad()
    def _measure(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Pooled counts (len(rows), 3, C-1) and item counts of the measured cases, summed over ranks."""
        start = time.perf_counter()
        rank, world = idist.get_rank(), idist.get_world_size()
        n_fg = self.record.num_classes - 1
        index = {int(r): k for k, r in enumerate(rows)}
        pooled = torch.zeros((len(rows), 3 * n_fg + 1), dtype=torch.int64)
        mine = rows[rank::world]
        net = getattr(self.network, "module", self.network)  # no DDP collectives in a rank-local pass
        was_training = net.training
        net.eval()
        loader = DataLoader(Subset(self.measure_dataset, mine.tolist()), batch_size=self.measure_batch_size,
                            num_workers=0)  # fmt: skip
        for batch in loader:
            image, label = batch["image"].to(self.device), batch["label"].to(self.device)
            with torch.autocast("cuda", enabled=self.amp and self.device.type == "cuda"):
                pred = self.inferer(image, net)
            counts = foreground_counts_torch(class_indices(pred), label, self.record.num_classes).cpu()
            for case, c in zip(batch["case_id"], counts):
                k = index[self.record.rows_of([str(case)])[0].item()]
                pooled[k, :-1] += c.flatten()
                pooled[k, -1] += 1
        net.train(was_training)
        if world > 1:
            device = idist.device() if idist.backend() == "nccl" else torch.device("cpu")
            pooled = idist.all_reduce(pooled.to(device)).cpu()
        pooled = pooled.numpy()
        return pooled[:, :-1].reshape(len(rows), 3, n_fg), pooled[:, -1], time.perf_counter() - start

    def epoch_completed(self, engine: Engine) -> None:
        """After ``DADTracker``: measure the dropped cases, write the visit column and the epoch's cost."""
        epoch, plan = engine.state.epoch, self.sampler.plan
        train_s = self._t_last - self._t0
        trained_items = self._check_trained_once(epoch)
        rows = plan.measure
        measure_items, measure_s = 0, 0.0
        if epoch not in self.record.epochs:
            raise RuntimeError(f"epoch {epoch} is not in the record: attach DynamicPruning after DADTracker")
        if len(rows):
            pooled, n_items, measure_s = self._measure(rows)
            self.record.merge_cases(epoch, rows, pooled, n_items)
            measure_items = int(n_items.sum())
        self.record.set_visits(epoch, plan.status)
        state = self._state(engine)
        if getattr(engine.state, "prune_epoch", None) is not None:  # MovingDistanceHandler: the ranking settled
            state["stop_fired"] = True
            self.sampler.stop_fired = True
        counts = plan.counts()
        seconds = {"train_s": train_s, "measure_s": measure_s, "val_s": self._val_s}
        row = {"epoch": epoch, "phase": plan.phase, **{k: counts[k] for k in COST_FIELDS if k in counts},
               "iterations": self._iterations, "measure_items": measure_items, "trained_items": trained_items,
               **{k: round(v, 3) for k, v in seconds.items()}}  # fmt: skip
        state["cost"] = [r for r in state["cost"] if r["epoch"] < epoch] + [row]
        if idist.get_rank() == self.save_rank:
            settings = self.sampler.settings
            write_cost(self.output_dir, state["cost"], len(self.record.case_ids), settings.num_crops,
                       {"settings": settings.as_dict(), "seed": int(self.sampler.seed)})  # fmt: skip
        self.logger.info(
            f"epoch {epoch} ({plan.phase}): {counts['visits']} visits ({counts['crops']} crops), {counts['thinned']} "
            f"thinned, {counts['cropped']} with fewer crops, {counts['dropped'] + counts['measured']} dropped "
            f"({counts['measured']} measured)"
        )
        keep_the_epoch_count_in_charge(engine)  # before ResumeCheckpoint's save: a resumed run checks it too
