"""Stage 1 configured from the data, the way nnU-Net plans from a data fingerprint.

With no preset, ``configs/train.yaml`` takes from here: the classes (``dataset.json``'s ``labels``), and,
from the checks' single pass over the images (``scripts.data.checks.scan_dataset``), the resampling, the
padding to the patch size and the intensity normalisation. A preset or a ``--key`` override of
``num_classes``, ``spacing_transforms`` or ``intensity_transforms`` still wins; ``plan.json`` in the run's
``output_dir`` and beside its checkpoints (``ckpt_dir``) records the plan and what the run used, and every
consumer of a checkpoint applies it (``scripts.data.model_plan``).

The rules (``make_plan``, pure over plain values, so the same data always gives the same plan), as nnU-Net
v2 has them since 0.7.0 (``plan_rules: nnunet``; ``plan_rules: '0.6'`` gives the former ones, see RULES):

- fingerprint: the training cases only (those left once validation and test are carved); 0.6: every
  labelled case of every list;
- spacing: the target is the median spacing per axis (RAS order), except on an anisotropic data set
  (nnU-Net's ``determine_fullres_target_spacing``: the median spacing of the coarsest axis over 3x the
  next coarsest, and its median size under a third of the smallest other): there that axis takes the
  10th percentile of its spacings (never finer than the other axes); 0.6: the median always. Resample
  (``Spacingd``) only when some case is off the target by more than 1%;
- padding: ``SpatialPadd`` to the patch when some case, at the target spacing, is smaller than the patch
  along an axis (``RandCropByPosNegLabeld`` cannot crop a patch larger than the image);
- normalisation: CT (``modality`` exactly "CT", as nnU-Net reads it: Hounsfield units, comparable across
  cases): clip to the 0.5 and 99.5 percentiles of the pooled foreground sample, then subtract its mean and
  divide by its std (nnU-Net's ``CTNormalization``); 0.6: scale the clipped range to [0, 1]. The sample
  is a fixed number of foreground voxels per case (``scripts.data.checks.sample_foreground``). Anything
  else (MR, "synthetic CT" with per-center scales): a z-score per image (``NormalizeIntensityd``), over
  the non-zero voxels only when the median case is at least 25% zeros (a skull-stripped or masked
  background).
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
from scripts.utils.jsonfile import read_json

__all__ = [
    "RULES",
    "classes_of",
    "describe",
    "follows_plan",
    "intensity_transforms",
    "make_plan",
    "plan_from_stats",
    "rules_of",
    "source_of",
    "spacing_transforms",
    "target_spacing",
    "used_of",
    "write_plan",
]

SPACING_RTOL = 0.01
NONZERO_FRACTION = 0.25
CT_PERCENTILES = (0.5, 99.5)
ANISOTROPY = 3.0  # nnU-Net v2's ANISO_THRESHOLD
LOW_RES_PERCENTILE = 10.0  # the coarse axis' target on an anisotropic set
# fingerprint: which cases the plan reads; anisotropy: the threshold (None: the median always); ct: the
# CT normalisation after clipping; foreground: how each case's foreground intensities are sampled
RULES: dict[str, dict[str, Any]] = {
    "nnunet": {"fingerprint": "training", "anisotropy": ANISOTROPY, "ct": "zscore", "foreground": "random"},
    "0.6": {"fingerprint": "all", "anisotropy": None, "ct": "unit", "foreground": "strided"},
}
_CHOICES = {"fingerprint": ("training", "all"), "ct": ("zscore", "unit"), "foreground": ("random", "strided")}
logger = logging.getLogger("plan")


def rules_of(rules: str | float | Mapping[str, Any] | None = "nnunet") -> dict[str, Any]:
    """The plan's rules: a name of ``RULES`` (``nnunet``, the default since 0.7.0; ``0.6``, the former), or
    a dict of some of them over ``nnunet``'s (e.g. ``{'ct': 'unit'}``)."""
    if rules is None or isinstance(rules, (str, int, float)):  # --plan_rules 0.6 arrives as a float
        name = "nnunet" if rules is None else str(rules)
        if name not in RULES:
            raise InputError(f"plan_rules {name!r}: not one of {sorted(RULES)}; fix: --plan_rules nnunet (or 0.6)")
        return dict(RULES[name])
    unknown = sorted(set(rules) - set(RULES["nnunet"]))
    if unknown:
        raise InputError(f"plan_rules {dict(rules)}: unknown rules {unknown}; fix: use {sorted(RULES['nnunet'])}")
    out = {**RULES["nnunet"], **dict(rules)}
    for key, choices in _CHOICES.items():
        if out[key] not in choices:
            raise InputError(f"plan_rules {key} {out[key]!r}: not one of {list(choices)}")
    return out


