"""Up-front checks of a data set before anything is trained or written: every problem found is named
with its case and file and how to fix it, so a broken scan stops the run at once instead of an epoch later.

The same single pass over the images (``scan_dataset``) collects the data set's fingerprint: per case the
shape and spacing in the RAS orientation the training reads them in, the share of zero voxels, a sample
of the foreground intensities and a content hash. ``scripts.data.plan`` turns that into the plan
(resampling, padding, normalisation) without reading anything again.

An empty label is data, not an error: it may be exactly the faulty case the bundle exists to find.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scripts.data.combine import spatial_shape
from scripts.utils.errors import InputError
from scripts.utils.flags import as_bool
from scripts.utils.jsonfile import read_json

__all__ = ["CaseStats", "DataError", "DataWarning", "Fingerprint", "check_dataset", "check_entries", "scan_dataset"]

LISTS = ("training", "validation", "test")
MAX_LISTED = 10
FOREGROUND_SAMPLE = 10_000  # foreground intensities kept per case, the same number for every case
FOREGROUND_SEED = 1234  # nnU-Net's: the sample is drawn with a fixed seed, so the same data give the same plan
FOREGROUND_RULES = ("random", "strided")
OVERFLOW = 1e18  # |intensity| beyond this overflows float32 squares (3.4e38) in a z-score
FLAT = 1e-3  # 98% of the voxels in under this share of the range: a z-score flattens them
AFFINE_ATOL = 1e-3


class DataError(InputError):
    """The data set cannot be trained on; the message lists every problem found."""


class DataWarning(UserWarning):
    """A case that trains but probably should not as it is (duplicate content, flattened intensities)."""


@dataclass
class CaseStats:
    """What the checks' pass learns about one labelled case (the plan's input; plain values only).

    ``shape`` and ``spacing`` are in RAS order (as ``Orientationd(axcodes='RAS')`` gives them to the
    network), ``foreground`` a sample of the image values where the label is > 0 (``sample_foreground``),
    ``zero_fraction`` the share of voxels exactly 0."""

    case_id: str
    image: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    zero_fraction: float
    foreground: np.ndarray = field(repr=False)
    digest: str = ""


@dataclass
class Fingerprint:
    """The data set as the plan sees it: ``dataset.json``'s ``labels`` and ``modality``, and every labelled
    case's ``CaseStats`` (empty when the checks are off)."""

    dataset_json: str
    labels: dict[str, Any]
    modality: str
    cases: list[CaseStats]
    foreground_sample: str = "random"  # how the cases' foreground was sampled (sample_foreground's rule)


