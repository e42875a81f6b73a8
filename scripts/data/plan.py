"""Stage 1 configured from the data, the way nnU-Net plans from a data fingerprint.

With no preset, ``configs/train.yaml`` takes from here: the classes (``dataset.json``'s ``labels``), and,
from the checks' single pass over the images (``scripts.data.checks.scan_dataset``), the resampling, the
padding to the patch size and the intensity normalisation. A preset or a ``--key`` override of
``num_classes``, ``spacing_transforms`` or ``intensity_transforms`` still wins; ``<output_dir>/plan.json``
records the plan and what the run used.

The rules (``make_plan``, pure over plain values, so the same data always gives the same plan):

- spacing: the target is the median spacing per axis (RAS order); resample (``Spacingd``) only when some
  case is off it by more than 1%;
- padding: ``SpatialPadd`` to the patch when some case, at the target spacing, is smaller than the patch
  along an axis (``RandCropByPosNegLabeld`` cannot crop a patch larger than the image);
- normalisation: CT (``modality`` exactly "CT", as nnU-Net reads it: Hounsfield units, comparable across
  cases): clip to the 0.5 and 99.5 percentiles of the foreground voxels of all cases and scale that range
  to [0, 1] (``ScaleIntensityRanged``); anything else (MR, "synthetic CT" with per-center scales): a
  z-score per image (``NormalizeIntensityd``), over the non-zero voxels only when the median case is at
  least 25% zeros (a skull-stripped or masked background).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.data.checks import DataError, Fingerprint
from scripts.utils.atomic import write_json_atomic
from scripts.utils.errors import InputError

__all__ = [
    "classes_of",
    "describe",
    "intensity_transforms",
    "make_plan",
    "plan_from_stats",
    "source_of",
    "spacing_transforms",
    "write_plan",
]

SPACING_RTOL = 0.01
NONZERO_FRACTION = 0.25
CT_PERCENTILES = (0.5, 99.5)
logger = logging.getLogger("plan")


def classes_of(dataset_json: str | os.PathLike) -> int:
    """The number of classes (background included) in ``dataset.json``'s ``labels``: the largest label
    value + 1, in MSD's ``{"0": "background", ...}`` or nnU-Net v2's ``{"background": 0, ...}`` form."""
    path = os.path.abspath(dataset_json)
    try:
        labels = json.loads(Path(path).read_text()).get("labels")
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the data list ({e}); fix: give a Decathlon-style JSON") from e
    if not labels or not isinstance(labels, Mapping):
        raise DataError(f"{path}: no 'labels' to count the classes from; fix: add them or use --num_classes N")
    try:
        numbered = all(str(k).isdigit() for k in labels)
        values = [int(k) for k in labels] if numbered else [int(v) for v in labels.values()]
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: labels {labels} are not value -> name; fix: use --num_classes N") from e
    return max(values) + 1


def source_of(dataset_json: str | os.PathLike) -> str:
    """The data list a plan is made from: for an exported subset (``subset_datalist.json``) the stage-1 data
    list it was pruned from, so a retraining and its evaluation preprocess as stage 1 did; else the data
    list itself. The path is absolute (resolved against the working directory)."""
    path = os.path.abspath(dataset_json)
    try:
        source = json.loads(Path(path).read_text()).get("pruning", {}).get("source_datalist")
    except (OSError, ValueError, AttributeError):
        return path
    return os.path.abspath(source) if source and Path(source).is_file() else path


def plan_from_stats(
    shapes: np.ndarray,
    spacings: np.ndarray,
    zero_fractions: Sequence[float],
    foreground: np.ndarray,
    modality: str,
    patch_size: Sequence[int],
) -> dict[str, Any]:
    """The plan of ``n`` cases from plain values: ``shapes`` and ``spacings`` (n, 3) in RAS order,
    ``zero_fractions`` (n,), ``foreground`` the pooled foreground intensities (CT percentiles)."""
    patch = [int(p) for p in patch_size]
    shapes, spacings = np.asarray(shapes, dtype=np.float64), np.asarray(spacings, dtype=np.float64)
    if shapes.ndim != 2 or shapes.shape[0] == 0:
        return {
            "from": "dataset.json only (check_data is off: no images read)",
            "spacing": {"target": None, "resample": False},
            "padding": {"pad_to_patch": True, "patch_size": patch, "cases_smaller": None},
            "normalization": {"kind": "ct" if modality.strip() == "CT" else "zscore", "nonzero": False,
                              "clip": None},
        }  # fmt: skip
    target = np.median(spacings, axis=0)
    resample = bool(np.any(np.abs(spacings - target) > SPACING_RTOL * target))
    sizes = shapes * spacings / target
    smaller = np.any(sizes < np.asarray(patch) - 1e-6, axis=1)
    plan: dict[str, Any] = {
        "from": f"the checks' pass over {len(shapes)} labelled cases",
        "spacing": {"target": target.round(6).tolist(), "resample": resample, "min": spacings.min(0).tolist(),
                    "max": spacings.max(0).tolist()},
        "sizes": {"min": sizes.min(0).round(1).tolist(), "median": np.median(sizes, 0).round(1).tolist(),
                  "max": sizes.max(0).round(1).tolist()},
        "padding": {"pad_to_patch": bool(smaller.any()), "patch_size": patch, "cases_smaller": int(smaller.sum())},
    }  # fmt: skip
    if modality.strip() == "CT":
        fg = np.asarray(foreground, dtype=np.float64)
        if fg.size == 0:
            raise DataError("no foreground voxel in any label: cannot plan a CT normalisation; fix: a preset's")
        lo, hi = np.percentile(fg, CT_PERCENTILES)
        plan["normalization"] = {"kind": "ct", "clip": [float(lo), float(hi)], "percentiles": list(CT_PERCENTILES)}
    else:
        nonzero = bool(np.median(np.asarray(zero_fractions, dtype=np.float64)) >= NONZERO_FRACTION)
        plan["normalization"] = {"kind": "zscore", "nonzero": nonzero}
    return plan


def make_plan(fingerprint: Fingerprint, patch_size: Sequence[int]) -> dict[str, Any]:
    """The plan of a scanned data set (``scan_dataset``): classes, spacing, padding, normalisation."""
    cases = fingerprint.cases
    foreground = np.concatenate([c.foreground for c in cases]) if cases else np.zeros(0)
    plan = plan_from_stats(
        np.array([c.shape for c in cases]),
        np.array([c.spacing for c in cases]),
        [c.zero_fraction for c in cases],
        foreground,
        fingerprint.modality,
        patch_size,
    )
    return {"dataset_json": fingerprint.dataset_json, "labels": fingerprint.labels, "modality": fingerprint.modality,
            **plan}  # fmt: skip


def spacing_transforms(plan: Mapping[str, Any]) -> list:
    """``Spacingd`` to the target spacing (when the plan resamples), then ``SpatialPadd`` to the patch (when
    some case is smaller); both pass an image without label through (inference). The resampling computes in
    float32, the images' own type (MONAI's default float64 doubles its memory: 6.8 GB instead of 3.8 GB and
    twice the time for one 512 x 512 x 300 CT)."""
    from monai.transforms import Spacingd, SpatialPadd

    out: list = []
    if plan["spacing"].get("resample"):
        out.append(Spacingd(keys=["image", "label"], pixdim=plan["spacing"]["target"], mode=["bilinear", "nearest"],
                            dtype=np.float32, allow_missing_keys=True))  # fmt: skip
    if plan["padding"].get("pad_to_patch"):
        out.append(SpatialPadd(keys=["image", "label"], spatial_size=plan["padding"]["patch_size"],
                               allow_missing_keys=True))  # fmt: skip
    return out


def intensity_transforms(plan: Mapping[str, Any]) -> list:
    """CT: clip to the foreground percentiles and scale to [0, 1]; otherwise a z-score per image."""
    from monai.transforms import NormalizeIntensityd, ScaleIntensityRanged

    norm = plan["normalization"]
    if norm["kind"] == "ct" and norm.get("clip"):
        lo, hi = norm["clip"]
        return [ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)]
    if norm["kind"] == "ct":  # no statistics (check_data off): clip each image to its own percentiles
        from scripts.data.transforms import RobustZScored

        return [RobustZScored(keys="image", lower=CT_PERCENTILES[0], upper=CT_PERCENTILES[1], nonzero=False)]
    return [NormalizeIntensityd(keys="image", nonzero=bool(norm.get("nonzero")))]


_SETTINGS = ("pixdim", "spatial_size", "nonzero", "a_min", "a_max", "b_min", "b_max", "clip", "lower", "upper")


def describe(transforms: Sequence[Any]) -> list[dict[str, Any]]:
    """Plain descriptions of transforms (class and the settings that matter) for ``plan.json``."""
    out = []
    for t in transforms:
        if isinstance(t, Mapping):  # a config dict not instantiated
            out.append({k: v for k, v in t.items() if not str(k).startswith("_") or k == "_target_"})
            continue
        inner = [getattr(t, "spacing_transform", None), getattr(t, "padder", None), getattr(t, "scaler", None),
                 getattr(t, "normalizer", None), t]  # fmt: skip
        found: dict[str, Any] = {"transform": type(t).__name__}
        for obj in inner:
            for key in _SETTINGS:
                value = getattr(obj, key, None) if obj is not None else None
                if key not in found and isinstance(value, (int, float, bool, list, tuple, np.ndarray)):
                    found[key] = np.asarray(value).tolist()
        out.append(found)
    return out


def write_plan(
    output_dir: str | os.PathLike,
    plan: Mapping[str, Any],
    num_classes: int,
    spacing: Sequence[Any],
    intensity: Sequence[Any],
    memory: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<output_dir>/plan.json`` (the plan, and what the run used: a preset or an override wins; with
    ``memory``, where the preprocessed cases are kept and why: ``scripts.data.memory.plan_cache``) and log it."""
    used = {"num_classes": int(num_classes), "spacing_transforms": describe(spacing),
            "intensity_transforms": describe(intensity)}  # fmt: skip
    content = {"plan": dict(plan), "used": used} | ({"memory": dict(memory)} if memory is not None else {})
    path = write_json_atomic(Path(output_dir) / "plan.json", content)
    text = json.dumps(plan, ensure_ascii=False)
    logger.info(f"plan from the data ({plan.get('from')}): {text}; used: {json.dumps(used)}; {path}")
    return Path(path)


