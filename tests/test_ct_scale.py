"""The CT-size measurement's pieces on tiny inputs (scripts/experiments/ct_data.py, ct_scale.py): the generated
set is what the bundle reads as CT, and the log and /proc readings are those of hand-made inputs."""

import json
import os
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
from scripts.experiments.ct_data import case_spacing, generate_ct_dataset
from scripts.experiments.ct_scale import epoch_seconds, process_tree, tree_memory


def test_a_tiny_ct_set_is_int16_hounsfield_with_an_organ_label(tmp_path):
    path = generate_ct_dataset(tmp_path / "ct", num_cases=2, shape=(32, 32, 20), seed=1)
    content = json.loads(path.read_text())
    assert content["modality"] == {"0": "CT"} and content["labels"] == {"0": "background", "1": "organ"}
    assert [e["image"] for e in content["training"]] == ["./imagesTr/ct_0000.nii.gz", "./imagesTr/ct_0001.nii.gz"]
    image = nib.load(tmp_path / "ct" / "imagesTr" / "ct_0001.nii.gz")
    label = np.asarray(nib.load(tmp_path / "ct" / "labelsTr" / "ct_0001.nii.gz").dataobj)
    data = np.asarray(image.dataobj)
    assert image.get_data_dtype() == np.int16 and data.shape == (32, 32, 20) and label.dtype == np.uint8
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")  # as DICOM converters write CT
    np.testing.assert_allclose(nib.affines.voxel_sizes(image.affine), case_spacing(1, 1))
    assert 0 < label.mean() < 0.2 and data.min() <= -900  # an organ inside a body in air
    assert abs(np.median(data[label > 0]) - 110) < 40  # the organ at about 110 HU
    stamp = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert generate_ct_dataset(tmp_path / "ct", num_cases=2, shape=(32, 32, 20), seed=1).stat().st_mtime_ns == stamp


def test_epoch_seconds_reads_the_trainers_lines_apart_from_the_validators(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(
        "2026-12-03 10:12:55,697 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[1] Complete. "
        "Time taken: 00:00:11.779\n"
        "2026-12-03 10:27:50,013 - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[2] Complete. "
        "Time taken: 00:14:33.223\n"
        "2026-12-03 10:27:50,114 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[2] Complete. "
        "Time taken: 01:14:54.416\n"
    )
    assert epoch_seconds(log) == [11.8, 3600 + 14 * 60 + 54.4]
    assert epoch_seconds(log, "SupervisedEvaluator") == [14 * 60 + 33.2]


def test_the_process_tree_holds_a_child_and_its_memory(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; x = b'x' * (200 * 2**20); time.sleep(30)"])
    try:
        time.sleep(1.5)
        assert child.pid in process_tree(os.getpid())
        pss, rss, n = tree_memory(child.pid)
        assert n == 1 and 200 * 2**20 < pss <= rss  # the 200 MiB it holds, not shared with anyone
    finally:
        child.kill()
        child.wait()