def classes_of(dataset_json: str | os.PathLike) -> int:
    """The number of classes (background included) in ``dataset.json``'s ``labels``: the largest label
    value + 1, in MSD's ``{"0": "background", ...}`` or nnU-Net v2's ``{"background": 0, ...}`` form."""
    path = os.path.abspath(dataset_json)
    try:
        labels = read_json(path).get("labels")
    except InputError as e:
        raise DataError(str(e)) from e
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
        source = read_json(path).get("pruning", {}).get("source_datalist")
    except (InputError, AttributeError):  # the data list's own reader names what is wrong with it
        return path
    return os.path.abspath(source) if source and Path(source).is_file() else path


def target_spacing(
    spacings: np.ndarray, shapes: np.ndarray, anisotropy: float | None = ANISOTROPY
) -> tuple[np.ndarray, bool]:
    """(target spacing, whether the anisotropic rule set it) of ``n`` cases' ``spacings`` and ``shapes``
    (voxels), (n, 3): the median per axis; with ``anisotropy`` (nnU-Net's rule), when the coarsest axis'
    median spacing is over ``anisotropy`` x the next coarsest and its median size under 1/``anisotropy``
    of the smallest other, that axis takes the 10th percentile of its spacings, at least the other axes'
    largest spacing (+1e-5, as nnU-Net)."""
    spacings, shapes = np.asarray(spacings, dtype=np.float64), np.asarray(shapes, dtype=np.float64)
    target = np.median(spacings, axis=0)
    if anisotropy is None:
        return target, False
    size = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(target.size) if a != worst]
    coarse = target[worst] > float(anisotropy) * max(target[others])
    few = size[worst] * float(anisotropy) < min(size[others])
    if not (coarse and few):
        return target, False
    low = float(np.percentile(spacings[:, worst], LOW_RES_PERCENTILE))
    target[worst] = low if low >= max(target[others]) else max(target[others]) + 1e-5
    return target, True


def plan_from_stats(
    shapes: np.ndarray,
    spacings: np.ndarray,
    zero_fractions: Sequence[float],
    foreground: np.ndarray,
    modality: str,
    patch_size: Sequence[int],
    rules: str | Mapping[str, Any] | None = "nnunet",
) -> dict[str, Any]:
    """The plan of ``n`` cases from plain values: ``shapes`` and ``spacings`` (n, 3) in RAS order,
    ``zero_fractions`` (n,), ``foreground`` the pooled foreground intensities (CT statistics); ``rules``
    as ``rules_of`` reads them (the fingerprint and foreground rules act before: ``make_plan``)."""
    rules = rules_of(rules)
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
    target, anisotropic = target_spacing(spacings, shapes, rules["anisotropy"])
    resample = bool(np.any(np.abs(spacings - target) > SPACING_RTOL * target))
    sizes = shapes * spacings / target
    smaller = np.any(sizes < np.asarray(patch) - 1e-6, axis=1)
    plan: dict[str, Any] = {
        "from": f"the checks' pass over {len(shapes)} labelled cases",
        "spacing": {"target": target.round(6).tolist(), "resample": resample, "min": spacings.min(0).tolist(),
                    "max": spacings.max(0).tolist(), **({"anisotropic": True} if anisotropic else {})},
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
        if rules["ct"] == "zscore":  # nnU-Net's CTNormalization: the statistics of the unclipped sample
            plan["normalization"].update(scale="zscore", mean=float(fg.mean()), std=float(max(fg.std(), 1e-8)))
    else:
        nonzero = bool(np.median(np.asarray(zero_fractions, dtype=np.float64)) >= NONZERO_FRACTION)
        plan["normalization"] = {"kind": "zscore", "nonzero": nonzero}
    return plan


def make_plan(
    fingerprint: Fingerprint,
    patch_size: Sequence[int],
    training: Sequence[str] | None = None,
    rules: str | Mapping[str, Any] | None = "nnunet",
) -> dict[str, Any]:
    """The plan of a scanned data set (``scan_dataset``): classes, spacing, padding, normalisation, from
    the ``training`` case ids only (``scripts.data.lists.training_ids``) when the rules say so and they are
    given, else from every scanned case."""
    rules = rules_of(rules)
    cases = fingerprint.cases
    if cases and fingerprint.foreground_sample != rules["foreground"]:
        raise ValueError(
            f"the fingerprint sampled the foreground {fingerprint.foreground_sample!r}, the rules say "
            f"{rules['foreground']!r}: scan with foreground_sample=rules_of(plan_rules)['foreground']"
        )
    if rules["fingerprint"] == "training" and training is not None:
        keep = {str(c) for c in training}
        cases = [c for c in cases if c.case_id in keep] or cases  # none scanned (unlabelled): all there are
    foreground = np.concatenate([c.foreground for c in cases]) if cases else np.zeros(0)
    plan = plan_from_stats(
        np.array([c.shape for c in cases]),
        np.array([c.spacing for c in cases]),
        [c.zero_fraction for c in cases],
        foreground,
        fingerprint.modality,
        patch_size,
        rules,
    )
    if fingerprint.cases:
        read = "the training cases" if len(cases) < len(fingerprint.cases) else "every labelled case"
        plan["from"] = f"the checks' pass: {read}, {len(cases)} of {len(fingerprint.cases)}"
    return {"dataset_json": fingerprint.dataset_json, "labels": fingerprint.labels, "modality": fingerprint.modality,
            "rules": rules, **plan}  # fmt: skip


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
    """CT: clip to the foreground percentiles, then z-score with the foreground mean and std (a plan of
    0.6, without them: scale the clipped range to [0, 1]); otherwise a z-score per image."""
    from monai.transforms import NormalizeIntensityd, ScaleIntensityRanged

    norm = plan["normalization"]
    if norm["kind"] == "ct" and norm.get("clip"):
        lo, hi = norm["clip"]
        if norm.get("scale") == "zscore":  # clip to [lo, hi], then (x - mean) / std: one linear map
            mean, std = float(norm["mean"]), float(norm["std"])
            return [ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=(lo - mean) / std,
                                         b_max=(hi - mean) / std, clip=True)]  # fmt: skip
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


