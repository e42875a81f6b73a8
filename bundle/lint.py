"""The Model Zoo's lint and pre-commit hooks, with its own settings, on this checkout or on an export.

    python -m bundle.lint                 # check scripts/ bundle/ tests/ in place
    python -m bundle.lint --fix           # format them: isort, then black --skip-magic-trailing-comma
    python -m bundle.lint --bundle dist/dad_pruning_segmentation   # an exported bundle, in the Zoo's layout

What runs is what model-zoo's ``runtests.sh --codeformat`` and ``.pre-commit-config.yaml`` run (copies of
its setup.cfg, pyproject.toml and pre-commit config are in bundle/zoo_settings/, from commit
dfae206df112837d817e78d3727c9f32b3b52e82): ``isort --check``, ``black --skip-magic-trailing-comma
--check``, ``flake8 --count --statistics`` (bugbear, comprehensions, executable, pep8-naming), and the
pre-commit-hooks v4.6.0 hooks. The tools are requirements-dev.txt's pins. An export is checked where
the Zoo checks it: unpacked as ``models/<name>/`` under a folder holding the Zoo's settings, with its
``ci/unit_tests/test_<name>.py``, less the files its large_files.yml lists (they are not committed),
so ``scripts`` is a third-party package to isort there, as for every Zoo bundle. In place, isort is
told the same (``--thirdparty scripts``), so a checkout formatted here exports clean.
Prints one PASS/FAIL line per check; exits 1 when any fails.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = Path(__file__).resolve().parent / "zoo_settings"
REPO_PATHS = ("scripts", "bundle", "tests")
MAX_KB = 1024  # the Zoo's check-added-large-files --maxkb
FIX_HINT = "run `python -m bundle.lint --fix` in the checkout, then export again"

CheckResult = tuple[str, bool, str]

__all__ = ["format_checks", "hook_checks", "zoo_layout", "lint_export", "committed_files", "large_file_entries"]

# pre-commit hook id, module of pre-commit-hooks 4.6.0, its args in the Zoo's config, the files it gets
HOOKS: list[tuple[str, str, list[str], str]] = [
    ("end-of-file-fixer", "end_of_file_fixer", [], "text"),
    ("trailing-whitespace", "trailing_whitespace_fixer", [], "text-no-weights"),
    ("check-yaml", "check_yaml", [], "yaml"),
    ("check-docstring-first", "check_docstring_first", [], "python"),
    ("check-executables-have-shebangs", "check_executables_have_shebangs", [], "executable"),
    ("check-toml", "check_toml", [], "toml"),
    ("check-case-conflict", "check_case_conflict", [], "all"),
    ("check-added-large-files", "check_added_large_files", [f"--maxkb={MAX_KB}"], "all"),
    ("detect-private-key", "detect_private_key", [], "text"),
    ("forbid-new-submodules", "forbid_new_submodules", [], "all"),
    ("pretty-format-json", "pretty_format_json", ["--autofix", "--no-sort-keys", "--indent=4"], "json"),
    ("mixed-line-ending", "mixed_line_ending", [], "text"),
]


def _missing(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed: pip install -r requirements-dev.txt (the Zoo's lint pins)"
    return None


def _run(label: str, module: str, args: Sequence[str], cwd: Path) -> CheckResult:
    missing = _missing(module)
    if missing:
        return (label, False, missing)
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True)
    out = (result.stdout + result.stderr).strip()
    return (label, result.returncode == 0, out[-3000:] or "clean")


def format_checks(
    cwd: Path, paths: Sequence[str] = (".",), fix: bool = False, in_place: bool = False
) -> list[CheckResult]:
    """isort, black and flake8 as runtests.sh --codeformat runs them, from ``cwd`` over ``paths``. With
    ``in_place`` the Zoo's settings are passed explicitly (the checkout has its own pyproject.toml) and
    ``scripts`` is placed among the third-party packages, where the Zoo's layout puts it."""
    isort = ["--settings-path", str(SETTINGS / "setup.cfg"), "--src", str(ROOT), "--thirdparty", "scripts"]
    isort = isort if in_place else []
    black = ["--config", str(SETTINGS / "pyproject.toml")] if in_place else []
    flake8 = ["--config", str(SETTINGS / "setup.cfg")] if in_place else []
    check = [] if fix else ["--check"]
    results = [
        _run("isort", "isort", [*check, *(["--diff"] if not fix else []), *isort, *paths], cwd),
        _run("black", "black", ["--skip-magic-trailing-comma", *check, *black, *paths], cwd),
        _run("flake8", "flake8", [*flake8, *paths, "--count", "--statistics"], cwd),
    ]
    return results


