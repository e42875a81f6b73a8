"""Assemble the Model Zoo layout of this bundle from the repository and one trained model, and zip it.

    python -m bundle.export --model runs/pipeline/models/full_seed0/model.pt [--out dist]
        [--name dad_pruning_segmentation] --large_file_url_base URL [--max_file_mb 25]

Writes into ``<out>``:

- ``<name>/`` (configs/, scripts/, docs/, LICENSE, models/model.pt, models/plan.json, large_files.yml) and
  ``<name>_v<version>.zip`` that unpacks to ``<name>/``: the bundle as users download it;
- ``model_zoo_pr/``: what a pull request to Project-MONAI/model-zoo adds, ``models/<name>/`` (the bundle
  less the files large_files.yml lists: over the Zoo's 1 MB pre-commit limit, they are not committed)
  and ``ci/unit_tests/test_<name>.py`` (the Zoo's unit test of the bundle, from bundle/zoo_ci/);
- ``upload/``: those large files under the names their large_files.yml URLs end with
  (``<url_base>/<name>_v<version>_<path>``), to upload there; each entry carries the file's md5.

Files over ``max_file_mb`` (the Zoo's 25 MB) are left out of ``<name>/`` too. Every
``configs/*.yaml|yml|json|conf`` and ``configs/presets/`` are exported, whatever they are, so a new
workflow config travels without changes here. ``models/plan.json`` is the plan its training wrote beside
the model, so the exported inference.yaml, alone, preprocesses as the training did (a model whose preset
won over its plan is refused: inference.yaml alone cannot rebuild a preset). Then run
``python -m bundle.check <zip>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml
from scripts.data.model_plan import PLAN_FILE, plan_beside
from scripts.data.plan import read_used_plan
from scripts.utils.atomic import atomic_output, write_text_atomic
from scripts.utils.errors import InputError
from scripts.utils.weights import load_state_dict

logger = logging.getLogger("bundle.export")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NAME = "dad_pruning_segmentation"
MAX_FILE_MB = 25.0  # the Model Zoo's limit per file (model-zoo CONTRIBUTING.md, "Model storage")
LARGE_FILE_KB = 1024  # the Zoo's pre-commit check-added-large-files --maxkb: larger files go to large_files.yml
ZOO_CI_TEST = Path(__file__).resolve().parent / "zoo_ci" / "test_dad_pruning_segmentation.py"
PR_DIR = "model_zoo_pr"
CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".conf")
# the Zoo's conventional config names; absent ones are reported, not required
CONVENTIONAL_CONFIGS = ("train", "inference", "evaluate", "multi_gpu_train")
ZIP_TIME = (2022, 5, 30, 0, 0, 0)  # fixed member times, as the Zoo's compress_bundle, so zips are reproducible

__all__ = ["export_bundle", "bundle_version", "load_state_dict", "zip_bundle", "upload_name"]


def bundle_version(root: str | os.PathLike = ROOT) -> str:
    return str(json.loads((Path(root) / "configs" / "metadata.json").read_text())["version"])


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _assemble(stage: Path, model: Path, source: Path) -> list[str]:
    """Copy the bundle's files into ``stage``; returns notes (absent conventional configs)."""
    (stage / "configs").mkdir(parents=True)
    for f in sorted((source / "configs").iterdir()):
        if f.is_file() and f.suffix in CONFIG_SUFFIXES:
            shutil.copy2(f, stage / "configs" / f.name)
    if (source / "configs" / "presets").is_dir():
        _copy_tree(source / "configs" / "presets", stage / "configs" / "presets")
    # scripts/experiments measures the method (benchmarks, reference runs): not part of the shared bundle
    shutil.copytree(
        source / "scripts",
        stage / "scripts",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "experiments"),
    )
    _copy_tree(source / "docs", stage / "docs")
    shutil.copy2(source / "LICENSE", stage / "LICENSE")
    (stage / "models").mkdir()
    torch.save(load_state_dict(model), stage / "models" / "model.pt")
    names = {f.stem for f in (stage / "configs").iterdir() if f.is_file()}
    notes = [f"configs/{n}.* is absent (a Zoo convention)" for n in CONVENTIONAL_CONFIGS if n not in names]
    return notes + _model_plan(model, stage)


def _model_plan(model: Path, stage: Path) -> list[str]:
    """``models/plan.json``: the plan the model's training wrote beside it, without source paths, formatted
    as the Zoo's pretty-format-json hook wants; returns a note when the model has none."""
    beside = plan_beside(model)
    if beside is None:
        return [
            f"{model} has no {PLAN_FILE} beside it: the exported inference.yaml preprocesses as the embedded set's "
            "plan (2 classes, a z-score per image); export a model trained with 0.7.0 or later to carry its own"
        ]
    try:
        content = read_used_plan(beside)
    except InputError as err:
        raise InputError(
            f"model {model}: its training's preset or override won over its plan ({beside}), and the Zoo runs "
            "configs/inference.yaml alone, which rebuilds a plan but not a preset; fix: export a model trained "
            "without a preset (or merge the same preset after configs/inference.yaml outside the Zoo)"
        ) from err
    assert content is not None
    plan = {**content["plan"], "dataset_json": Path(str(content["plan"].get("dataset_json", ""))).name}
    text = json.dumps({"plan": plan, "used": content["used"]}, indent=4) + "\n"
    write_text_atomic(stage / "models" / PLAN_FILE, text)
    return []


