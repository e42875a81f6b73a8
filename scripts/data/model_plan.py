"""The plan that travels with a model. A training run writes ``plan.json`` (its plan and the preprocessing
it used: ``scripts.data.plan.write_plan``) beside its checkpoints, in ``ckpt_dir``; every consumer of a
checkpoint finds it there and applies it: evaluation and scoring (``model_plan`` in configs/train.yaml,
set by configs/evaluate.yaml and configs/scoring.yaml, so the audit's folds too), the review, inference
(``plan_json``) and the Model Zoo export (``models/plan.json``). ``check_applies`` refuses, in one line
naming both, a preset, override or plan that disagrees with the checkpoint's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.data.plan import follows_plan, used_of
from scripts.utils.errors import InputError

__all__ = ["PLAN_FILE", "check_applies", "classes", "plan_beside", "planned", "read_model_plan"]

PLAN_FILE = "plan.json"
USED = ("num_classes", "spacing_transforms", "intensity_transforms")  # what a run uses, in plan.json's order
logger = logging.getLogger("plan")


def plan_beside(checkpoint: str | os.PathLike | None) -> str | None:
    """The ``plan.json`` in a checkpoint's folder (its training wrote it there), or None when there is none."""
    if checkpoint is None or str(checkpoint) in ("", "None", "null"):
        return None
    path = Path(os.path.abspath(checkpoint)).parent / PLAN_FILE
    return str(path) if path.is_file() else None


def _given(plan_json: str | os.PathLike | None) -> bool:
    return plan_json is not None and str(plan_json) not in ("", "None", "null")


def read_model_plan(plan_json: str | os.PathLike | None) -> dict[str, Any] | None:
    """A training run's ``plan.json`` (``{"plan": ..., "used": ...}``), or None when none is given."""
    if not _given(plan_json):
        return None
    path = Path(os.path.abspath(plan_json))
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(
            f"plan {path}: cannot be read ({type(err).__name__}); fix: give a training run's plan.json (beside its "
            "checkpoint, or in its output_dir)"
        ) from err
    if not isinstance(content, Mapping) or "plan" not in content or "used" not in content:
        raise InputError(f"plan {path}: not a training run's plan.json (no 'plan' and 'used'); fix: give one")
    return dict(content)


def planned(plan_json: str | os.PathLike | None) -> dict[str, Any] | None:
    """The plan a model was trained with (what its run planned from the data), or None without one."""
    content = read_model_plan(plan_json)
    return None if content is None else dict(content["plan"])


def classes(plan_json: str | os.PathLike | None) -> int | None:
    """The classes a model was trained for, or None without its plan."""
    content = read_model_plan(plan_json)
    return None if content is None else int(content["used"]["num_classes"])


def _short(value: Any) -> str:
    """``Spacingd(pixdim=[1.0, 1.0, 2.75]), SpatialPadd(...)`` for a described list; the value otherwise."""
    if not isinstance(value, list):
        return str(value)
    if not value:
        return "none"
    parts = []
    for t in value:
        name = str(t.get("transform", t.get("_target_", "?"))) if isinstance(t, Mapping) else str(t)
        items = t.items() if isinstance(t, Mapping) else ()
        settings = ", ".join(f"{k}={v}" for k, v in items if k not in ("transform", "_target_"))
        parts.append(f"{name}({settings})")
    return ", ".join(parts)


def check_applies(
    checkpoint: str | os.PathLike,
    num_classes: int,
    spacing: Sequence[Any],
    intensity: Sequence[Any],
    plan_json: str | os.PathLike | None = None,
    option: str = "model_plan",
) -> str:
    """``checkpoint`` when this run preprocesses as its training did (the classes, the spacing and the
    intensity transforms of the ``plan.json`` beside it); else ``InputError`` in one line naming the
    checkpoint's plan and this run's setting (``--<option> plan_json`` when it is another plan, else a
    preset or override), and the fix. A checkpoint without a plan beside it (trained before 0.7.0) is
    used with this run's settings, with a warning."""
    beside = plan_beside(checkpoint)
    if beside is None:
        logger.warning(
            f"checkpoint {os.path.abspath(checkpoint)} has no {PLAN_FILE} beside it (trained before 0.7.0, or "
            "copied without it): its preprocessing is this run's settings and cannot be checked; fix: copy its "
            f"training's <output_dir>/{PLAN_FILE} beside it"
        )
        return str(checkpoint)
    content = read_model_plan(beside)
    theirs, ours = content["used"], used_of(num_classes, spacing, intensity)
    wrong = [k for k in USED if ours[k] != theirs.get(k)]
    if not wrong:
        return str(checkpoint)
    other = _given(plan_json) and os.path.abspath(plan_json) != beside
    if other:
        origin, fix = f"--{option} {os.path.abspath(plan_json)}", f"drop --{option} (the checkpoint's own plan applies)"
    elif follows_plan(content):
        origin, fix = "a preset or --key override", "drop the preset and overrides (its own plan applies without them)"
    else:
        origin, fix = "this run's preset or overrides", "merge the preset and pass the overrides it was trained with"
    key = wrong[0]
    raise InputError(
        f"checkpoint {os.path.abspath(checkpoint)} was trained with {key} {_short(theirs.get(key))} ({beside}), "
        f"this run has {_short(ours[key])} ({origin}); fix: {fix}"
    )
