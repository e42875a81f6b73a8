"""Deterministic synthetic multi-center 3D segmentation data set (Decathlon layout).

Each case is a CT-like volume: an ellipsoidal "body" with smooth texture and a fat
rim, a small compact TARGET (label 1, ~1-3 % of the volume) and an elongated
DISTRACTOR of the same intensity that is never labelled. Centers differ in intensity
scale/offset, noise, blur and target contrast. A fraction of the training labels carry
planted faults (see ``FAULT_KINDS``), listed in faults.csv.

Usage: ``python -m scripts.data.synthetic --out_dir DIR [--num_train N ...]``
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scripts.utils.atomic import atomic_output, write_text_atomic

__all__ = [
    "FAULT_KINDS",
    "CaseVolumes",
    "CenterParams",
    "apply_fault",
    "binary_dilate",
    "binary_erode",
    "case_id",
    "center_params",
    "ensure_dataset",
    "gaussian_blur",
    "generate_dataset",
    "render_case",
    "render_clean_label",
    "translate_mask",
]

FAULT_KINDS: tuple[str, ...] = ("shifted", "eroded", "dilated", "missing", "wrong_structure")
DATASET_JSON = "dataset.json"
FAULTS_CSV = "faults.csv"
MIN_SIDE = 16

# Tissue values in HU before the per-center scale/offset is applied.
AIR_HU = -1000.0
FAT_HU = -90.0
SOFT_TISSUE_HU = 40.0
TEXTURE_HU = 12.0
TARGET_DELTA_HU = 80.0  # target (and distractor) minus soft tissue, at contrast 1.0


@dataclass(frozen=True)
class CenterParams:
    """Acquisition characteristics of one center; raw = scale * HU + offset + noise."""

    scale: float
    offset: float
    noise_std: float
    blur_sigma: float
    contrast: float


# Fixed table for the first centers; center3 is the low-contrast, blurry, "hard" one.
_CENTER_TABLE: tuple[CenterParams, ...] = (
    CenterParams(scale=1.00, offset=0.0, noise_std=10.0, blur_sigma=0.5, contrast=1.00),
    CenterParams(scale=1.15, offset=60.0, noise_std=25.0, blur_sigma=1.0, contrast=0.80),
    CenterParams(scale=0.85, offset=-40.0, noise_std=18.0, blur_sigma=1.5, contrast=0.35),
    CenterParams(scale=1.00, offset=1024.0, noise_std=14.0, blur_sigma=0.8, contrast=0.60),
)
_EXTRA_CENTER_SEED = 7919  # fixed, so center identities do not depend on the data seed


@dataclass(frozen=True)
class CaseVolumes:
    """One rendered case: raw image and the clean masks of target and distractor."""

    image: np.ndarray  # float32
    target: np.ndarray  # bool
    distractor: np.ndarray  # bool


def center_params(center: int) -> CenterParams:
    """Parameters of 1-based ``center``; later centers are derived deterministically."""
    if center < 1:
        raise ValueError(f"center must be >= 1, got {center}")
    if center <= len(_CENTER_TABLE):
        return _CENTER_TABLE[center - 1]
    rng = np.random.default_rng([_EXTRA_CENTER_SEED, center])
    return CenterParams(
        scale=round(float(rng.uniform(0.8, 1.25)), 3),
        offset=round(float(rng.uniform(-80.0, 120.0)), 1),
        noise_std=round(float(rng.uniform(8.0, 30.0)), 1),
        blur_sigma=round(float(rng.uniform(0.5, 1.6)), 2),
        contrast=round(float(rng.uniform(0.35, 1.0)), 2),
    )


def case_id(center: int, index: int) -> str:
    """Case id such as ``c1_0007``."""
    return f"c{center}_{index:04d}"


# --------------------------------------------------------------- image operations


def _shifted_view(padded: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    """Slice ``length`` elements of ``padded`` along ``axis`` starting at ``start``."""
    index = [slice(None)] * padded.ndim
    index[axis] = slice(start, start + length)
    return padded[tuple(index)]


def gaussian_blur(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian smoothing with edge padding (numpy only)."""
    if sigma <= 0:
        return volume.copy()
    radius = max(1, int(np.ceil(3.0 * sigma)))
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    out = np.asarray(volume, dtype=np.float64)
    for axis in range(out.ndim):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        length = out.shape[axis]
        acc = np.zeros_like(out)
        for k, w in enumerate(weights):
            acc += w * _shifted_view(padded, axis, k, length)
        out = acc
    return out