def upload_name(name: str, version: str, rel: str) -> str:
    """The file name a large file is uploaded under: ``<name>_v<version>_<path with / as _>``."""
    return f"{name}_v{version}_{rel.replace('/', '_')}"


def _large_files(stage: Path, upload: Path, name: str, version: str, max_file_mb: float, url_base: str) -> list[dict]:
    """Files over the Zoo's 1 MB go to large_files.yml (path, url, md5) and to ``upload``; those over
    ``max_file_mb`` leave the bundle."""
    large = []
    for f in sorted(p for p in stage.rglob("*") if p.is_file()):
        if f.stat().st_size > LARGE_FILE_KB * 1024:
            rel = f.relative_to(stage).as_posix()
            target = upload_name(name, version, rel)
            url = url_base.rstrip("/") + "/" + target if url_base else ""
            large.append({"path": rel, "url": url, "hash_val": _md5(f), "hash_type": "md5"})
            upload.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, upload / target)
            if f.stat().st_size > max_file_mb * 1024 * 1024:
                f.unlink()
    if large:
        text = "# downloaded by the Model Zoo's CI (ci/verify_bundle.py): upload each file of upload/ to its url\n"
        text += yaml.safe_dump({"large_files": large}, sort_keys=False)
        write_text_atomic(stage / "large_files.yml", text)
    return large


def _pull_request(bundle: Path, pr_dir: Path, name: str, large: list[dict]) -> None:
    """``pr_dir/models/<name>/`` less the large files, and ``pr_dir/ci/unit_tests/test_<name>.py``."""
    listed = {e["path"] for e in large}
    target = pr_dir / "models" / name
    for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = f.relative_to(bundle).as_posix()
        if rel not in listed:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target / rel)
    test = ZOO_CI_TEST.read_text().replace("dad_pruning_segmentation", name)
    write_text_atomic(pr_dir / "ci" / "unit_tests" / f"test_{name}.py", test)


def zip_bundle(bundle_dir: str | os.PathLike, zip_path: str | os.PathLike) -> Path:
    """Zip ``bundle_dir`` so it unpacks to ``<bundle_dir name>/``; sorted members, fixed times."""
    bundle_dir = Path(bundle_dir)
    with atomic_output(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for f in sorted(bundle_dir.rglob("*")):
            arcname = f"{bundle_dir.name}/{f.relative_to(bundle_dir).as_posix()}" + ("/" if f.is_dir() else "")
            info = zipfile.ZipInfo(arcname, date_time=ZIP_TIME)
            info.external_attr = (0o40755 if f.is_dir() else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, b"" if f.is_dir() else f.read_bytes())
    return Path(zip_path)


def export_bundle(
    model: str,
    out: str = "dist",
    name: str = DEFAULT_NAME,
    max_file_mb: float = MAX_FILE_MB,
    large_file_url_base: str = "",
    source: str | None = None,
) -> dict[str, Any]:
    """Export the bundle with the weights of ``model``; returns {bundle_dir, zip, pr_dir, version, files,
    large_files, notes}."""
    src = Path(source).resolve() if source else ROOT
    out_dir = Path(out).resolve()
    copied = [src / d for d in ("configs", "scripts", "docs")]
    if out_dir == src or any(out_dir == d or d in out_dir.parents for d in copied):
        raise ValueError(f"export into a folder outside the exported folders of {src}, not {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    version = bundle_version(src)
    final = out_dir / name
    pr_final = out_dir / PR_DIR
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{name}.") as tmp:
        stage = Path(tmp) / name
        notes = _assemble(stage, Path(model), src)
        large = _large_files(stage, Path(tmp) / "upload", name, version, max_file_mb, large_file_url_base)
        for f in large:
            where = f["url"] or "its URL (none given: pass --large_file_url_base)"
            notes.append(f"{f['path']} in large_files.yml: upload {upload_name(name, version, f['path'])} to {where}")
            if not (stage / f["path"]).exists():
                notes.append(f"{f['path']} is over {max_file_mb} MB: left out of {name}/")
        _pull_request(stage, Path(tmp) / PR_DIR, name, large)
        (Path(tmp) / "upload").mkdir(exist_ok=True)
        moves = ((final, stage), (pr_final, Path(tmp) / PR_DIR), (out_dir / "upload", Path(tmp) / "upload"))
        for done, staged in moves:
            if done.exists():
                shutil.rmtree(done)
            staged.rename(done)
    zip_path = zip_bundle(final, out_dir / f"{name}_v{version}.zip")
    files = {p.relative_to(final).as_posix(): p.stat().st_size for p in sorted(final.rglob("*")) if p.is_file()}
    for note in notes:
        logger.warning(note)
    return {
        "bundle_dir": str(final),
        "zip": str(zip_path),
        "pr_dir": str(pr_final),
        "version": version,
        "files": files,
        "large_files": large,
        "notes": notes,
    }


def main(
    model: str,
    out: str = "dist",
    name: str = DEFAULT_NAME,
    max_file_mb: float = MAX_FILE_MB,
    large_file_url_base: str = "",
) -> None:
    """Export, then list the exported files and sizes (bytes)."""
    result = export_bundle(model, out, name, max_file_mb, large_file_url_base)
    for rel, size in result["files"].items():
        print(f"{size:>10}  {rel}")
    print(f"{Path(result['zip']).stat().st_size:>10}  {result['zip']}")
    print(f"{'':>10}  {result['pr_dir']}/ (models/{name}/ and ci/unit_tests/test_{name}.py for the pull request)")
    for note in result["notes"]:
        print(f"note: {note}")


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")
    fire_strict(main)