def _is_text(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" not in f.read(8192)


def _select(files: list[Path], kind: str) -> list[Path]:
    if kind == "all":
        return files
    if kind == "yaml":
        return [f for f in files if f.suffix in (".yaml", ".yml")]
    if kind == "json":
        return [f for f in files if f.suffix == ".json"]
    if kind == "toml":
        return [f for f in files if f.suffix == ".toml"]
    if kind == "python":
        return [f for f in files if f.suffix == ".py"]
    text = [f for f in files if _is_text(f)]
    if kind == "executable":
        return [f for f in text if os.access(f, os.X_OK)]
    if kind == "text-no-weights":
        return [f for f in text if f.suffix not in (".ts", ".pt")]
    return text


def hook_checks(root: Path, under: Sequence[str] = ("models", "ci")) -> list[CheckResult]:
    """The Zoo's pre-commit hooks on the files under ``root/<under>``, as pre-commit runs them on a pull
    request (files staged in a git repository, each hook given the files of its type). Runs on a copy:
    the fixers rewrite what they would fix and exit 1, which is a FAIL here."""
    missing = _missing("pre_commit_hooks")
    if missing:
        return [("pre-commit hooks", False, missing)]
    results = []
    with tempfile.TemporaryDirectory(prefix="zoo_hooks_") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(root, copy, symlinks=True)
        git = ["git", "-c", "user.name=lint", "-c", "user.email=lint@localhost"]
        for cmd in (["init", "-q"], ["add", "-A"]):
            subprocess.run([*git, *cmd], cwd=copy, check=True, capture_output=True)
        files = sorted(p.relative_to(copy) for d in under for p in (copy / d).rglob("*") if p.is_file())
        files = [f for f in files if f.suffix != ".ipynb"]  # the config's global exclude
        for hook, module, args, kind in HOOKS:
            chosen = [str(f) for f in _select([copy / f for f in files], kind)]
            if not chosen:
                results.append((hook, True, "no files of its type"))
                continue
            rel = [str(Path(f).relative_to(copy)) for f in chosen]
            result = subprocess.run(
                [sys.executable, "-m", f"pre_commit_hooks.{module}", *args, *rel],
                cwd=copy,
                capture_output=True,
                text=True,
            )
            out = (result.stdout + result.stderr).strip()
            results.append((hook, result.returncode == 0, out[-2000:] or f"{len(rel)} files clean"))
    return results


def large_file_entries(bundle: Path) -> list[dict]:
    """The entries of the bundle's large_files.{yml,yaml,json} (the Zoo's CI reads the last one it finds)."""
    entries: list[dict] = []
    for name in ("large_files.json", "large_files.yaml", "large_files.yml"):
        if (bundle / name).is_file():
            entries = list((yaml.safe_load((bundle / name).read_text()) or {}).get("large_files") or [])
    return entries


def committed_files(bundle: Path) -> list[Path]:
    """The bundle's files a pull request commits: all but those its large_files.yml lists."""
    listed = {str(e.get("path")) for e in large_file_entries(bundle) if isinstance(e, dict)}
    return [p for p in sorted(bundle.rglob("*")) if p.is_file() and p.relative_to(bundle).as_posix() not in listed]


def zoo_layout(bundle: Path, work: Path, name: str, ci_test: Path | None = None) -> Path:
    """A model-zoo-like tree in ``work``: the Zoo's settings, ``models/<name>/`` with the committed files of
    ``bundle``, and ``ci/unit_tests/test_<name>.py``; returns its root."""
    root = work / "model-zoo"
    target = root / "models" / name
    for f in committed_files(bundle):
        dest = target / f.relative_to(bundle)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    shutil.copy2(SETTINGS / "setup.cfg", root / "setup.cfg")
    shutil.copy2(SETTINGS / "pyproject.toml", root / "pyproject.toml")
    if ci_test is not None:
        (root / "ci" / "unit_tests").mkdir(parents=True)
        shutil.copy2(ci_test, root / "ci" / "unit_tests" / f"test_{name}.py")
    return root


def lint_export(bundle: Path, name: str, ci_test: Path | None = None) -> list[CheckResult]:
    """isort, black, flake8 and the pre-commit hooks on an exported bundle, in the Zoo's layout."""
    with tempfile.TemporaryDirectory(prefix="zoo_lint_") as tmp:
        root = zoo_layout(bundle, Path(tmp), name, ci_test)
        results = format_checks(root) + hook_checks(root)
    return [(f"lint {label}", ok, detail if ok else f"{detail}\n({FIX_HINT})") for label, ok, detail in results]


def main(fix: bool = False, bundle: str | None = None, name: str | None = None, ci_test: str | None = None) -> None:
    """Check (or with ``fix``, format) the checkout's scripts/ bundle/ tests/, or check an exported bundle."""
    if bundle:
        path = Path(bundle).resolve()
        name = name or path.name
        # the export's dist/model_zoo_pr/ci/unit_tests/, or the ci/ beside models/ of a pull-request tree
        found = [Path(ci_test)] if ci_test else []
        found += [d / "ci" / "unit_tests" / f"test_{name}.py" for d in (path.parent / "model_zoo_pr", path.parents[1])]
        test = next((f for f in found if f.is_file()), None)
        results = lint_export(path, name, test)
    else:
        results = format_checks(ROOT, REPO_PATHS, fix=fix, in_place=True)
        if fix:
            results = results[2:]  # what flake8 still finds after formatting
    for label, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {detail}")
    if not all(ok for _, ok, _ in results):
        sys.exit(1)


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    fire_strict(main)
