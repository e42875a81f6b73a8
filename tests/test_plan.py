"""Stage 1 configured from the data (scripts/data/plan.py): hand-worked plans from plain values, and on the
hippocampus and the embedded set the plan agrees with their preset / train.yaml's former defaults."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from monai.bundle import ConfigWorkflow
from scripts.data.checks import DataError, scan_dataset
from scripts.data.plan import classes_of, intensity_transforms, make_plan, plan_from_stats, spacing_transforms
from scripts.data.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = ROOT.parent / "shared" / "data" / "Task04_Hippocampus"


def test_classes_from_either_labels_form(tmp_path):
    msd, v2, none = tmp_path / "msd.json", tmp_path / "v2.json", tmp_path / "none.json"
    msd.write_text(json.dumps({"labels": {"0": "background", "1": "Anterior", "2": "Posterior"}}))
    v2.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2, "vessel": 3}}))
    none.write_text(json.dumps({"training": []}))
    assert classes_of(msd) == 3 and classes_of(v2) == 4
    with pytest.raises(DataError, match="no 'labels' to count the classes from; fix: add them or use --num_classes N"):
        classes_of(none)


def test_plan_from_plain_values_hand_worked():
    # three cases: one at 2 mm along z (median spacing stays 1 mm, so it is resampled), one 20 voxels wide
    shapes = np.array([[40, 40, 40], [40, 40, 20], [20, 40, 40]])
    spacings = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    plan = plan_from_stats(shapes, spacings, [0.3, 0.3, 0.1], np.arange(1.0, 1001.0), "MRI", [32, 32, 32])
    assert plan["spacing"]["target"] == [1.0, 1.0, 1.0] and plan["spacing"]["resample"] is True
    # at 1 mm: 40x40x40, 40x40x40 (20 voxels of 2 mm), 20x40x40: only the third is smaller than 32
    assert plan["sizes"]["min"] == [20.0, 40.0, 40.0]
    assert plan["padding"] == {"pad_to_patch": True, "patch_size": [32, 32, 32], "cases_smaller": 1}
    assert plan["normalization"] == {"kind": "zscore", "nonzero": True}  # median zero share 0.3 >= 0.25
    ct = plan_from_stats(shapes[[0, 0]], spacings[[0, 0]], [0.0, 0.0], np.arange(1.0, 1001.0), "CT", [32, 32, 32])
    # percentiles of 1..1000 (linear): 1 + 0.005 * 999 = 5.995 and 1 + 0.995 * 999 = 995.005
    assert ct["normalization"]["kind"] == "ct"
    np.testing.assert_allclose(ct["normalization"]["clip"], [5.995, 995.005])
    assert ct["spacing"]["resample"] is False and ct["padding"]["pad_to_patch"] is False


def test_plan_transforms_do_what_the_plan_says():
    import torch

    plan = {"spacing": {"target": [1.0, 1.0, 2.0], "resample": True},
            "padding": {"pad_to_patch": True, "patch_size": [8, 8, 8]},
            "normalization": {"kind": "ct", "clip": [-100.0, 300.0]}}  # fmt: skip
    names = [type(t).__name__ for t in spacing_transforms(plan)]
    assert names == ["Spacingd", "SpatialPadd"]
    (scale,) = intensity_transforms(plan)
    out = scale({"image": torch.tensor([[[[-500.0, -100.0, 100.0, 300.0, 900.0]]]])})["image"]
    np.testing.assert_allclose(out.numpy().ravel(), [0.0, 0.0, 0.5, 1.0, 1.0])  # clipped, (x + 100) / 400
    (z,) = intensity_transforms({"normalization": {"kind": "zscore", "nonzero": False}})
    x = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    # mean 2.5, population std sqrt(1.25) = 1.1180: (x - 2.5) / 1.1180
    np.testing.assert_allclose(z({"image": x})["image"].numpy().ravel(), [-1.341641, -0.447214, 0.447214, 1.341641],
                               rtol=1e-5)  # fmt: skip


@pytest.mark.skipif(not (HIPPOCAMPUS / "dataset.json").is_file(), reason="needs ../shared/data/Task04_Hippocampus")
def test_hippocampus_plan_agrees_with_its_preset(tmp_path):
    content = json.loads((HIPPOCAMPUS / "dataset.json").read_text())
    entries = [{k: str(HIPPOCAMPUS / v) for k, v in e.items()} for e in content["training"][:24]]
    datalist = tmp_path / "dataset.json"
    datalist.write_text(json.dumps({**content, "training": entries, "test": []}))
    preset = yaml.safe_load((ROOT / "configs" / "presets" / "hippocampus.yaml").read_text())
    patch = preset["patch_size"]
    plan = make_plan(scan_dataset(datalist, classes_of(datalist)), patch)
    assert classes_of(datalist) == preset["num_classes"] == 3
    spacing, pad = preset["spacing_transforms"]
    assert spacing["_target_"] == "Spacingd" and plan["spacing"]["target"] == spacing["pixdim"] == [1.0, 1.0, 1.0]
    assert pad["_target_"] == "SpatialPadd" and pad["spatial_size"] == "@patch_size"
    assert plan["padding"]["pad_to_patch"] is True and plan["padding"]["patch_size"] == patch
    assert preset["intensity_transforms"][0]["_target_"].endswith("RobustZScored")  # a z-score (robust)
    assert plan["normalization"]["kind"] == "zscore"  # MRI
    again = make_plan(scan_dataset(datalist, 3), patch)
    assert json.dumps(again, sort_keys=True) == json.dumps(plan, sort_keys=True)  # reproducible


def test_embedded_set_plan_is_train_yamls_former_defaults(tmp_path):
    """Before the plan, train.yaml said: num_classes 2, no spacing transforms, NormalizeIntensityd on the
    image; on the embedded set (48^3, 1 mm, 'synthetic CT': per-center scales, not Hounsfield) the plan
    gives exactly these, so the embedded runs are unchanged."""
    generate_dataset(tmp_path / "data", num_train=6, num_val=2, num_test=2, shape=[48, 48, 48], num_centers=3, seed=0)
    workflow = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "train.yaml"), workflow_type="train", output_dir=str(tmp_path / "out"),
        ckpt_dir=str(tmp_path / "models"), dataset_dir=str(tmp_path / "data"), num_workers=0,
    )  # fmt: skip
    workflow.initialize()
    parser = workflow.parser
    assert parser.get_parsed_content("num_classes") == 2
    assert parser.get_parsed_content("spacing_transforms") == []
    (norm,) = parser.get_parsed_content("intensity_transforms")
    assert type(norm).__name__ == "NormalizeIntensityd" and norm.normalizer.nonzero is False
    assert norm.keys == ("image",)
    saved = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert saved["plan"]["spacing"] == {"target": [1.0, 1.0, 1.0], "resample": False, "min": [1.0, 1.0, 1.0],
                                        "max": [1.0, 1.0, 1.0]}  # fmt: skip
    assert saved["used"] == {
        "num_classes": 2,
        "spacing_transforms": [],
        "intensity_transforms": [{"transform": "NormalizeIntensityd", "nonzero": False}],
    }


def test_an_override_wins_and_plan_json_says_what_was_used(tmp_path):
    generate_dataset(tmp_path / "data", num_train=6, num_val=2, num_test=2, shape=(16, 16, 16))
    workflow = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "train.yaml"), workflow_type="train", output_dir=str(tmp_path / "out"),
        ckpt_dir=str(tmp_path / "models"), dataset_dir=str(tmp_path / "data"), num_workers=0, epochs=1, delta_t=1,
        val_interval=1, patch_size=[16, 16, 16],
        intensity_transforms=[{"_target_": "ScaleIntensityd", "keys": "image"}],
    )  # fmt: skip
    workflow.initialize()
    saved = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert saved["plan"]["normalization"] == {"kind": "zscore", "nonzero": False}
    assert saved["used"]["intensity_transforms"] == [{"transform": "ScaleIntensityd"}]
    shutil.rmtree(tmp_path / "out")


# --------------------------------------------------------------------------- the rules of 0.7.0 (issue 25, item 6)


def test_anisotropic_spacing_takes_the_10th_percentile_on_the_coarse_axis():
    from scripts.data.plan import target_spacing

    # 10 cases at 0.8 mm in-plane, z 1..10 mm (median 5.5 > 3 x 0.8), 200 x 200 x 40 voxels (40 x 3 < 200)
    z = np.arange(1.0, 11.0)
    spacings = np.stack([np.full(10, 0.8), np.full(10, 0.8), z], axis=1)
    shapes = np.tile([200, 200, 40], (10, 1))
    target, anisotropic = target_spacing(spacings, shapes)
    # 10th percentile of 1..10 (linear): 1 + 0.1 * 9 = 1.9
    assert anisotropic and target.tolist() == pytest.approx([0.8, 0.8, 1.9])
    assert target_spacing(spacings, shapes, None)[0].tolist() == [0.8, 0.8, 5.5]  # the 0.6 rule: the median
    # as many voxels along z as in-plane: not anisotropic in voxels, so nnU-Net keeps the median
    assert target_spacing(spacings, np.tile([200, 200, 100], (10, 1)))[0].tolist() == [0.8, 0.8, 5.5]
    # the 10th percentile never goes finer than the other axes (0.8 -> 0.8 + 1e-5)
    fine = spacings.copy()
    fine[:2, 2] = 0.1
    target, _ = target_spacing(fine, shapes)
    assert target[2] == pytest.approx(0.8 + 1e-5) and np.median(fine[:, 2]) == 5.5


def test_ct_is_clipped_then_z_scored_on_the_foreground_statistics():
    import torch

    shapes, spacings = np.array([[40, 40, 40]] * 2), np.ones((2, 3))
    plan = plan_from_stats(shapes, spacings, [0.0, 0.0], np.arange(1.0, 1001.0), "CT", [32, 32, 32])
    norm = plan["normalization"]
    # 1..1000: percentiles 5.995 / 995.005, mean 500.5, population std sqrt((1000^2 - 1) / 12) = 288.6749
    np.testing.assert_allclose(norm["clip"], [5.995, 995.005])
    assert norm["scale"] == "zscore" and norm["mean"] == 500.5 and norm["std"] == pytest.approx(288.674990, rel=1e-7)
    (t,) = intensity_transforms(plan)
    out = t({"image": torch.tensor([[[[-500.0, 5.995, 500.5, 900.0, 5000.0]]]])})["image"].numpy().ravel()
    s = 288.674990
    np.testing.assert_allclose(out, [(5.995 - 500.5) / s, (5.995 - 500.5) / s, 0.0, 399.5 / s, (995.005 - 500.5) / s],
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    old = plan_from_stats(shapes, spacings, [0.0, 0.0], np.arange(1.0, 1001.0), "CT", [32, 32, 32], "0.6")
    assert "scale" not in old["normalization"]  # 0.6: the clipped range scaled to [0, 1]
    (t,) = intensity_transforms(old)
    np.testing.assert_allclose(t({"image": torch.tensor([[[[5.995, 500.5, 995.005]]]])})["image"].numpy().ravel(),
                               [0.0, 0.5, 1.0], atol=1e-6)  # fmt: skip


def test_every_case_gives_the_same_number_of_foreground_voxels():
    from scripts.data.checks import FOREGROUND_SAMPLE, sample_foreground

    sizes = [100, 10_000, 19_999, 20_000, 150_000]
    assert [sample_foreground(np.zeros(n)).size for n in sizes] == [FOREGROUND_SAMPLE] * 5
    # the former rule: every k-th voxel, k = n // 10^4, so a case keeps 1x to 2x as many (19,999 vs 10,000)
    assert [sample_foreground(np.zeros(n), "strided").size for n in sizes] == [100, 10_000, 19_999, 10_000, 10_000]
    values = np.where(np.arange(1000) < 100, 1.0, 0.0)  # 10% ones
    sample = sample_foreground(values)
    assert set(np.unique(sample)) <= {0.0, 1.0} and abs(sample.mean() - 0.1) < 0.01  # uniform: 3 sd = 0.009
    np.testing.assert_array_equal(sample, sample_foreground(values))  # a fixed seed: the same plan every time
    assert sample_foreground(np.zeros(0)).size == 0  # an empty label gives nothing


def test_the_fingerprint_reads_the_training_cases_and_the_former_rules_stay_available():
    from scripts.data.checks import CaseStats, Fingerprint

    def case(i, z, value):
        return CaseStats(f"c{i}", f"c{i}.nii.gz", (40, 40, 40), (1.0, 1.0, z), 0.0, np.full(10_000, value))

    cases = [case(0, 1.0, 0.0), case(1, 2.0, 10.0), case(2, 3.0, 20.0), case(3, 9.0, 1000.0)]  # c3: a test case
    fp = Fingerprint("d.json", {}, "CT", cases, "random")
    new = make_plan(fp, [32, 32, 32], ["c0", "c1", "c2"])
    assert new["spacing"]["target"] == [1.0, 1.0, 2.0] and new["normalization"]["mean"] == 10.0
    assert new["from"] == "the checks' pass: the training cases, 3 of 4"
    fp.foreground_sample = "strided"
    old = make_plan(fp, [32, 32, 32], ["c0", "c1", "c2"], "0.6")
    assert old["spacing"]["target"] == [1.0, 1.0, 2.5] and old["normalization"]["clip"][1] == 1000.0
    with pytest.raises(ValueError, match="sampled the foreground 'strided', the rules say 'random'"):
        make_plan(fp, [32, 32, 32], ["c0"])
    from scripts.data.plan import rules_of

    assert rules_of(0.6) == rules_of("0.6") and rules_of({"ct": "unit"})["fingerprint"] == "training"
    with pytest.raises(Exception, match="plan_rules '0.5': not one of"):
        rules_of("0.5")


def test_plan_rules_0_6_through_train_yaml_plan_as_before(tmp_path):
    """The former rules, as a setting: on the audit fold of tests/test_model_plan.py (8 CT cases, 4 of them
    the validation list) they read all 8 (median z 2.75) and scale CT to [0, 1]."""
    from scripts.data.folds import fold_datalists
    from scripts.data.lists import labelled_cases
    from scripts.experiments.plan_rules import ct_dataset

    z = [1.5, 2.0, 2.5, 3.0, 2.5, 3.0, 3.5, 4.0]
    dataset = ct_dataset(tmp_path / "data", [(1.0, 1.0, v) for v in z], num_train=8)
    train, _ = fold_datalists(labelled_cases(dataset, ["training"]), [1, 0, 0, 1, 0, 0, 1, 1], 0, name="data",
                              meta=json.loads(dataset.read_text()))  # fmt: skip
    (tmp_path / "fold.json").write_text(json.dumps(train))
    plans = {}
    for rules in ("0.6", "nnunet"):
        workflow = ConfigWorkflow(
            config_file=str(ROOT / "configs" / "train.yaml"), workflow_type="train",
            dataset_json=str(tmp_path / "fold.json"), output_dir=str(tmp_path / rules),
            ckpt_dir=str(tmp_path / rules / "models"), num_workers=0, epochs=1, delta_t=1, val_interval=1,
            patch_size=[16, 16, 16], test_fraction=0, plan_rules=rules,
        )  # fmt: skip
        workflow.initialize()
        plans[rules] = json.loads((tmp_path / rules / "plan.json").read_text())["plan"]
    assert plans["0.6"]["spacing"]["target"] == [1.0, 1.0, 2.75] and "scale" not in plans["0.6"]["normalization"]
    assert plans["nnunet"]["spacing"]["target"] == [1.0, 1.0, 3.25]
    assert plans["nnunet"]["normalization"]["scale"] == "zscore"
