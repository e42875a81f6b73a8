"""Issue 25's bad inputs that crashed or ran anyway: each now ends the command with one last line naming
the file, the problem and the fix, and leaves nothing half-written behind."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"epochs": 1, "delta_t": 1, "val_interval": 1, "num_workers": 0}


@pytest.fixture
def data(tmp_path, clean):
    """A private copy of the clean 16^3 data set to break: (its folder, the first training entry)."""
    shutil.copytree(clean.parent, tmp_path / "data")
    folder = tmp_path / "data"
    return folder, json.loads((folder / "dataset.json").read_text())["training"][0]


def _run(cmd, cwd=ROOT, env=None):
    """(exit code, last non-empty line, whole output) of a command, stdout and stderr together."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=300)  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, lines[-1] if lines else "", result.stdout


# ---------------------------------------------------------------- the pipeline shows a stage's refusal


def test_the_pipeline_prints_a_stage_refusal_as_its_own_last_line_and_keeps_no_log(tmp_path, data):
    folder, entry = data
    label = folder / entry["label"]
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), dtype=np.uint8), img.affine), str(label))  # half the image
    work = tmp_path / "pipeline"
    overrides = {"dataset_dir": str(folder), **QUICK}
    rc, last, out = _run([sys.executable, "-m", "scripts.workflows.pipeline", "--work_dir", str(work),
                          "--overrides", json.dumps(overrides)])  # fmt: skip
    assert rc == 1
    # the stage's own line, not "RuntimeError: training failed ... its last line: ..." after a traceback
    assert last.startswith("DataError: ") and "image shape (16, 16, 16) != label shape (16, 16, 8)" in last, out
    assert str(label) in last and "fix:" in last
    assert "Traceback" not in out and "RuntimeError" not in out
    assert not work.exists()  # the refused stage ran nothing: no log of it, no folders made for it


def test_a_stage_that_crashed_keeps_its_log(tmp_path):
    from scripts.utils.errors import DEBUG_NOTE
    from scripts.workflows.progress import first_missing, refusal_of

    work = tmp_path / "work"
    made = first_missing(work / "logs")
    assert made == work
    (work / "logs").mkdir(parents=True)
    crash = work / "logs" / "stage1.log"
    crash.write_text("Traceback (most recent call last):\nZeroDivisionError: division by zero\n")
    assert refusal_of(crash, made) is None and crash.is_file()  # the traceback is what the user needs
    refused = work / "logs" / "prune.log"
    refused.write_text(f"INFO starting\n{DEBUG_NOTE}\nInputError: epochs 3 < delta_t 10; fix: --epochs 10\n")
    assert refusal_of(refused, made) == "InputError: epochs 3 < delta_t 10; fix: --epochs 10"
    assert not refused.exists() and crash.is_file()  # the other stage's log stays, so does its folder


# ---------------------------------------------------------------- JSON files as users and crashes leave them


def test_a_subset_datalist_cut_mid_write_is_refused_in_one_last_line(tmp_path, clean):
    subset_dir = tmp_path / "prune"
    subset_dir.mkdir()
    content = {**json.loads(clean.read_text()), "pruning": {"stage1_epochs": 2, "num_cases": 6}}
    text = json.dumps(content, indent=2)
    cut = subset_dir / "subset_datalist.json"
    cut.write_text(text[: len(text) // 2])  # what a copy interrupted half-way leaves
    rc, last, out = _run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                          "['configs/train.yaml','configs/retrain.yaml']", "--subset_dir", str(subset_dir),
                          "--output_dir", str(tmp_path / "out"), "--ckpt_dir", str(tmp_path / "models")])  # fmt: skip
    assert rc == 1
    assert last.startswith(f"InputError: {cut}: not valid JSON (") and "it was cut mid-write" in last, out
    assert "fix: export the subset again (python -m monai.bundle run pruning" in last
    assert "Traceback" not in out and not (tmp_path / "out").exists()


def test_a_data_list_with_a_utf8_byte_order_mark_is_read_everywhere(tmp_path, data):
    from scripts.data.checks import scan_dataset
    from scripts.data.combine import read_source
    from scripts.data.lists import ensure_splits, image_list, labelled_cases, load_datalist
    from scripts.data.plan import classes_of

    folder, _ = data
    path = folder / "dataset.json"
    content = json.loads(path.read_text())
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # what Notepad's "UTF-8 with BOM" saves
    n = {k: len(content[k]) for k in ("training", "validation", "test")}
    assert classes_of(path) == 2
    assert len(scan_dataset(path, 2).cases) == sum(n.values())  # every labelled case checked
    assert len(load_datalist(path, "training")) == n["training"]
    assert len(labelled_cases(path)) == sum(n.values())
    assert ensure_splits(path, tmp_path / "split.json") == str(path)  # it has its validation and test lists
    assert len(image_list(path)) == n["test"]
    assert len(read_source("a", folder)) == sum(n.values())


