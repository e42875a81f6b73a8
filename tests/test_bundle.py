"""The bundle as MONAI sees it: metadata, logging config, workflow properties, and a tiny real run."""

import hashlib
import json
import logging.config
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scripts.data.record import read_dynamics
from scripts.data.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

SCHEMAS = ROOT / "bundle" / "schemas"
# md5 of the published schema files (MONAI's own tests use these hashes; issue 14)
PUBLISHED_MD5 = {
    "meta_schema_20220324.json": "662135097106b71067cd1fc657f8720f",
    "meta_schema_20240725.json": "06954cad2cc5d3784e72077ac76f0fc8",
}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_schema_files_are_the_published_ones():
    for name, md5 in PUBLISHED_MD5.items():
        assert hashlib.md5((SCHEMAS / name).read_bytes()).hexdigest() == md5, name


def test_metadata_is_valid_against_the_schema_its_url_names():
    import jsonschema

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    schema_name = meta["schema"].rsplit("/", 1)[-1]
    assert schema_name == "meta_schema_20240725.json"  # the current schema
    jsonschema.validate(meta, json.loads((SCHEMAS / schema_name).read_text()))
    assert meta["version"] in meta["changelog"], "the current version needs a changelog entry"
    # verify_net_in_out reads these two tensors by name
    assert {"image"} <= set(meta["network_data_format"]["inputs"])
    assert {"pred"} <= set(meta["network_data_format"]["outputs"])
    # pretty-format-json (the Zoo's pre-commit hook) wants exactly this text
    assert (CONFIGS / "metadata.json").read_text() == json.dumps(meta, indent=4) + "\n"


def test_metadata_versions_are_the_tested_ones():
    """monai and torch as installed and as requirements.txt pins them; every other metadata pin is
    requirements.txt's, except numpy, matplotlib and pandas: their last releases for Python 3.10 (the Zoo's
    CI runner), older than the pins, and the only three that differ."""
    import monai
    import torch

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    pins = _pins(ROOT / "requirements.txt")
    assert meta["monai_version"] == monai.__version__ == pins["monai"]
    assert meta["pytorch_version"] == torch.__version__.split("+")[0] == pins["torch"]
    listed = {"numpy": meta["numpy_version"], **{k.lower(): v for k, v in meta["required_packages_version"].items()}}
    assert set(listed) <= set(pins), set(listed) - set(pins)
    differ = {k for k, v in listed.items() if v != pins[k]}
    assert differ == {"numpy", "matplotlib", "pandas"}
    for k in differ:
        older, newer = (tuple(int(x) for x in v.split(".")) for v in (listed[k], pins[k]))
        assert older < newer and older[0] >= newer[0] - 1, (k, listed[k], pins[k])  # pandas 3 needs Python 3.11


def test_logging_conf_is_accepted():
    logging.config.fileConfig(CONFIGS / "logging.conf", disable_existing_loggers=False)


def test_verify_net_in_out():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "verify_net_in_out",
            "network_def",
            "--meta_file",
            str(CONFIGS / "metadata.json"),
            "--config_file",
            str(CONFIGS / "inference.yaml"),  # alone, as the Model Zoo's CI passes it
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified with no error" in result.stdout + result.stderr


def test_train_workflow_properties(tmp_path):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.yaml"),
        workflow_type="train",
        logging_file=str(CONFIGS / "logging.conf"),
        output_dir=str(tmp_path / "out"),
        ckpt_dir=str(tmp_path / "models"),
        dataset_dir=str(generate_dataset(tmp_path / "data", num_train=4, num_val=1, num_test=1, shape=[16] * 3).parent),
        num_workers=0,
        epochs=7,
        delta_t=7,
    )
    workflow.initialize()
    # MONAI resolves every required property (building the trainer), so this also checks the wiring
    assert workflow.check_properties() == []
    assert workflow.max_epochs == 7
    assert len(workflow.train_dataset) == 4


