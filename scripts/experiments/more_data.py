""" "Does more data help?" (the paper's Figure 1): train on each source (center) alone and on all of them
pooled, and report every model's test Dice on every source's test cases.

    python -m scripts.experiments.more_data [--dataset_json data/synthetic/dataset.json] [--work_dir runs/more_data]
        [--preset configs/presets/...] [--overrides "{'epochs': 20}"] [--seeds "[0,1]"]

The data list is one combined, center-tagged Decathlon-style JSON (the embedded synthetic set, or one
written by ``python -m scripts.data.combine``). Each source's model trains on that source's training and
validation cases only; all models are tested on the same test cases, summarised per center.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.data.lists import load_datalist
from scripts.data.synthetic import ensure_dataset
from scripts.utils.atomic import write_json_atomic, write_text_atomic
from scripts.utils.cli import fire_strict
from scripts.workflows.pipeline import ROOT, TRAIN_TO_THE_END, bundle_run
from scripts.workflows.progress import StageProgress

logger = logging.getLogger("more_data")
POOLED = "all sources"


def source_datalists(dataset_json: str | Path) -> dict[str, dict[str, list[dict]]]:
    """Per center: its own training and validation cases with every test case; plus all pooled."""
    lists = {k: load_datalist(dataset_json, k) for k in ("training", "validation", "test")}
    centers = sorted({d["center"] for d in lists["training"]})
    out = {
        c: {
            "training": [d for d in lists["training"] if d["center"] == c],
            "validation": [d for d in lists["validation"] if d["center"] == c] or lists["validation"],
            "test": lists["test"],
        }
        for c in centers
    }
    out[POOLED] = lists
    return out


def run_more_data(
    dataset_json: str | None = None,
    work_dir: str = "runs/more_data",
    preset: str | Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    seeds: Sequence[int] = (0,),
) -> dict[str, Any]:
    """Train and evaluate one model per source and one on the pooled sources; print the table."""
    work = (ROOT / work_dir).resolve() if not Path(work_dir).is_absolute() else Path(work_dir)
    common = dict(overrides or {})
    if dataset_json is None:  # the embedded default, generated on first use like the training config does
        dataset_dir = Path(common.get("dataset_dir", ROOT / "data" / "synthetic"))
        synthetic = {k.split("#", 1)[1]: v for k, v in common.items() if k.startswith("synthetic#")}
        dataset_json = ensure_dataset(dataset_dir, ROOT / "data" / "synthetic", **synthetic)
    presets = [preset] if isinstance(preset, str) else list(preset or [])
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    results: dict[str, Any] = {"dataset_json": str(dataset_json), "seeds": seeds, "runs": []}
    progress = StageProgress()
    for name, lists in source_datalists(dataset_json).items():
        slug = name.replace(" ", "_")
        datalist = write_json_atomic(work / slug / "datalist.json", {"name": name, **lists})
        for seed in seeds:
            out, ckpt = work / slug / f"seed{seed}", work / "models" / f"{slug}_seed{seed}"
            settings = {
                **common,
                **TRAIN_TO_THE_END,
                "seed": seed,
                "dataset_json": datalist,
                "output_dir": out,
                "ckpt_dir": ckpt,
            }
            wall = bundle_run(
                "training",
                ["configs/train.yaml", *presets],
                settings,
                work / "logs" / f"{slug}_{seed}.log",
                progress=progress,
            )
            bundle_run(
                "evaluating",
                ["configs/train.yaml", *presets, "configs/evaluate.yaml"],
                settings,
                work / "logs" / f"{slug}_{seed}_eval.log",
                progress=progress,
            )
            summary = json.loads((out / "eval" / "summary.json").read_text())
            results["runs"].append(
                {
                    "trained_on": name,
                    "train_cases": len(lists["training"]),
                    "seed": seed,
                    "wall_s": wall,
                    "test_dice": summary,
                }
            )
    table = format_table(results)
    write_json_atomic(work / "more_data.json", results)
    write_text_atomic(work / "table.md", table + "\n")
    print(table)
    return results


def format_table(results: Mapping[str, Any]) -> str:
    """Rows: what the model trained on; columns: test Dice per source and overall (mean ± std over seeds)."""
    runs = results["runs"]
    sources = sorted({c for r in runs for c in r["test_dice"] if c != "overall"}) + ["overall"]
    head = ["trained on", "train cases"] + [f"test Dice {s}" for s in sources]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(r["trained_on"] for r in runs):
        rs = [r for r in runs if r["trained_on"] == name]

        def stat(values: list[float]) -> str:
            return f"{values[0]:.4f}" if len(values) == 1 else f"{np.mean(values):.4f} ± {np.std(values):.4f}"

        cells = [name, str(rs[0]["train_cases"])] + [stat([r["test_dice"][s]["mean"] for r in rs]) for s in sources]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")
    fire_strict(run_more_data, serialize=lambda _: None)  # the table is printed; the dict is in more_data.json
