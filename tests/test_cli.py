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


def test_single_dash_options_are_checked_as_fire_reads_them() -> None:
    calls: list = []
    tool = _recording_tool(calls)

    # fire takes -name as --name: a misspelt one ran the defaults before fire complained
    with pytest.raises(InputError, match="pipeline: unknown option -dataset_dirr") as err:
        fire_strict(tool, ["-dataset_dirr", "mine"], name="pipeline")
    assert "--overrides \"{'dataset_dir': ...}\"" in str(err.value)  # the bundle setting it is close to
    with pytest.raises(InputError, match="unknown option -x"):  # no option starts with x
        fire_strict(tool, ["-x", "1"], name="pipeline")
    assert calls == []
    # a known name and fire's one-letter shortcut still work; a negative number is a value
    fire_strict(tool, ["-work_dir", "a", "-d"], name="pipeline", serialize=lambda _: None)
    fire_strict(tool, ["-w", "-1"], name="pipeline", serialize=lambda _: None)
    assert calls == [("a", True, None), (-1, False, None)]

    def two(dataset: str = "", dynamic: bool = False) -> None:
        calls.append(dataset)

    with pytest.raises(InputError, match="unknown option -d \\(did you mean --dataset or --dynamic"):
        fire_strict(two, ["-d", "x"], name="tool")  # fire cannot tell which


def test_the_audit_refuses_misspelt_bundle_settings_before_it_runs(tmp_path: Path) -> None:
    out = tmp_path / "audit"
    cmd = [sys.executable, "-m", "scripts.workflows.audit", "--dataset_json", str(tmp_path / "none.json"),
           "--output_dir", str(out), "--fold", "3", "--epoch", "8"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("InputError: python -m scripts.workflows.audit: unknown settings --fold (did you mean")
    assert "--epoch (did you mean --epochs" in last and "configs/train.yaml" in last and "fix:" in last
    assert not out.exists()


def test_settings_the_configs_take_pass_the_audit_check() -> None:
    from scripts.workflows.audit import check_fold_settings

    # a config id, a nested id, a new argument of a component (UNet's dropout), monai.bundle run's own option
    fine = {"epochs": 8, "synthetic#num_train": 6, "network_def#dropout": 0.1, "tracking": "mlflow"}
    check_fold_settings(fine, ["configs/presets/hippocampus.yaml"], None)
    with pytest.raises(InputError, match="--synthetic#num_trian \\(did you mean --synthetic#num_train "):
        check_fold_settings({"synthetic#num_trian": 6}, [], None)  # a plain dict takes only its own keys


def test_pipeline_overrides_that_no_stage_reads_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import scripts.workflows.pipeline as pipeline

    def no_stage(*args: object, **kwargs: object) -> int:
        raise AssertionError("a stage ran")

    monkeypatch.setattr(pipeline, "run_logged", no_stage)
    with pytest.raises(InputError, match="--overrides: unknown setting 'epoch' \\(did you mean 'epochs'"):
        pipeline.run_pipeline(work_dir=str(tmp_path / "work"), overrides={"epoch": 8})
    assert not (tmp_path / "work").exists()


def test_review_make_refuses_a_misspelt_setting(tmp_path: Path) -> None:
    from scripts.workflows.review import make_review

    (tmp_path / "ranking.csv").write_text("rank,case_id\n1,c1_0000\n")
    with pytest.raises(InputError, match="review make: unknown setting --patch_sise \\(did you mean --patch_size"):
        make_review(str(tmp_path), patch_sise=[16, 16, 16])
    assert not (tmp_path / "review").exists()


def test_the_bundle_command_line_is_read_as_monai_bundle_run_reads_it() -> None:
    from scripts.utils.bundle_keys import command_line_settings

    main = str(Path("venv/lib/python3.11/site-packages/monai/bundle/__main__.py"))
    argv = [main, "run", "training", "--config_file", "['configs/train.yaml', 'configs/dynamic.yaml']",
            "-dataset_dirr", "mine", "--lr=-0.1", "--resume", "--epochs", "-3", "--run_id", "training"]  # fmt: skip
    files, settings = command_line_settings(argv)
    assert files == ["configs/train.yaml", "configs/dynamic.yaml"]
    assert settings == ["dataset_dirr", "lr", "resume", "epochs"]  # -3 is a value; run_id names what runs
    assert command_line_settings([main, "run", "--config_file", '["a.yaml"]', "--x", "1"]) == (["a.yaml"], ["x"])
    assert command_line_settings([main, "run", "--config_file", "a.yaml", "--", "--verbose"]) == (["a.yaml"], [])
    assert command_line_settings(["/usr/bin/pytest", "run", "--x", "1"]) is None  # not monai.bundle's own
    assert command_line_settings([main, "ckpt_export", "--x", "1"]) is None


def test_a_misspelt_setting_of_the_bundle_command_is_refused_before_it_trains(tmp_path: Path) -> None:
    out, models = tmp_path / "out", tmp_path / "models"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.yaml",
           "-dataset_dirr", "mine", "--output_dir", str(out), "--ckpt_dir", str(models)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("InputError: python -m monai.bundle run: unknown setting --dataset_dirr (did you mean "
                           "--dataset_dir"), last  # fmt: skip
    assert "configs/train.yaml" in last and "fix:" in last
    assert not out.exists() and not models.exists()


def test_a_required_option_left_out_is_named_in_one_line() -> None:
    from scripts.utils.cli import missing_options

    def tool(dataset_json: str, out: str, rate: float = 0.3, **settings: object) -> None:
        raise AssertionError("ran")

    assert missing_options(tool, ["-dataset_dirr", "mine"]) == ["dataset_json", "out"]
    assert missing_options(tool, ["--dataset_json=a.json", "--out", "o"]) == []
    assert missing_options(tool, ["a.json", "o"]) == []  # by position: fire fills them in order
    assert missing_options(tool, ["--rate", "0.5", "a.json"]) == []
    with pytest.raises(
        InputError, match="tool: --dataset_json, --out must be given \\(options given: -dataset_dirr\\)"
    ):
        fire_strict(tool, ["-dataset_dirr", "mine"], name="tool")


def test_monai_tracking_settings_pass_with_tracking_and_only_with_it() -> None:
    from scripts.utils.bundle_keys import check_command_line

    main = "/x/monai/bundle/__main__.py"
    base = [main, "run", "--config_file", "configs/train.yaml"]
    check_command_line([*base, "--tracking", "mlflow", "--tracking_uri", "file:/tmp/m", "--run_name", "a"])
    with pytest.raises(InputError, match="unknown setting --tracking_uri"):
        check_command_line([*base, "--tracking_uri", "file:/tmp/m"])