def binary_dilate(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Dilation with the 6-connected cross, ``iterations`` times."""
    out = mask.astype(bool)
    for _ in range(iterations):
        padded = np.pad(out, 1, mode="constant", constant_values=False)
        grown = out.copy()
        for axis in range(out.ndim):
            n = out.shape[axis]
            core = [slice(1, -1)] * out.ndim
            for start in (0, 2):
                core[axis] = slice(start, start + n)
                grown |= padded[tuple(core)]
        out = grown
    return out


def binary_erode(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Erosion with the 6-connected cross; outside the volume counts as background."""
    padded = np.pad(mask.astype(bool), 1, mode="constant", constant_values=False)
    return ~binary_dilate(~padded, iterations)[(slice(1, -1),) * mask.ndim]


def translate_mask(mask: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """Translate ``mask`` by integer ``offset``, filling with background (no wrap)."""
    out = np.zeros_like(mask)
    src, dst = [], []
    for size, shift in zip(mask.shape, offset):
        shift = int(shift)
        if abs(shift) >= size:
            return out
        src.append(slice(max(0, -shift), size - max(0, shift)))
        dst.append(slice(max(0, shift), size - max(0, -shift)))
    out[tuple(dst)] = mask[tuple(src)]
    return out


# --------------------------------------------------------------- rendering


def _grid(shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel coordinates, shape (3, N)."""
    axes = [np.arange(s, dtype=np.float64) for s in shape]
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3x3 rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _tilt_rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    """Rotation by a random angle <= ``max_angle`` (radians) about a random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(0.0, max_angle)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _ellipsoid(grid: np.ndarray, center: np.ndarray, radii: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid distance (<= 1 inside), flat like ``grid[0]``."""
    local = rotation.T @ (grid - center[:, None])
    return np.sum((local / radii[:, None]) ** 2, axis=0)


def _texture(grid: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Smooth low-frequency texture in [-1, 1]-ish: a few random plane waves."""
    out = np.zeros(grid.shape[1])
    sizes = np.asarray(shape, dtype=np.float64)
    for _ in range(4):
        cycles = rng.uniform(0.5, 2.5, size=3) * rng.choice([-1.0, 1.0], size=3)
        wave = 2 * np.pi * cycles / sizes
        out += np.cos(wave @ grid + rng.uniform(0, 2 * np.pi)) / 2.0
    return out


def render_case(seed: int, index: int, center: int, shape: Sequence[int]) -> CaseVolumes:
    """Render one case; it depends only on (seed, index, center, shape)."""
    shape3 = _check_shape(shape)
    params = center_params(center)
    rng = np.random.default_rng([seed, index])
    grid = _grid(shape3)
    sizes = np.asarray(shape3, dtype=np.float64)
    mid = (sizes - 1) / 2.0

    body_radii = sizes * 0.42 * rng.uniform(0.92, 1.04, size=3)
    body_center = mid + rng.uniform(-0.02, 0.02, size=3) * sizes
    body_rot = _tilt_rotation(rng, np.deg2rad(10))
    body_dist = _ellipsoid(grid, body_center, body_radii, body_rot)
    body = body_dist <= 1.0
    soft = body_dist <= 0.80  # inside the fat rim

    # Target: compact blob of ~1.2-2.8 % of the volume on the +y side of the body.
    fraction = rng.uniform(0.012, 0.028)
    base_radius = max(2.0, (fraction * sizes.prod() * 3.0 / (4.0 * np.pi)) ** (1.0 / 3.0))
    aniso = np.exp(rng.normal(0.0, 0.15, size=3))
    target_radii = base_radius * aniso / aniso.prod() ** (1.0 / 3.0)
    target_center = body_center + body_radii * (np.array([0.0, 0.32, 0.12]) + rng.uniform(-0.08, 0.08, size=3))
    target_dist = _ellipsoid(grid, target_center, target_radii, _random_rotation(rng))
    target = (target_dist <= 1.0) & soft

    # Distractor: elongated tube (long axis ~ axis 0) on the -y side, same brightness.
    dis_radii = base_radius * np.array([2.2, 0.55, 0.55]) * rng.uniform(0.9, 1.1, size=3)
    dis_center = body_center + body_radii * (np.array([0.0, -0.40, -0.10]) + rng.uniform(-0.08, 0.08, size=3))
    dis_dist = _ellipsoid(grid, dis_center, dis_radii, _tilt_rotation(rng, np.deg2rad(25)))
    target_grid = target.reshape(shape3)
    keep_clear = binary_dilate(target_grid, 2).ravel()  # a gap so the two never touch
    distractor = (dis_dist <= 1.0) & soft & ~keep_clear

    delta = TARGET_DELTA_HU * params.contrast
    hu = np.full(grid.shape[1], AIR_HU)
    hu[body] = FAT_HU
    hu[soft] = SOFT_TISSUE_HU + TEXTURE_HU * _texture(grid, shape3, rng)[soft]
    hu[target] += delta
    hu[distractor] += delta * rng.uniform(0.92, 1.08)

    blurred = gaussian_blur(hu.reshape(shape3), params.blur_sigma)
    noise = rng.normal(0.0, params.noise_std, size=shape3)
    image = (params.scale * blurred + params.offset + noise).astype(np.float32)
    return CaseVolumes(image=image, target=target_grid, distractor=distractor.reshape(shape3))


def render_clean_label(seed: int, index: int, center: int, shape: Sequence[int]) -> np.ndarray:
    """Clean uint8 label (target only) of a case, as written for unfaulted cases."""
    return render_case(seed, index, center, shape).target.astype(np.uint8)


# --------------------------------------------------------------- faults


def _erode_substantially(mask: np.ndarray) -> np.ndarray:
    """Erode until <= 60 % of the voxels remain, but never to an empty mask."""
    original = int(mask.sum())
    out = binary_erode(mask)
    if not out.any():  # too thin to erode once: keep the first half of its voxels
        coords = np.argwhere(mask)[: max(1, original // 2)]
        out = np.zeros_like(mask)
        out[tuple(coords.T)] = True
        return out
    while out.sum() > 0.6 * original:
        nxt = binary_erode(out)
        if not nxt.any():
            break
        out = nxt
    return out


def _dilate_substantially(mask: np.ndarray) -> np.ndarray:
    """Dilate until >= 160 % of the voxels are foreground."""
    original = int(mask.sum())
    out = binary_dilate(mask)
    while out.sum() < 1.6 * original and not out.all():
        out = binary_dilate(out)
    return out


def _shift_offset(rng: np.random.Generator) -> np.ndarray:
    """Integer offset: 4-6 voxels along a random axis plus up to 2 along another."""
    offset = np.zeros(3, dtype=int)
    main, other = rng.choice(3, size=2, replace=False)
    offset[main] = rng.integers(4, 7) * rng.choice([-1, 1])
    offset[other] = rng.integers(-2, 3)
    return offset


def apply_fault(target: np.ndarray, distractor: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Faulty uint8 label of the given ``kind`` derived from the clean masks."""
    if kind == "shifted":
        label = translate_mask(target, _shift_offset(rng))
    elif kind == "eroded":
        label = _erode_substantially(target)
    elif kind == "dilated":
        label = _dilate_substantially(target)
    elif kind == "missing":
        label = np.zeros_like(target)
    elif kind == "wrong_structure":
        label = distractor
    else:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
    return label.astype(np.uint8)


def _plan_faults(
    train_indices: Sequence[int], centers: Sequence[int], fault_fraction: float, seed: int
) -> dict[int, str]:
    """Pick round(fraction * n) training cases spread over centers; cycle the kinds."""
    num_faults = round(fault_fraction * len(train_indices))
    if num_faults == 0:
        return {}
    rng = np.random.default_rng([seed, 0xFA017])
    by_center: dict[int, list[int]] = {}
    for index, center in zip(train_indices, centers):
        by_center.setdefault(center, []).append(index)
    queues = [list(rng.permutation(by_center[c])) for c in sorted(by_center)]
    order: list[int] = []
    while len(order) < num_faults:  # round-robin over centers, each center in shuffled order
        for queue in queues:
            if queue and len(order) < num_faults:
                order.append(int(queue.pop()))
    kinds = [FAULT_KINDS[i % len(FAULT_KINDS)] for i in range(num_faults)]
    kinds = [kinds[i] for i in rng.permutation(num_faults)]
    return dict(zip(order, kinds))


# --------------------------------------------------------------- writing


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate a 3D shape and return it as a tuple of ints."""
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or min(dims) < MIN_SIDE:
        raise ValueError(f"shape must have 3 sides, each >= {MIN_SIDE}; got {tuple(shape)}")
    return dims  # type: ignore[return-value]


def _validate(num_train: int, num_val: int, num_test: int, num_centers: int, fault_fraction: float) -> None:
    """Raise ValueError on out-of-range generation arguments."""
    if not isinstance(num_centers, (int, np.integer)) or isinstance(num_centers, bool) or num_centers < 1:
        raise ValueError(f"num_centers must be an integer >= 1, got {num_centers!r}")
    if not 0.0 <= float(fault_fraction) < 1.0:
        raise ValueError(f"fault_fraction must be in [0, 1), got {fault_fraction!r}")
    if num_train < 1:
        raise ValueError(f"num_train must be >= 1, got {num_train}")
    if num_val < 0 or num_test < 0:
        raise ValueError(f"num_val and num_test must be >= 0, got {num_val}, {num_test}")


def _save_nifti(array: np.ndarray, path: Path) -> None:
    """Save with a 1 mm identity affine via temp name + rename (never half a file)."""
    image = nib.Nifti1Image(array, np.eye(4))
    image.header.set_xyzt_units("mm")
    image.set_qform(np.eye(4), code=1)
    image.set_sform(np.eye(4), code=1)
    with atomic_output(path) as tmp:
        nib.save(image, tmp)


def _entry(cid: str, center: int, images: str, labels: str) -> dict[str, str]:
    """One Decathlon list entry."""
    return {
        "image": f"./{images}/{cid}.nii.gz",
        "label": f"./{labels}/{cid}.nii.gz",
        "case_id": cid,
        "center": f"center{center}",
    }


def generate_dataset(
    out_dir: str | Path,
    num_train: int = 60,
    num_val: int = 12,
    num_test: int = 24,
    num_centers: int = 3,
    shape: Sequence[int] = (48, 48, 48),
    fault_fraction: float = 0.1,
    seed: int = 0,
) -> Path:
    """Writes the data set into out_dir and returns the path of out_dir/dataset.json."""
    _validate(num_train, num_val, num_test, num_centers, fault_fraction)
    shape3 = _check_shape(shape)
    out = Path(out_dir)
    json_path = out / DATASET_JSON
    json_path.unlink(missing_ok=True)  # a stale index must not vouch for a half-rewritten set
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    splits = {"training": num_train, "validation": num_val, "test": num_test}
    lists: dict[str, list[dict[str, str]]] = {}
    plan: dict[str, list[tuple[int, int]]] = {}
    start = 0
    for split, count in splits.items():
        plan[split] = [(start + j, j % num_centers + 1) for j in range(count)]
        start += count
    train = plan["training"]
    faults = _plan_faults([i for i, _ in train], [c for _, c in train], float(fault_fraction), seed)

    fault_rows: list[tuple[str, str, str]] = []
    for split, cases in plan.items():
        images, labels = ("imagesTs", "labelsTs") if split == "test" else ("imagesTr", "labelsTr")
        lists[split] = []
        for index, center in cases:
            cid = case_id(center, index)
            case = render_case(seed, index, center, shape3)
            if index in faults:
                kind = faults[index]
                label = apply_fault(case.target, case.distractor, kind, np.random.default_rng([seed, index, 1]))
                fault_rows.append((cid, f"center{center}", kind))
            else:
                label = case.target.astype(np.uint8)
            _save_nifti(case.image, out / images / f"{cid}.nii.gz")
            _save_nifti(label, out / labels / f"{cid}.nii.gz")
            lists[split].append(_entry(cid, center, images, labels))

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case_id", "center", "kind"])
    writer.writerows(sorted(fault_rows))
    write_text_atomic(out / FAULTS_CSV, buffer.getvalue())

    generator = {
        "module": "scripts.data.synthetic",
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "num_centers": num_centers,
        "shape": list(shape3),
        "fault_fraction": float(fault_fraction),
        "seed": seed,
        "centers": {f"center{c}": asdict(center_params(c)) for c in range(1, num_centers + 1)},
    }
    dataset = {
        "name": "SyntheticMultiCenter",
        "description": "Synthetic multi-center 3D segmentation (target vs. unlabelled "
        "distractor) with planted training-label faults listed in faults.csv",
        "tensorImageSize": "3D",
        "modality": {"0": "synthetic CT"},
        "labels": {"0": "background", "1": "target"},
        "numTraining": num_train,
        "numValidation": num_val,
        "numTest": num_test,
        "licence": "CC0-1.0",
        "generator": generator,
        **lists,
    }
    write_text_atomic(json_path, json.dumps(dataset, indent=2) + "\n")  # last: marks completion
    return json_path


def ensure_dataset(dataset_dir: str | Path, embedded: str | Path | None = None, **kwargs) -> str:
    """Return dataset_dir/dataset.json as an absolute path (a relative ``dataset_dir`` is taken from the
    working directory); generate the synthetic set only if absent, and only into ``embedded`` (the
    configs pass ``<bundle_root>/data/synthetic``; None: ``dataset_dir`` itself is the embedded set's folder).

    Any other folder without a dataset.json is refused (``InputError``): one that does not exist (a
    mistyped path, a drive not mounted), an empty one (an unmounted mount point) or one holding the user's
    files, so a user's path never trains on synthetic data. Processes that start together (the ranks of a
    torchrun) take turns on a lock file beside the folder, so one generates and the others find its
    dataset.json."""
    import fcntl

    json_path = Path(os.path.abspath(dataset_dir)) / DATASET_JSON
    if json_path.is_file():
        return str(json_path)
    if embedded is not None and os.path.realpath(embedded) != os.path.realpath(json_path.parent):
        _refuse_folder(json_path.parent)
    json_path.parent.parent.mkdir(parents=True, exist_ok=True)
    with open(json_path.parent.parent / f".{json_path.parent.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if json_path.is_file():  # another process generated it while this one waited
            return str(json_path)
        if json_path.parent.is_dir() and any(json_path.parent.iterdir()):  # a user's folder: never write into it
            _refuse_folder(json_path.parent)
        return str(generate_dataset(dataset_dir, **kwargs))


def _refuse_folder(folder: Path) -> None:
    """``InputError`` for a ``--dataset_dir`` that holds no dataset.json and is not the embedded set's."""
    from scripts.utils.errors import InputError

    make = "`python -m scripts.data.combine datalist` makes one from imagesTr/labelsTr"
    if not folder.exists():
        raise InputError(
            f"--dataset_dir {folder}: no such folder (a mistyped path, or a drive that is not mounted?); fix: give "
            f"the folder that holds your dataset.json, or --dataset_json FILE (only the embedded synthetic set is "
            f"ever generated, into <bundle_root>/data/synthetic; `python -m scripts.data.synthetic --out_dir DIR` "
            f"makes one elsewhere)"
        )
    user_files = any(folder.iterdir())
    what = "not empty, so the embedded synthetic set is not generated there" if user_files else "empty: not mounted?"
    raise InputError(
        f"--dataset_dir {folder}: no {DATASET_JSON} in this folder (and it is {what}); fix: add a Decathlon "
        f"dataset.json ({make}), or give --dataset_json FILE"
    )


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    fire_strict(generate_dataset)
