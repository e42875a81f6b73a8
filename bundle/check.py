"""The Model Zoo CI's checks, offline, on an exported bundle (a folder or its zip).

    python -m bundle.check dist/dad_pruning_segmentation_v0.4.0.zip [--lint True] [--schema_dir DIR]

What Project-MONAI/model-zoo's ci/verify_bundle.py checks, the way it checks it: necessary files
(configs/metadata.json, LICENSE) and preferred ones (models/model.pt, configs/inference.*); the
metadata against the real schema its ``schema`` URL names (the file of that name from bundle/schemas/,
../shared/zoo or ``--schema_dir``, md5-checked against the published file, or downloaded when online),
with ``monai.bundle.verify_metadata`` as the CI calls it on its eval/schema.json; ``version`` in
``changelog``; ``verify_net_in_out`` and ``ckpt_export`` of ``network_def`` with configs/inference.yaml
ALONE, as the CI passes it; and the infer workflow's ``check_properties()`` on that file alone (the train
workflow's on train.yaml). Then the Zoo's lint and pre-commit hooks (bundle/lint.py) on the files a
pull request commits. Added here: large files (over the hooks' 1 MB) listed in large_files.yml with a
URL and a hash that matches, the 25 MB limit, the zip's name and top folder, the logging config, and
that no path of the source checkout leaks into the exported text files. The MONAI checks run in one
fresh process inside the bundle folder (bundle/zoo_checks.py), so the bundle's own ``scripts`` is
imported. Prints one PASS/FAIL line per check; exits 1 when any fails.
"""

from __future__ import annotations

import hashlib
import json
import logging.config
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bundle.lint import MAX_KB, CheckResult, large_file_entries, lint_export

ROOT = Path(__file__).resolve().parents[1]
ZOO_CHECKS = Path(__file__).resolve().parent / "zoo_checks.py"
# where a schema named by metadata.json is looked for, in order, before the URL
SCHEMA_DIRS = (Path(__file__).resolve().parent / "schemas", ROOT.parent / "shared" / "zoo")
# md5 of the published schema files (the hashes MONAI's own tests use)
KNOWN_SCHEMAS = {
    "meta_schema_20220324.json": "662135097106b71067cd1fc657f8720f",
    "meta_schema_20240725.json": "06954cad2cc5d3784e72077ac76f0fc8",
}
MAX_FILE_MB = 25.0
NECESSARY = ("configs/metadata.json", "LICENSE")
PROJECT_FILES = ("configs/train.yaml", "configs/logging.conf", "docs/README.md", "docs/data_license.txt")
BINARY_SUFFIXES = (".pt", ".ts", ".png", ".jpg", ".zip", ".gz", ".nii", ".onnx")
LARGE_FILE_KEYS = {"path", "url", "hash_val", "hash_type"}  # what the Zoo passes to monai download_url
HASH_TYPES = ("md5", "sha1", "sha256", "sha512")
MONAI_CHECKS = ("metadata schema", "verify_net_in_out", "ckpt_export TorchScript", "check_properties")
# a tiny embedded data set for the workflows' property checks (generated in a temporary folder)
TINY_SYNTHETIC = {"num_train": 4, "num_val": 1, "num_test": 2, "shape": [16, 16, 16]}

__all__ = ["check_bundle", "unpack", "leaked_paths", "find_schema", "monai_checks", "CheckResult", "CheckError"]


class CheckError(Exception):
    pass


