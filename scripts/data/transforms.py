"""MONAI-style transforms: two the real-data presets (configs/presets/) use, ``RobustZScored`` (MRI
intensity normalisation that copes with mixed ranges and outliers) and ``MapLabelsByCenterd`` (label
mapping chosen by each case's center, for combined data sets whose sources code their labels
differently); ``to_background``, the label values a user's data marks as unlabelled read as background
(``--label_to_background "[65535]"``); and ``PaddingMaskd``, the mask of the real voxels the checkpoint
scores average over.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapLabelValue, MapLabelValued, MapTransform

__all__ = ["MapLabelsByCenterd", "RobustZScored", "robust_zscore", "PaddingMaskd", "padding_mask", "to_background"]


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
