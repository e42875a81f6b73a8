"""A review a person can act on (issue 17, item 3), from a scoring run or an out-of-fold audit.

    python -m scripts.workflows.review make --run_dir runs/audit [--top 20]
        [--config_file "['configs/presets/hippocampus.yaml']"] [--patch_size "[32,32,32]" ...]
    python -m scripts.workflows.review apply --review_csv runs/audit/review/review.csv \
        --dataset_json DATA/dataset.json --out DATA_reviewed.json

``make`` takes the ``top`` most suspicious cases of ``ranking.csv``, predicts each with the model that
scored it (its fold's, in an audit), and writes ``review/figures/rank<r>_<case>.png`` (label and
prediction outlined per class on the slices where they disagree most, the scores, rank, model and epochs
in the title) and ``review/review.csv`` (case, center, list, fold, scores, rank, model, epochs, the
suspected problem, the figure, and blank ``verdict`` and ``note`` columns). Each model preprocesses as it
was trained: the classes, resampling and normalisation of the ``plan.json`` beside it
(``scripts.data.model_plan``); nothing is read from, or generated into, the default data set. The other
bundle settings (presets, patch size) come from the audit's ``audit.json``; a plain scoring run needs a
preset given again (a preset or override that disagrees with the model's plan is refused). ``apply``
writes a NEW data list without the cases whose verdict marks them wrong (``wrong``, ``reject``, ``bad``,
``x``); ``ok``, ``keep`` or a blank verdict keeps a case. The user's data list is never written.
"""

from __future__ import annotations

import csv
import inspect
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.data.lists import AUDIT_LISTS, load_datalist
from scripts.report.review import plot_review, suspected_problem
from scripts.utils.atomic import write_csv_atomic, write_json_atomic
from scripts.utils.bundle_keys import check_bundle_settings
from scripts.utils.jsonfile import read_json

__all__ = ["make_review", "apply_review", "read_verdicts", "REJECT", "KEEP"]

ROOT = Path(__file__).resolve().parents[2]
REJECT = ("wrong", "reject", "bad", "x")
KEEP = ("", "ok", "keep", "good")
SHOWN = ("dad", "el2n", "cleanlab", "monai_lq", "rank_average")
logger = logging.getLogger("review")


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give the output dir of a scoring run or an audit")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _model_path(model: str) -> str:
    """The checkpoint of a ranking row's ``model`` ("fold<k>:/path" in an audit, the path otherwise)."""
    head, sep, tail = model.partition(":")
    return tail if sep and head.startswith("fold") else model


def _bundle_parts(
    config_files: Sequence[str], overrides: Mapping[str, Any], checkpoint: str, dataset_json: str
) -> dict[str, Any]:
    """The network (with the checkpoint's weights), preprocessing and inferer of the bundle as the
    checkpoint's scoring used them: its own plan (``plan.json`` beside it) on ``dataset_json``, the list the
    run scored, never the default embedded set. Refused in one line when the checkpoint does not fit the
    network or its plan disagrees with a preset or override."""
    from monai.bundle import ConfigParser
    from scripts.data.model_plan import check_applies, plan_beside
    from scripts.data.preflight import check_checkpoint
    from scripts.utils.weights import load_state_dict

    parser = ConfigParser()
    files = [str(ROOT / f) if not Path(f).is_absolute() else f for f in ["configs/train.yaml", *config_files]]
    parser.read_config(files)
    parser["dataset_json"] = dataset_json
    for key, value in overrides.items():
        parser[key] = value
    plan = plan_beside(checkpoint)
    if plan is not None:  # the model's own plan: no second pass over the images
        parser["model_plan"], parser["check_data"] = plan, False
    device = parser.get_parsed_content("device")
    network = parser.get_parsed_content("network_def").to(device)
    num_classes = int(parser.get_parsed_content("num_classes"))
    check_checkpoint(checkpoint, network)
    check_applies(checkpoint, num_classes, parser.get_parsed_content("spacing_transforms"),
                  parser.get_parsed_content("intensity_transforms"), plan)  # fmt: skip
    network.load_state_dict(load_state_dict(checkpoint))  # model.pt, or checkpoint_final.pt's model entry
    network.eval()
    return {
        "device": device,
        "network": network,
        "preprocessing": parser.get_parsed_content("validate#preprocessing"),
        "inferer": parser.get_parsed_content("validate#inferer"),
        "num_classes": num_classes,
    }


def _predict(parts: Mapping[str, Any], entry: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, label, prediction) of one case in the bundle's preprocessed space, each (x, y, z)."""
    import torch

    data = parts["preprocessing"]({"image": entry["image"], "label": entry["label"]})
    with torch.no_grad():
        image = torch.as_tensor(data["image"])[None].float().to(parts["device"])
        logits = parts["inferer"](image, parts["network"])
    pred = logits.argmax(1)[0].cpu().numpy()
    return np.asarray(data["image"][0]), np.asarray(data["label"][0]).astype(np.int64), pred.astype(np.int64)