def used_of(num_classes: int, spacing: Sequence[Any], intensity: Sequence[Any]) -> dict[str, Any]:
    """What a run uses, as ``plan.json``'s ``used`` records it: the classes and the described spacing and
    intensity transforms, as plain JSON values (so two of them compare)."""
    used = {"num_classes": int(num_classes), "spacing_transforms": describe(spacing),
            "intensity_transforms": describe(intensity)}  # fmt: skip
    return json.loads(json.dumps(used))


def write_plan(
    output_dir: str | os.PathLike,
    plan: Mapping[str, Any],
    num_classes: int,
    spacing: Sequence[Any],
    intensity: Sequence[Any],
    ckpt_dir: str | os.PathLike | None = None,
    memory: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``plan.json`` (the plan, and what the run used: a preset or an override wins; with ``memory``,
    where the preprocessed cases are kept and why: ``scripts.data.memory.plan_cache``) into ``output_dir``
    and, when given, beside the checkpoints in ``ckpt_dir`` (where every consumer of a checkpoint finds it:
    ``scripts.data.model_plan``), and log it. Returns the ``output_dir`` one."""
    used = used_of(num_classes, spacing, intensity)
    content = {"plan": dict(plan), "used": used} | ({"memory": dict(memory)} if memory is not None else {})
    path = write_json_atomic(Path(output_dir) / "plan.json", content)
    where = [str(path)]
    if ckpt_dir is not None and os.path.abspath(ckpt_dir) != os.path.abspath(output_dir):
        where.append(str(write_json_atomic(Path(ckpt_dir) / "plan.json", content)))
    text = json.dumps(plan, ensure_ascii=False)
    logger.info(f"plan from the data ({plan.get('from')}): {text}; used: {json.dumps(used)}; {', '.join(where)}")
    return Path(path)


def follows_plan(content: Mapping[str, Any]) -> bool:
    """Whether the run of a ``plan.json`` used its own plan's preprocessing (no preset or override won)."""
    planned, used = content["plan"], content["used"]
    rebuilt = used_of(used.get("num_classes", 0), spacing_transforms(planned), intensity_transforms(planned))
    return all(rebuilt[k] == used.get(k) for k in ("spacing_transforms", "intensity_transforms"))


def read_used_plan(plan_json: str | os.PathLike | None) -> dict[str, Any] | None:
    """A training run's ``plan.json`` (for inference to preprocess as training did: by default the one beside
    the checkpoint), or None when there is none; refused when that run's preset or override won over its
    plan (the plan cannot rebuild a preset's transforms)."""
    if plan_json is None or str(plan_json) in ("", "None", "null"):
        return None
    path = Path(plan_json)
    if not path.is_file():
        raise InputError(f"plan_json {path} not found; fix: pass a training run's plan.json (beside its checkpoint)")
    content = json.loads(path.read_text())
    if "plan" not in content or "used" not in content:
        raise InputError(f"{path} is not a training run's plan.json (no 'plan'/'used'); fix: pass its plan.json")
    if not follows_plan(content):
        raise InputError(
            f"{path}: that run did not use its plan's preprocessing (a preset or an override won); fix: merge "
            "the same preset (and overrides) after configs/inference.yaml"
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
