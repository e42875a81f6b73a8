"""What multi-process training needs from the DAD tracker: which items a sampler repeats as padding.

``torch.utils.data.DistributedSampler`` (and MONAI's, with ``even_divisible=True``) gives every rank
the same number of items by appending the first items of the shuffled list again. Those repeats are
trained on, but a case must be counted once per epoch whatever the number of processes, so the
tracker leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch.utils.data import DistributedSampler

__all__ = ["padding_indices", "padding_case_ids"]


def padding_indices(sampler: DistributedSampler) -> list[int]:
    """Data set indices that this rank's sampler yields as padding in the current epoch.

    The sampler lays the (shuffled, padded) list out as positions 0..total_size-1 and gives rank r the
    positions r, r + R, r + 2R, ...; positions >= len(dataset) are the padding. Call it after
    ``sampler.set_epoch`` (MONAI's engines do so when an epoch starts).

    A padded item never meets its original on the same rank (the copy sits len(dataset) positions
    later, and a rank's positions differ by multiples of R), so dropping a padded case's items on a
    rank drops exactly the repeat.
    """
    n = len(sampler.dataset)  # type: ignore[arg-type]
    local = list(iter(sampler))
    return [idx for k, idx in enumerate(local) if sampler.rank + k * sampler.num_replicas >= n]


def padding_case_ids(loader: Any, case_key: str = "case_id") -> set[str]:
    """Case ids this rank's data loader repeats as padding this epoch (empty when it does not pad).

    Args:
        loader: a data loader (or anything with a ``sampler``); only a ``DistributedSampler`` pads.
        case_key: the data list key of the case id (items are read from ``dataset.data`` unloaded).
    """
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler):
        return set()
    # a sampler that lays out its own subset (the dynamic-pruning sampler) names its padding itself
    own = getattr(sampler, "padding_indices", None)
    padded: Iterable[int] = own() if callable(own) else padding_indices(sampler)
    if not padded:
        return set()
    data = getattr(sampler.dataset, "data", None)
    if data is None:
        raise TypeError("a padding DistributedSampler needs a data set with a `data` list to name the repeated cases")
    return {str(data[i][case_key]) for i in padded}