def test_infer_workflow_properties(tmp_path):
    """configs/inference.yaml alone, as the Model Zoo loads it: the inference ids (dataset, evaluator,
    inferer, preprocessing, postprocessing, handlers) are top-level, each referenced where MONAI's
    InferProperties expect it."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.yaml"),
        workflow_type="infer",
        logging_file=str(CONFIGS / "logging.conf"),
        meta_file=str(CONFIGS / "metadata.json"),
        dataset_dir=str(generate_dataset(tmp_path / "data", num_train=2, num_val=1, num_test=3, shape=[16] * 3).parent),
        output_dir=str(tmp_path / "pred"),
        num_workers=0,
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    # by default the images to segment are the configured data set's test list
    assert [d["case_id"] for d in workflow.dataset_data] == [d["case_id"] for d in workflow.dataset.data]
    assert len(workflow.dataset) == 3 and "label" not in workflow.dataset.data[0]
    assert workflow.evaluator.inferer is workflow.inferer
    assert workflow.evaluator.data_loader.dataset is workflow.dataset
    save = workflow.postprocessing.transforms[-1]  # SaveImaged writes the masks into output_dir
    assert Path(save.saver.folder_layout.output_dir) == tmp_path / "pred"


def _raw(files: list[str]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    return parser


def test_inference_config_repeats_the_training_values():
    """What inference.yaml repeats from train.yaml (it must stand alone) is the same, so a network
    trained with train.yaml loads into it; its inferer is training's validation window."""
    train, infer = _raw(["train.yaml"]), _raw(["inference.yaml"])
    for key in (
        "bundle_root",
        "bundle_on_path",
        "device",
        "amp",
        "seed",
        "ckpt_dir",
        "dataset_dir",
        "synthetic",
        "dataset_json",
        "patch_size",
        "network_def",
        "network",
        "label_transforms",
        "num_workers",
    ):
        assert infer[key] == train[key], key
    # classes, resampling and normalisation are planned from the data in training; inference takes them
    # from a run's plan.json (test_inference_follows_a_stage1_plan) or, by default, the embedded set's
    assert infer["inferer"] == train["validate#inferer"]
    # the training loaders without the label
    image_only = [{**t, "keys": "image"} for t in train["train#load_transforms"]]
    assert infer["load_transforms"] == image_only


@pytest.mark.parametrize(
    "presets, classes, patch",
    [
        ([], 2, [32, 32, 32]),
        (["hippocampus.yaml"], 3, [32, 32, 32]),  # background, anterior, posterior
        (["hippocampus.yaml", "hippocampus_merged.yaml"], 2, [32, 32, 32]),
        (["pancreas_ct.yaml"], 2, [64, 64, 64]),
    ],
)
def test_presets_apply_to_the_inference_config_alone(presets, classes, patch):
    parser = _raw(["inference.yaml", *[f"presets/{p}" for p in presets]])
    net = parser.get_parsed_content("network_def")
    assert net.out_channels == classes and net(torch.zeros(1, 1, 16, 16, 16)).shape[1] == classes
    assert list(parser.get_parsed_content("inferer").roi_size) == patch
    names = [type(t).__name__ for t in parser.get_parsed_content("preprocessing").transforms]
    expected = {
        (): ["LoadImaged", "EnsureChannelFirstd", "Orientationd", "NormalizeIntensityd"],
        ("hippocampus.yaml",): [
            "LoadImaged",
            "EnsureChannelFirstd",
            "Orientationd",
            "Spacingd",
            "SpatialPadd",
            "RobustZScored",
        ],
        ("pancreas_ct.yaml",): [
            "LoadImaged",
            "EnsureChannelFirstd",
            "Orientationd",
            "Spacingd",
            "ScaleIntensityRanged",
            "CropForegroundd",
            "SpatialPadd",
        ],
    }
    assert names == expected.get(tuple(presets), expected[("hippocampus.yaml",)])


