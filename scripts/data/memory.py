"""Memory planned from the data: where the preprocessed volumes are kept (issue 24).

The checks' single pass (``scripts.data.checks.scan_dataset``) knows every case's shape and spacing, so
the size of a preprocessed case is known before anything is cached: its voxels after the plan's (or a
preset's) resampling and padding, times (image channels + 1 label channel) x 4 bytes (float32, as the
transforms leave both), plus the crop's bounded foreground / background locations for training cases
(``scripts.data.transforms.CropIndicesd``: at most 2 x 10^6 int32). ``choose_cache`` then picks, for all
the lists a run caches together (training and validation in stage 1):

- ``CacheDataset`` (everything in memory, the former default) while the total fits the memory budget;
- else ``PersistentDataset`` on disk (``cache_dir``, written up front one case at a time and read
  memory-mapped, the way nnU-Net keeps its preprocessed folder) when the disk has room;
- else a partial ``CacheDataset`` (the first cases that fit, training first; the rest preprocessed when read);
- a workflow that reads each case once (evaluation, scoring) streams instead of caching on disk.

The budget is ``memory_budget`` (bytes, or a string such as "8GB"), else ``memory_share`` of the memory
available now (``/proc/meminfo``'s MemAvailable, or the container's cgroup limit when lower) divided by
the ranks on this machine (each rank caches its own copy). An explicit ``cache_rate`` wins: a
``CacheDataset`` with that share, as before; ``plan.json`` then says so and what the plan would have done.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import pickle_hashing
from scripts.data.checks import Fingerprint
from scripts.data.preflight import planned_sizes
from scripts.data.transforms import MAX_CROP_LOCATIONS

__all__ = [
    "DiskCacheDataset",
    "available_memory",
    "cached_dataset",
    "case_bytes",
    "choose_cache",
    "memory_budget",
    "parse_bytes",
    "plan_cache",
]

logger = logging.getLogger("memory")
FLOAT32, INT32 = 4, 4
MEMORY_SHARE = 0.5  # of the available memory; the rest is the run's working set (see docs/scale.md)
DISK_MARGIN = 1.1  # the disk cache needs its estimate plus 10% (file overhead, other writers) ...
DISK_RESERVE = 2 * 10**9  # ... and leaves this much free
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
         "gib": 2**30, "tib": 2**40}  # fmt: skip


def parse_bytes(value: Any) -> int | None:
    """Bytes from a number or a string such as "8GB", "512 MiB", "1.5e9"; None (or "null", "auto") stays None."""
    if value is None or str(value).strip().lower() in ("", "none", "null", "auto"):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in UNITS:
        raise ValueError(f"memory_budget {value!r}: give bytes (8e9) or a size such as '8GB' or '512MiB'")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _inactive_file(stat_path: str, key: str) -> int:
    try:
        for line in Path(stat_path).read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def available_memory() -> int:
    """Bytes this process can still use: MemAvailable, or the cgroup's limit less its use (page cache
    it can drop excluded) when that is lower (a container, a batch job)."""
    meminfo = Path("/proc/meminfo").read_text()
    available = int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo).group(1)) * 1024
    for limit, usage, stat, key in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
         "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"),
    ):  # fmt: skip
        cap, used = _read_int(limit), _read_int(usage)
        if cap is not None and used is not None and cap < 2**60:
            available = min(available, max(0, cap - used + _inactive_file(stat, key)))
    return available


def memory_budget(budget: Any = None, share: float = MEMORY_SHARE, ranks: int | None = None) -> dict[str, Any]:
    """The cache's budget: ``budget`` when given, else ``share`` x the available memory / the ranks on this
    machine (torchrun's LOCAL_WORLD_SIZE). Returns the bytes and where they came from."""
    ranks = int(ranks or os.environ.get("LOCAL_WORLD_SIZE", 1))
    given = parse_bytes(budget)
    if given is not None:
        return {"budget_bytes": given, "from": "memory_budget", "ranks": ranks}
    share = float(share)
    if not 0.0 < share <= 1.0:
        raise ValueError(f"memory_share {share}: must be in (0, 1]")
    available = available_memory()
    return {"budget_bytes": int(share * available / ranks), "from": f"memory_share {share:g} x available / {ranks}",
            "available_bytes": available, "memory_share": share, "ranks": ranks}  # fmt: skip


def case_bytes(
    shape: Sequence[int], spacing: Sequence[float], transforms: Sequence[Any], channels: int = 1, crop: bool = False
) -> int:
    """Bytes of one preprocessed case: its voxels after ``transforms`` (resampling, padding) x (``channels`` + 1
    label) x float32, plus, with ``crop``, its crop locations (at most ``MAX_CROP_LOCATIONS`` per side, int32)."""
    voxels = int(np.prod(planned_sizes(shape, spacing, transforms)))
    locations = min(voxels, 2 * MAX_CROP_LOCATIONS) * INT32 if crop else 0
    return voxels * (int(channels) + 1) * FLOAT32 + locations


def _header(path: str) -> tuple[tuple[int, ...], tuple[float, ...], int]:
    """(RAS shape, RAS spacing, channels) from a NIfTI header (nothing else read): for cases the checks did
    not scan (``check_data`` off)."""
    import nibabel as nib

    img = nib.load(path)
    ornt = nib.io_orientation(img.affine)
    shape, spacing = [0] * 3, [0.0] * 3
    zooms = nib.affines.voxel_sizes(img.affine)
    for axis in range(3):
        shape[int(ornt[axis, 0])], spacing[int(ornt[axis, 0])] = int(img.shape[axis]), float(zooms[axis])
    return tuple(shape), tuple(spacing), int(np.prod(img.shape[3:], dtype=np.int64))


def list_bytes(
    entries: Sequence[Mapping[str, Any]],
    fingerprint: Fingerprint,
    transforms: Sequence[Any],
    channels: int = 1,
    crop: bool = False,
) -> list[int]:
    """Bytes of each preprocessed case of a data list (``case_bytes``), from the checks' pass or, for a case
    it did not scan, the image's header."""
    scanned = {c.case_id: c for c in fingerprint.cases}
    out = []
    for entry in entries:
        stats = scanned.get(str(entry.get("case_id")))
        if stats is not None:
            shape, spacing, chans = stats.shape, stats.spacing, channels
        else:
            shape, spacing, chans = _header(str(entry["image"]))
        out.append(case_bytes(shape, spacing, transforms, chans, crop))
    return out


def _gb(n: float) -> str:
    """A size for people: 1.23 GB, 45.6 MB, 7.9 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def choose_cache(
    sizes: Mapping[str, Sequence[int]],
    budget: int,
    disk_free: int | None,
    cache_rate: float | None = None,
    reuse: bool = True,
) -> dict[str, Any]:
    """Where each list's preprocessed cases go (pure: plain numbers in, plain values out).

    ``sizes``: each list's per-case bytes (training first: it is read every epoch); ``budget``: bytes the
    caches may hold together; ``disk_free``: bytes the disk cache may use (None: no disk cache);
    ``cache_rate``: an explicit setting (wins); ``reuse``: False for a workflow that reads each case once.
    Returns ``{"datasets": {list: {"dataset": ..., ...}}, "estimated_bytes": ..., "reason": ...}``.
    """
    total = int(sum(sum(s) for s in sizes.values()))
    estimated = {name: int(sum(s)) for name, s in sizes.items()} | {"total": total}
    names = " and ".join(sizes) or "no"
    if total <= budget:
        datasets = {name: {"dataset": "CacheDataset", "cache_num": len(s)} for name, s in sizes.items()}
        reason = f"the preprocessed {names} cases, estimated at {_gb(total)}, fit the memory budget {_gb(budget)}"
    elif not reuse:
        datasets = {name: {"dataset": "Dataset"} for name in sizes}
        reason = (f"the preprocessed {names} cases, estimated at {_gb(total)}, exceed the memory budget {_gb(budget)}"
                  " and each is read once: streamed (preprocessed when read)")  # fmt: skip
    elif disk_free is not None and total * DISK_MARGIN <= disk_free:
        datasets = {name: {"dataset": "PersistentDataset"} for name in sizes}
        reason = (f"the preprocessed {names} cases, estimated at {_gb(total)}, exceed the memory budget {_gb(budget)}:"
                  f" cached on disk ({_gb(disk_free)} usable there)")  # fmt: skip
    else:
        datasets, left = {}, int(budget)
        for name, s in sizes.items():
            fits = int(np.searchsorted(np.cumsum(s), left, side="right"))
            datasets[name] = {"dataset": "CacheDataset", "cache_num": fits}
            left -= int(sum(s[:fits]))
        disk = "no disk cache" if disk_free is None else f"the disk has {_gb(disk_free)} usable, too little"
        counts = ", ".join(f"{d['cache_num']} of {len(sizes[n])} {n}" for n, d in datasets.items())
        reason = (f"the preprocessed {names} cases, estimated at {_gb(total)}, exceed the memory budget {_gb(budget)}"
                  f" and {disk}: cached in part ({counts}); the rest preprocessed when read")  # fmt: skip
    choice = {"datasets": datasets, "estimated_bytes": estimated, "budget_bytes": int(budget), "reason": reason}
    if cache_rate is None:
        return {**choice, "chosen_by": "plan"}
    rate = float(cache_rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"cache_rate {cache_rate}: must be in [0, 1] (or auto: planned from the data)")
    return {
        "datasets": {name: {"dataset": "CacheDataset", "cache_rate": rate} for name in sizes},
        "estimated_bytes": estimated,
        "budget_bytes": int(budget),
        "chosen_by": "cache_rate",
        "reason": f"cache_rate {rate:g} set: CacheDataset holds that share, about {_gb(rate * total)}",
        "planned": {"datasets": datasets, "reason": reason},
    }


def _cache_rate(value: Any) -> float | None:
    return None if value is None or str(value).strip().lower() in ("auto", "none", "null", "") else float(value)


def _disk_usable(cache_dir: str | os.PathLike) -> int:
    """Bytes the disk cache may use: free space where ``cache_dir`` would be, less the reserve, plus the
    files a former run (the same output_dir, resumed) already left there."""
    path = Path(os.path.abspath(cache_dir))
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    held = sum(f.stat().st_size for f in path.glob("*.pt")) if path.is_dir() else 0
    return max(0, shutil.disk_usage(probe).free - DISK_RESERVE) + held


def plan_cache(
    lists: Mapping[str, Sequence[Mapping[str, Any]]],
    fingerprint: Fingerprint,
    transforms: Sequence[Any],
    in_channels: int = 1,
    memory_budget_setting: Any = None,
    memory_share: float = MEMORY_SHARE,
    cache_rate: Any = "auto",
    cache_dir: str | os.PathLike | None = None,
    reuse: bool = True,
    crop_lists: Sequence[str] = ("training",),
) -> dict[str, Any]:
    """``choose_cache`` for a run's data lists (``{name: entries}``, training first), logged; the result goes
    to ``plan.json`` (``write_plan``'s ``memory``) and to ``cached_dataset`` (each list's entry)."""
    sizes = {name: list_bytes(entries, fingerprint, transforms, in_channels, name in crop_lists)
             for name, entries in lists.items()}  # fmt: skip
    budget = memory_budget(memory_budget_setting, memory_share)
    disk = _disk_usable(cache_dir) if cache_dir is not None and reuse else None
    choice = choose_cache(sizes, budget["budget_bytes"], disk, _cache_rate(cache_rate), reuse)
    for spec in choice["datasets"].values():
        if spec["dataset"] == "PersistentDataset":
            spec["cache_dir"] = str(Path(os.path.abspath(cache_dir)))
    largest = max((b for s in sizes.values() for b in s), default=0)
    settings = {"memory_budget": memory_budget_setting, "memory_share": memory_share, "cache_rate": cache_rate,
                "cache_dir": None if cache_dir is None else str(cache_dir)}  # fmt: skip
    choice.update(budget=budget, largest_case_bytes=int(largest), disk_usable_bytes=disk, settings=settings)
    kinds = ", ".join(f"{name}: {d['dataset']}" for name, d in choice["datasets"].items())
    logger.info(f"data cache: {kinds}; {choice['reason']} (largest case {_gb(largest)}, budget {budget['from']})")
    return choice


def item_hash(item: Any) -> bytes:
    """A data-list entry's cache key: the entry and the size and modification time of each file it names,
    so a file rewritten in place is preprocessed again."""
    stats = []
    if isinstance(item, Mapping):
        for key in sorted(item, key=str):
            value = item[key]
            if isinstance(value, str) and os.path.isfile(value):
                st = os.stat(value)
                stats.append((str(key), st.st_size, st.st_mtime_ns))
    return pickle_hashing({"item": item, "files": stats})


def transform_hash(transforms: Any) -> bytes:
    """The deterministic transforms' cache key (their pickled settings); transforms that cannot be pickled
    get a key of this run only (correct, but not reused by a later run)."""
    try:
        return pickle_hashing(transforms)
    except Exception as err:  # a lambda or an open handle among the transforms
        logger.warning(f"disk cache: the transforms cannot be pickled ({type(err).__name__}); not reused across runs")
        return uuid.uuid4().hex.encode()


class DiskCacheDataset(PersistentDataset):
    """``PersistentDataset`` written up front (``prepare``: one case at a time, so the working set is one
    case's preprocessing, not one per loader worker) and read memory-mapped (a random crop touches only
    its own pages of the cached volume). Keys: ``item_hash`` and ``transform_hash``."""

    def __init__(self, data: Sequence, transform: Any, cache_dir: str | os.PathLike) -> None:
        super().__init__(data, transform, cache_dir=cache_dir, hash_func=item_hash, hash_transform=transform_hash)

    def cache_file(self, item: Any) -> Path:
        """The file MONAI's PersistentDataset writes the item to (its naming: item hash + transform hash)."""
        return Path(self.cache_dir) / f"{self.hash_func(item).decode('utf-8')}{self.transform_hash}.pt"

    def prepare(self, rank: int = 0, world_size: int = 1) -> int:
        """Write the cache files missing (this rank's share: every ``world_size``-th item); returns how many."""
        missing = [d for i, d in enumerate(self.data) if i % world_size == rank and not self.cache_file(d).is_file()]
        for n, item in enumerate(missing, 1):
            super()._cachecheck(item)  # preprocesses and writes it (temporary file, then rename)
            logger.info(f"disk cache: {n}/{len(missing)} cases written to {self.cache_dir}")
        return len(missing)

    def _cachecheck(self, item_transformed: Any) -> Any:
        path = self.cache_file(item_transformed)
        if path.is_file():
            try:
                return torch.load(path, weights_only=self.weights_only, mmap=True)
            except Exception:  # corrupt or another format: MONAI's own reading recomputes it
                pass
        return super()._cachecheck(item_transformed)


def _rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def cached_dataset(
    data: Sequence, transform: Any, cache: Mapping[str, Any], num_workers: int = 1, progress: bool = False
) -> Dataset:
    """The data set ``plan_cache`` chose for one list (``cache``: its entry under ``datasets``)."""
    kind = cache["dataset"]
    if kind == "CacheDataset":
        return CacheDataset(data, transform, cache_num=int(cache.get("cache_num", sys.maxsize)),
                            cache_rate=float(cache.get("cache_rate", 1.0)), num_workers=num_workers,
                            progress=progress)  # fmt: skip
    if kind == "PersistentDataset":
        dataset = DiskCacheDataset(data, transform, cache["cache_dir"])
        dataset.prepare(*_rank())
        return dataset
    if kind == "Dataset":
        return Dataset(data, transform)
    raise ValueError(f"unknown data set kind {kind!r}: CacheDataset, PersistentDataset or Dataset")
