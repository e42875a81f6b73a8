"""Data lists: Decathlon-style JSON read through MONAI, every entry tagged with a case id and center."""

from __future__ import annotations

import os
from pathlib import Path

from monai.data import load_decathlon_datalist

__all__ = ["case_id_of", "load_datalist"]


def case_id_of(path: str | os.PathLike) -> str:
    """The case id a file name implies: ``.../hippocampus_001.nii.gz`` -> ``hippocampus_001``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".npy"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def load_datalist(
    dataset_json: str | os.PathLike,
    key: str = "training",
    limit: int | None = None,
    default_center: str | None = None,
    check_files: bool = True,
) -> list[dict]:
    """Read one list of a Decathlon-style data set with MONAI's ``load_decathlon_datalist``.

    Entries keep every key they carry; those without ``case_id`` get one from the image file name,
    those without ``center`` get ``default_center`` (default: the data set folder's name).

    Args:
        dataset_json: path of ``dataset.json`` (or any Decathlon-format data list).
        key: which list: "training", "validation", "test", ...
        limit: keep only the first ``limit`` entries (tiny runs, tests); None keeps all.
        default_center: center name for entries that have none.
        check_files: raise ``FileNotFoundError`` naming the case when an image or label is missing.
    """
    dataset_json = Path(dataset_json)
    entries = load_decathlon_datalist(dataset_json, is_segmentation=True, data_list_key=key)
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
