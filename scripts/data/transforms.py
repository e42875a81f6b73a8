"""MONAI-style transforms: two the real-data presets (configs/presets/) use, ``RobustZScored`` (MRI
intensity normalisation that copes with mixed ranges and outliers) and ``MapLabelsByCenterd`` (label
mapping chosen by each case's center, for combined data sets whose sources code their labels
differently); ``to_background``, the label values a user's data marks as unlabelled read as background
(``--label_to_background "[65535]"``); ``PaddingMaskd``, the mask of the real voxels the checkpoint scores
average over; and ``CropIndicesd``, the crop's foreground / background locations computed once per case
(and cached).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapLabelValue, MapLabelValued, MapTransform

__all__ = [
    "CropIndicesd",
    "MapLabelsByCenterd",
    "PaddingMaskd",
    "RobustZScored",
    "padding_mask",
    "robust_zscore",
    "sample_locations",
    "to_background",
]

MAX_CROP_LOCATIONS = 1_000_000  # per side (foreground, background): every location of a volume up to 10^6 voxels
CHUNK = 1 << 22


def robust_zscore(
    image: torch.Tensor | np.ndarray, lower: float = 0.5, upper: float = 99.5, nonzero: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Clip each channel to the [lower, upper] percentiles of its voxels, then z-score with their mean and std.

    With ``nonzero`` only non-zero voxels count and are changed (zeros, e.g. outside a skull-stripped
    brain or added by padding, stay 0), as in nnU-Net's MRI normalisation. Works the same whatever the
    stored range (uint8 0..255, float 0..4000, 1e6 outliers): after clipping the scale cancels out.
    Returns float32, a ``MetaTensor`` when given one.
    """
    out = (image if isinstance(image, torch.Tensor) else torch.as_tensor(image)).to(torch.float32).clone()
    for c in range(out.shape[0]):
        channel = out[c]
        mask = channel != 0 if nonzero else torch.ones_like(channel, dtype=torch.bool)
        values = channel[mask]
        if values.numel() == 0:
            continue
        lo, hi = np.percentile(values.detach().cpu().numpy().astype(np.float64), [lower, upper])
        values = values.clamp(float(lo), float(hi))
        mean = values.mean()
        std = values.std(unbiased=False)
        channel[mask] = (values - mean) / torch.clamp(std, min=eps)
    return out


class RobustZScored(MapTransform):
    """Dictionary transform of :func:`robust_zscore`: percentile clipping, then z-score (non-zero voxels).

    Args:
        keys: keys of the images to normalise.
        lower, upper: percentiles (0-100) of the (non-zero) voxels to clip to, per channel.
        nonzero: compute statistics over, and change, non-zero voxels only.
    """

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 0.5,
        upper: float = 99.5,
        nonzero: bool = True,
        eps: float = 1e-8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.lower, self.upper, self.nonzero, self.eps = float(lower), float(upper), bool(nonzero), float(eps)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = robust_zscore(d[key], self.lower, self.upper, self.nonzero, self.eps)
        return d


