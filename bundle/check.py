"""The Model Zoo CI's checks that need no network, run on an exported bundle (a folder or its zip).

    python -m bundle.check dist/dad_pruning_segmentation_v0.4.0.zip

Read from Project-MONAI/model-zoo ci/verify_bundle.py: necessary files (configs/metadata.json,
LICENSE) and preferred ones (models/model.pt, configs/inference.*), metadata against the schema (an
offline copy, bundle/meta_schema.json, passed to ``monai.bundle verify_metadata`` as the Zoo CI
passes its downloaded eval/schema.json), ``version`` in ``changelog``, ``verify_net_in_out``,
``ckpt_export`` to TorchScript, and the workflows' ``check_properties()``. Added here: the 25 MB file
limit and large_files.yml entries (CONTRIBUTING.md), the zip's name and top folder, the logging config,
and that no path of the source checkout leaks into the exported text files. The MONAI checks run in
one fresh process inside the bundle folder (bundle/zoo_checks.py), as verify_bundle.py runs them, so
the bundle's own ``scripts`` package is the one imported.
Prints one PASS/FAIL line per check; exits 1 when any fails.
"""

from __future__ import annotations

import json
import logging.config
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(__file__).resolve().parent / "meta_schema.json"
ZOO_CHECKS = Path(__file__).resolve().parent / "zoo_checks.py"
MAX_FILE_MB = 25.0
NECESSARY = ("configs/metadata.json", "LICENSE")
PROJECT_FILES = ("configs/train.yaml", "configs/logging.conf", "docs/README.md", "docs/data_license.txt")
BINARY_SUFFIXES = (".pt", ".ts", ".png", ".jpg", ".zip", ".gz", ".nii", ".onnx")
# a tiny embedded data set for the workflows' property checks (generated in a temporary folder)
TINY_SYNTHETIC = {"num_train": 4, "num_val": 1, "num_test": 2, "shape": [16, 16, 16]}

__all__ = ["check_bundle", "unpack", "leaked_paths", "CheckResult"]

CheckResult = tuple[str, bool, str]


class CheckFailed(Exception):
    pass