def _title(row: Mapping[str, str], problem: str) -> str:
    names = {"dad": "Dice", "el2n": "EL2N", "monai_lq": "MONAI LQ", "rank_average": "rank avg"}
    scores = " · ".join(f"{names.get(k, k)} {float(row[k]):.3g}" for k in SHOWN if row.get(k) not in (None, ""))
    fold = f" · fold {row['fold']}" if row.get("fold") not in (None, "") else ""
    epochs = f"{row['model_epochs']} epochs" if row.get("model_epochs") else "epochs unknown"
    return (
        f"rank {row['rank']} (by {row.get('ranked_by', 'dad')}) · {row['case_id']} · {row.get('center', '')}{fold}\n"
        f"{scores}\nmodel {_model_path(row['model'])} ({epochs}) · suspected: {problem or 'none'}"
    )


def make_review(
    run_dir: str,
    top: int = 20,
    config_file: str | Sequence[str] | None = None,
    out_dir: str | None = None,
    **overrides: Any,
) -> Path:
    """Figures and ``review.csv`` for the ``top`` most suspicious cases of a run (see the module doc)."""
    run = Path(run_dir)
    rows = sorted(_read_csv(run / "ranking.csv"), key=lambda r: int(r["rank"]))[: int(top)]
    audit = run / "audit.json"
    settings = json.loads(audit.read_text()).get("settings", {}) if audit.is_file() else {}
    if config_file is None:
        config_file = settings.get("config_files", [])
    config_files = [config_file] if isinstance(config_file, str) else list(config_file)
    own = [n for n in inspect.signature(make_review).parameters if n != "overrides"]
    check_bundle_settings(
        overrides, ["configs/train.yaml", *config_files], "python -m scripts.workflows.review make", own
    )
    overrides = {**settings.get("overrides", {}), **overrides}
    entries = {d["case_id"]: d for d in load_datalist(run / "scored_datalist.json", "training", check_files=False)}
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    scored_from = str(info.get("source_datalist") or run / "scored_datalist.json")
    out = Path(out_dir) if out_dir else run / "review"
    table, loaded, parts = [], None, {}
    for row in sorted(rows, key=lambda r: (_model_path(r["model"]), int(r["rank"]))):  # load each model once
        if _model_path(row["model"]) != loaded:
            loaded = _model_path(row["model"])
            parts = _bundle_parts(config_files, overrides, loaded, scored_from)
        image, label, pred = _predict(parts, entries[row["case_id"]])
        problem = suspected_problem(label, pred, parts["num_classes"])
        figure = out / "figures" / f"rank{int(row['rank']):03d}_{row['case_id']}.png"
        plot_review(image, label, pred, parts["num_classes"], _title(row, problem), figure)
        table.append({**row, "suspected_problem": problem, "figure": str(figure.resolve()), "verdict": "", "note": ""})
    table.sort(key=lambda r: int(r["rank"]))
    fields = ["rank", "case_id", "center", "list", "fold", *SHOWN, "model", "model_epochs", "suspected_problem"]
    fields += ["figure", "verdict", "note"]
    write_csv_atomic(out / "review.csv", fields, [[r.get(k, "") for k in fields] for r in table])
    logger.info(f"{len(table)} cases to review: {out / 'review.csv'} (fill in the verdict column)")
    return out / "review.csv"


def read_verdicts(review_csv: str | os.PathLike) -> dict[str, bool]:
    """{case_id: True when marked wrong} from a filled-in ``review.csv``; an unknown verdict is refused."""
    rows = _read_csv(Path(review_csv))
    out = {}
    for r in rows:
        if "case_id" not in r or "verdict" not in r:
            raise ValueError(f"{review_csv}: not a review sheet (it needs case_id and verdict columns)")
        verdict = (r["verdict"] or "").strip().lower()
        if verdict not in REJECT + KEEP:
            raise ValueError(
                f"{review_csv}: case {r['case_id']}: verdict {r['verdict']!r} is not one of {REJECT} (exclude) "
                f"or {KEEP} (keep); correct it and apply again"
            )
        out[r["case_id"]] = verdict in REJECT
    return out


def apply_review(review_csv: str, dataset_json: str, out: str) -> str:
    """Write ``out``: ``dataset_json``'s lists without the cases marked wrong (paths made absolute, a
    ``review`` section naming what was excluded). ``out`` must not be ``dataset_json`` itself."""
    source, target = Path(dataset_json).resolve(), Path(out).resolve()
    if source == target or (target.exists() and os.path.samefile(source, target)):
        raise ValueError(f"--out {out} is the data list itself: the review writes a NEW data list, give another path")
    rejected = sorted(c for c, wrong in read_verdicts(review_csv).items() if wrong)
    content = read_json(source)
    lists = {k: load_datalist(source, k, check_files=False) for k in AUDIT_LISTS if content.get(k)}
    known = {d["case_id"] for entries in lists.values() for d in entries}
    unknown = [c for c in rejected if c not in known]
    if unknown:
        raise ValueError(f"{review_csv}: cases {unknown[:5]} marked wrong are not in {dataset_json}: wrong data list?")
    wrong = set(rejected)
    new = {**content, **{k: [d for d in v if d["case_id"] not in wrong] for k, v in lists.items()}}
    if "training" in lists:
        new["numTraining"] = len(new["training"])
    new["review"] = {
        "source": str(source),
        "review_csv": str(Path(review_csv).resolve()),
        "excluded": rejected,
        "excluded_from": {c: k for k, v in lists.items() for d in v if (c := d["case_id"]) in wrong},
    }
    write_json_atomic(target, new)
    logger.info(f"{len(rejected)} cases marked wrong left out: {target}")
    return str(target)


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    fire_strict({"make": make_review, "apply": apply_review})