def unpack(zip_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a bundle zip into ``dest``; it must hold exactly one top folder, returned."""
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        if any(n.startswith("/") or ".." in Path(n).parts for n in names):
            raise CheckError("the zip has absolute or parent-relative member paths")
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) != 1:
            raise CheckError(f"the zip must unpack to one folder, found {sorted(tops)}")
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


def _digest(path: Path, kind: str) -> str:
    digest = hashlib.new(kind)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_schema(url: str, work: Path, schema_dirs: Sequence[Path] = SCHEMA_DIRS) -> tuple[Path, str]:
    """The schema file ``url`` names: a local copy of that name (md5-checked when the name is a published
    one), else downloaded into ``work``; returns (path, where it came from)."""
    name = url.split("/")[-1]
    for d in schema_dirs:
        path = Path(d) / name
        if path.is_file():
            if name in KNOWN_SCHEMAS and _digest(path, "md5") != KNOWN_SCHEMAS[name]:
                raise CheckError(f"{path} is not the published {name} (md5 differs): replace it with the real file")
            return path, f"{path} (md5 {_digest(path, 'md5')})"
    try:
        from monai.apps.utils import download_url

        path = work / name
        download_url(url, filepath=str(path), hash_val=KNOWN_SCHEMAS.get(name), hash_type="md5")
        return path, f"downloaded from {url}"
    except Exception as e:  # noqa: BLE001 - offline or a bad URL: say where a copy is looked for
        raise CheckError(
            f"schema {name} (the `schema` URL of configs/metadata.json) is in none of "
            f"{[str(d) for d in schema_dirs]} and could not be downloaded ({type(e).__name__}: {e}); "
            "put a copy in one of them or pass --schema_dir"
        ) from e


def check_files(bundle: Path) -> str:
    large = {e.get("path") for e in large_file_entries(bundle) if isinstance(e, dict)}
    missing = [f for f in (*NECESSARY, *PROJECT_FILES) if not (bundle / f).is_file()]
    if not (bundle / "models" / "model.pt").is_file() and "models/model.pt" not in large:
        missing.append("models/model.pt (or a large_files.yml entry)")
    if not any((bundle / "configs" / f"inference.{s}").is_file() for s in ("json", "yaml", "yml")):
        missing.append("configs/inference.{json,yaml,yml}")
    if missing:
        raise CheckError(f"missing {missing}")
    return f"{sum(1 for p in bundle.rglob('*') if p.is_file())} files, necessary and preferred ones present"


def check_large_files(bundle: Path) -> str:
    """Files over the hooks' 1 MB are in large_files.yml (they are not committed), each entry with a
    download URL and a hash the present file matches; nothing over the Zoo's 25 MB stays in the bundle."""
    entries = large_file_entries(bundle)
    problems = []
    for e in entries:
        if not isinstance(e, dict) or not e.get("path"):
            problems.append(f"entry without a path: {e}")
            continue
        extra = set(e) - LARGE_FILE_KEYS
        if extra:
            problems.append(f"{e['path']}: keys {sorted(extra)} (the Zoo passes each entry to download_url)")
        if not re.match(r"https?://\S+$", str(e.get("url") or "")):
            problems.append(f"{e['path']}: no download URL (export with --large_file_url_base URL)")
        kind = str(e.get("hash_type") or "")
        if kind not in HASH_TYPES or not e.get("hash_val"):
            problems.append(f"{e['path']}: hash_val/hash_type missing or not one of {HASH_TYPES}")
        elif (bundle / e["path"]).is_file() and _digest(bundle / e["path"], kind) != e["hash_val"]:
            problems.append(f"{e['path']}: its {kind} differs from hash_val")
    listed = {e.get("path") for e in entries if isinstance(e, dict)}
    files = [p for p in bundle.rglob("*") if p.is_file()]
    unlisted = [p.relative_to(bundle).as_posix() for p in files if p.stat().st_size > MAX_KB * 1024]
    unlisted = [f"{f} ({(bundle / f).stat().st_size / 1024:.0f} KB)" for f in unlisted if f not in listed]
    if unlisted:
        problems.append(f"over {MAX_KB} KB and not in large_files.yml: {unlisted}")
    big = [p.relative_to(bundle).as_posix() for p in files if p.stat().st_size > MAX_FILE_MB * 2**20]
    if big:
        problems.append(f"over {MAX_FILE_MB} MB: {big}")
    if problems:
        raise CheckError("; ".join(problems))
    return f"{len(entries)} large file(s) listed with URL and hash: {sorted(str(p) for p in listed)}"


def check_version(bundle: Path) -> str:
    meta = _metadata(bundle)
    version = meta.get("version")
    if not version or version not in meta.get("changelog", {}):
        raise CheckError(f"version {version!r} has no entry in changelog")
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(version)):
        raise CheckError(f"version {version!r} is not MAJOR.MINOR.PATCH")
    return f"version {version} is in changelog"


def check_logging(bundle: Path) -> str:
    logging.config.fileConfig(bundle / "configs" / "logging.conf", disable_existing_loggers=False)
    return "configs/logging.conf loads"


