"""K-fold assignment of the labelled cases of an audit: seeded, stratified by center, every case in exactly
one fold; and the two data lists of each fold (train on the other folds, score the held-out one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["assign_folds", "fold_datalists"]


def assign_folds(case_ids: Sequence[str], k: int, seed: int = 0, groups: Sequence[str] | None = None) -> np.ndarray:
    """The fold (0..k-1) of each case, shape (n,).

    Within each group (center; all cases when ``groups`` is None) the cases are shuffled with the seed and
    dealt to the folds in turn, the deal going on from one group to the next, so every center is spread
    over the folds as evenly as its size allows and the fold sizes differ by at most one.
    """
    ids = list(case_ids)
    n = len(ids)
    if int(k) != k or k < 2:
        raise ValueError(f"folds must be an integer >= 2, got {k}")
    if n < k:
        raise ValueError(f"{n} cases are too few for {k} folds: every fold needs a held-out case")
    if groups is not None and len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} cases")
    if len(set(ids)) != n:
        raise ValueError("duplicate case ids: a case must be in exactly one fold")
    labels = np.asarray(["" for _ in ids] if groups is None else [str(g) for g in groups])
    rng = np.random.default_rng([int(seed), 0xF01D])
    folds = np.full(n, -1, dtype=np.int64)
    dealt = 0
    for group in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == group)
        members = members[rng.permutation(len(members))]
        folds[members] = (dealt + np.arange(len(members))) % k
        dealt += len(members)
    return folds


def fold_datalists(
    entries: Sequence[Mapping], folds: Sequence[int], fold: int, name: str = "audit", meta: Mapping | None = None
) -> tuple[dict, dict]:
    """(training list, held-out list) of one fold, both Decathlon data lists.

    The training list trains on every other fold and validates on the held-out fold (it has no test list:
    the audit trains with ``test_fraction 0``, so no case is carved away); the held-out list holds that
    fold's cases as its training list, for the scoring workflow to score. ``meta``: the source data list's
    description the runs read (``labels``, ``modality``), copied into both.
    """
    meta = {k: v for k, v in (meta or {}).items() if k in ("labels", "modality")}
    folds = np.asarray(folds)
    if len(folds) != len(entries):
        raise ValueError(f"{len(folds)} folds for {len(entries)} cases")
    held = [dict(e) for e, f in zip(entries, folds) if f == fold]
    rest = [dict(e) for e, f in zip(entries, folds) if f != fold]
    if not held or not rest:
        raise ValueError(f"fold {fold} has {len(held)} held-out and {len(rest)} training cases; both must be > 0")
    train = {
        "name": f"{name}: fold {fold} training",
        "description": f"trains on the {len(rest)} cases outside fold {fold}; validates on its {len(held)} cases",
        "tensorImageSize": "3D",
        **meta,
        "numTraining": len(rest),
        "training": rest,
        "validation": held,
    }
    heldout = {
        "name": f"{name}: fold {fold} held out",
        "description": f"the {len(held)} cases of fold {fold}, scored by the model trained without them",
        "tensorImageSize": "3D",
        **meta,
        "numTraining": len(held),
        "training": held,
    }
    return train, heldout