class MapLabelsByCenterd(MapTransform):
    """Map label values with a table chosen by the case's center (``MapLabelValue`` per center).

    Combined data sets code labels per source: MSD Pancreas 1 pancreas / 2 tumour, NIH 1 pancreas,
    WORD 8 pancreas among 16 organs. Each entry carries its source as ``center`` (scripts.data.combine).

    Args:
        keys: label keys.
        maps: ``{center: {"orig_labels": [...], "target_labels": [...]}}``; values not listed in
            ``orig_labels`` are kept as they are (as in ``MapLabelValue``).
        center_key: the entry key naming the center.
        default: the table for centers missing from ``maps``; None makes such a center an error.
    """

    def __init__(
        self,
        keys: KeysCollection,
        maps: Mapping[str, Mapping[str, Sequence]],
        center_key: str = "center",
        default: Mapping[str, Sequence] | None = None,
        dtype: str | np.dtype | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.center_key = center_key
        self.mappers = {str(c): self._mapper(str(c), m, dtype) for c, m in maps.items()}
        self.default = None if default is None else self._mapper("default", default, dtype)

    @staticmethod
    def _mapper(center: str, table: Mapping[str, Sequence], dtype) -> MapLabelValue:
        try:
            orig, target = list(table["orig_labels"]), list(table["target_labels"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"label map of center {center!r} needs orig_labels and target_labels") from e
        return MapLabelValue(orig_labels=orig, target_labels=target, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        center = str(d.get(self.center_key, ""))
        mapper = self.mappers.get(center, self.default)
        if mapper is None:
            raise KeyError(
                f"case {d.get('case_id', '?')}: no label map for center {center!r}; known: {sorted(self.mappers)}"
            )
        for key in self.key_iterator(d):
            d[key] = mapper(d[key])
        return d


def padding_mask(image: torch.Tensor) -> torch.Tensor:
    """(1, *spatial) uint8 mask of ``image``'s real voxels: 0 on what its trailing padding transforms added.

    Reads the MetaTensor's ``applied_operations`` (MONAI's inverse information) from the last one back,
    through every padding transform (``SpatialPad``, ``DivisiblePad``, ``BorderPad``: those recording
    ``padded``), and stops at the first other spatial transform (a resampling or crop changes the grid:
    padding before it is not masked). A plain tensor (no trace) is all real.
    """
    spatial = tuple(image.shape[1:])
    lo, hi = [0] * len(spatial), list(spatial)
    for op in reversed(list(getattr(image, "applied_operations", []) or [])):
        padded = (op.get("extra_info") or {}).get("padded")
        if padded is None:
            break
        for d, (before, after) in enumerate(list(padded)[1:]):  # the first pair is the channel axis
            lo[d] += int(before)
            hi[d] -= int(after)
    mask = torch.zeros((1, *spatial), dtype=torch.uint8)
    mask[(slice(None), *(slice(a, b) for a, b in zip(lo, hi)))] = 1
    return mask


class PaddingMaskd(MapTransform):
    """Add ``mask_key``: the padding mask of ``keys``' image (``padding_mask``). Place it after the last
    padding transform and before anything that drops the trace (``EnsureTyped(track_meta=False)``)."""

    def __init__(self, keys: KeysCollection = "image", mask_key: str = "mask") -> None:
        super().__init__(keys)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        key = self.first_key(d)
        d[self.mask_key] = padding_mask(d[key])
        return d


def to_background(values: float | Sequence[float] | None, keys: KeysCollection = "label") -> list[MapTransform]:
    """The transform that reads each of ``values`` in the label as background (0), as a list to put in
    front of the label mapping (``[]`` when there are none). For a value a data set uses for "unlabelled"
    or "ignore" (65535, 255, -1): the network then learns those voxels as background and the Dice counts
    them as background; no voxel is left out of the loss or the metrics."""
    listed = [] if values is None else [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    return [MapLabelValued(keys=keys, orig_labels=listed, target_labels=[0.0] * len(listed))] if listed else []


def sample_locations(mask: np.ndarray, max_samples: int = MAX_CROP_LOCATIONS, seed: int = 0) -> np.ndarray:
    """Sorted flat indices of ``mask``'s True voxels: all of them when there are at most ``max_samples``
    (what ``numpy.flatnonzero`` gives), else a uniform sample of ``max_samples`` without replacement, seeded,
    found chunk by chunk (never an index array of the whole volume). int32 when the volume allows."""
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    dtype = np.int32 if flat.size < 2**31 else np.int64
    count = int(np.count_nonzero(flat))
    if count <= max_samples:
        return np.flatnonzero(flat).astype(dtype)
    ranks = np.sort(np.random.default_rng(seed).choice(count, size=int(max_samples), replace=False))
    out, done, seen = np.empty(len(ranks), dtype), 0, 0  # ranks[:done] placed; seen: True voxels before the chunk
    for start in range(0, flat.size, CHUNK):
        chunk = flat[start : start + CHUNK]
        inside = int(np.count_nonzero(chunk))
        stop = int(np.searchsorted(ranks, seen + inside))  # the ranks that fall in this chunk end here
        if stop > done:
            out[done:stop] = np.flatnonzero(chunk)[ranks[done:stop] - seen] + start
            done = stop
        seen += inside
    return out


class CropIndicesd(MapTransform):
    """Foreground and background locations for a ``RandCropByPosNegLabeld``, computed once per case.

    Without them the crop finds every foreground and background voxel of the volume for every sample
    (about 600 MB of indices for one 512 x 512 x 300 CT); here they are computed in the deterministic,
    cached part of the preprocessing, and at most ``max_samples`` of each are kept (a uniform sample,
    as nnU-Net keeps a bounded sample of foreground locations per class). Up to that many, they are
    exactly the crop's own, so the crops are the same for the same seed. The settings are the crop's
    (``label_key``, ``image_key``, ``image_threshold``, ``fg_indices_key``, ``bg_indices_key``); a crop of
    another kind, or one without indices keys, gets nothing (it finds its locations itself, as before).
    """

    def __init__(self, crop: object, max_samples: int = MAX_CROP_LOCATIONS, seed: int = 0) -> None:
        from monai.transforms import RandCropByPosNegLabeld

        fg, bg = getattr(crop, "fg_indices_key", None), getattr(crop, "bg_indices_key", None)
        self.active = isinstance(crop, RandCropByPosNegLabeld) and fg is not None and bg is not None
        super().__init__(getattr(crop, "label_key", None) or "label", allow_missing_keys=True)
        self.label_key = self.keys[0]
        self.image_key = getattr(crop, "image_key", None) if self.active else None
        self.threshold = float(crop.cropper.image_threshold) if self.active else 0.0
        self.fg_key, self.bg_key = fg, bg
        self.max_samples, self.seed = int(max_samples), int(seed)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.active or self.label_key not in d:
            return d
        label = torch.as_tensor(d[self.label_key])
        label = label[1:] if label.shape[0] > 1 else label  # one-hot: the background channel is not foreground
        foreground = (label != 0).any(0).cpu().numpy()
        background = ~foreground
        if self.image_key is not None:  # the crop's rule: background only where the image is above the threshold
            background &= (torch.as_tensor(d[self.image_key]) > self.threshold).any(0).cpu().numpy()
        d[self.fg_key] = sample_locations(foreground, self.max_samples, self.seed)
        d[self.bg_key] = sample_locations(background, self.max_samples, self.seed + 1)
        return d