def check_leaks(bundle: Path, forbidden: Sequence[str]) -> str:
    hits = leaked_paths(bundle, forbidden)
    if hits:
        raise CheckError(f"source paths in the export: {hits[:10]}")
    return f"no exported text file contains {list(forbidden)}"


def monai_checks(
    bundle: Path, work: Path, schema_dirs: Sequence[Path] = SCHEMA_DIRS, only: Sequence[str] = MONAI_CHECKS
) -> list[CheckResult]:
    """verify_metadata, verify_net_in_out, ckpt_export and check_properties (those in ``only``), run by
    bundle/zoo_checks.py in one fresh process inside the bundle folder."""
    results: list[CheckResult] = []
    schema = ""
    if "metadata schema" in only:
        try:
            path, origin = find_schema(str(_metadata(bundle).get("schema", "")), work, schema_dirs)
            schema = str(path)
        except (CheckError, OSError, ValueError) as e:
            results.append(("metadata schema", False, str(e)))
            only = [c for c in only if c != "metadata schema"]
    args = {"bundle": str(bundle), "work": str(work), "schema": schema, "synthetic": TINY_SYNTHETIC, "only": list(only)}
    cmd = [sys.executable, str(ZOO_CHECKS), json.dumps(args)]
    result = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=900)
    found = [json.loads(ln[7:]) for ln in result.stdout.splitlines() if ln.startswith("RESULT ")]
    out = [(r["check"], bool(r["ok"]), r["detail"]) for r in found]
    if schema:
        out = [(c, ok, f"{d} [{origin}]" if c == "metadata schema" else d) for c, ok, d in out]
    if result.returncode != 0 or len(out) != len(only):
        out.append(("MONAI checks process", False, (result.stdout + result.stderr)[-2000:]))
    return results + out


def check_bundle(
    path: str | os.PathLike,
    forbidden: Sequence[str] = (),
    name: str | None = None,
    lint: bool = True,
    schema_dirs: Sequence[Path] = SCHEMA_DIRS,
    ci_test: str | os.PathLike | None = None,
) -> list[CheckResult]:
    """Run every check on a bundle folder or zip; returns (check, passed, detail) in order. ``ci_test``:
    the Zoo unit test the pull request adds (default: ``ci/unit_tests/test_<name>.py`` beside the zip's
    or folder's model_zoo_pr/ tree, as bundle/export.py writes it)."""
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
                    raise CheckError(f"{path.name} unpacks to {bundle.name}/; expected {expected} -> {name}/")
                results.append(("zip layout", True, f"{path.name} unpacks to {bundle.name}/"))
            except (CheckError, zipfile.BadZipFile, KeyError, OSError) as e:
                return [("zip layout", False, str(e))]
        else:
            bundle = path
        name = name or bundle.name
        checks: list[tuple[str, Callable[[], str]]] = [
            ("required files", lambda: check_files(bundle)),
            ("large files", lambda: check_large_files(bundle)),
            ("version in changelog", lambda: check_version(bundle)),
            ("logging config", lambda: check_logging(bundle)),
            ("no source paths", lambda: check_leaks(bundle, forbidden)),
        ]
        for label, fn in checks:
            try:
                results.append((label, True, fn()))
            except Exception as e:  # noqa: BLE001 - every failure is reported, the other checks still run
                results.append((label, False, f"{type(e).__name__}: {e}"))
        results += monai_checks(bundle, work / "monai", schema_dirs)
        if lint:
            test = Path(ci_test) if ci_test else path.parent / "model_zoo_pr" / "ci" / "unit_tests" / f"test_{name}.py"
            results += lint_export(bundle, name, test if test.is_file() else None)
    return results


def main(
    path: str,
    name: str | None = None,
    forbid: Sequence[str] = (),
    lint: bool = True,
    schema_dir: str | None = None,
    ci_test: str | None = None,
) -> None:
    """Print one line per check; exit 1 when any check fails."""
    forbid = [forbid] if isinstance(forbid, str) else list(forbid)
    dirs = (Path(schema_dir), *SCHEMA_DIRS) if schema_dir else SCHEMA_DIRS
    results = check_bundle(path, forbidden=forbid, name=name, lint=lint, schema_dirs=dirs, ci_test=ci_test)
    for label, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {detail}")
    failed = [r for r in results if not r[1]]
    print(f"{len(results) - len(failed)}/{len(results)} checks passed")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    fire_strict(main)
