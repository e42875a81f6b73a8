"""Memory planned from the data (scripts/data/memory.py): sizes hand-computed and measured on the cached
tensors, the choice following the budget (a tiny one gives the disk cache), an explicit cache_rate winning,
plan.json saying which and why, and an audit leaving no fold's disk cache behind."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from monai.transforms import Spacingd, SpatialPadd
from scripts.data.memory import DiskCacheDataset, available_memory, case_bytes, choose_cache, item_hash, parse_bytes

ROOT = Path(__file__).resolve().parents[1]


def test_case_bytes_hand_computed():
    spacing = Spacingd(keys=["image", "label"], pixdim=[1.0, 1.0, 1.0])
    # 40 x 40 x 20 voxels of 1 x 1 x 2 mm at 1 mm: 40 x 40 x 40 = 64000 voxels; image + label, float32: 8 bytes each
    assert case_bytes((40, 40, 20), (1.0, 1.0, 2.0), [spacing]) == 64000 * 8 == 512_000
    # a training case also holds its crop locations: all 64000 (fewer than 10^6 per side), int32
    assert case_bytes((40, 40, 20), (1.0, 1.0, 2.0), [spacing], crop=True) == 512_000 + 64000 * 4
    # padded to 48 x 48 x 16 where smaller: 48 x 48 x 40 voxels; 2 image channels + label = 3 float32 per voxel
    pad = SpatialPadd(keys=["image", "label"], spatial_size=[48, 48, 16])
    assert case_bytes((40, 40, 20), (1.0, 1.0, 2.0), [spacing, pad], channels=2) == 48 * 48 * 40 * 3 * 4
    # a CT of 512 x 512 x 300: 78.6M voxels x 8 bytes, and 2 x 10^6 int32 crop locations (a bounded sample)
    assert case_bytes((512, 512, 300), (0.8, 0.8, 1.25), [], crop=True) == 512 * 512 * 300 * 8 + 2_000_000 * 4


def test_parse_bytes():
    assert parse_bytes("8GB") == 8 * 10**9 and parse_bytes("512 MiB") == 512 * 2**20 and parse_bytes(1.5e9) == 1.5e9
    assert parse_bytes(None) is None and parse_bytes("auto") is None and parse_bytes("null") is None
    with pytest.raises(ValueError, match="give bytes"):
        parse_bytes("lots")


def test_available_memory_is_at_most_the_machines():
    total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    assert 0 < available_memory() <= total


SIZES = {"training": [100, 100, 100], "validation": [50]}  # 350 bytes in all


def test_choice_follows_the_budget():
    fits = choose_cache(SIZES, budget=350, disk_free=10**6)
    assert fits["datasets"] == {"training": {"dataset": "CacheDataset", "cache_num": 3},
                                "validation": {"dataset": "CacheDataset", "cache_num": 1}}  # fmt: skip
    assert fits["estimated_bytes"] == {"training": 300, "validation": 50, "total": 350} and fits["chosen_by"] == "plan"
    disk = choose_cache(SIZES, budget=349, disk_free=10**6)  # a byte too many: on disk
    assert {d["dataset"] for d in disk["datasets"].values()} == {"PersistentDataset"}
    assert "exceed the memory budget 349 B: cached on disk" in disk["reason"]
    # too little disk (350 x 1.1 > 380): the first cases that fit 250 bytes, training first: 2 (200), then 1 (50)
    part = choose_cache(SIZES, budget=250, disk_free=380)
    assert part["datasets"] == {"training": {"dataset": "CacheDataset", "cache_num": 2},
                                "validation": {"dataset": "CacheDataset", "cache_num": 1}}  # fmt: skip
    assert "2 of 3 training, 1 of 1 validation" in part["reason"]
    once = choose_cache(SIZES, budget=10, disk_free=10**6, reuse=False)  # read once: streamed, never on disk
    assert {d["dataset"] for d in once["datasets"].values()} == {"Dataset"}
    assert choose_cache(SIZES, budget=350, disk_free=None, reuse=False)["datasets"]["training"]["cache_num"] == 3


def test_an_explicit_cache_rate_wins_and_says_what_the_plan_would_do():
    chosen = choose_cache(SIZES, budget=10, disk_free=10**6, cache_rate=0.5)
    assert chosen["chosen_by"] == "cache_rate"
    assert chosen["datasets"]["training"] == {"dataset": "CacheDataset", "cache_rate": 0.5}
    assert chosen["planned"]["datasets"]["training"] == {"dataset": "PersistentDataset"}
    with pytest.raises(ValueError, match="cache_rate 2"):
        choose_cache(SIZES, budget=10, disk_free=None, cache_rate=2)


def _save(array: np.ndarray, spacing, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), path)
    return str(path)


@pytest.fixture(scope="module")
def resampled_set(tmp_path_factory):
    """5 labelled cases, two at 1 x 1 x 1 mm (20^3), three at 1 x 1 x 2 mm (20 x 20 x 10): the median spacing is
    1 x 1 x 2, so the plan resamples the first two to 20 x 20 x 10. 3 training, 1 validation, 1 test."""
    root = tmp_path_factory.mktemp("resampled")
    rng = np.random.default_rng(0)
    entries = []
    for i, (shape, spacing) in enumerate([((20, 20, 20), (1, 1, 1))] * 2 + [((20, 20, 10), (1, 1, 2))] * 3):
        image = rng.normal(size=shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[5:12, 5:12, 2 : shape[2] // 2] = 1
        entries.append({"image": _save(image, spacing, root / "imagesTr" / f"c{i}.nii.gz"),
                        "label": _save(label, spacing, root / "labelsTr" / f"c{i}.nii.gz")})  # fmt: skip
    lists = {"training": [entries[i] for i in (0, 2, 3)], "validation": [entries[1]], "test": [entries[4]]}
    content = {"labels": {"0": "background", "1": "target"}, "modality": {"0": "MRI"}, **lists}
    (root / "dataset.json").write_text(json.dumps(content))
    return root


def _workflow(data: Path, out: Path, **settings) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "train.yaml"), workflow_type="train", output_dir=str(out / "run"),
        ckpt_dir=str(out / "models"), dataset_dir=str(data), num_workers=0, epochs=1, delta_t=1, val_interval=1,
        patch_size=[8, 8, 8], **settings,
    )  # fmt: skip
    workflow.initialize()
    return workflow


def _cached_bytes(items) -> int:
    return sum(int(np.asarray(v).nbytes) for item in items for k, v in item.items()
               if k in ("image", "label", "fg_indices", "bg_indices"))  # fmt: skip


def test_estimate_equals_the_cached_tensors_and_plan_json_says_so(resampled_set, tmp_path):
    workflow = _workflow(resampled_set, tmp_path)
    saved = json.loads((tmp_path / "run" / "plan.json").read_text())["memory"]
    # every case is 20 x 20 x 10 = 4000 voxels at the target spacing: 4000 x 8 bytes; training + 4000 x 4 locations
    assert saved["estimated_bytes"] == {"training": 3 * 48_000, "validation": 32_000, "total": 176_000}
    assert saved["datasets"]["training"] == {"dataset": "CacheDataset", "cache_num": 3}
    assert saved["chosen_by"] == "plan" and "fit the memory budget" in saved["reason"]
    assert saved["budget"]["from"].startswith("memory_share 0.5")
    train, val = (workflow.parser.get_parsed_content(k) for k in ("train#dataset", "validate#dataset"))
    assert type(train).__name__ == "CacheDataset" and _cached_bytes(train._cache) == 3 * 48_000
    assert _cached_bytes(val._cache) == 32_000


def test_a_tiny_budget_caches_on_disk_with_the_same_items(resampled_set, tmp_path):
    memory = _workflow(resampled_set, tmp_path / "memory")
    disk = _workflow(resampled_set, tmp_path / "disk", memory_budget="1kB")
    saved = json.loads((tmp_path / "disk" / "run" / "plan.json").read_text())["memory"]
    assert saved["datasets"]["training"] == {"dataset": "PersistentDataset",
                                             "cache_dir": str(tmp_path / "disk" / "run" / "cache")}  # fmt: skip
    assert saved["budget"] == {"budget_bytes": 1000, "from": "memory_budget", "ranks": 1}
    assert "exceed the memory budget 1 kB: cached on disk" in saved["reason"]
    on_disk = disk.parser.get_parsed_content("train#dataset")
    assert isinstance(on_disk, DiskCacheDataset) and len(list((tmp_path / "disk" / "run" / "cache").glob("*.pt"))) == 3
    # validation: other transforms (no crop locations), so other files; each written once the data set is made
    assert isinstance(disk.parser.get_parsed_content("validate#dataset"), DiskCacheDataset)
    assert len(list((tmp_path / "disk" / "run" / "cache").glob("*.pt"))) == 3 + 1
    in_memory = memory.parser.get_parsed_content("train#dataset")
    for i in range(3):
        a, b = on_disk._cachecheck(on_disk.data[i]), in_memory._cache[i]
        for key in ("image", "label", "fg_indices", "bg_indices"):
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_an_explicit_cache_rate_wins_in_the_run(resampled_set, tmp_path):
    _workflow(resampled_set, tmp_path, cache_rate=0.5, memory_budget=1)
    saved = json.loads((tmp_path / "run" / "plan.json").read_text())["memory"]
    assert saved["chosen_by"] == "cache_rate" and saved["datasets"]["training"] == {"dataset": "CacheDataset",
                                                                                    "cache_rate": 0.5}  # fmt: skip
    assert saved["planned"]["datasets"]["training"]["dataset"] == "PersistentDataset"


def test_a_file_rewritten_in_place_gets_another_cache_key(tmp_path):
    path = tmp_path / "a.nii.gz"
    path.write_bytes(b"one")
    before = item_hash({"image": str(path), "case_id": "a"})
    path.write_bytes(b"other")
    assert item_hash({"image": str(path), "case_id": "a"}) != before


def test_a_finished_audit_fold_leaves_no_disk_cache_but_a_users_cache_dir(tmp_path):
    from scripts.workflows.audit import drop_disk_cache

    for fold in ("fold0", "fold1"):
        (tmp_path / fold / "train" / "cache").mkdir(parents=True)
        (tmp_path / fold / "train" / "cache" / "case.pt").write_bytes(b"x")
    drop_disk_cache(tmp_path / "fold0", {"epochs": 2})
    drop_disk_cache(tmp_path / "fold1", {"cache_dir": str(tmp_path / "fold1" / "train" / "cache")})
    assert not (tmp_path / "fold0" / "train" / "cache").exists()
    assert (tmp_path / "fold1" / "train" / "cache" / "case.pt").is_file()
    assert (tmp_path / "fold0" / "train").is_dir()  # only the cache goes


def test_without_the_checks_pass_the_sizes_come_from_the_headers(resampled_set):
    from scripts.data.checks import Fingerprint
    from scripts.data.memory import list_bytes

    entries = json.loads((resampled_set / "dataset.json").read_text())["training"]  # 20^3 at 1 mm, then 2 of 20x20x10
    spacing = Spacingd(keys=["image", "label"], pixdim=[1.0, 1.0, 2.0])
    # at 1 x 1 x 2 mm every case is 20 x 20 x 10 = 4000 voxels: 4000 x 8 bytes
    assert list_bytes(entries, Fingerprint("x", {}, "MRI", []), [spacing]) == [32_000] * 3


def test_evaluation_streams_the_test_cases_when_they_do_not_fit(resampled_set, tmp_path):
    from monai.bundle import ConfigParser
    from monai.data import CacheDataset, Dataset

    def test_dataset(**settings):
        parser = ConfigParser()
        parser.read_config([str(ROOT / "configs" / "train.yaml"), str(ROOT / "configs" / "evaluate.yaml")])
        parser.update({"dataset_dir": str(resampled_set), "output_dir": str(tmp_path / "run"), "num_workers": 0,
                       "patch_size": [8, 8, 8], **settings})  # fmt: skip
        return parser.get_parsed_content("validate#dataset"), parser.get_parsed_content("eval_cache")

    streamed, why = test_dataset(memory_budget=1)
    assert type(streamed) is Dataset and "each is read once: streamed" in why["reason"]
    cached, why = test_dataset()
    assert type(cached) is CacheDataset and len(cached._cache) == 1 and "fit the memory budget" in why["reason"]
