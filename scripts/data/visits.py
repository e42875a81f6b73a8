"""The training data set read by visit, for dynamic pruning: the sampler yields one ``(row, crops,
weight)`` per visit, and ``VisitDataset`` returns the first ``crops`` of the case's training crops, each
stamped with the visit's loss weight. The weight travels with the crops into the batch, so a case
visited twice in an epoch (matched iterations) can weigh differently in each visit, and a case given
fewer crops trains fewer crops through the network (the crops are made, cheaply, on the loader's side).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

__all__ = ["VisitDataset", "WEIGHT_KEY"]

WEIGHT_KEY = "loss_weight"


class VisitDataset(Dataset):
    """Wraps the training data set (its items: a list of crops, as ``RandCropByPosNegLabeld`` makes them).

    Args:
        dataset: the training data set, indexed by record row.
        weight_key: the key of each crop's loss weight in the batch.
    """

    def __init__(self, dataset: Any, weight_key: str = WEIGHT_KEY) -> None:
        self.dataset = dataset
        self.weight_key = weight_key

    @property
    def data(self) -> Any:
        """The wrapped data set's data list (what ``scripts.data.distributed`` reads the case ids from)."""
        return self.dataset.data

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, visit: int | Sequence) -> list[dict]:
        """``(row, crops, weight)``: the first ``crops`` crops of case ``row`` at ``weight``; a plain row:
        all of its crops at weight 1."""
        row, crops, weight = (visit, None, 1.0) if isinstance(visit, int) else visit
        items = self.dataset[int(row)]
        items = list(items) if isinstance(items, (list, tuple)) else [items]
        if crops is not None:
            if len(items) < int(crops):
                raise ValueError(
                    f"data set item {row} has {len(items)} crops but its visit trains {crops}: the dynamic rule's "
                    "num_crops must be the crop transform's num_samples (configs/dynamic.yaml passes @num_crops)"
                )
            items = items[: int(crops)]
        return [{**item, self.weight_key: float(weight)} for item in items]