def test_a_data_list_that_is_not_json_names_where_it_stops(tmp_path):
    from scripts.data.lists import load_datalist
    from scripts.utils.errors import InputError

    path = tmp_path / "dataset.json"
    path.write_text('{"training": [{"image": "a.nii.gz", "label": "b.nii.gz"},]}')  # a trailing comma
    with pytest.raises(InputError) as err:
        load_datalist(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not valid JSON (") and "(Expecting value, line 1 column 58)" in message
    assert "cut mid-write" not in message and "fix: repair the file" in message


# ---------------------------------------------------------------- only the embedded set's folder is generated

TINY_SET = json.dumps({"num_train": 4, "num_val": 1, "num_test": 1, "shape": [16, 16, 16]})


def test_a_dataset_dir_that_does_not_exist_is_refused_not_filled_with_synthetic_data(tmp_path):
    missing = tmp_path / "nas" / "MyTask"  # a mistyped path, or a share that is not mounted
    rc, last, out = _run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                          "configs/train.yaml", "--dataset_dir", str(missing), "--synthetic", TINY_SET,
                          "--output_dir", str(tmp_path / "out"), "--ckpt_dir", str(tmp_path / "models"),
                          *(f"--{k}={v}" for k, v in QUICK.items())])  # fmt: skip
    assert rc == 1
    assert last.startswith(f"InputError: --dataset_dir {missing}: no such folder"), out
    assert "fix: give the folder that holds your dataset.json, or --dataset_json FILE" in last
    assert not (tmp_path / "nas").exists() and not (tmp_path / "out").exists()


def test_an_empty_dataset_dir_is_refused_and_the_embedded_folder_still_generated(tmp_path):
    from monai.bundle import ConfigWorkflow
    from scripts.utils.errors import input_error_in

    def initialize(**settings):
        workflow = ConfigWorkflow(config_file=str(ROOT / "configs" / "train.yaml"), workflow_type="train",
                                  synthetic=json.loads(TINY_SET), **QUICK, **settings)  # fmt: skip
        workflow.initialize()

    empty = tmp_path / "mnt" / "MyTask"
    empty.mkdir(parents=True)  # what an unmounted mount point looks like
    with pytest.raises(Exception) as err:
        initialize(dataset_dir=str(empty), output_dir=str(tmp_path / "out"), ckpt_dir=str(tmp_path / "models"))
    message = str(input_error_in(err.value))
    assert message.startswith(f"--dataset_dir {empty}: no dataset.json in this folder (and it is empty")
    assert list(empty.iterdir()) == [] and not (tmp_path / "out").exists()
    # the default, <bundle_root>/data/synthetic, is generated on first use
    initialize(bundle_root=str(tmp_path / "bundle"))
    assert len(json.loads((tmp_path / "bundle" / "data" / "synthetic" / "dataset.json").read_text())["training"]) == 4


# ---------------------------------------------------------------- run from another folder, as a Zoo user does


@pytest.mark.parametrize("config", ["train.yaml", "inference.yaml"])
def test_a_run_from_another_folder_with_bundle_root_alone_says_how_in_one_line(tmp_path, config):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(ROOT / "configs" / config),
           "--bundle_root", str(ROOT), "--dataset_dir", str(tmp_path / "none")]  # fmt: skip
    if config == "inference.yaml":
        cmd += ["--checkpoint", str(tmp_path / "no.pt")]  # train.yaml takes no --checkpoint: refused since 0.7.0
    result = subprocess.run(cmd, cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=300)  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert result.returncode == 1
    assert lines[-1] == (
        f"InputError: the bundle's python package (scripts) is not on Python's path in {elsewhere}: MONAI adds "
        "the bundle folder to it only after `initialize`, which needs it; fix: run the command inside the bundle "
        f"folder, or prefix it with PYTHONPATH={ROOT}"
    ), result.stdout[-3000:]
    assert "Traceback" not in result.stdout
    if config == "train.yaml":  # the fix it names works: the run goes on to its own checks (the data folder)
        rc, last, out = _run(cmd, cwd=elsewhere, env={"PYTHONPATH": str(ROOT)})
        assert rc == 1 and last.startswith(f"InputError: --dataset_dir {tmp_path / 'none'}: no such folder"), out
