"""Up-front checks of a data set before anything is trained or written: every problem found is named
with its case and file, so a broken scan stops the run at once instead of an epoch later.

An empty label is data, not an error: it may be exactly the faulty case the bundle exists to find.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.data.combine import spatial_shape
from scripts.utils.flags import as_bool

__all__ = ["DataError", "check_dataset", "check_entries"]

LISTS = ("training", "validation", "test")
MAX_LISTED = 10


class DataError(ValueError):
    """The data set cannot be trained on; the message lists every problem found."""


def _read(path: str) -> tuple[np.ndarray | None, str | None]:
    """The voxel array of a NIfTI file, or why it could not be read (missing, unreadable, truncated)."""
    import nibabel as nib

    if not Path(path).is_file():
        return None, f"file not found: {path}"
    try:
        return np.asanyarray(nib.load(path).dataobj), None
    except Exception as e:  # corrupt header, truncated data, not a NIfTI
        return None, f"unreadable file {path}: {type(e).__name__}: {e}"


def _mapped_labels(label: np.ndarray, entry: Mapping[str, Any], label_transforms: Sequence[Any]) -> np.ndarray:
    """The label values after the preset's label mapping (e.g. merged classes, per-center tables)."""
    if not label_transforms:
        return label
    import torch
    from monai.transforms import Compose

    out = Compose(list(label_transforms))({**entry, "label": torch.as_tensor(label[None].astype(np.float32))})
    return np.asarray(out["label"])


def check_entries(
    entries: Sequence[Mapping[str, Any]], num_classes: int, label_transforms: Sequence[Any] = ()
) -> list[str]:
    """Problems of labelled entries (``image``, ``label``, ``case_id``): missing or unreadable files,
    image/label shapes that differ, NaN or infinite intensities, label values outside 0..num_classes-1."""
    problems = []
    for entry in entries:
        case = entry.get("case_id", "?")
        image, why_image = _read(entry["image"])
        label, why_label = _read(entry["label"]) if "label" in entry else (None, None)
        problems += [f"case {case}: image {why_image}"] if why_image else []
        problems += [f"case {case}: label {why_label}"] if why_label else []
        if image is None or label is None:
            continue
        if spatial_shape(image.shape) != spatial_shape(label.shape):
            problems.append(
                f"case {case}: image shape {tuple(image.shape)} != label shape {tuple(label.shape)} "
                f"({entry['image']}, {entry['label']})"
            )
            continue
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            n_bad = int(np.size(image) - np.isfinite(image).sum())
            problems.append(f"case {case}: image has {n_bad} NaN or infinite voxels: {entry['image']}")
        values = np.unique(_mapped_labels(label, entry, label_transforms))
        outside = [v for v in values.tolist() if not (float(v).is_integer() and 0 <= v < num_classes)]
        if outside:
            problems.append(
                f"case {case}: label values {outside[:5]} outside the {num_classes} classes 0..{num_classes - 1}"
                f" (after the label mapping): {entry['label']}"
            )
    return problems


def check_dataset(
    dataset_json: str | os.PathLike,
    num_classes: int,
    label_transforms: Sequence[Any] = (),
    enabled: bool = True,
) -> str:
    """Check every labelled list of a Decathlon-style data list; return its path unchanged when it is sound.

    Raises ``DataError`` naming each case and file with a problem: an empty training list, duplicate
    case ids, and everything ``check_entries`` finds. Reads every image once (NaN check), so it costs
    about one pass of loading; ``enabled=False`` skips it.
    """
    if not as_bool(enabled, "check_data"):
        return str(dataset_json)
    import json

    from scripts.data.lists import load_datalist

    content = json.loads(Path(dataset_json).read_text())
    if not content.get("training"):
        raise DataError(f"{dataset_json}: the training list is empty: nothing to train on")
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
    for entries in lists.values():
        problems += check_entries(entries, num_classes, label_transforms)
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DataError(f"{dataset_json}: {len(problems)} problem(s) in the data set:\n  {listed}{more}")
    return str(dataset_json)
