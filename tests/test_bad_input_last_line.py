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