def sample_foreground(values: np.ndarray, rule: str = "random") -> np.ndarray:
    """A case's foreground intensities as the plan pools them. ``random`` (0.7.0, nnU-Net v2's
    ``collect_foreground_intensities``): ``FOREGROUND_SAMPLE`` values drawn uniformly with replacement
    (seed ``FOREGROUND_SEED``), so every case weighs the same; ``strided`` (up to 0.6): every k-th value,
    k = size // ``FOREGROUND_SAMPLE``, which keeps between 1x and 2x that many (a case weighs by its size)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if rule not in FOREGROUND_RULES:
        raise ValueError(f"foreground sample rule {rule!r}: one of {FOREGROUND_RULES}")
    if rule == "strided" or values.size == 0:
        return values[:: max(1, values.size // FOREGROUND_SAMPLE)]
    return np.random.RandomState(FOREGROUND_SEED).choice(values, FOREGROUND_SAMPLE, replace=True)


def _read(path: str) -> tuple[Any, np.ndarray | None, str | None]:
    """The NIfTI image and its voxel array, or why it could not be read (missing, unreadable, truncated,
    an empty dimension)."""
    import nibabel as nib

    if not Path(path).is_file():
        return None, None, f"file not found: {path}; fix: correct its path in the data list or restore the file"
    try:
        img = nib.load(path)
        if 0 in tuple(img.shape):
            shape = tuple(img.shape)
            return img, None, f"has an empty dimension, shape {shape}: {path}; fix: re-export or drop the case"
        return img, np.asanyarray(img.dataobj), None
    except Exception as e:  # corrupt header, truncated data, not a NIfTI
        return None, None, f"unreadable file {path}: {type(e).__name__}: {e}; fix: re-export the file or drop the case"


def _ras(values: Sequence[float], affine: np.ndarray) -> tuple:
    """Per-axis values (shape, spacing) in the RAS order ``Orientationd`` reorders the axes to."""
    import nibabel as nib

    ornt = nib.io_orientation(affine)
    out = [0.0] * 3
    for axis in range(3):
        out[int(ornt[axis, 0])] = values[axis]
    return tuple(out)


def _intensity_warnings(case: str, path: str, image: np.ndarray) -> list[str]:
    """Why a normalisation would flatten this image: constant, values that overflow, or extreme outliers."""
    values = image[np.isfinite(image)] if np.issubdtype(image.dtype, np.floating) else image.ravel()
    if values.size == 0:
        return []
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        return [f"case {case}: constant image (every voxel {lo:g}): normalised to all zeros it teaches nothing: {path}"]
    if max(abs(lo), abs(hi)) > OVERFLOW:
        return [
            f"case {case}: intensities up to {max(abs(lo), abs(hi)):.3g} overflow float32 in the normalisation "
            f"(99% of the voxels end up flat): {path}; fix: rescale or clip the file"
        ]
    sample = values.ravel()[:: max(1, values.size // 1_000_000)].astype(np.float64)
    p1, p99 = np.percentile(sample, [1, 99])
    if p99 - p1 < FLAT * (hi - lo):
        return [
            f"case {case}: 98% of the intensities lie in [{p1:.3g}, {p99:.3g}] of a range [{lo:.3g}, {hi:.3g}]: "
            f"a z-score flattens them: {path}; fix: clip the outliers or drop the case"
        ]
    return []


def _label_fix(outside: Sequence[float], values: np.ndarray, num_classes: int) -> str:
    """How to fix label values outside the classes: a value that marks unlabelled voxels (65535, 255, -1)
    read as background, or more classes."""
    if not all(float(v).is_integer() for v in outside):
        return "integer labels only (a label resampled with interpolation? use nearest-neighbour)"
    listed = [int(v) for v in outside[:5]]
    fix = f'if {listed} mark unlabelled or ignored voxels, --label_to_background "{listed}" reads them as background'
    if min(listed) >= 0:
        need = int(max(values.max(), num_classes - 1)) + 1
        fix += f"; if they are classes, --num_classes {need} or the labels of dataset.json"
    return fix


def _all_foreground(case: str, entry: Mapping[str, Any], values: np.ndarray) -> list[str]:
    """A label without a single background voxel: data (kept), but usually the wrong file."""
    if values.size == 0 or float(values.min()) <= 0:
        return []
    return [
        f"case {case}: every voxel of the label is foreground (values {values.tolist()[:5]}): {entry['label']}; a "
        "label with no background is usually the wrong file (an image, or a mask of the whole scan, saved as the "
        "label); fix: check it, or drop the case"
    ]


def _transform_warnings(case: str, kind: str, path: str, img: Any) -> list[str]:
    """A NIfTI header whose qform and sform both apply and disagree: readers differ in which one they take."""
    import nibabel as nib

    header = getattr(img, "header", None)
    if not hasattr(header, "get_sform"):
        return []
    (qform, qcode), (sform, scode) = header.get_qform(coded=True), header.get_sform(coded=True)
    if not (qcode and scode) or np.allclose(qform, sform, atol=AFFINE_ATOL, rtol=1e-4):
        return []
    codes = "".join(nib.aff2axcodes(qform)), "".join(nib.aff2axcodes(sform))
    return [
        f"case {case}: the {kind}'s qform and sform disagree (orientation {codes[0]} vs {codes[1]}, largest difference "
        f"{float(np.abs(qform - sform).max()):.3g}): {path}; readers differ: nibabel, and so this bundle, take the "
        "sform, ITK (SimpleITK, hence nnU-Net; ITK-SNAP) often the qform, so a label drawn in one may not fit the "
        "image in the other; fix: make them agree (nibabel: img.set_qform(img.get_sform()), or the reverse, then save)"
    ]


def _mapped_labels(label: np.ndarray, entry: Mapping[str, Any], label_transforms: Sequence[Any]) -> np.ndarray:
    """The label values after the preset's label mapping (e.g. merged classes, per-center tables)."""
    if not label_transforms:
        return label
    import torch
    from monai.transforms import Compose

    out = Compose(list(label_transforms))({**entry, "label": torch.as_tensor(label[None].astype(np.float32))})
    return np.asarray(out["label"])


