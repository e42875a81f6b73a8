"""Plant label faults on a seeded fraction of a data set's TRAINING cases (never validation or test),
so fault detection can be measured on real data (issue 10, item 6).

    python -m scripts.experiments.plant_faults DATASET_JSON OUT_DIR [--fraction 0.1] [--seed 0]

Kinds (each "mild" or "severe"), applied per foreground class of the label volume:

- ``shift``: translate the label along one random axis by 10% (mild) / 25% (severe) of the object's extent.
- ``erosion`` / ``dilation``: 1 / 3 iterations with the 6-connected cross.
- ``partial_drop``: erase the far 25% / 50% of the object's extent along one random axis.
- ``whole_drop``: mild erases the least frequent foreground class present, severe all foreground.
- ``class_swap``: with two or more foreground classes, mild swaps two of them, severe cycles all;
  with one, the label is inverted inside the object's bounding box grown by one voxel (mild: the
  half of the box on one side of its middle along a random axis, severe: all of it).

Writes ``OUT_DIR/labelsTr_faulty/<case>.nii.gz`` for the faulty cases, ``OUT_DIR/dataset.json`` (the same
lists with absolute paths, faulty training labels replaced) and ``OUT_DIR/faults.csv``
(case_id, center, kind, severity) that ``scripts.workflows.fault_detection`` reads.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from scripts.data.synthetic import binary_dilate, binary_erode, translate_mask

__all__ = ["KINDS", "SEVERITIES", "plant_fault", "plan_faults", "plant_faults"]

KINDS = ("shift", "erosion", "dilation", "partial_drop", "whole_drop", "class_swap")
SEVERITIES = ("mild", "severe")


def _extent(mask: np.ndarray, axis: int) -> tuple[int, int]:
    idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)


def plant_fault(label: np.ndarray, kind: str, severity: str, rng: np.random.Generator) -> np.ndarray:
    """A faulty copy of a label volume of class indices (shape (*spatial)); the input is not changed."""
    if kind not in KINDS or severity not in SEVERITIES:
        raise ValueError(f"unknown fault {kind}/{severity}; kinds {KINDS}, severities {SEVERITIES}")
    label = np.asarray(label)
    severe = severity == "severe"
    classes = [int(c) for c in np.unique(label) if c != 0]
    fg = label != 0
    axis = int(rng.integers(label.ndim))
    out = label.copy()
    if kind == "shift":
        lo, hi = _extent(fg, axis)
        offset = np.zeros(label.ndim, dtype=int)
        offset[axis] = max(1, round((0.25 if severe else 0.1) * (hi - lo))) * int(rng.choice([-1, 1]))
        return translate_mask(label, offset)
    if kind in ("erosion", "dilation"):
        it = 3 if severe else 1
        out[:] = 0
        for c in classes:  # later classes win where dilations overlap
            op = binary_erode if kind == "erosion" else binary_dilate
            out[op(label == c, it)] = c
        return out
    if kind == "partial_drop":
        lo, hi = _extent(fg, axis)
        cut = hi - math.floor((0.5 if severe else 0.25) * (hi - lo))
        index = [slice(None)] * label.ndim
        index[axis] = slice(cut, None)
        out[tuple(index)] = 0
        return out
    if kind == "whole_drop":
        if severe or len(classes) <= 1:
            return np.zeros_like(label)
        rarest = min(classes, key=lambda c: (int((label == c).sum()), c))
        out[label == rarest] = 0
        return out
    # class_swap
    if len(classes) >= 2:
        mapping = (
            dict(zip(classes, classes[1:] + classes[:1]))
            if severe
            else {classes[0]: classes[1], classes[1]: classes[0]}
        )
        for src, dst in mapping.items():
            out[label == src] = dst
        return out
    if not classes:
        return out
    box = [slice(max(0, lo - 1), hi + 1) for lo, hi in (_extent(fg, a) for a in range(label.ndim))]
    if not severe:
        mid = (box[axis].start + box[axis].stop) // 2
        box[axis] = slice(box[axis].start, mid)
    region = tuple(box)
    out[region] = np.where(fg[region], 0, classes[0])
    return out


def plan_faults(n: int, fraction: float, seed: int) -> dict[int, tuple[str, str]]:
    """{case index: (kind, severity)} for round(fraction * n) seeded cases, the 12 kind/severity
    combinations dealt round-robin in a seeded order."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng([seed, 0xFA17])
    chosen = rng.permutation(n)[: round(fraction * n)]
    combos = [(k, s) for k in KINDS for s in SEVERITIES]
    combos = [combos[i] for i in rng.permutation(len(combos))]
    return {int(i): combos[j % len(combos)] for j, i in enumerate(sorted(chosen))}


def plant_faults(
    dataset_json: str | os.PathLike, out_dir: str | os.PathLike, fraction: float = 0.1, seed: int = 0
) -> list[dict[str, str]]:
    """Plant faults on the training cases of a Decathlon data list; returns the manifest rows."""
    import nibabel as nib
    from scripts.data.lists import load_datalist
    from scripts.utils.atomic import write_csv_atomic, write_json_atomic

    content = json.loads(Path(dataset_json).read_text())
    lists = {k: load_datalist(dataset_json, k) for k in ("training", "validation", "test") if content.get(k)}
    training = lists.get("training", [])
    plan = plan_faults(len(training), fraction, seed)
    out = Path(out_dir)
    (out / "labelsTr_faulty").mkdir(parents=True, exist_ok=True)
    manifest = []
    for i, (kind, severity) in sorted(plan.items()):
        entry = training[i]
        img = nib.load(entry["label"])
        label = np.asarray(img.dataobj)
        faulty = plant_fault(label, kind, severity, np.random.default_rng([seed, i]))
        path = out / "labelsTr_faulty" / f"{entry['case_id']}.nii.gz"
        nib.save(nib.Nifti1Image(faulty.astype(label.dtype), img.affine, img.header), str(path))
        training[i] = {**entry, "label": str(path.resolve())}
        manifest.append({"case_id": entry["case_id"], "center": entry.get("center", ""), "kind": kind,
                         "severity": severity})  # fmt: skip
    new = {**{k: v for k, v in content.items() if k not in lists}, **lists, "numTraining": len(training)}
    new["description"] = f"{content.get('description', '')} (with {len(manifest)} planted training-label faults)"
    write_json_atomic(out / "dataset.json", new)
    fields = ("case_id", "center", "kind", "severity")
    write_csv_atomic(out / "faults.csv", fields, [[r[k] for k in fields] for r in manifest])
    return manifest


def _main(dataset_json: str, out_dir: str, fraction: float = 0.1, seed: int = 0) -> str:
    rows = plant_faults(dataset_json, out_dir, fraction, seed)
    return f"{len(rows)} faults planted; {Path(out_dir) / 'dataset.json'}, {Path(out_dir) / 'faults.csv'}"


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    fire_strict(_main)
