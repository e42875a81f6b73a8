"""The plan's rules of 0.7.0 (nnU-Net v2's: ``plan_rules nnunet``) against the former ones
(``plan_rules 0.6``), issue 25 item 6: what each plans on a data set, and test Dice of the same short
stage 1 under each, over seeds, side by side.

    python -m scripts.experiments.plan_rules --work_dir runs/plan_rules [--seeds "[0,1,2]"] [--epochs 20]
        [--hippocampus ../shared/data/Task04_Hippocampus] [--ct True]

The CT set (``ct_dataset``) is synthetic CT of the pancreas preset's kind: Hounsfield units of one scanner
(comparable across cases, as nnU-Net's CT rule assumes), anisotropic voxels (0.7-0.9 mm in-plane, 2.5-5 mm
between slices), modality "CT". On a set where both rules give the same preprocessing (the hippocampus:
MRI, 1 mm isotropic) the trainings would be the same computation, so only the plans are compared there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scripts.data.checks import scan_dataset
from scripts.data.lists import training_ids
from scripts.data.plan import classes_of, intensity_transforms, make_plan, rules_of, spacing_transforms, used_of
from scripts.data.synthetic import generate_dataset
from scripts.utils.atomic import write_json_atomic, write_text_atomic
from scripts.utils.cli import fire_strict

logger = logging.getLogger("plan_rules")
RULE_SETS = ("nnunet", "0.6")
IN_PLANE = (0.7, 0.8, 0.9)
BETWEEN_SLICES = (2.5, 3.0, 4.0, 5.0)


def ct_dataset(
    out_dir: str | Path,
    spacings: Sequence[Sequence[float]],
    num_train: int,
    num_val: int = 0,
    num_test: int = 0,
    shape: Sequence[int] = (16, 16, 16),
    seed: int = 0,
) -> Path:
    """A CT data set: the embedded generator's one scanner (center1: Hounsfield units, no per-center scale),
    every case saved at its own voxel spacing (``spacings`` cycled over the training, validation and test
    cases in that order), ``modality`` "CT". Returns its dataset.json."""
    path = generate_dataset(out_dir, num_train, num_val, num_test, 1, shape, 0.0, seed)
    content = json.loads(Path(path).read_text())
    entries = [d for k in ("training", "validation", "test") for d in content[k]]
    for i, entry in enumerate(entries):
        affine = np.diag([*map(float, spacings[i % len(spacings)]), 1.0])
        for key in ("image", "label"):
            file = Path(path).parent / entry[key]
            img = nib.load(file)
            out = nib.Nifti1Image(np.asanyarray(img.dataobj), affine)
            out.set_qform(affine, code=1)
            out.set_sform(affine, code=1)
            nib.save(out, file)
    content.update(name="SyntheticCT", modality={"0": "CT"})
    write_text_atomic(path, json.dumps(content, indent=2) + "\n")
    return Path(path)


def plans(dataset_json: str | Path, patch_size: Sequence[int], num_classes: int | None = None) -> dict[str, Any]:
    """{rules: (plan, the preprocessing it gives)} for each rule set, as a training run with default
    splits would plan them (the training cases once validation and test are carved)."""
    classes = int(num_classes or classes_of(dataset_json))
    training = training_ids(dataset_json)
    out = {}
    for rules in RULE_SETS:
        fingerprint = scan_dataset(dataset_json, classes, foreground_sample=rules_of(rules)["foreground"])
        plan = make_plan(fingerprint, patch_size, training, rules)
        out[rules] = {"plan": plan, "used": used_of(classes, spacing_transforms(plan), intensity_transforms(plan))}
    return out


def _train_and_evaluate(work: Path, dataset_json: str, rules: str, seed: int, settings: dict[str, Any]) -> float:
    """Mean test Dice of one short stage 1 (every epoch trained) under ``rules``."""
    from scripts.workflows.pipeline import bundle_run

    name = f"{'nnunet' if rules == 'nnunet' else 'v0_6'}_seed{seed}"
    common = {"dataset_json": dataset_json, "output_dir": str(work / name), "ckpt_dir": str(work / "models" / name),
              "plan_rules": rules, "seed": seed, **settings}  # fmt: skip
    bundle_run("training", ["configs/train.yaml"], {**common, "early_prune": False}, work / "logs" / f"{name}.log")
    evaluate = ["configs/train.yaml", "configs/evaluate.yaml"]
    bundle_run("evaluating", evaluate, common, work / "logs" / f"{name}_eval.log")
    summary = json.loads((work / name / "eval" / "summary.json").read_text())
    return float(summary["overall"]["mean"])


def _row(name: str, values: Sequence[float], sign: str = "") -> str:
    v = np.asarray(values, dtype=np.float64)
    sd = v.std(ddof=1) if v.size > 1 else 0.0
    return f"| {name} | {v.mean():{sign}.4f} ± {sd:.4f} | " + ", ".join(f"{x:{sign}.4f}" for x in v) + " |"


def _dice_table(work: Path, dataset_json: str, seeds: Sequence[int], settings: dict[str, Any]) -> list[str]:
    """Test Dice under each rule set (mean ± sample sd over seeds) and the paired difference."""
    dice = {r: [_train_and_evaluate(work, dataset_json, r, s, settings) for s in seeds] for r in RULE_SETS}
    lines = ["| rules | test Dice, mean ± sd | per seed |", "|---|---|---|"]
    lines += [_row(rules, values) for rules, values in dice.items()]
    lines.append(_row("nnunet - 0.6 (paired by seed)", np.subtract(dice["nnunet"], dice["0.6"]), "+"))
    return lines + [""]


def _plan_lines(title: str, compared: dict[str, Any]) -> list[str]:
    lines = [f"### {title}", ""]
    for rules, p in compared.items():
        plan = p["plan"]
        lines.append(f"- {rules}: {plan['from']}; spacing {plan['spacing']['target']}; normalisation "
                     f"{json.dumps(plan['normalization'])}; used {json.dumps(p['used'])}")  # fmt: skip
    same = compared["nnunet"]["used"] == compared["0.6"]["used"]
    lines += ["", f"same preprocessing under both rules: {same}", ""]
    return lines


def main(
    work_dir: str = "runs/plan_rules",
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 20,
    hippocampus: str | None = None,
    ct: bool = True,
    num_workers: int = 2,
) -> str:
    """Compare the two rule sets (see the module doc); writes and returns ``work_dir/plan_rules.md``."""
    work = Path(work_dir).resolve()
    settings = {"epochs": int(epochs), "val_interval": 5, "delta_t": 5, "num_workers": int(num_workers)}
    lines = ["# Plan rules: nnunet (0.7.0) vs 0.6", ""]
    if hippocampus:
        source = Path(hippocampus).resolve()
        content = json.loads((source / "dataset.json").read_text())
        entries = [{k: str(source / v) for k, v in e.items()} for e in content["training"]]
        datalist = work / "hippocampus" / "dataset.json"
        write_json_atomic(datalist, {**content, "training": entries, "test": []})
        compared = plans(datalist, [32, 32, 32])
        lines += _plan_lines(f"MSD Task04 Hippocampus ({len(entries)} labelled cases), patch 32^3", compared)
        if compared["nnunet"]["used"] != compared["0.6"]["used"]:
            lines += _dice_table(work / "hippocampus", str(datalist), seeds, settings)
    if ct:
        spacings = [(IN_PLANE[i % 3], IN_PLANE[i % 3], BETWEEN_SLICES[i % 4]) for i in range(12)]
        data = work / "ct" / "data"
        dataset = data / "dataset.json"
        if not dataset.is_file():
            dataset = ct_dataset(data, spacings, 20, 4, 10, (56, 56, 16), seed=3)
        patch = [32, 32, 16]
        compared = plans(dataset, patch)
        title = "Synthetic CT, 20 / 4 / 10 cases of 56x56x16 voxels, anisotropic, patch 32x32x16"
        lines += _plan_lines(title, compared)
        lines += _dice_table(work / "ct", str(dataset), seeds, {**settings, "patch_size": patch})
    text = "\n".join(lines) + "\n"
    write_text_atomic(work / "plan_rules.md", text)
    print(text)
    return str(work / "plan_rules.md")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    fire_strict(main, serialize=lambda path: f"written: {path}")
