"""Issue 16's bad inputs: each refused before anything is trained or written, with the case, the file, the
problem and the fix in the message (the last line a terminal shows), or warned about naming the case; the
inference list skips an unusable image and goes on."""

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from scripts.data.checks import DataError, DataWarning, scan_dataset
from scripts.data.lists import image_list
from scripts.data.preflight import check_run, check_writable
from scripts.data.record import DynamicsRecord, read_dynamics
from scripts.utils.errors import InputError, input_error_in

ROOT = Path(__file__).resolve().parents[1]
TINY = {"epochs": 1, "delta_t": 1, "val_interval": 1, "num_workers": 0}


def _save(path, array, affine):
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _array(path):
    return np.asarray(nib.load(path).dataobj)


def _initialize(tmp_path, dataset_dir, **overrides):
    settings = {"output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "models"), **TINY, **overrides}
    workflow = ConfigWorkflow(config_file=str(ROOT / "configs" / "train.yaml"), workflow_type="train",
                              dataset_dir=str(dataset_dir), **settings)  # fmt: skip
    workflow.initialize()
    return workflow


def _refused(tmp_path, dataset_dir, *words, **overrides):
    """Stage 1's initialize raises an InputError naming ``words``; nothing is written."""
    with pytest.raises(Exception) as err:
        _initialize(tmp_path, dataset_dir, **overrides)
    error = input_error_in(err.value)
    assert error is not None, err.value
    for word in words:
        assert word in str(error), str(error)
    assert not (tmp_path / "out").exists() and not (tmp_path / "models").exists()
    return str(error)


def _bundle_last_line(tmp_path, dataset_dir, *args, cwd=ROOT, env=None):
    """The real `python -m monai.bundle run training`: (exit code, last line printed, whole output)."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(ROOT / "configs/train.yaml"),
           "--dataset_dir", str(dataset_dir), "--output_dir", str(tmp_path / "out"), "--ckpt_dir",
           str(tmp_path / "models"), "--num_workers", "0", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=300)  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, lines[-1], result.stdout


# ---------------------------------------------------------------- the data set (stage 1's checks' pass)


def test_image_and_label_with_different_affines_is_refused_in_one_last_line(tmp_path, data):
    path, _, label, case = data
    affine = nib.load(label).affine.copy()
    affine[0, 0] = -1.0  # the same shape, flipped along x: LAS instead of RAS
    _save(label, _array(label), affine)
    rc, last, out = _bundle_last_line(tmp_path, path.parent, "--epochs", "1", "--delta_t", "1", "--val_interval", "1")
    assert rc == 1
    assert last.startswith("DataError: ") and f"case {case}" in last and str(label) in last
    assert "affines differ (orientation RAS vs LAS" in last and "fix:" in last
    assert "Traceback" not in out and not (tmp_path / "out").exists() and not (tmp_path / "models").exists()


@pytest.mark.slow  # a second real bundle run (~20 s on a busy machine)
def test_debug_keeps_the_traceback(tmp_path, data):
    path, _, label, _ = data
    affine = nib.load(label).affine.copy()
    affine[0, 0] = -1.0
    _save(label, _array(label), affine)
    rc, _, out = _bundle_last_line(tmp_path, path.parent, "--epochs", "1", "--delta_t", "1", "--val_interval", "1",
                                   env={"DAD_DEBUG": "1"})  # fmt: skip
    assert rc == 1 and "Traceback" in out and "Failed to evaluate" in out


def test_two_channel_image_with_one_input_channel(tmp_path, data):
    path, image, _, case = data
    values = _array(image)
    _save(image, np.stack([values, values], axis=-1), nib.load(image).affine)
    _refused(tmp_path, path.parent, f"case {case}", "image has 2 channels", "in_channels 1", str(image),
             "--network_def#in_channels 2")  # fmt: skip


def test_zero_length_dimension(tmp_path, data):
    path, image, _, case = data
    _save(image, np.zeros((16, 0, 16), dtype=np.float32), nib.load(image).affine)
    _refused(tmp_path, path.parent, f"case {case}", "has an empty dimension, shape (16, 0, 16)", str(image))


def test_image_smaller_than_the_patch_and_nothing_pads(tmp_path, data):
    # 16^3 images, a 32^3 patch and the plan's padding replaced by none
    message = _refused(tmp_path, data[0].parent, "smaller than patch_size [32, 32, 32]", "case ", "size [16, 16, 16]",
                       ".nii.gz", "fix:", patch_size=[32, 32, 32], spacing_transforms=[])  # fmt: skip
    assert "10 of 10 cases" in message


def test_image_smaller_than_the_patch_is_padded_by_the_plan(tmp_path, data):
    workflow = _initialize(tmp_path, data[0].parent, patch_size=[32, 32, 32])
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    # counted over the 6 training cases the plan reads (the 2 validation and 2 test cases are checked, not planned)
    assert plan["plan"]["padding"] == {"pad_to_patch": True, "patch_size": [32, 32, 32], "cases_smaller": 6}
    item = workflow.train_dataset[0][0]  # the first random crop of the first case
    assert tuple(item["image"].shape) == (1, 32, 32, 32)


@pytest.mark.parametrize("kind", ["huge", "constant"])
def test_intensities_a_normalisation_flattens_are_warned_about(tmp_path, data, kind):
    path, image, _, case = data
    values = _array(image).astype(np.float32)
    if kind == "huge":
        values[0, 0, 0] = 1e30
    else:
        values[:] = 7.0
    _save(image, values, nib.load(image).affine)
    with pytest.warns(DataWarning) as caught:
        scan_dataset(path, num_classes=2)
    text = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    words = "overflow float32" if kind == "huge" else "constant image (every voxel 7)"
    assert any(f"case {case}:" in t and words in t and str(image) in t for t in text), text


def test_the_same_image_under_two_case_ids_is_warned_about(tmp_path, data):
    path, image, _, case = data
    other = json.loads(path.read_text())["training"][1]
    copy = path.parent / other["image"]
    shutil.copy(image, copy)  # a copied file; the labels stay as they were
    with pytest.warns(DataWarning, match=f"the same image as case {case}") as caught:
        scan_dataset(path, num_classes=2)
    assert str(copy) in str(caught[0].message) and Path(other["image"]).name.split(".")[0] in str(caught[0].message)


def test_a_clean_data_set_warns_about_nothing(clean):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert len(scan_dataset(clean, num_classes=2).cases) == 10


# ---------------------------------------------------------------- run settings, output folders


def test_run_shorter_than_a_window_is_refused_in_one_last_line(tmp_path, data):
    rc, last, out = _bundle_last_line(tmp_path, data[0].parent, "--epochs", "3")
    assert rc == 1
    assert last == ("InputError: epochs 3 < delta_t 10: not one DAD window fits, so no moving distance, stop rule "
                    "or subset; fix: --epochs 10 (or more), or --delta_t 3 (or less)")  # fmt: skip
    assert not (tmp_path / "out").exists() and not (tmp_path / "models").exists()


def test_run_shorter_than_val_interval_is_refused():
    with pytest.raises(InputError, match=r"epochs 3 < val_interval 5: the model would never be validated"):
        check_run(epochs=3, val_interval=5, delta_t=2)
    check_run(epochs=10, val_interval=5, delta_t=10)  # one window, two validations: fine


def test_output_folder_through_a_file(tmp_path, data):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(Exception) as err:
        _initialize(tmp_path, data[0].parent, output_dir=str(tmp_path / "a_file" / "out"))
    message = str(input_error_in(err.value))
    assert input_error_in(err.value) is not None, repr(err.value)
    assert f"output_dir {tmp_path / 'a_file' / 'out'}: {tmp_path / 'a_file'} is a file, not a folder" in message
    assert "fix: choose another --output_dir" in message
    assert not (tmp_path / "models").exists()


def test_read_only_output_folder(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # root may write anywhere, so the read-only place is what os.access reports (as on a read-only mount)
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    with pytest.raises(InputError, match=f"ckpt_dir {locked / 'models'}: {locked} is read-only"):
        check_writable({"output_dir": tmp_path / "out", "ckpt_dir": locked / "models"})
    assert not (locked / "models").exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the dynamics record


def _record(tmp_path):
    record = DynamicsRecord(["a", "b"], ["x", "x"], num_classes=2)
    record.add_epoch(1, "patches", ["a", "b"], np.array([[[2], [4], [0]], [[1], [4], [0]]], dtype=float))
    return record.save(tmp_path / "dynamics.csv")


def test_dynamics_record_cut_mid_line(tmp_path):
    path = _record(tmp_path)
    text = path.read_text()
    path.write_text(text[: text.rindex(",") - 2])  # the last row (line 3) loses its last cells and its newline
    with pytest.raises(DataError, match=rf"{path}, line 3: the row ends without its newline") as err:
        read_dynamics(path)
    assert "fix:" in str(err.value)
    lines = text.splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][: lines[1].rindex(",")] + "\n" + lines[2])  # line 2 short, newline kept
    with pytest.raises(DataError, match=rf"{path}, line 2: the row ends before column 'dice_class1'"):
        read_dynamics(path)


def test_dynamics_record_with_a_duplicate_case_epoch_row(tmp_path):
    path = _record(tmp_path)
    with path.open() as f:
        rows = list(csv.reader(f))
    with path.open("a", newline="") as f:
        csv.writer(f).writerow(rows[1])  # case a, epoch 1 again, as line 4
    with pytest.raises(DataError, match=rf"{path}, line 4: a second row for case a at epoch 1 \(the first is line 2\)"):
        DynamicsRecord.load(path)


# ---------------------------------------------------------------- inference: skip, say so, go on


def test_inference_list_skips_unusable_images_and_goes_on(tmp_path, clean, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    images = sorted((clean.parent / "imagesTs").glob("*.nii.gz"))
    good = folder / images[0].name
    shutil.copy(images[0], good)
    truncated, two_channel = folder / "trunc_0001.nii.gz", folder / "twoch_0002.nii.gz"
    raw = gzip.decompress(images[1].read_bytes())
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    values = _array(images[0])
    _save(two_channel, np.stack([values, values], axis=-1), nib.load(images[0]).affine)
    with caplog.at_level("WARNING", logger="data"):
        entries = image_list(folder)
    assert [e["image"] for e in entries] == [str(good)]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped case")]
    assert len(skipped) == 2
    assert any("trunc_0001" in m and "unreadable" in m and str(truncated) in m for m in skipped)
    assert any("twoch_0002" in m and "shape (16, 16, 16, 2)" in m and str(two_channel) in m for m in skipped)
    truncated.rename(folder / "only.nii")  # a folder of nothing usable is an error
    good.unlink()
    two_channel.unlink()
    with pytest.raises(InputError, match="none of the 1 images can be segmented"):
        image_list(folder)


# ---------------------------------------------------------------- the pipeline


def test_pipeline_whose_stages_cannot_follow_each_other_is_refused_before_any_stage(tmp_path):
    work = tmp_path / "pipe"
    cmd = [sys.executable, "-m", "scripts.workflows.pipeline", "--work_dir", str(work), "--overrides", "{'epochs': 3}"]
    result = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    last = [line for line in result.stdout.splitlines() if line.strip()][-1]
    assert result.returncode == 1
    assert last.startswith("InputError: stage 1 cannot feed the prune stage: epochs 3 < delta_t 10")
    assert not work.exists()


def test_pipeline_refuses_a_rate_budget_or_preset_it_cannot_run(tmp_path):
    from scripts.workflows.pipeline import run_pipeline

    for kwargs, words in (
        ({"rate": 1.5}, "--rate 1.5"),
        ({"budget": "twice"}, "--budget 'twice'"),
        ({"preset": "configs/presets/nope.yaml"}, "--preset configs/presets/nope.yaml: no such file"),
        ({"seeds": []}, "--seeds is empty"),
    ):
        with pytest.raises(InputError, match=words.replace("(", r"\(").replace(".", r"\.")):
            run_pipeline(work_dir=str(tmp_path / "pipe"), **kwargs)
    assert not (tmp_path / "pipe").exists()


def test_a_folder_of_images_without_dataset_json_is_refused_not_filled_with_synthetic_data(tmp_path, clean):
    folder = tmp_path / "My Task"
    shutil.copytree(clean.parent / "imagesTr", folder / "imagesTr")
    before = sorted(p.name for p in folder.rglob("*"))
    _refused(tmp_path, folder, f"--dataset_dir {folder}: no dataset.json in this folder", "--dataset_json FILE")
    assert sorted(p.name for p in folder.rglob("*")) == before  # nothing generated into the user's folder
