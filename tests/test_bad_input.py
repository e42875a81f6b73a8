"""Bad input stops stage 1 before anything is written, with a message naming the case and the problem;
a data list without validation or labelled test lists gets them carved from training."""

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from scripts.data.checks import DataError, check_dataset
from scripts.data.lists import ensure_splits

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path, clean):
    """A private copy of the clean data set to break."""
    shutil.copytree(clean.parent, tmp_path / "data")
    path = tmp_path / "data" / "dataset.json"
    return path, json.loads(path.read_text())


def _case(data, i=0):
    path, content = data
    entry = content["training"][i]
    return path.parent / entry["image"], path.parent / entry["label"], Path(entry["image"]).name.split(".")[0]


def _stage1(tmp_path, dataset_dir, **overrides):
    workflow = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "train.yaml"),
        workflow_type="train",
        output_dir=str(tmp_path / "out"),
        ckpt_dir=str(tmp_path / "models"),
        dataset_dir=str(dataset_dir),
        num_workers=0,
        **{"epochs": 1, "delta_t": 1, "val_interval": 1, **overrides},
    )
    workflow.initialize()
    return workflow


def _rewrite(path, array, like):
    img = nib.load(like)
    nib.save(nib.Nifti1Image(array, img.affine), str(path))


def _expect_stop(tmp_path, data, *words):
    with pytest.raises(RuntimeError) as err:  # MONAI's config parser wraps the error it evaluated
        _stage1(tmp_path, data[0].parent)
    cause = err.value
    while cause is not None and not isinstance(cause, DataError):
        cause = cause.__cause__
    assert isinstance(cause, DataError), err.value
    for word in words:
        assert word in str(cause), str(cause)
    assert not (tmp_path / "out").exists() and not (tmp_path / "models").exists()  # nothing written


def test_missing_image(tmp_path, data):
    image, _, case = _case(data)
    image.unlink()
    _expect_stop(tmp_path, data, f"case {case}", "image file not found", str(image.name))


def test_missing_label(tmp_path, data):
    _, label, case = _case(data)
    label.unlink()
    _expect_stop(tmp_path, data, f"case {case}", "label file not found")


def test_truncated_nifti(tmp_path, data):
    image, _, case = _case(data)
    raw = gzip.decompress(image.read_bytes())
    image.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    _expect_stop(tmp_path, data, f"case {case}", "unreadable file", image.name)


def test_unreadable_file(tmp_path, data):
    _, label, case = _case(data)
    label.write_bytes(b"not a nifti at all")
    _expect_stop(tmp_path, data, f"case {case}", "unreadable file", label.name)


def test_shape_mismatch(tmp_path, data):
    _, label, case = _case(data)
    _rewrite(label, np.zeros((16, 16, 12), dtype=np.uint8), label)
    _expect_stop(tmp_path, data, f"case {case}", "image shape (16, 16, 16) != label shape (16, 16, 12)")


def test_label_values_outside_the_classes(tmp_path, data):
    _, label, case = _case(data)
    values = np.asarray(nib.load(label).dataobj).copy()
    values[0, 0, 0] = 3
    _rewrite(label, values, label)
    _expect_stop(tmp_path, data, f"case {case}", "label values [3] outside the 2 classes")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_infinite_intensities(tmp_path, data, bad):
    image, _, case = _case(data)
    values = np.asarray(nib.load(image).dataobj).astype(np.float32)
    values[1, 2, 3] = bad
    _rewrite(image, values, image)
    _expect_stop(tmp_path, data, f"case {case}", "1 NaN or infinite voxels")


def test_empty_data_list(tmp_path, data):
    path, content = data
    path.write_text(json.dumps({**content, "training": []}))
    _expect_stop(tmp_path, data, "the training list is empty")


def test_duplicate_case_ids(tmp_path, data):
    path, content = data
    path.write_text(json.dumps({**content, "validation": content["validation"] + content["training"][:1]}))
    _, _, case = _case(data)
    _expect_stop(tmp_path, data, "duplicate case ids", case)


def test_empty_label_is_data_not_an_error(tmp_path, data):
    _, label, _ = _case(data)
    _rewrite(label, np.zeros((16, 16, 16), dtype=np.uint8), label)
    assert check_dataset(data[0], num_classes=2) == str(data[0])


def test_label_values_are_checked_after_the_presets_mapping(tmp_path, data):
    from monai.transforms import MapLabelValued

    _, label, _ = _case(data)
    values = np.asarray(nib.load(label).dataobj).copy()
    values[values == 1] = 8  # a source that codes the organ 8, mapped to 1 by the preset
    _rewrite(label, values, label)
    with pytest.raises(DataError, match="label values \\[8\\]"):
        check_dataset(data[0], num_classes=2)
    mapping = [MapLabelValued(keys="label", orig_labels=[8], target_labels=[1])]
    assert check_dataset(data[0], num_classes=2, label_transforms=mapping) == str(data[0])


def test_training_list_only_gets_seeded_validation_and_test(tmp_path, data):
    path, content = data
    # a user's own data set: a training list, and MSD's unlabelled test images
    own = {k: v for k, v in content.items() if k not in ("validation", "test")}
    own["training"] = content["training"] + content["validation"] + content["test"]  # 10 cases
    own["test"] = [e["image"] for e in content["test"]]
    path.write_text(json.dumps(own))
    out = ensure_splits(path, tmp_path / "split.json", val_fraction=0.1, test_fraction=0.2, seed=3)
    split = json.loads(Path(out).read_text())
    ids = {k: [Path(e["image"]).name for e in split[k]] for k in ("training", "validation", "test")}
    # 10 cases: round(0.2 * 10) = 2 test, then round(0.1 * 8) = 1 validation (at least 1), 7 training
    assert [len(ids[k]) for k in ("training", "validation", "test")] == [7, 1, 2]
    every = ids["training"] + ids["validation"] + ids["test"]
    assert sorted(every) == sorted(Path(e["image"]).name for e in own["training"])  # disjoint, complete
    assert split["split"]["carved_test"] and split["split"]["carved_validation"]
    again = json.loads(Path(ensure_splits(path, tmp_path / "again.json", 0.1, 0.2, seed=3)).read_text())
    assert again["validation"] == split["validation"] and again["test"] == split["test"]  # seeded
    other = json.loads(Path(ensure_splits(path, tmp_path / "other.json", 0.1, 0.2, seed=4)).read_text())
    assert other["test"] != split["test"]
    # a data list with both lists is used as it is
    shutil.copy(tmp_path / "split.json", tmp_path / "full.json")
    assert ensure_splits(tmp_path / "full.json", tmp_path / "unused.json") == str(tmp_path / "full.json")
    assert not (tmp_path / "unused.json").exists()


def test_stage1_trains_on_a_training_list_only(tmp_path, data):
    """Today's failure: MONAI's 'Data list validation not specified'. Now the split is carved and recorded."""
    path, content = data
    own = {k: v for k, v in content.items() if k not in ("validation", "test")}
    own["training"] = content["training"] + content["validation"] + content["test"]
    path.write_text(json.dumps(own))
    workflow = _stage1(tmp_path, path.parent)
    split = tmp_path / "out" / "datalist_split.json"
    assert json.loads((tmp_path / "out" / "run.json").read_text())["dataset_json"] == str(split)
    assert len(workflow.train_dataset) == 7
