"""Real data: MSD Task04 Hippocampus through MONAI and the hippocampus preset; the pancreas-CT preset's
config (no data here) and a tiny run of it on synthetic sources.

Task04 is found at $TASK04_HIPPOCAMPUS_DIR or ../shared/data/Task04_Hippocampus beside the repository;
the tests that need it skip when it is absent. Nothing is ever written into it.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from scripts.data.record import read_dynamics
from scripts.data.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TRAIN = str(CONFIGS / "train.yaml")
HIPPO = str(CONFIGS / "presets" / "hippocampus.yaml")
HIPPO_MERGED = str(CONFIGS / "presets" / "hippocampus_merged.yaml")
PANCREAS = str(CONFIGS / "presets" / "pancreas_ct.yaml")
DEFAULT_TASK04 = ROOT.parent / "shared" / "data" / "Task04_Hippocampus"

# cases of the shared copy with distinct storage (found by scanning all 260 headers/maxima)
UINT8_CASE = "hippocampus_034"  # uint8, 0..255
FLOAT_CASE = "hippocampus_003"  # float32, 0..~2800
OUTLIER_CASE = "hippocampus_210"  # float32, max ~1.7e6: the largest of the copy


def _task04_dir() -> Path:
    env = os.environ.get("TASK04_HIPPOCAMPUS_DIR")
    return Path(env) if env else DEFAULT_TASK04


@pytest.fixture(scope="module")
def task04() -> Path:
    path = _task04_dir()
    if not (path / "dataset.json").is_file():
        pytest.skip(
            f"MSD Task04_Hippocampus not found at {path} (set TASK04_HIPPOCAMPUS_DIR to a copy with dataset.json, "
            "imagesTr/, labelsTr/)"
        )
    return path


def _listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _parser(*files: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([TRAIN, *files])
    return parser


def _load(task04: Path, case: str):
    img = nib.load(task04 / "imagesTr" / f"{case}.nii.gz")
    lab = nib.load(task04 / "labelsTr" / f"{case}.nii.gz")
    return img, lab


# --------------------------------------------------------------------------- Task04 through MONAI


def test_load_decathlon_datalist(task04):
    from monai.data import load_decathlon_datalist
    from scripts.data.lists import load_datalist

    entries = load_decathlon_datalist(task04 / "dataset.json", is_segmentation=True, data_list_key="training")
    assert len(entries) == 260
    assert all(Path(e["image"]).is_file() and Path(e["label"]).is_file() for e in entries)
    tagged = load_datalist(task04 / "dataset.json", "training")
    assert len({e["case_id"] for e in tagged}) == 260 and tagged[0]["case_id"] == "hippocampus_001"


def test_decathlon_dataset_without_download(task04):
    from monai.apps import DecathlonDataset
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    if task04.name != "Task04_Hippocampus":
        pytest.skip(f"DecathlonDataset needs the folder to be named Task04_Hippocampus, got {task04.name}")
    before = _listing(task04)
    transform = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"])])
    sections = {
        section: DecathlonDataset(
            root_dir=task04.parent,
            task="Task04_Hippocampus",
            section=section,
            transform=transform,
            download=False,
            val_frac=0.2,
            seed=0,
            cache_rate=0.0,
            num_workers=0,
            progress=False,
        )
        for section in ("training", "validation")
    }
    assert len(sections["training"]) + len(sections["validation"]) == 260
    assert len(sections["validation"]) == 52
    train_images = {d["image"] for d in sections["training"].data}
    assert not train_images & {d["image"] for d in sections["validation"].data}
    assert sections["training"].get_properties("numTraining")["numTraining"] == 260
    item = sections["validation"][0]
    assert item["image"].shape == item["label"].shape and item["image"].shape[0] == 1
    assert set(np.unique(item["label"].numpy())) <= {0, 1, 2}
    assert _listing(task04) == before  # read only


# --------------------------------------------------------------------------- preprocessing presets


def test_hippocampus_preset_finds_the_data(monkeypatch, tmp_path):
    monkeypatch.delenv("TASK04_HIPPOCAMPUS_DIR", raising=False)
    parser = _parser(HIPPO)
    parser["bundle_root"] = str(ROOT)
    assert Path(parser.get_parsed_content("dataset_dir")).resolve() == DEFAULT_TASK04.resolve()
    monkeypatch.setenv("TASK04_HIPPOCAMPUS_DIR", str(tmp_path))
    parser = _parser(HIPPO)
    assert parser.get_parsed_content("dataset_dir") == str(tmp_path)
    assert parser.get_parsed_content("num_classes") == 3
    patch = parser.get_parsed_content("patch_size")
    assert all(p % 8 == 0 for p in patch)  # UNet strides [2, 2, 2]


def test_label_mapping_keep_or_merge(task04):
    from monai.transforms import Compose

    _, lab = _load(task04, "hippocampus_001")
    label = torch.as_tensor(np.asarray(lab.dataobj)[None].astype(np.float32))
    counts = {v: int((label == v).sum()) for v in (1, 2)}
    assert counts[1] > 0 and counts[2] > 0

    keep = Compose(_parser(HIPPO).get_parsed_content("label_transforms"))
    kept = keep({"label": label.clone()})["label"]
    assert set(torch.unique(kept).tolist()) == {0, 1, 2}

    parser = _parser(HIPPO, HIPPO_MERGED)
    assert parser.get_parsed_content("num_classes") == 2
    merged = Compose(parser.get_parsed_content("label_transforms"))({"label": label.clone()})["label"]
    assert set(torch.unique(merged).tolist()) == {0, 1}
    assert int(merged.sum()) == counts[1] + counts[2]


def test_mri_intensity_preset_on_mixed_storage(task04):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    parser = _parser(HIPPO)
    pre = Compose(
        [LoadImaged(["image", "label"], image_only=True), EnsureChannelFirstd(["image", "label"])]
        + parser.get_parsed_content("spacing_transforms")
        + parser.get_parsed_content("intensity_transforms")
    )
    medians, raw_max = {}, {}
    for case, dtype in ((UINT8_CASE, np.uint8), (FLOAT_CASE, np.float32), (OUTLIER_CASE, np.float32)):
        img, _ = _load(task04, case)
        assert img.get_data_dtype() == dtype
        raw = np.asarray(img.dataobj)
        raw_max[case] = float(raw.max())
        files = {k: str(task04 / f"{k}sTr" / f"{case}.nii.gz") for k in ("image", "label")}
        out = pre(files)["image"].numpy()
        assert out.dtype == np.float32 and np.isfinite(out).all()
        fg = out[out != 0]
        assert fg.size > 0.99 * out.size
        assert np.abs(out).max() < 5.0, case  # clipped at the 0.5/99.5 percentiles: no outlier survives
        assert abs(fg.mean()) < 1e-3 and abs(fg.std() - 1.0) < 1e-3, case
        medians[case] = float(np.median(fg))
    assert raw_max[UINT8_CASE] <= 255 and 1e3 < raw_max[FLOAT_CASE] < 1e4 and raw_max[OUTLIER_CASE] > 1e6
    assert all(abs(m) < 0.25 for m in medians.values()), medians
    assert max(medians.values()) - min(medians.values()) < 0.25, medians


def test_small_volumes_are_padded_to_the_patch(task04):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    parser = _parser(HIPPO)
    patch = parser.get_parsed_content("patch_size")
    pre = Compose(
        [LoadImaged(["image", "label"], image_only=True), EnsureChannelFirstd(["image", "label"])]
        + parser.get_parsed_content("spacing_transforms")
        + parser.get_parsed_content("intensity_transforms")
        + parser.get_parsed_content("train#random_transforms")[:1]  # RandCropByPosNegLabeld
    )
    # the copy's smallest first (31) and last (24) sides
    for case in ("hippocampus_265", "hippocampus_243"):
        files = {k: str(task04 / f"{k}sTr" / f"{case}.nii.gz") for k in ("image", "label")}
        shape = nib.load(files["image"]).shape
        assert min(shape) < max(patch)
        crops = pre(files)
        assert all(tuple(c["image"].shape[1:]) == tuple(patch) for c in crops), (case, shape)


@pytest.mark.slow
def test_hippocampus_stage1_end_to_end(task04, tmp_path):
    before = _listing(task04)
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", f"['{TRAIN}','{HIPPO}']",
        "--bundle_root", str(ROOT),
        "--dataset_dir", str(task04),
        "--output_dir", str(tmp_path / "out"),
        "--ckpt_dir", str(tmp_path / "models"),
        "--num_train_cases", "8", "--num_val_cases", "2",
        "--epochs", "2", "--delta_t", "1", "--val_interval", "2", "--num_workers", "0",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    datalist = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert datalist["counts"]["vumc"] == {"available": 260, "training": 187, "validation": 21, "test": 52}
    train8 = [d["case_id"] for d in datalist["training"][:8]]

    table = read_dynamics(tmp_path / "out" / "dynamics.csv")
    pairs = sorted(zip(table["epoch"].astype(int), table["case_id"]))
    assert pairs == sorted((e, c) for e in (1, 2) for c in train8)
    assert set(table["center"]) == {"vumc"}
    for column in ("dice_class1", "dice_class2"):
        values = table[column][~np.isnan(table[column])]
        assert values.size > 0 and np.all((values >= 0) & (values <= 1))
    assert (tmp_path / "models" / "checkpoint_final.pt").is_file()
    assert (tmp_path / "models" / "model.pt").is_file()  # validation ran on the whole small volumes

    # stage 2 on the same run: rank the 8 cases over the last window and export the subset
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "pruning",
        "--config_file", str(CONFIGS / "prune.yaml"),
        "--stage1_dir", str(tmp_path / "out"), "--output_dir", str(tmp_path / "prune"), "--prune_rate", "0.25",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    subset = json.loads((tmp_path / "prune" / "subset_datalist.json").read_text())
    kept = [d["case_id"] for d in subset["training"]]
    assert len(kept) == 6 and set(kept) <= set(train8)  # floor(0.25 * 8) = 2 pruned: 1 hardest, 1 easiest
    assert [d["case_id"] for d in subset["test"]] == [d["case_id"] for d in datalist["test"]]
    assert (tmp_path / "prune" / "report" / "data_map.png").stat().st_size > 0

    # inference with the same preset on two new images (one uint8, the 1.7e6 outlier): masks on their grids
    images = tmp_path / "new_images"
    images.mkdir()
    for case in ("hippocampus_001", "hippocampus_210"):
        (images / f"{case}.nii.gz").symlink_to(task04 / "imagesTr" / f"{case}.nii.gz")
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "inference",
        "--config_file", f"['{CONFIGS / 'inference.yaml'}','{HIPPO}']",  # the preset after inference.yaml
        "--bundle_root", str(ROOT), "--dataset_dir", str(task04), "--output_dir", str(tmp_path / "out"),
        "--ckpt_dir", str(tmp_path / "models"), "--input", str(images), "--pred_dir", str(tmp_path / "pred"),
        "--num_workers", "0",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    for case in ("hippocampus_001", "hippocampus_210"):
        mask, image = nib.load(tmp_path / "pred" / f"{case}_seg.nii.gz"), nib.load(images / f"{case}.nii.gz")
        assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}
    assert _listing(task04) == before


# --------------------------------------------------------------------------- pancreas-CT preset (no data here)


def _fake_datalist(n: int) -> list[dict]:
    return [{"image": f"{i}.nii.gz", "label": f"{i}.nii.gz", "case_id": f"msd_{i}", "center": "msd"} for i in range(n)]


@pytest.mark.parametrize("n", [1, 4, 59, 160, 202])
def test_pancreas_preset_resolves(n):
    parser = _parser(PANCREAS)
    parser["train_datalist"] = _fake_datalist(n)
    assert parser.get_parsed_content("patch_size") == [64, 64, 64]
    assert parser.get_parsed_content("batch_size") == 4 and parser.get_parsed_content("num_crops") == 8
    assert parser.get_parsed_content("learning_rate") == pytest.approx(3e-3)
    assert parser.get_parsed_content("num_classes") == 2
    per_epoch = math.ceil(n / 4)
    epochs = parser.get_parsed_content("epochs")
    assert parser.get_parsed_content("iterations_per_epoch") == per_epoch
    assert epochs == math.ceil(25000 / per_epoch)
    assert 25000 <= epochs * per_epoch < 25000 + per_epoch  # at least the paper's iterations, < 1 epoch more
    optimizer = parser.get_parsed_content("optimizer")
    scheduler = parser.get_parsed_content("lr_scheduler")
    assert type(optimizer).__name__ == "Adam" and optimizer.defaults["lr"] == pytest.approx(3e-3)
    assert scheduler.total_iters == epochs and scheduler.power == 0.9


def test_pancreas_preset_transforms():
    parser = _parser(PANCREAS)
    (spacing,) = [t for t in parser.get_parsed_content("spacing_transforms") if type(t).__name__ == "Spacingd"]
    assert tuple(spacing.spacing_transform.pixdim) == (1.0, 1.0, 1.0)
    crop = parser.get_parsed_content("train#random_transforms")[0]
    assert type(crop).__name__ == "RandCropByPosNegLabeld" and crop.cropper.pos_ratio == pytest.approx(0.8)
    assert crop.cropper.num_samples == 8 and tuple(crop.cropper.spatial_size) == (64, 64, 64)

    (label_map,) = parser.get_parsed_content("label_transforms")
    msd = torch.tensor([0, 1, 2, 2, 1, 0], dtype=torch.float32).reshape(1, 6, 1, 1)
    out = label_map({"label": msd, "center": "msd"})["label"]
    assert out.flatten().tolist() == [0, 1, 1, 1, 1, 0]  # pancreas + tumour -> 1
    word = torch.arange(17, dtype=torch.float32).reshape(1, 17, 1, 1)
    out = label_map({"label": word, "center": "word"})["label"]
    assert out.flatten().tolist() == [1.0 if v == 8 else 0.0 for v in range(17)]  # WORD pancreas = 8
    nih = torch.tensor([0, 1], dtype=torch.float32).reshape(1, 2, 1, 1)
    assert label_map({"label": nih, "center": "nih"})["label"].flatten().tolist() == [0, 1]

    window = parser.get_parsed_content("intensity_transforms")[0]
    hu = torch.tensor([-1000.0, -100.0, 70.0, 240.0, 3000.0]).reshape(1, 5, 1, 1)
    scaled = window({"image": hu})["image"].flatten()
    np.testing.assert_allclose(scaled.numpy(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


@pytest.mark.slow
def test_pancreas_preset_runs_on_synthetic_sources(tmp_path):
    """The whole pancreas pipeline (combine on the fly, per-center labels, HU window, crop, pad) on tiny data."""
    generate_dataset(tmp_path / "msd", 6, 1, 1, 1, (32, 32, 32), 0.0, 0)
    generate_dataset(tmp_path / "nih", 6, 1, 1, 1, (32, 32, 32), 0.0, 1)
    sources = f"{{'msd': '{tmp_path / 'msd'}', 'nih': '{tmp_path / 'nih'}'}}"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", f"['{TRAIN}','{PANCREAS}']",
        "--bundle_root", str(ROOT),
        "--dataset_dir", str(tmp_path / "combined"),
        "--data_sources", sources,
        "--output_dir", str(tmp_path / "out"),
        "--ckpt_dir", str(tmp_path / "models"),
        "--patch_size", "[16,16,16]", "--num_crops", "1", "--iterations", "3",
        "--delta_t", "1", "--val_interval", "1", "--num_workers", "0", "--cache_rate", "0",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    datalist = json.loads((tmp_path / "combined" / "datalist.json").read_text())
    train = {d["case_id"]: d["center"] for d in datalist["training"]}
    assert set(train.values()) == {"msd", "nih"}
    table = read_dynamics(tmp_path / "out" / "dynamics.csv")
    per_epoch = math.ceil(len(train) / 4)
    epochs = math.ceil(3 / per_epoch)
    assert sorted(set(table["epoch"].astype(int))) == list(range(1, epochs + 1))
    assert set(table["case_id"]) == set(train)
    assert (tmp_path / "models" / "checkpoint_final.pt").is_file()
