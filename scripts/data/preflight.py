"""What a run refuses before anything is trained or written, each in one line that says the fix:
a run too short for a DAD window or for one validation, an output folder that cannot be written, an
image smaller than the patch that nothing pads, a checkpoint that is missing or does not fit the network
(evaluation, scoring, inference). (The data set itself: ``scripts.data.checks``.)"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scripts.data.checks import DataError, Fingerprint
from scripts.utils.errors import InputError
from scripts.utils.weights import load_state_dict

__all__ = ["check_checkpoint", "check_run", "check_writable", "planned_sizes", "ready"]


def check_run(epochs: int, val_interval: int, delta_t: int) -> None:
    """Refuse a run shorter than one DAD window (no moving distance, stop rule or subset) or than
    ``val_interval`` (the validation that writes ``model.pt`` would never run)."""
    epochs, val_interval, delta_t = int(epochs), int(val_interval), int(delta_t)
    if epochs < 1 or val_interval < 1 or delta_t < 1:
        raise InputError(f"epochs {epochs}, val_interval {val_interval}, delta_t {delta_t}: each must be >= 1")
    if epochs < delta_t:
        raise InputError(
            f"epochs {epochs} < delta_t {delta_t}: not one DAD window fits, so no moving distance, stop rule or "
            f"subset; fix: --epochs {delta_t} (or more), or --delta_t {epochs} (or less)"
        )
    if epochs < val_interval:
        raise InputError(
            f"epochs {epochs} < val_interval {val_interval}: the model would never be validated (no model.pt); "
            f"fix: --val_interval {epochs} (or less), or --epochs {val_interval} (or more)"
        )


def check_writable(folders: Mapping[str, str | os.PathLike]) -> None:
    """Refuse an output folder (``{option: path}``) that cannot be made or written: a path through a file,
    or a read-only place. Creates nothing."""
    for option, folder in folders.items():
        path = Path(os.path.abspath(folder))
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise InputError(
                f"{option} {path}: {probe} is a file, not a folder, so nothing can be written there; "
                f"fix: choose another --{option}"
            )
        if not os.access(probe, os.W_OK | os.X_OK):
            raise InputError(f"{option} {path}: {probe} is read-only; fix: choose a writable --{option}")


def planned_sizes(shape: Sequence[int], spacing: Sequence[float], transforms: Sequence[Any]) -> np.ndarray:
    """The spatial size an image of ``shape`` (RAS, at ``spacing``) has after the spacing transforms:
    ``Spacingd`` rescales it, ``SpatialPadd`` / ``DivisiblePadd`` / ``ResizeWithPadOrCropd`` pad it; any
    other transform is taken to keep it."""
    size, spacing = np.asarray(shape, dtype=np.float64), np.asarray(spacing, dtype=np.float64)
    for t in transforms:
        name = type(t).__name__
        if name == "Spacingd":
            pixdim = np.asarray(t.spacing_transform.pixdim, dtype=np.float64)[:3]
            pixdim = np.where(pixdim > 0, pixdim, spacing)
            size, spacing = np.round(size * spacing / pixdim), pixdim
        elif name == "SpatialPadd":
            want = np.asarray(t.padder.spatial_size, dtype=np.float64)[:3]
            size = np.where(want > 0, np.maximum(size, want), size)
        elif name == "DivisiblePadd":
            k = np.broadcast_to(np.asarray(t.padder.k, dtype=np.float64), (3,))
            size = np.ceil(size / k) * k
        elif name == "ResizeWithPadOrCropd":
            want = np.asarray(t.padder.padder.spatial_size, dtype=np.float64)[:3]
            size = np.where(want > 0, want, size)
    return size


def ready(
    dataset_json: str | os.PathLike,
    fingerprint: Fingerprint,
    spacing_transforms: Sequence[Any],
    patch_size: Sequence[int],
) -> str:
    """The data list's absolute path (resolved against the working directory, once) when every scanned
    case, after the spacing transforms, holds a patch; else ``DataError`` naming the smallest case."""
    patch = np.asarray([int(p) for p in patch_size], dtype=np.float64)
    small = []
    for case in fingerprint.cases:
        size = planned_sizes(case.shape, case.spacing, spacing_transforms)
        if np.any(size < patch):
            small.append((float(np.prod(size / patch)), case, size))
    if small:
        _, case, size = min(small, key=lambda s: s[0])
        raise DataError(
            f"{len(small)} of {len(fingerprint.cases)} cases are smaller than patch_size {patch.astype(int).tolist()} "
            f"and no transform pads them; the smallest, case {case.case_id}: size {size.astype(int).tolist()} "
            f"(RAS): {case.image}; fix: drop the preset's spacing_transforms (the plan pads) or add SpatialPadd"
            f" to them, or a --patch_size of at most {size.astype(int).tolist()}"
        )
    return str(os.path.abspath(dataset_json))


def _classes(state: Mapping[str, Any]) -> int | None:
    """The output channels of a segmentation network's state dict: its last bias's length."""
    biases = [k for k in state if k.endswith(".bias")]
    return int(state[biases[-1]].shape[0]) if biases else None


def check_checkpoint(path: str | os.PathLike, network: torch.nn.Module) -> str:
    """``path`` when it is a checkpoint whose weights fit ``network`` (a state dict, or one under
    ``model`` as the resume checkpoint holds it); else ``InputError`` naming the file and the fix: no such
    file, not a PyTorch checkpoint, or weights of another shape (another num_classes, channels or preset)."""
    file = Path(os.path.abspath(path))
    if not file.is_file():
        raise InputError(
            f"checkpoint {file}: no such file; fix: train one first (python -m monai.bundle run training "
            f"--config_file configs/train.yaml writes <ckpt_dir>/model.pt) or pass --checkpoint PATH"
        )
    try:
        state = load_state_dict(file)
    except ValueError as err:
        raise InputError(f"checkpoint {file}: holds no network weights; fix: pass a model.pt a training wrote") from err
    except Exception as err:  # pickle, zip or torch's own errors: all mean the same to the user
        raise InputError(
            f"checkpoint {file}: not a PyTorch checkpoint this bundle can read ({type(err).__name__}); "
            f"fix: pass --checkpoint the model.pt a training wrote"
        ) from err
    expected = network.state_dict()
    have, want = _classes(state), _classes(expected)
    if have is not None and want is not None and have != want:
        raise InputError(
            f"checkpoint {file} was trained for {have} classes (its last layer has {have} outputs) and this "
            f"config has {want}; fix: pass --num_classes {have}, or the preset it was trained with"
        )
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong or len(state) != len(expected):
        if wrong:
            detail = f"{wrong[0]} is {tuple(state[wrong[0]].shape)} there and {tuple(expected[wrong[0]].shape)} here"
        elif missing:
            detail = f"{len(missing)} of this network's {len(expected)} weights are not in it"
        else:
            detail = f"it has {len(state)} weights, this network {len(expected)}"
        raise InputError(
            f"checkpoint {file} does not fit this network ({detail}); fix: pass the network settings it was "
            f"trained with (the same preset and overrides: channels, patch_size, num_classes)"
        )
    return str(file)