def read_used_plan(plan_json: str | os.PathLike | None) -> dict[str, Any] | None:
    """A stage-1 run's ``plan.json`` (for inference to preprocess as training did), or None when not given."""
    if plan_json is None or str(plan_json) in ("", "None", "null"):
        return None
    path = Path(plan_json)
    if not path.is_file():
        raise InputError(f"plan_json {path} not found; fix: pass a stage-1 run's <output_dir>/plan.json")
    content = json.loads(path.read_text())
    if "plan" not in content or "used" not in content:
        raise InputError(f"{path} is not a stage-1 plan.json (no 'plan'/'used'); fix: pass <output_dir>/plan.json")
    used, planned = content["used"], content["plan"]
    rebuilt = json.loads(json.dumps({"spacing_transforms": describe(spacing_transforms(planned)),
                                     "intensity_transforms": describe(intensity_transforms(planned))}))  # fmt: skip
    if any(rebuilt[k] != used.get(k) for k in rebuilt):
        raise InputError(
            f"{path}: that run did not use its plan's preprocessing (a preset or an override won); fix: merge "
            "the same preset after configs/inference.yaml instead of --plan_json"
        )
    return content


def planned_classes(plan_json: str | os.PathLike | None, default: int) -> int:
    """The classes a stage-1 run trained with (its plan.json's ``used``), else ``default``."""
    content = read_used_plan(plan_json)
    return default if content is None else int(content["used"]["num_classes"])


def planned_spacing(plan_json: str | os.PathLike | None) -> list:
    """The resampling and padding a stage-1 run's plan chose, else none (the embedded set's)."""
    content = read_used_plan(plan_json)
    return [] if content is None else spacing_transforms(content["plan"])


def planned_intensity(plan_json: str | os.PathLike | None) -> list:
    """The normalisation a stage-1 run's plan chose, else a z-score per image (the embedded set's)."""
    from monai.transforms import NormalizeIntensityd

    content = read_used_plan(plan_json)
    return [NormalizeIntensityd(keys="image")] if content is None else intensity_transforms(content["plan"])