def _check_case(
    entry: Mapping[str, Any],
    num_classes: int,
    label_transforms: Sequence[Any],
    in_channels: int | None,
    foreground_sample: str = "random",
) -> tuple[list[str], list[str], CaseStats | None]:
    """(problems, warnings, stats) of one labelled entry; stats is None when a problem stops the case."""
    import nibabel as nib

    case = entry.get("case_id", "?")
    img, image, why_image = _read(entry["image"])
    lab, label, why_label = _read(entry["label"]) if "label" in entry else (None, None, None)
    problems = [f"case {case}: image {why_image}"] * bool(why_image) + [f"case {case}: label {why_label}"] * bool(
        why_label
    )
    if image is None or label is None:
        return problems, [], None
    spatial, channels = spatial_shape(image.shape), int(np.prod(image.shape[3:], dtype=np.int64))
    if len(spatial) < 3:
        return [f"case {case}: image is not 3-D, shape {tuple(image.shape)}: {entry['image']}"], [], None
    if in_channels is not None and channels != int(in_channels):
        problems.append(
            f"case {case}: image has {channels} channels (shape {tuple(image.shape)}) but the network takes "
            f"in_channels {in_channels}: {entry['image']}; fix: one channel per image, or "
            f"--network_def#in_channels {channels} if every image has {channels}"
        )
    if spatial != spatial_shape(label.shape) or label.ndim > 3 and int(np.prod(label.shape[3:])) != 1:
        return (
            problems
            + [
                f"case {case}: image shape {tuple(image.shape)} != label shape {tuple(label.shape)} "
                f"({entry['image']}, {entry['label']}); fix: the label must be drawn on the image's voxel grid"
            ],
            [],
            None,
        )
    if not np.allclose(img.affine, lab.affine, atol=AFFINE_ATOL, rtol=1e-4):
        codes = "".join(nib.aff2axcodes(img.affine)), "".join(nib.aff2axcodes(lab.affine))
        problems.append(
            f"case {case}: image and label affines differ (orientation {codes[0]} vs {codes[1]}, largest "
            f"difference {float(np.abs(img.affine - lab.affine).max()):.3g}): {entry['label']}; fix: save the "
            "label with the image's affine, or they are misaligned in training"
        )
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        n_bad = int(np.size(image) - np.isfinite(image).sum())
        problems.append(
            f"case {case}: image has {n_bad} NaN or infinite voxels: {entry['image']}; "
            "fix: replace them (e.g. by the background value) or drop the case"
        )
    mapped = np.asarray(_mapped_labels(label, entry, label_transforms))
    values = np.unique(mapped)
    outside = [v for v in values.tolist() if not (float(v).is_integer() and 0 <= v < num_classes)]
    if outside:
        problems.append(
            f"case {case}: label values {outside[:5]} outside the {num_classes} classes 0..{num_classes - 1}"
            f" (after the label mapping): {entry['label']}; fix: {_label_fix(outside, values, num_classes)}"
        )
    if problems:
        return problems, [], None
    raw = np.ascontiguousarray(image)
    digest = hashlib.blake2b(raw.tobytes() + str((raw.shape, raw.dtype.str)).encode(), digest_size=16).hexdigest()
    foreground = raw.reshape(spatial + (-1,))[..., 0][mapped.reshape(spatial) > 0]
    stats = CaseStats(
        case_id=str(case),
        image=str(entry["image"]),
        shape=_ras([int(v) for v in spatial], img.affine),
        spacing=_ras([float(v) for v in nib.affines.voxel_sizes(img.affine)[:3]], img.affine),
        zero_fraction=float(np.count_nonzero(raw == 0) / raw.size),
        foreground=sample_foreground(foreground, foreground_sample),
        digest=digest,
    )
    cautions = _intensity_warnings(str(case), str(entry["image"]), raw) + _all_foreground(str(case), entry, values)
    cautions += [
        w for kind, f in (("image", img), ("label", lab)) for w in _transform_warnings(str(case), kind, entry[kind], f)
    ]
    return [], cautions, stats


