"""Data lists: Decathlon-style JSON read through MONAI, every entry tagged with a case id and center."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data.decathlon_datalist import _append_paths
from scripts.data.case_ids import case_id_of
from scripts.utils.errors import InputError
from scripts.utils.jsonfile import read_json

__all__ = [
    "AUDIT_LISTS",
    "case_id_of",
    "ensure_splits",
    "image_list",
    "labelled_cases",
    "load_datalist",
    "split_lists",
    "training_ids",
]

AUDIT_LISTS = ("training", "validation", "test")


def load_datalist(
    dataset_json: str | os.PathLike,
    key: str = "training",
    limit: int | None = None,
    default_center: str | None = None,
    check_files: bool = True,
) -> list[dict]:
    """Read one list of a Decathlon-style data set as MONAI's ``load_decathlon_datalist`` does (a UTF-8
    byte-order mark is skipped; a file cut mid-write is an ``InputError`` naming it).

    Entries keep every key they carry; those without ``case_id`` get one from the image file name,
    those without ``center`` get ``default_center`` (default: the data set folder's name).

    Args:
        dataset_json: path of ``dataset.json`` (or any Decathlon-format data list).
        key: which list: "training", "validation", "test", ...
        limit: keep only the first ``limit`` entries (tiny runs, tests); None keeps all.
        default_center: center name for entries that have none.
        check_files: raise ``FileNotFoundError`` naming the case when an image or label is missing.
    """
    dataset_json = Path(os.path.abspath(dataset_json))  # relative: from the working directory, once
    entries = _decathlon_list(dataset_json, key)
    if limit is not None:
        entries = entries[: int(limit)]
    center = default_center or dataset_json.parent.name
    for entry in entries:
        entry.setdefault("case_id", case_id_of(entry["image"]))
        entry.setdefault("center", center)
        if check_files:
            for field in ("image", "label"):
                if field in entry and not Path(entry[field]).is_file():
                    raise FileNotFoundError(f"case {entry['case_id']}: {field} file not found: {entry[field]}")
    return entries


def _decathlon_list(dataset_json: Path, key: str) -> list[dict]:
    """MONAI's ``load_decathlon_datalist`` (its path rules: image and label joined to the JSON's folder,
    other keys only where that names a file), on the JSON as ``read_json`` reads it: MONAI's own reader
    refuses a UTF-8 byte-order mark and shows a cut file as a ``JSONDecodeError``."""
    content = read_json(dataset_json)
    if not isinstance(content, Mapping) or key not in content:
        raise ValueError(f'Data list {key} not specified in "{dataset_json}".')
    items = content[key]
    if key == "test" and items and not isinstance(items[0], Mapping):
        items = [{"image": i} for i in items]  # MSD lists its test images as bare paths
    return _append_paths(dataset_json.parent, True, copy.deepcopy(items))


def _unusable(path: str, in_channels: int) -> str | None:
    """Why an image cannot be segmented (unreadable, truncated, not 3-D, other channels, NaN or infinite
    voxels), or None."""
    import nibabel as nib
    from scripts.data.combine import spatial_shape

    try:
        img = nib.load(path)
        shape = tuple(int(v) for v in img.shape)
        if 0 in shape:
            return f"an empty dimension, shape {shape}"
        data = np.asanyarray(img.dataobj)  # reads it all: a truncated file fails here, not in the middle of the batch
    except Exception as e:  # not a NIfTI, corrupt header, truncated data
        return f"unreadable: {type(e).__name__}: {e}"
    channels = int(np.prod(shape[3:], dtype=np.int64))
    if len(spatial_shape(shape)) < 3 or channels != int(in_channels):
        return f"shape {shape}: the network takes 3-D images with {in_channels} channel(s)"
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        return (
            f"{n_bad} NaN or infinite voxels (normalised, the whole image turns NaN and its mask all background); "
            "fix: replace them, e.g. by the background value"
        )
    return None


def image_list(source: str | os.PathLike, key: str = "test", in_channels: int = 1) -> list[dict]:
    """Images to segment: every NIfTI file in a folder, or the ``key`` list of a Decathlon-style JSON.

    An image that cannot be read, has the wrong shape (not 3-D, not ``in_channels`` channels) or NaN or
    infinite voxels is skipped with a warning naming the case and the file, so one bad file does not stop
    the batch; none left is an error.
    """
    source = Path(os.path.abspath(source))
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.name.endswith((".nii.gz", ".nii")))
        if not files:
            raise InputError(f"no .nii/.nii.gz images in {source}; fix: give a folder of NIfTI images or a data list")
        entries = [{"image": str(p), "case_id": case_id_of(p)} for p in files]
    elif source.is_file():
        listed = load_datalist(source, key, check_files=False)
        entries = [{k: d[k] for k in ("image", "case_id") if k in d} for d in listed]
    else:
        raise InputError(f"inference input not found: {source}; fix: --input FOLDER or a data list JSON")
    kept = []
    for entry in entries:
        why = _unusable(entry["image"], in_channels)
        if why:
            logging.getLogger("data").warning(f"skipped case {entry['case_id']}: {why}: {entry['image']}")
        else:
            kept.append(entry)
    if not kept:
        raise InputError(f"{source}: none of the {len(entries)} images can be segmented (see the warnings above)")
    return kept


def labelled_cases(
    dataset_json: str | os.PathLike, lists: str | Sequence[str] = AUDIT_LISTS, limit: int | None = None
) -> list[dict]:
    """Every labelled case of the named lists of a data list, in list order, each tagged with the list it
    came from (``entry["list"]``): what an audit scores. Entries without a label (MSD's test images) are
    left out; a list the file does not have is skipped; ``limit`` keeps the first N training cases (as
    ``num_train_cases`` does for stage 1). A case in two lists is refused: its label would be scored twice.
    """
    names = [lists] if isinstance(lists, str) else list(lists)
    unknown = [k for k in names if k not in AUDIT_LISTS]
    if unknown:
        raise ValueError(f"unknown data lists {unknown}: an audit scores any of {list(AUDIT_LISTS)}")
    content = read_json(dataset_json)
    cases: list[dict] = []
    seen: dict[str, str] = {}
    for name in names:
        if not content.get(name):
            continue
        entries = load_datalist(dataset_json, name, limit=limit if name == "training" else None)
        for entry in entries:
            if "label" not in entry:
                continue
            if entry["case_id"] in seen:
                raise ValueError(
                    f"case {entry['case_id']} is in both the {seen[entry['case_id']]} and the {name} list of "
                    f"{dataset_json}: give each case once, or audit one of the lists (--scoring_lists)"
                )
            seen[entry["case_id"]] = name
            cases.append({**entry, "list": name})
    if not cases:
        raise ValueError(f"{dataset_json}: no labelled case in the lists {names}: nothing to audit")
    return cases


def _labelled(entries: Any) -> bool:
    return bool(entries) and all(isinstance(d, Mapping) and "label" in d for d in entries)


def split_lists(
    dataset_json: str | os.PathLike, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, Any] | None:
    """The data list ``ensure_splits`` trains on, without writing it: None when ``dataset_json`` has a
    validation list and a labelled test list (it is used as it is), else its content with the missing
    parts carved from training (see ``ensure_splits``)."""
    from scripts.data.combine import split_counts

    content = read_json(dataset_json)
    has_val, has_test = _labelled(content.get("validation")), _labelled(content.get("test"))
    if has_val and has_test:
        return None
    training = load_datalist(dataset_json, "training", check_files=False)
    n = len(training)
    _, n_val, n_test = split_counts(n, 0.0 if has_test else test_fraction, 0.0 if has_val else val_fraction)
    # test_fraction 0 asks for no test part (an audit's fold trains on all but its held-out fold)
    if (not has_val and n_val == 0) or (not has_test and n_test == 0 and test_fraction > 0):
        raise ValueError(
            f"{dataset_json}: {n} training cases are too few to carve a validation and a test part "
            "(give the data list its own 'validation' and labelled 'test' lists)"
        )
    order = np.random.default_rng(seed).permutation(n)
    test = [training[i] for i in sorted(order[:n_test])]
    val = [training[i] for i in sorted(order[n_test : n_test + n_val])]
    carved = {d["case_id"] for d in test + val}
    lists = {
        k: load_datalist(dataset_json, k, check_files=False)
        for k in ("validation", "test")
        if _labelled(content.get(k))
    }
    split = {
        **{k: v for k, v in content.items() if k not in ("training", "validation", "test", "numTraining", "numTest")},
        "training": [d for d in training if d["case_id"] not in carved],
        "validation": lists.get("validation", val),
        "test": lists.get("test", test),
        "split": {
            "source": str(Path(dataset_json).resolve()),
            "seed": int(seed),
            "carved_validation": [] if has_val else [d["case_id"] for d in val],
            "carved_test": [] if has_test else [d["case_id"] for d in test],
            "note": "carved from the training list: "
            + ", ".join(
                w
                for w, missing in (
                    ("validation (none given)", not has_val),
                    ("test (no labelled test list)", not has_test and n_test > 0),
                )
                if missing
            ),
        },
    }
    split["numTraining"] = len(split["training"])
    return split


def training_ids(
    dataset_json: str | os.PathLike, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> list[str]:
    """The case ids a run trains on: the training list once ``ensure_splits`` has carved validation and
    test from it (what the plan's fingerprint reads, as nnU-Net's reads the training cases only). A list
    too small to carve gives its whole training list (``ensure_splits`` refuses such a training run)."""
    try:
        split = split_lists(dataset_json, val_fraction, test_fraction, seed)
    except ValueError:
        split = None
    entries = split["training"] if split else load_datalist(dataset_json, "training", check_files=False)
    return [d["case_id"] for d in entries]


def ensure_splits(
    dataset_json: str | os.PathLike,
    out_json: str | os.PathLike,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> str:
    """The data list to train on: ``dataset_json`` itself when it has a validation list and a labelled
    test list; otherwise a copy written to ``out_json`` whose missing parts are carved from training.

    A user's Decathlon ``dataset.json`` usually has neither: MSD's ``test`` lists unlabelled images, and
    pruning can only be judged on labelled cases no model trained on. The test part
    (round(test_fraction·n)) is drawn first, then the validation part (round(val_fraction·rest), at least
    one case), each a seeded sample of the training list; the copy's ``split`` section says what was
    carved and why, and every path in it is absolute.
    """
    from scripts.utils.atomic import write_json_atomic

    split = split_lists(dataset_json, val_fraction, test_fraction, seed)
    if split is None:
        return str(dataset_json)
    write_json_atomic(out_json, split)
    carved = split["split"]
    logging.getLogger("data").info(
        f"{dataset_json}: {carved['note']}; {len(carved['carved_validation'])} validation and "
        f"{len(carved['carved_test'])} test cases (seed {seed}); training on {split['numTraining']}: {out_json}"
    )
    return str(out_json)
