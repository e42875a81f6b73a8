"""Assemble the Model Zoo layout of this bundle from the repository and one trained model, and zip it.

    python -m bundle.export --model runs/pipeline/models/full_seed0/model.pt [--out dist]
        [--name dad_pruning_segmentation] [--max_file_mb 25] [--large_file_url_base URL]

Writes ``<out>/<name>/`` (configs/, scripts/, docs/, LICENSE, models/model.pt, large_files.yml when a
file is over the Zoo's 25 MB limit) and ``<out>/<name>_v<version>.zip`` that unpacks to ``<name>/``.
Every ``configs/*.yaml|yml|json|conf`` and ``configs/presets/`` are exported, whatever they are, so a
new workflow config travels without changes here. Then run ``python -m bundle.check <zip>``.
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

from scripts.utils.atomic import atomic_output, write_text_atomic

logger = logging.getLogger("bundle.export")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NAME = "dad_pruning_segmentation"
MAX_FILE_MB = 25.0  # the Model Zoo's limit per file (model-zoo CONTRIBUTING.md, "Model storage")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".conf")
# the Zoo's conventional config names; absent ones are reported, not required
CONVENTIONAL_CONFIGS = ("train", "inference", "evaluate", "multi_gpu_train")
ZIP_TIME = (2022, 5, 30, 0, 0, 0)  # fixed member times, as the Zoo's compress_bundle, so zips are reproducible

__all__ = ["export_bundle", "bundle_version", "load_state_dict", "zip_bundle"]


def bundle_version(root: str | os.PathLike = ROOT) -> str:
    return str(json.loads((Path(root) / "configs" / "metadata.json").read_text())["version"])


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network weights of a checkpoint: a plain state dict (``model.pt``), or the ``model`` entry of a
    CheckpointSaver dict (``checkpoint_final.pt``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ValueError(f"{path} holds no state dict of network weights")
    return ckpt


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
    return [f"configs/{n}.* is absent (a Zoo convention)" for n in CONVENTIONAL_CONFIGS if n not in names]


def _move_large_files(stage: Path, max_file_mb: float, url_base: str) -> list[dict[str, str]]:
    """Files over the size limit leave the bundle for large_files.yml (path, url, md5), as the Zoo asks."""
    large = []
    for f in sorted(p for p in stage.rglob("*") if p.is_file()):
        if f.stat().st_size > max_file_mb * 1024 * 1024:
            rel = f.relative_to(stage).as_posix()
            url = url_base.rstrip("/") + "/" + f.name if url_base else ""
            large.append({"path": rel, "url": url, "hash_val": _md5(f), "hash_type": "md5"})
            f.unlink()
    if large:
        text = "# upload these files and fill in `url` (model-zoo CONTRIBUTING.md, large files)\n"
        text += yaml.safe_dump({"large_files": large}, sort_keys=False)
        write_text_atomic(stage / "large_files.yml", text)
    return large


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
    """Export the bundle with the weights of ``model``; returns {bundle_dir, zip, version, files, notes}."""
    src = Path(source).resolve() if source else ROOT
    out_dir = Path(out).resolve()
    copied = [src / d for d in ("configs", "scripts", "docs")]
    if out_dir == src or any(out_dir == d or d in out_dir.parents for d in copied):
        raise ValueError(f"export into a folder outside the exported folders of {src}, not {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    version = bundle_version(src)
    final = out_dir / name
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{name}.") as tmp:
        stage = Path(tmp) / name
        notes = _assemble(stage, Path(model), src)
        large = _move_large_files(stage, max_file_mb, large_file_url_base)
        notes += [f"{f['path']} is over {max_file_mb} MB: listed in large_files.yml" for f in large]
        if final.exists():
            shutil.rmtree(final)
        stage.rename(final)
    zip_path = zip_bundle(final, out_dir / f"{name}_v{version}.zip")
    files = {p.relative_to(final).as_posix(): p.stat().st_size for p in sorted(final.rglob("*")) if p.is_file()}
    for note in notes:
        logger.warning(note)
    return {"bundle_dir": str(final), "zip": str(zip_path), "version": version, "files": files, "notes": notes}


def main(
    model: str, out: str = "dist", name: str = DEFAULT_NAME, max_file_mb: float = MAX_FILE_MB,
    large_file_url_base: str = "",
) -> None:
    """Export, then list the exported files and sizes (bytes)."""
    result = export_bundle(model, out, name, max_file_mb, large_file_url_base)
    for rel, size in result["files"].items():
        print(f"{size:>10}  {rel}")
    print(f"{Path(result['zip']).stat().st_size:>10}  {result['zip']}")
    for note in result["notes"]:
        print(f"note: {note}")


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")
    fire.Fire(main)