def check_entries(
    entries: Sequence[Mapping[str, Any]],
    num_classes: int,
    label_transforms: Sequence[Any] = (),
    in_channels: int | None = None,
) -> list[str]:
    """Problems of labelled entries (``image``, ``label``, ``case_id``): missing, unreadable or truncated
    files, an empty dimension, image/label shapes or affines that differ, channels other than
    ``in_channels``, NaN or infinite intensities, label values outside 0..num_classes-1."""
    return [p for entry in entries for p in _check_case(entry, num_classes, label_transforms, in_channels)[0]]


def _labels_of(content: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    modality = content.get("modality") or content.get("channel_names") or {}
    if isinstance(modality, Mapping):
        modality = modality.get("0", next(iter(modality.values()), ""))
    return dict(content.get("labels") or {}), str(modality or "")


def scan_dataset(
    dataset_json: str | os.PathLike,
    num_classes: int,
    label_transforms: Sequence[Any] = (),
    enabled: bool = True,
    in_channels: int | None = None,
    foreground_sample: str = "random",
) -> Fingerprint:
    """Check every labelled list of a Decathlon-style data list and return its fingerprint.

    Raises ``DataError`` naming each case and file with a problem (an empty training list, duplicate
    case ids, and everything ``check_entries`` finds) with its fix; warns (``DataWarning``, naming the
    cases and files) about the same image under two case ids and intensities a normalisation would
    flatten. Reads every image once; ``enabled=False`` reads nothing and returns no case statistics.
    ``foreground_sample``: how each case's foreground intensities are sampled (``sample_foreground``).
    """
    from scripts.data.lists import load_datalist

    dataset_json = os.path.abspath(dataset_json)
    try:
        content = read_json(dataset_json)
    except InputError as e:
        raise DataError(str(e)) from e
    labels, modality = _labels_of(content)
    if not as_bool(enabled, "check_data"):
        return Fingerprint(dataset_json, labels, modality, [])
    if not content.get("training"):
        raise DataError(f"{dataset_json}: the training list is empty: nothing to train on; fix: list the cases")
    lists = {
        k: load_datalist(dataset_json, k, check_files=False)
        for k in LISTS
        if content.get(k) and all(isinstance(d, Mapping) and "label" in d for d in content[k])
    }
    ids = [d["case_id"] for entries in lists.values() for d in entries]
    duplicates = sorted(c for c, n in Counter(ids).items() if n > 1)
    problems = [f"duplicate case ids (a case must appear once in all lists): {duplicates[:MAX_LISTED]}"] * bool(
        duplicates
    )
    cautions, cases = [], []
    for entries in lists.values():
        for entry in entries:
            found, warned, stats = _check_case(entry, num_classes, label_transforms, in_channels, foreground_sample)
            problems, cautions = problems + found, cautions + warned
            cases += [stats] if stats is not None else []
    if problems:
        if len(problems) == 1:
            raise DataError(f"{dataset_json}: {problems[0]}")
        listed = "\n  ".join(problems[:MAX_LISTED])
        shown = f" (the first {MAX_LISTED})" if len(problems) > MAX_LISTED else ""
        raise DataError(f"{dataset_json}: {len(problems)} problems in the data set{shown}:\n  {listed}")
    first: dict[str, CaseStats] = {}
    for stats in cases:
        if stats.digest in first:
            other = first[stats.digest]
            cautions.append(
                f"case {stats.case_id}: the same image as case {other.case_id} ({stats.image} = {other.image}): "
                "a copied file counts twice; drop one of them"
            )
        first.setdefault(stats.digest, stats)
    for caution in cautions:
        warnings.warn(caution, DataWarning, stacklevel=2)
    return Fingerprint(dataset_json, labels, modality, cases, foreground_sample)


def check_dataset(
    dataset_json: str | os.PathLike,
    num_classes: int,
    label_transforms: Sequence[Any] = (),
    enabled: bool = True,
    in_channels: int | None = None,
) -> str:
    """``scan_dataset``, returning the data list's path unchanged when it is sound."""
    scan_dataset(dataset_json, num_classes, label_transforms, enabled, in_channels)
    return str(dataset_json)
