"""A CT-size synthetic data set (Decathlon layout, ``modality`` CT) for memory and speed measurements:
int16 Hounsfield-unit volumes the size users bring (default 512 x 512 x 300) with a uint8 organ label.

    python -m scripts.experiments.ct_data --out_dir /work/ctdata/ct40 [--num_cases 40 --shape "[512,512,300]"]

Each case (seeded by ``(seed, index)``): air around an elliptic body whose cross-section varies along z,
a fat rim, soft tissue with a smooth texture, a bony spine, and one organ (label 1, a few % of the volume,
brighter than soft tissue), plus Gaussian noise. The affine is LPS-like (``diag(-sx, -sy, sz)``, as DICOM
converters write it), so ``Orientationd(RAS)`` flips two axes as it does on real CT. In-plane spacing
0.7-0.9 mm and slice spacing 1.0-1.5 mm vary per case (``vary_spacing``), so the plan resamples, as it
does on real CT. A volume is rendered in slabs of z-slices, so making one costs about its own size in
memory. Only ``training`` is listed (a user's layout): the bundle carves the validation and test parts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scripts.utils.atomic import atomic_output, write_text_atomic

__all__ = ["case_spacing", "generate_ct_dataset", "render_ct_case"]

DATASET_JSON = "dataset.json"
SLAB = 16  # z-slices rendered at once
AIR_HU, FAT_HU, SOFT_HU, ORGAN_HU, BONE_HU = -1000.0, -100.0, 40.0, 110.0, 700.0


def case_spacing(seed: int, index: int, vary: bool = True) -> tuple[float, float, float]:
    """Voxel size (mm) of a case: in-plane 0.7-0.9 mm (isotropic), slices 1.0-1.5 mm; 0.8 x 0.8 x 1.25
    when not ``vary``."""
    if not vary:
        return 0.8, 0.8, 1.25
    rng = np.random.default_rng([seed, index, 5])
    inplane = round(float(rng.uniform(0.7, 0.9)), 3)
    return inplane, inplane, round(float(rng.uniform(1.0, 1.5)), 3)


def render_ct_case(seed: int, index: int, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(image int16 HU, label uint8) of one case, both of ``shape`` (x, y, z)."""
    nx, ny, nz = (int(s) for s in shape)
    rng = np.random.default_rng([seed, index])
    body = np.array([0.40, 0.30]) * rng.uniform(0.9, 1.05, size=2)  # semi-axes as a share of the side
    wobble = rng.uniform(0.04, 0.10)  # how much the cross-section changes along z
    phase = rng.uniform(0, 2 * np.pi)
    organ_c = np.array([0.5 + rng.uniform(-0.12, -0.04), 0.5 + rng.uniform(-0.06, 0.06), rng.uniform(0.4, 0.6)])
    organ_r = np.array([0.16, 0.12, 0.22]) * rng.uniform(0.8, 1.15, size=3)
    waves = rng.uniform(1.0, 4.0, size=(3, 3)) * 2 * np.pi / np.array([nx, ny, nz])
    offsets = rng.uniform(0, 2 * np.pi, size=3)
    noise_std = float(rng.uniform(8.0, 20.0))
    x = (np.arange(nx, dtype=np.float32)[:, None, None] + 0.5) / nx - 0.5
    y = (np.arange(ny, dtype=np.float32)[None, :, None] + 0.5) / ny - 0.5
    image = np.empty((nx, ny, nz), dtype=np.int16)
    label = np.empty((nx, ny, nz), dtype=np.uint8)
    noise_rng = np.random.default_rng([seed, index, 7])
    for z0 in range(0, nz, SLAB):
        zs = np.arange(z0, min(nz, z0 + SLAB), dtype=np.float32)
        z = ((zs + 0.5) / nz)[None, None, :]
        scale = 1.0 + wobble * np.sin(2 * np.pi * z + phase)
        dist = (x / (body[0] * scale)) ** 2 + (y / (body[1] * scale)) ** 2
        hu = np.where(dist <= 1.0, FAT_HU, AIR_HU).astype(np.float32)
        soft = dist <= 0.82
        texture = sum(np.cos(w[0] * x * nx + w[1] * y * ny + w[2] * z * nz + o) for w, o in zip(waves, offsets))
        hu = np.where(soft, SOFT_HU + 10.0 * texture, hu)
        spine = ((x / 0.045) ** 2 + ((y - 0.6 * body[1]) / 0.045) ** 2) <= 1.0
        hu = np.where(spine & soft, BONE_HU, hu)
        organ = ((x - organ_c[0] + 0.5) / organ_r[0]) ** 2 + ((y - organ_c[1] + 0.5) / organ_r[1]) ** 2
        organ = (organ + ((z - organ_c[2]) / organ_r[2]) ** 2 <= 1.0) & soft & ~spine
        hu = np.where(organ, ORGAN_HU + 10.0 * texture, hu)
        hu += noise_rng.standard_normal(hu.shape, dtype=np.float32) * noise_std
        image[:, :, z0 : z0 + len(zs)] = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
        label[:, :, z0 : z0 + len(zs)] = organ
    return image, label


def _save(array: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomic_output(path) as tmp:
        nib.save(image, tmp)


def generate_ct_dataset(
    out_dir: str | Path,
    num_cases: int = 40,
    shape: Sequence[int] = (512, 512, 300),
    seed: int = 0,
    vary_spacing: bool = True,
) -> Path:
    """Write the data set into ``out_dir``; returns ``out_dir/dataset.json`` (written last). A folder
    whose dataset.json says the same settings is kept as it is."""
    out = Path(out_dir)
    settings = {"module": "scripts.experiments.ct_data", "num_cases": int(num_cases), "shape": [int(s) for s in shape],
                "seed": int(seed), "vary_spacing": bool(vary_spacing)}  # fmt: skip
    json_path = out / DATASET_JSON
    if json_path.is_file() and json.loads(json_path.read_text()).get("generator") == settings:
        return json_path
    json_path.unlink(missing_ok=True)
    training = []
    for index in range(int(num_cases)):
        cid = f"ct_{index:04d}"
        image, label = render_ct_case(seed, index, shape)
        spacing = case_spacing(seed, index, vary_spacing)
        _save(image, spacing, out / "imagesTr" / f"{cid}.nii.gz")
        _save(label, spacing, out / "labelsTr" / f"{cid}.nii.gz")
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
        del image, label
    dataset = {
        "name": "SyntheticCT",
        "description": "CT-size synthetic volumes (int16 HU, one organ label) for memory and speed measurements",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "organ"},
        "numTraining": int(num_cases),
        "generator": settings,
        "training": training,
        "test": [],
    }
    write_text_atomic(json_path, json.dumps(dataset, indent=2) + "\n")
    return json_path


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    fire_strict(generate_ct_dataset)