def unpack(zip_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a bundle zip into ``dest``; it must hold exactly one top folder, returned."""
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        if any(n.startswith("/") or ".." in Path(n).parts for n in names):
            raise CheckFailed("the zip has absolute or parent-relative member paths")
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) != 1:
            raise CheckFailed(f"the zip must unpack to one folder, found {sorted(tops)}")
        zf.extractall(dest)
    return Path(dest) / tops.pop()


def leaked_paths(bundle: Path, forbidden: Sequence[str]) -> list[str]:
    """``file: string`` for every exported text file that contains one of the forbidden strings."""
    hits = []
    for f in sorted(p for p in bundle.rglob("*") if p.is_file() and not p.name.endswith(BINARY_SUFFIXES)):
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        hits += [f"{f.relative_to(bundle)}: {s}" for s in forbidden if s and s in text]
    return hits


def _metadata(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "configs" / "metadata.json").read_text())


def _large_files(bundle: Path) -> list[dict[str, Any]]:
    for name in ("large_files.yml", "large_files.yaml", "large_files.json"):
        if (bundle / name).is_file():
            return list((yaml.safe_load((bundle / name).read_text()) or {}).get("large_files") or [])
    return []


def check_files(bundle: Path) -> str:
    large = {e.get("path") for e in _large_files(bundle)}
    missing = [f for f in (*NECESSARY, *PROJECT_FILES) if not (bundle / f).is_file()]
    if not (bundle / "models" / "model.pt").is_file() and "models/model.pt" not in large:
        missing.append("models/model.pt (or a large_files.yml entry)")
    if not any((bundle / "configs" / f"inference.{s}").is_file() for s in ("json", "yaml", "yml")):
        missing.append("configs/inference.{json,yaml,yml}")
    if missing:
        raise CheckFailed(f"missing {missing}")
    return f"{sum(1 for p in bundle.rglob('*') if p.is_file())} files, necessary and preferred ones present"


def check_sizes(bundle: Path) -> str:
    big = [
        f"{p.relative_to(bundle)} ({p.stat().st_size / 2**20:.1f} MB)"
        for p in bundle.rglob("*")
        if p.is_file() and p.stat().st_size > MAX_FILE_MB * 2**20
    ]
    bad = [e for e in _large_files(bundle) if not e.get("path") or "url" not in e]
    if big or bad:
        raise CheckFailed(f"over {MAX_FILE_MB} MB: {big}; large_files.yml entries without path/url: {bad}")
    largest = max((p for p in bundle.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    return f"largest file {largest.relative_to(bundle)} {largest.stat().st_size / 2**20:.2f} MB <= {MAX_FILE_MB} MB"


def check_version(bundle: Path) -> str:
    meta = _metadata(bundle)
    version = meta.get("version")
    if not version or version not in meta.get("changelog", {}):
        raise CheckFailed(f"version {version!r} has no entry in changelog")
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(version)):
        raise CheckFailed(f"version {version!r} is not MAJOR.MINOR.PATCH")
    return f"version {version} is in changelog"


def check_logging(bundle: Path) -> str:
    logging.config.fileConfig(bundle / "configs" / "logging.conf", disable_existing_loggers=False)
    return "configs/logging.conf loads"


def check_leaks(bundle: Path, forbidden: Sequence[str]) -> str:
    hits = leaked_paths(bundle, forbidden)
    if hits:
        raise CheckFailed(f"source paths in the export: {hits[:10]}")
    return f"no exported text file contains {list(forbidden)}"


def monai_checks(bundle: Path, work: Path) -> list[CheckResult]:
    """verify_metadata, verify_net_in_out, ckpt_export and check_properties, run by bundle/zoo_checks.py
    in one fresh process inside the bundle folder."""
    schema = work / SCHEMA.name
    shutil.copy(SCHEMA, schema)
    args = {"bundle": str(bundle), "work": str(work), "schema": str(schema), "synthetic": TINY_SYNTHETIC}
    cmd = [sys.executable, str(ZOO_CHECKS), json.dumps(args)]
    result = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=900)
    found = [json.loads(ln[7:]) for ln in result.stdout.splitlines() if ln.startswith("RESULT ")]
    out = [(r["check"], bool(r["ok"]), r["detail"]) for r in found]
    if result.returncode != 0 or len(out) != 4:
        out.append(("MONAI checks process", False, (result.stdout + result.stderr)[-2000:]))
    return out


def check_bundle(
    path: str | os.PathLike, forbidden: Sequence[str] = (), name: str | None = None
) -> list[CheckResult]:
    """Run every check on a bundle folder or zip; returns (check, passed, detail) in order."""
    path = Path(path).resolve()
    forbidden = [str(ROOT), *forbidden]
    results: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="bundle_check_") as tmp:
        work = Path(tmp)
        if path.is_file():
            try:
                bundle = unpack(path, work / "unpacked")
                version = _metadata(bundle)["version"]
                expected = f"{name or bundle.name}_v{version}.zip"
                if path.name != expected or (name and bundle.name != name):
                    raise CheckFailed(f"{path.name} unpacks to {bundle.name}/; expected {expected} -> {name}/")
                results.append(("zip layout", True, f"{path.name} unpacks to {bundle.name}/"))
            except (CheckFailed, zipfile.BadZipFile, KeyError, OSError) as e:
                return [("zip layout", False, str(e))]
        else:
            bundle = path
        checks: list[tuple[str, Callable[[], str]]] = [
            ("required files", lambda: check_files(bundle)),
            ("file sizes", lambda: check_sizes(bundle)),
            ("version in changelog", lambda: check_version(bundle)),
            ("logging config", lambda: check_logging(bundle)),
            ("no source paths", lambda: check_leaks(bundle, forbidden)),
        ]
        for label, fn in checks:
            try:
                results.append((label, True, fn()))
            except Exception as e:  # noqa: BLE001 - every failure is reported, the other checks still run
                results.append((label, False, f"{type(e).__name__}: {e}"))
        results += monai_checks(bundle, work)
    return results


def main(path: str, name: str | None = None, forbid: Sequence[str] = ()) -> None:
    """Print one line per check; exit 1 when any check fails."""
    forbid = [forbid] if isinstance(forbid, str) else list(forbid)
    results = check_bundle(path, forbidden=forbid, name=name)
    for label, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {detail}")
    failed = [r for r in results if not r[1]]
    print(f"{len(results) - len(failed)}/{len(results)} checks passed")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
