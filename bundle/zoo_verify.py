"""Run a fetched copy of the Model Zoo's own premerge checks on an export, offline.

    python -m bundle.zoo_verify dist/dad_pruning_segmentation_v0.4.0.zip --zoo /path/to/model-zoo
        [--mode full] [--unit_tests True] [--schema_dir DIR]

In a temporary copy of the model-zoo checkout (``--zoo``; never changed), as ci/run_premerge_cpu.sh and
ci/run_premerge_gpu.sh do for a changed bundle: the zip is unpacked as ``models/<name>/`` (its weights
stand for the large files the CI would download: they must match large_files.yml's hashes); the schema
its metadata names is put at ``models/<schema file>`` (a local copy, see bundle/check.py), so
``ci/prepare_schema.py`` skips the download and copies it to ``models/<name>/eval/schema.json``; then
``ci/get_bundle_requirements.py`` (the pins the CI would install: printed, not installed),
``ci/verify_bundle.py -b <name> -m <mode>`` (``min``: the CPU premerge; ``full``, the default: the GPU
premerge, adding the data-shape and TorchScript checks), and with ``--unit_tests`` the bundle's
``ci/unit_tests/test_<name>.py`` (from the export's model_zoo_pr/, else bundle/zoo_ci/) through
``ci/unit_tests/runner.py``. Prints each command and its whole output; exits with the first failure's
status.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bundle.check import SCHEMA_DIRS, find_schema, unpack

ZOO_CI_TEST = Path(__file__).resolve().parent / "zoo_ci" / "test_dad_pruning_segmentation.py"

__all__ = ["zoo_verify"]


def _step(cmd: list[str], cwd: Path, env: dict[str, str]) -> int:
    print(f"$ {' '.join(cmd)}", flush=True)
    result = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(result.stdout.rstrip(), flush=True)
    print(f"(exit {result.returncode})\n", flush=True)
    return result.returncode


def zoo_verify(
    path: str | os.PathLike,
    zoo: str | os.PathLike,
    mode: str = "full",
    unit_tests: bool = False,
    schema_dirs: tuple[Path, ...] = SCHEMA_DIRS,
) -> int:
    """The exit status of the first failing step (0 when all pass)."""
    path, zoo = Path(path).resolve(), Path(zoo).resolve()
    if not (zoo / "ci" / "verify_bundle.py").is_file():
        raise FileNotFoundError(f"{zoo} is not a model-zoo checkout (no ci/verify_bundle.py): pass --zoo")
    if mode not in ("full", "min", "regular"):
        raise ValueError(f"mode {mode!r}: one of full, min, regular (ci/verify_bundle.py's)")
    with tempfile.TemporaryDirectory(prefix="zoo_verify_") as tmp:
        root = Path(tmp) / "model-zoo"
        shutil.copytree(zoo, root, ignore=shutil.ignore_patterns(".git"))
        staged = unpack(path, Path(tmp) / "unpacked") if path.is_file() else path
        name = staged.name
        bundle = root / "models" / name
        if bundle.exists():
            raise FileExistsError(f"models/{name} is already in {zoo}: this checks a new bundle")
        shutil.copytree(staged, bundle)
        meta = json.loads((bundle / "configs" / "metadata.json").read_text())
        schema, origin = find_schema(str(meta.get("schema", "")), Path(tmp), schema_dirs)
        shutil.copy2(schema, root / "models" / schema.name)  # where ci/prepare_schema.py downloads it
        print(f"bundle: {path} -> models/{name}/; schema: {origin} -> models/{schema.name}\n", flush=True)
        env = {**os.environ, "ALLOW_MONAI_RC": "true"}
        steps = [
            [sys.executable, "ci/prepare_schema.py", "--l", name],
            [sys.executable, "ci/get_bundle_requirements.py", "--b", name],
            [sys.executable, "ci/verify_bundle.py", "-b", name, "-m", mode],
        ]
        if unit_tests:
            test = path.parent / "model_zoo_pr" / "ci" / "unit_tests" / f"test_{name}.py"
            if not test.is_file():
                test = ZOO_CI_TEST
            text = test.read_text().replace("dad_pruning_segmentation", name)
            (root / "ci" / "unit_tests" / f"test_{name}.py").write_text(text)
            steps.append([sys.executable, "ci/unit_tests/runner.py", "--b", name])
        for cmd in steps:
            rc = _step(cmd, root, env)
            if cmd[1] == "ci/get_bundle_requirements.py" and rc == 0:
                req = root / f"requirements_{name}.txt"
                print(f"{req.name}:\n{req.read_text() if req.is_file() else '(none)'}", flush=True)
            if rc != 0:
                return rc
    return 0


def main(path: str, zoo: str, mode: str = "full", unit_tests: bool = False, schema_dir: str | None = None) -> None:
    dirs = (Path(schema_dir), *SCHEMA_DIRS) if schema_dir else SCHEMA_DIRS
    rc = zoo_verify(path, zoo, mode=mode, unit_tests=unit_tests, schema_dirs=dirs)
    print("Model Zoo premerge checks: " + ("PASS" if rc == 0 else f"FAIL (exit {rc})"))
    sys.exit(rc)


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    fire_strict(main)
