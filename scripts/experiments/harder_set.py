"""A harder multi-center set than the embedded one, to choose the ranking score on (issue 18, item 2).

The embedded generator with 6 centers (the 4 fixed ones, center3 low-contrast and blurry, and 2 derived)
and 15% planted label faults; then the set is made unequal and noisy: centers 5 and 6 keep only a third
of their training cases, and center 6's images (every split: noise is a property of the scanner) get
extra Gaussian noise of ``extra_noise`` x that center's own noise sd. Writes ``OUT_DIR/dataset.json``
(absolute paths) and ``OUT_DIR/faults.csv`` (the kept training cases' faults); the generated set is in
``OUT_DIR/generated``.

    python -m scripts.experiments.harder_set runs/harder
    python -m monai.bundle run training --config_file configs/train.yaml --dataset_json runs/harder/dataset.json ...
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scripts.data.synthetic import center_params, generate_dataset
from scripts.utils.atomic import atomic_output, write_text_atomic
from scripts.utils.cli import fire_strict

SMALL_CENTERS = ("center5", "center6")
NOISY_CENTER = "center6"


def build(
    out_dir: str,
    num_train: int = 90,
    num_val: int = 18,
    num_test: int = 36,
    fault_fraction: float = 0.15,
    keep_small: float = 1 / 3,
    extra_noise: float = 3.0,
    seed: int = 1,
    shape: tuple[int, int, int] = (48, 48, 48),
) -> str:
    """Build the set (skipped when its dataset.json exists) and return the path of its dataset.json."""
    out = Path(out_dir).resolve()
    target = out / "dataset.json"
    if target.exists():
        return str(target)
    generated = Path(generate_dataset(out / "generated", num_train, num_val, num_test, 6, shape, fault_fraction,
                                      seed)).parent  # fmt: skip
    source = json.loads((generated / "dataset.json").read_text())
    rng = np.random.default_rng(seed)
    sd = center_params(int(NOISY_CENTER.removeprefix("center"))).noise_std * extra_noise
    lists = {}
    for split in ("training", "validation", "test"):
        entries = source[split]
        if split == "training":
            small = [e for e in entries if e["center"] in SMALL_CENTERS]
            drop = {e["case_id"] for e in small if rng.random() > keep_small}
            entries = [e for e in entries if e["case_id"] not in drop]
        lists[split] = []
        for entry in entries:
            entry = {**entry, "image": str(generated / entry["image"]), "label": str(generated / entry["label"])}
            if entry["center"] == NOISY_CENTER:
                entry["image"] = _noisier(Path(entry["image"]), out / "images_noisy", sd, rng)
            lists[split].append(entry)
    kept = {e["case_id"] for e in lists["training"]}
    with open(generated / "faults.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["case_id"] in kept]
    lines = ["case_id,center,kind"] + [f"{r['case_id']},{r['center']},{r['kind']}" for r in rows]
    write_text_atomic(out / "faults.csv", "\n".join(lines) + "\n")
    dataset = {**{k: v for k, v in source.items() if k not in lists}, **lists, "name": "SyntheticHarderMultiCenter"}
    dataset["numTraining"] = len(lists["training"])
    dataset["harder"] = {"small_centers": list(SMALL_CENTERS), "keep_small": keep_small,
                         "noisy_center": NOISY_CENTER, "extra_noise_sd": sd}  # fmt: skip
    write_text_atomic(target, json.dumps(dataset, indent=2) + "\n")  # last: marks completion
    centers = sorted({e["center"] for e in lists["training"]})
    counts = {c: sum(e["center"] == c for e in lists["training"]) for c in centers}
    print(f"training cases per center: {counts}; faults kept: {len(rows)}")
    return str(target)


def _noisier(path: Path, folder: Path, sd: float, rng: np.random.Generator) -> str:
    image = nib.load(path)
    data = np.asarray(image.dataobj, dtype=np.float32)
    data = data + rng.normal(0.0, sd, data.shape).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / path.name
    with atomic_output(dest) as tmp:
        nib.save(nib.Nifti1Image(data, image.affine, image.header), tmp)
    return str(dest)


if __name__ == "__main__":
    fire_strict(build)
