"""Command-line tools refuse an option they do not take before anything runs (scripts/utils/cli.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from scripts.utils.cli import fire_strict, unknown_options
from scripts.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _recording_tool(calls: list):
    """A command taking three options that records each call in ``calls``."""

    def tool(work_dir: str = "runs/x", dynamic: bool = False, overrides: dict | None = None) -> str:
        calls.append((work_dir, dynamic, overrides))
        return "ran"

    return tool


def test_unknown_options_by_hand() -> None:
    tool = _recording_tool([])
    args = ["--work_dir", "a", "--work-dir=b", "--nodynamic", "--dynamic", "--overrides", "{}", "pos", "-w"]
    assert unknown_options(tool, args) == []
    assert unknown_options(tool, ["--work_dir", "a", "--dataset_dir", "d", "--epochs=3"]) == [
        "--dataset_dir",
        "--epochs",
    ]
    assert unknown_options(tool, ["--", "--trace", "--verbose"]) == []  # fire's own flags after "--"

    def open_tool(**settings: object) -> None:
        """Takes any option."""

    assert unknown_options(open_tool, ["--anything", "1"]) == []


def test_an_unknown_option_is_refused_before_the_command_runs() -> None:
    calls: list = []

    tool = _recording_tool(calls)

    with pytest.raises(InputError) as err:
        fire_strict(tool, ["--work_dir", "w", "--dataset_dir", "data/Mine"], name="pipeline")
    assert calls == []
    message = str(err.value)
    assert message.startswith("pipeline: unknown option --dataset_dir")
    assert "--overrides \"{'dataset_dir': ...}\"" in message
    assert "--work_dir, --dynamic, --overrides" in message

    with pytest.raises(InputError, match="did you mean --dynamic"):
        fire_strict(tool, ["--dynamc", "True"], name="pipeline")
    assert calls == []

    assert fire_strict(tool, ["--work_dir", "w", "--nodynamic"], name="pipeline", serialize=lambda _: None) == "ran"
    assert calls == [("w", False, None)]


def test_sub_commands_are_checked_against_the_chosen_one() -> None:
    calls: list = []

    def make(top: int = 5) -> int:
        calls.append(top)
        return top

    def apply(path: str = "") -> str:
        return path

    with pytest.raises(InputError, match="review make: unknown option --path"):
        fire_strict({"make": make, "apply": apply}, ["make", "--path", "p"], name="review")
    assert fire_strict({"make": make, "apply": apply}, ["make", "--top", "3"], name="review") == 3
    assert calls == [3]


def test_help_after_other_options_shows_help_and_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list = []

    tool = _recording_tool(calls)

    with pytest.raises(SystemExit) as done:
        fire_strict(tool, ["--work_dir", "w", "--help"], name="pipeline")
    assert done.value.code == 0
    assert calls == []
    shown = capsys.readouterr()
    assert "--work_dir=WORK_DIR" in shown.out + shown.err


def test_the_pipeline_refuses_a_bundle_setting_given_as_its_own_option(tmp_path: Path) -> None:
    work = tmp_path / "pipeline"
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.workflows.pipeline", "--work_dir", str(work), "--dataset_dir", "data/Mine"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("InputError: python -m scripts.workflows.pipeline: unknown option --dataset_dir")
    assert "--overrides" in last
    assert not work.exists()  # nothing trained, nothing written