def _run_training(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    # only the embedded set's own folder is ever generated: a data set elsewhere is made first
    generate_dataset(tmp_path / "data", num_train=6, num_val=2, num_test=2, shape=(32, 32, 32))
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        "configs/train.yaml",
        "--bundle_root",
        str(ROOT),
        "--dataset_dir",
        str(tmp_path / "data"),
        "--output_dir",
        str(tmp_path / "out"),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--patch_size",
        "[16,16,16]",
        "--num_workers",
        "0",
        "--val_interval",
        "1",
        *overrides,
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


@pytest.mark.slow
def test_training_end_to_end_patches(tmp_path):
    epochs = 3
    _run_training(tmp_path, "--epochs", str(epochs), "--delta_t", "1")

    dataset = json.loads((tmp_path / "data" / "dataset.json").read_text())
    train = {d["case_id"]: d["center"] for d in dataset["training"]}
    assert len(train) == 6

    assert (tmp_path / "models" / "model.pt").is_file()
    assert (tmp_path / "models" / "checkpoint_final.pt").is_file()

    table = read_dynamics(tmp_path / "out" / "dynamics.csv")
    pairs = list(zip(table["epoch"].astype(int), table["case_id"]))
    assert sorted(pairs) == sorted((e, c) for e in range(1, epochs + 1) for c in train)  # each once
    assert all(train[c] == center for c, center in zip(table["case_id"], table["center"]))
    assert set(table["source"]) == {"patches"}
    assert np.all(table["n_items"] == 2)  # num_crops patches of every case every epoch
    dice = table["dice"]
    assert np.all((dice[~np.isnan(dice)] >= 0) & (dice[~np.isnan(dice)] <= 1))
    np.testing.assert_allclose(table["dice"], table["dice_class1"])  # one foreground class

    with open(tmp_path / "out" / "moving_distance.csv") as f:
        curve = f.read().splitlines()
    assert len(curve) == 1 + epochs  # header + one window per epoch (delta_t = 1)
    summary = json.loads((tmp_path / "out" / "stop_rule.json").read_text())
    assert summary["last_window_end"] == epochs and summary["delta_t"] == 1


@pytest.mark.slow
def test_training_end_to_end_volumes(tmp_path):
    _run_training(tmp_path, "--epochs", "2", "--dad_mode", "volumes", "--dad_interval", "2", "--delta_t", "2")
    table = read_dynamics(tmp_path / "out" / "dynamics.csv")
    assert set(table["epoch"].astype(int)) == {2}  # scored every dad_interval epochs only
    assert set(table["source"]) == {"volumes"}
    assert np.all(table["n_items"] == 1)  # each whole volume once
    assert len(table["case_id"]) == 6


def _infer_parser(**overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(ROOT)
    for k, v in overrides.items():
        parser[k] = v
    return parser


def test_inference_defaults_are_the_embedded_sets_plan(tmp_path):
    # the embedded set's plan (tests/test_plan.py): 2 classes, no resampling or padding, a z-score per image,
    # for a checkpoint with no plan.json beside it (a checkout's models/ may hold a training's)
    parser = _infer_parser(ckpt_dir=str(tmp_path / "models"))
    assert parser.get_parsed_content("num_classes") == 2
    assert parser.get_parsed_content("spacing_transforms") == []
    (norm,) = parser.get_parsed_content("intensity_transforms")
    assert type(norm).__name__ == "NormalizeIntensityd" and norm.normalizer.nonzero is False


def test_inference_follows_a_stage1_plan(tmp_path):
    from scripts.data.plan import intensity_transforms, spacing_transforms, write_plan
    from scripts.utils.errors import InputError

    plan = {
        "spacing": {"resample": True, "target": [1.5, 1.5, 2.0]},
        "padding": {"pad_to_patch": True, "patch_size": [32, 32, 32]},
        "normalization": {"kind": "zscore", "nonzero": True},
    }
    write_plan(tmp_path / "run", plan, 3, spacing_transforms(plan), intensity_transforms(plan))
    parser = _infer_parser(plan_json=str(tmp_path / "run" / "plan.json"))
    assert parser.get_parsed_content("num_classes") == 3
    assert parser.get_parsed_content("network_def").out_channels == 3
    spacing, pad = parser.get_parsed_content("spacing_transforms")
    assert type(spacing).__name__ == "Spacingd" and list(spacing.spacing_transform.pixdim) == [1.5, 1.5, 2.0]
    assert type(pad).__name__ == "SpatialPadd" and list(pad.padder.spatial_size) == [32, 32, 32]
    (norm,) = parser.get_parsed_content("intensity_transforms")
    assert norm.normalizer.nonzero is True
    # a run whose preset won over its plan: inference refuses the plan and names the fix
    write_plan(tmp_path / "preset_run", plan, 3, [], intensity_transforms(plan))
    parser = _infer_parser(plan_json=str(tmp_path / "preset_run" / "plan.json"))
    with pytest.raises(Exception) as err:
        parser.get_parsed_content("spacing_transforms")
    chain, e = [], err.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(x, InputError) and "merge the same preset" in str(x) for x in chain)
