"""Stage 1's DAD signal in the experiment trackers MONAI attaches with ``--tracking mlflow``.

``python -m monai.bundle run training --config_file configs/train.yaml --tracking mlflow`` patches an
``MLFlowHandler`` onto the trainer and the validator (MONAI 1.6 bundle tracking: the loss per
iteration and epoch, the validation Dice, the executed config). ``DADTrackingLogger`` (in
train.yaml's handlers, attached before MONAI's tracking handlers) adds to that same run the stage-1
parameters, the mean DAD of every epoch (metric ``mean_dad``), and at the end the DAD artefacts:
``dynamics.csv``, ``moving_distance.csv``, ``stop_rule.json`` and a data map of the last window
(``data_map_stage1.png``). Without a tracker attached it does nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scripts.core.dynamics import window_bounds, window_stats
from scripts.data.record import DynamicsRecord
from scripts.utils.atomic import atomic_output

__all__ = ["DADTrackingLogger", "mlflow_handlers", "plot_stage1_data_map"]

ARTEFACTS = ("dynamics.csv", "moving_distance.csv", "stop_rule.json")


def mlflow_handlers(engine: Engine) -> list[Any]:
    """MONAI ``MLFlowHandler`` objects attached to ``engine`` (found by their STARTED callbacks)."""
    found = []
    for func, *_ in engine._event_handlers.get(Events.STARTED, []):  # ignite keeps (handler, args, kwargs)
        owner = getattr(func, "__self__", None)
        if type(owner).__name__ == "MLFlowHandler" and owner not in found:
            found.append(owner)
    return found


def plot_stage1_data_map(record: DynamicsRecord, delta_t: int, path: str | os.PathLike) -> Path:
    """DAD (mean Dice) against variability (std) of every case over the last full window, by center."""
    epochs, dice = record.dice_matrix()
    last = int(epochs.max()) if epochs.size else 0
    windows = window_bounds(last, delta_t) if last else []
    start, end = windows[-1] if windows else (0, last)
    dad, variability = window_stats(dice, epochs, start, end)
    fig = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    centers = np.asarray(record.centers)
    for center in sorted(set(record.centers)):
        pick = centers == center
        ax.scatter(variability[pick], dad[pick], s=18, alpha=0.8, label=center)
    ax.set_xlabel("variability (std of the case's Dice)")
    ax.set_ylabel("DAD (mean of the case's Dice)")
    ax.set_title(f"stage-1 data map, epochs {start + 1}-{end}")
    if record.centers:
        ax.legend(fontsize=8)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return Path(path)


class DADTrackingLogger:
    """Log stage-1 parameters, the mean DAD per epoch and the DAD artefacts to the MLflow run of the
    ``MLFlowHandler`` MONAI attached to the trainer; a no-op when none is attached."""

    def __init__(
        self,
        record: DynamicsRecord,
        output_dir: str | os.PathLike,
        delta_t: int,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.record = record
        self.output_dir = Path(output_dir)
        self.delta_t = int(delta_t)
        self.params = dict(params or {})
        self._params_logged = False
        self.logger = logging.getLogger("DADTrackingLogger")

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.epoch_completed, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)

    @staticmethod
    def _runs(engine: Engine) -> list[tuple[Any, str]]:
        return [(h.client, h.cur_run.info.run_id) for h in mlflow_handlers(engine) if h.cur_run is not None]

    def epoch_completed(self, engine: Engine) -> None:
        runs = self._runs(engine)
        if not runs:
            return
        from mlflow.entities import Metric, Param  # only imported when MLflow tracking is on

        epochs, dice = self.record.dice_matrix()
        metrics = []
        if epochs.size and int(epochs[-1]) == engine.state.epoch:
            latest = dice[:, -1]
            if np.any(~np.isnan(latest)):
                value = float(np.nanmean(latest))
                metrics.append(Metric("mean_dad", value, int(time.time() * 1000), engine.state.epoch))
        params = [] if self._params_logged else [Param(k, str(v)[:6000]) for k, v in self.params.items()]
        for client, run_id in runs:
            client.log_batch(run_id, metrics=metrics, params=params, tags=[])
        self._params_logged = True

    def completed(self, engine: Engine) -> None:
        runs = self._runs(engine)
        if not runs:
            return
        files = [self.output_dir / name for name in ARTEFACTS if (self.output_dir / name).is_file()]
        if self.record.epochs:
            files.append(plot_stage1_data_map(self.record, self.delta_t, self.output_dir / "data_map_stage1.png"))
        for client, run_id in runs:
            for f in files:
                client.log_artifact(run_id, str(f), artifact_path="dad")
        self.logger.info(f"logged {len(files)} DAD artefacts to the MLflow run(s) {[r for _, r in runs]}")
