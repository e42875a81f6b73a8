"""Issue 25's softer bad inputs: each now named (a warning naming the case and the file) or offered its fix:
a label value used for "unlabelled", qform and sform that disagree, a label with no background, an image
with NaN given to inference."""

import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scripts.data.checks import DataError, DataWarning, scan_dataset
from scripts.data.lists import image_list

ROOT = Path(__file__).resolve().parents[1]


def _cautions(path, *args):
    """The DataWarning messages of a checks' pass that passes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fingerprint = scan_dataset(path, 2, *args)
    return fingerprint, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_a_label_value_for_unlabelled_voxels_is_offered_a_background_mapping(tmp_path, data):
    from scripts.data.transforms import to_background

    path, _, label, case = data
    img = nib.load(label)
    values = np.asarray(img.dataobj).astype(np.uint16)
    values[:4] = 65535  # a slab of "not annotated" voxels, as some tools save
    nib.save(nib.Nifti1Image(values, img.affine), str(label))
    with pytest.raises(DataError) as err:
        scan_dataset(path, 2)
    message = str(err.value)
    assert f"case {case}: label values [65535] outside the 2 classes 0..1" in message and str(label) in message
    assert 'fix: if [65535] mark unlabelled or ignored voxels, --label_to_background "[65535]" reads them' in message
    assert "; if they are classes, --num_classes 65536" in message
    # with the mapping the case passes, and the slab is background: not in the plan's foreground sample
    fingerprint, _ = _cautions(path, to_background([65535]))
    stats = next(c for c in fingerprint.cases if c.case_id == case)
    image = np.asarray(nib.load(path.parent / json.loads(path.read_text())["training"][0]["image"]).dataobj)
    foreground = image[values == 1].astype(np.float64)  # the sample draws from these voxels only (0.7.0's rule)
    assert stats.foreground.size == 10_000 and np.isin(stats.foreground, foreground).all()
    assert not np.isin(image[values == 65535].astype(np.float64), stats.foreground).any()


def test_label_to_background_reaches_the_training_transforms(tmp_path, data):
    from monai.bundle import ConfigWorkflow

    path, _, label, case = data
    img = nib.load(label)
    values = np.asarray(img.dataobj).astype(np.uint16)
    values[:4] = 65535
    nib.save(nib.Nifti1Image(values, img.affine), str(label))
    workflow = ConfigWorkflow(config_file=str(ROOT / "configs" / "train.yaml"), workflow_type="train",
                              dataset_dir=str(path.parent), output_dir=str(tmp_path / "out"),
                              ckpt_dir=str(tmp_path / "models"), label_to_background=[65535], epochs=1, delta_t=1,
                              val_interval=1, num_workers=0, patch_size=[16, 16, 16])  # fmt: skip
    workflow.initialize()  # the checks pass
    deterministic = workflow.parser.get_parsed_content("train#deterministic_transforms")
    entry = next(d for d in workflow.parser.get_parsed_content("train_datalist") if d["case_id"] == case)
    from monai.transforms import Compose

    out = Compose(deterministic)(dict(entry))
    assert set(np.unique(np.asarray(out["label"])).tolist()) <= {0.0, 1.0}
    assert int((np.asarray(out["label"]) == 1).sum()) == int((values == 1).sum())


def test_an_all_foreground_label_is_warned_about_naming_the_case(data):
    path, _, label, case = data
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.ones(img.shape, np.uint8), img.affine), str(label))
    _, cautions = _cautions(path)
    named = [c for c in cautions if "every voxel of the label is foreground" in c]
    assert len(named) == 1 and named[0].startswith(f"case {case}: ") and str(label) in named[0]


def test_a_qform_and_sform_that_disagree_are_named(data):
    path, image, _, case = data
    img = nib.load(image)
    flipped = img.affine.copy()
    flipped[0, 0], flipped[0, 3] = -flipped[0, 0], 15.0  # the same grid mirrored along x
    img.set_qform(flipped, code=1)  # the sform (what nibabel and MONAI use) stays: the checks' affines agree
    img.set_sform(img.affine, code=1)
    nib.save(img, str(image))
    _, cautions = _cautions(path)
    named = [c for c in cautions if "qform and sform disagree" in c]
    assert len(named) == 1 and named[0].startswith(
        f"case {case}: the image's qform and sform disagree (orientation LAS"
    )
    assert str(image) in named[0] and "fix: make them agree" in named[0]
    # the clean cases (sform only, as nibabel writes them) are not named
    assert all(f"case {case}:" in c for c in cautions if "qform" in c)


def test_inference_skips_an_image_with_nan_naming_it_and_goes_on(tmp_path, clean, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    first, second = sorted((clean.parent / "imagesTs").glob("*.nii.gz"))[:2]
    shutil.copy(first, folder / first.name)
    img = nib.load(second)
    values = np.asarray(img.dataobj).astype(np.float32)
    values[3, 4, 5] = np.nan
    bad = folder / second.name
    nib.save(nib.Nifti1Image(values, img.affine), str(bad))
    with caplog.at_level("WARNING", logger="data"):
        entries = image_list(folder)
    assert [e["image"] for e in entries] == [str(folder / first.name)]
    (skipped,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped case")]
    assert (
        skipped.startswith(f"skipped case {second.name.split('.')[0]}: 1 NaN or infinite voxels")
        and str(bad) in skipped
    )
