"""``MovingDistanceHandler``: every Δt epochs, the data map's moving distance and the stop rule.

It reads the record a ``DADTracker`` fills; every rank runs it, only ``save_rank`` writes files.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
from ignite.engine import Engine, Events
from scripts.core.dynamics import window_bounds
from scripts.core.stop_rules import RULES, add_running_max, fired_window, window_row
from scripts.data.record import DynamicsRecord
from scripts.utils.atomic import write_csv_atomic, write_json_atomic
from scripts.utils.flags import as_bool

__all__ = ["MovingDistanceHandler", "CURVE_FIELDS", "RULE_NAMES"]


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
    "noise_distance",
    "noise_terms",
    "movers",
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
        rule: "distance" (the paper's), "overlap", "noise" or "rank" (``scripts.core.stop_rules``).
        overlap_threshold: the Jaccard index the overlap rule needs.
        overlap_rate: the prune rate of the subsets compared by the overlap rule.
        noise_factor: the noise rule fires when L <= this x the split-half noise floor.
        noise_max_movers: the noise rule's guard against a slow minority: it also needs at most this share
            of cases whose own DAD moved beyond 3 standard errors between the windows (curve column
            ``movers``); None: no guard, L against the floor alone.
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
        noise_max_movers: float | None = None,
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
        if noise_max_movers is not None and not 0 <= noise_max_movers <= 1:
            raise ValueError(f"noise_max_movers must be a share in [0, 1] or null, got {noise_max_movers}")
        if not -1 < rank_threshold <= 1:
            raise ValueError(f"rank_threshold must be in (-1, 1], got {rank_threshold}")
        if rule == "noise" and delta_t // measure_interval < 2:
            warnings.warn(
                f"the noise stop rule needs at least 2 measured epochs per window to estimate its noise floor; "
                f"with DAD measured every {measure_interval} epochs and delta_t={delta_t} it cannot fire "
                "(use a dad_interval of at most delta_t / 2, or another --stop_rule)",
                stacklevel=2,
            )
        elif rule == "noise" and delta_t // measure_interval < 4:
            note = (
                f"the noise stop rule: with DAD measured every {measure_interval} epochs and delta_t={delta_t}, a "
                "half window holds one measurement (its variability is 0), so L and the noise floor are compared "
                "on their mean term alone (curve column noise_terms); use dad_interval <= delta_t / 4 for both terms"
            )
            logging.getLogger("MovingDistanceHandler").warning(note)
        self.rule = rule
        self.noise_factor = noise_factor
        self.noise_max_movers = noise_max_movers
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
        # each window's row, computed once: {window: (the record's version of its epochs and the previous
        # window's, row)}; a row is computed again only when one of those epochs changed
        self._rows: dict[int, tuple[tuple[int, int], dict[str, Any]]] = {}

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def curve(self, last_epoch: int) -> list[dict[str, Any]]:
        """The moving-distance curve of the record's complete windows up to ``last_epoch``, with the rule's
        window marked ``stop``: ``scripts.core.stop_rules.window_curve``'s rows, each window's computed from
        its own epochs and the previous window's only when those changed, so a new window costs the same
        however many epochs came before it."""
        rows = []
        for w, (start, end) in enumerate(window_bounds(last_epoch, self.delta_t), start=1):
            version = self.record.version(start - self.delta_t, end)
            if w not in self._rows or self._rows[w][0] != version:
                prev = self.record.dice_window(start - self.delta_t, start) if w > 1 else None
                row = window_row(w, start, end, self.record.dice_window(start, end), prev, self.overlap_rate,
                                 self.signed)  # fmt: skip
                self._rows[w] = (version, row)
            rows.append(dict(self._rows[w][1]))
        add_running_max(rows)
        fired = fired_window(
            rows,
            self.rule,
            self.stop_fraction,
            self.overlap_threshold,
            self.noise_factor,
            self.rank_threshold,
            self.noise_max_movers,
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
        guard = guard_not = ""
        if self.noise_max_movers is not None:
            guard = f" with at most {self.noise_max_movers:.0%} of cases still moving beyond their noise"
            guard_not = f", or more than {self.noise_max_movers:.0%} of cases were still moving beyond their noise"
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
                f"L fell to <= {self.noise_factor} x the split-half noise floor{guard}",
                f"L has stayed above {self.noise_factor} x the split-half noise floor{guard_not}",
            ),
            "rank": (
                f"consecutive windows' DAD ranked cases alike (Spearman >= {self.rank_threshold})",
                f"consecutive windows' DAD have not reached Spearman {self.rank_threshold}",
            ),
        }[self.rule]
        return {
            "rule": RULE_NAMES[self.rule],
            "noise_factor": self.noise_factor,
            "noise_max_movers": self.noise_max_movers,
            "rank_threshold": self.rank_threshold,
            "delta_t": self.delta_t,
            "stop_fraction": self.stop_fraction,
            "distance": "signed" if self.signed else "absolute",
            "overlap_threshold": self.overlap_threshold,
            "overlap_rate": self.overlap_rate,
            "fired": fired,
            "prune_epoch": self.prune_epoch,
            "last_window_end": last_epoch,
            "note": (
                f"{what} at epoch {self.prune_epoch}"
                if fired
                else f"the stop rule has not fired by epoch {last_epoch}: {why_not}"
            ),
        }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.8g}"
    return str(value)
