"""Case ids from file names (no MONAI import, so light command-line tools can use it)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["case_id_of"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".npy")


def case_id_of(path: str | os.PathLike) -> str:
    """The case id a file name implies: ``.../hippocampus_001.nii.gz`` -> ``hippocampus_001``."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
