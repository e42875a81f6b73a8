"""Tests for the synthetic multi-center data set generator (scripts/data/synthetic.py)."""

from __future__ import annotations

import csv
import itertools
import json
import os
import stat
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from scripts.data import synthetic
from scripts.data.synthetic import (
    FAULT_KINDS,
    binary_dilate,
    binary_erode,
    center_params,
    ensure_dataset,
    generate_dataset,
    render_case,
    render_clean_label,
    translate_mask,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "num_train": 20,
    "num_val": 3,
    "num_test": 6,
    "num_centers": 3,
    "shape": (24, 24, 24),
    "fault_fraction": 0.25,
    "seed": 5,
}
TINY = {"num_train": 6, "num_val": 0, "num_test": 0, "shape": (16, 16, 16)}
LISTS = ("training", "validation", "test")


def _load(path: Path) -> np.ndarray:
    """Array of a NIfTI file in its stored dtype."""
    return np.asanyarray(nib.load(str(path)).dataobj)


def _index(case_id: str) -> int:
    """Global case index of an id like ``c1_0007``."""
    return int(case_id.split("_")[1])


def _center(entry: dict) -> int:
    """1-based center number of a datalist entry."""
    return int(entry["center"].removeprefix("center"))


def _faults(root: Path) -> list[dict[str, str]]:
    """Rows of faults.csv."""
    with open(root / "faults.csv", newline="") as f:
        return list(csv.DictReader(f))


def _translate(mask: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """Independent zero-fill translation via np.roll plus clearing wrapped slabs."""
    out = np.roll(mask, offset, axis=(0, 1, 2))
    for axis, shift in enumerate(offset):
        index = [slice(None)] * 3
        index[axis] = slice(0, shift) if shift > 0 else slice(mask.shape[axis] + shift, None)
        if shift:
            out[tuple(index)] = 0
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small data set with enough faults for every kind."""
    root = tmp_path_factory.mktemp("small")
    generate_dataset(root, **SMALL)
    return root


@pytest.fixture(scope="module")
def default_shape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few clean cases at the default 48^3 shape."""
    root = tmp_path_factory.mktemp("default_shape")
    generate_dataset(root, num_train=6, num_val=3, num_test=3, fault_fraction=0.0, seed=1)
    return root


def test_layout_and_dataset_json(small: Path) -> None:
    data = json.loads((small / "dataset.json").read_text())
    assert data["tensorImageSize"] == "3D"
    assert data["modality"] == {"0": "synthetic CT"}
    assert data["labels"] == {"0": "background", "1": "target"}
    assert data["numTraining"] == SMALL["num_train"]
    assert data["numTest"] == SMALL["num_test"]
    assert {"name", "description", "licence", "generator"} <= data.keys()
    assert data["generator"]["seed"] == SMALL["seed"]
    assert data["generator"]["shape"] == list(SMALL["shape"])
    sizes = {k: len(data[k]) for k in LISTS}
    assert sizes == {"training": 20, "validation": 3, "test": 6}
    ids = [e["case_id"] for k in LISTS for e in data[k]]
    assert len(set(ids)) == len(ids)
    for key in LISTS:
        folder = "Ts" if key == "test" else "Tr"
        for e in data[key]:
            assert e["image"] == f"./images{folder}/{e['case_id']}.nii.gz"
            assert e["label"] == f"./labels{folder}/{e['case_id']}.nii.gz"
            assert e["case_id"].startswith(f"c{_center(e)}_")
    assert not list(small.rglob(".tmp-*")) and not list(small.glob(".*.tmp"))


def test_load_decathlon_datalist_reads_every_list(small: Path) -> None:
    for key in LISTS:
        items = load_decathlon_datalist(str(small / "dataset.json"), data_list_key=key)
        assert len(items) == {"training": 20, "validation": 3, "test": 6}[key]
        for item in items:
            assert Path(item["image"]).is_file() and Path(item["label"]).is_file()
            assert item["case_id"] and item["center"].startswith("center")
            assert ("imagesTs" in item["image"]) == (key == "test")


def test_centers_balanced_in_every_split(small: Path) -> None:
    data = json.loads((small / "dataset.json").read_text())
    for key in LISTS:
        counts = Counter(e["center"] for e in data[key])
        if len(data[key]) >= SMALL["num_centers"]:
            assert len(counts) == SMALL["num_centers"]
        assert max(counts.values()) - min(counts.values()) <= 1


def test_arrays_dtypes_and_affine(small: Path) -> None:
    data = json.loads((small / "dataset.json").read_text())
    entry = data["training"][0]
    image = nib.load(str(small / entry["image"]))
    label = nib.load(str(small / entry["label"]))
    assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
    assert image.shape == label.shape == SMALL["shape"]
    np.testing.assert_allclose(image.affine, np.eye(4))
    for key in LISTS:
        for e in data[key]:
            assert set(np.unique(_load(small / e["label"]))) <= {0, 1}


def test_determinism_and_seed_sensitivity(tmp_path: Path) -> None:
    args = {**TINY, "num_val": 2, "num_test": 2, "fault_fraction": 0.5}
    roots = [tmp_path / name for name in ("a", "b", "c")]
    generate_dataset(roots[0], seed=3, **args)
    generate_dataset(roots[1], seed=3, **args)
    generate_dataset(roots[2], seed=4, **args)
    for name in ("dataset.json", "faults.csv"):
        assert (roots[0] / name).read_bytes() == (roots[1] / name).read_bytes()
    files = sorted(p.relative_to(roots[0]) for p in roots[0].rglob("*.nii.gz"))
    assert len(files) == 2 * (6 + 2 + 2)
    for rel in files:
        first = _load(roots[0] / rel)
        assert first.dtype == _load(roots[1] / rel).dtype
        assert first.tobytes() == _load(roots[1] / rel).tobytes()
    images = [p for p in files if p.parts[0].startswith("images")]
    assert all(not np.array_equal(_load(roots[0] / p), _load(roots[2] / p)) for p in images)


def test_case_rendering_independent_of_order() -> None:
    first = render_case(7, 3, 2, (24, 24, 24))
    render_case(7, 4, 1, (24, 24, 24))
    again = render_case(7, 3, 2, (24, 24, 24))
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.target, again.target)


def test_fault_manifest(small: Path) -> None:
    data = json.loads((small / "dataset.json").read_text())
    train = {e["case_id"]: e["center"] for e in data["training"]}
    rows = _faults(small)
    assert (small / "faults.csv").read_text().splitlines()[0] == "case_id,center,kind"
    assert len(rows) == round(SMALL["fault_fraction"] * SMALL["num_train"])
    assert [r["case_id"] for r in rows] == sorted(r["case_id"] for r in rows)
    assert all(r["case_id"] in train and train[r["case_id"]] == r["center"] for r in rows)
    assert {r["kind"] for r in rows} == set(FAULT_KINDS)
    assert len({r["center"] for r in rows}) == SMALL["num_centers"]


@pytest.mark.parametrize(("num_train", "fraction"), [(60, 0.1), (7, 0.3), (10, 0.0), (3, 0.5)])
def test_fault_count_matches_fraction(tmp_path: Path, num_train: int, fraction: float) -> None:
    faults = synthetic._plan_faults(range(num_train), [i % 3 + 1 for i in range(num_train)], fraction, 0)
    assert len(faults) == round(fraction * num_train)
    assert all(kind in FAULT_KINDS for kind in faults.values())


def _find_shift(clean: np.ndarray, shifted: np.ndarray) -> tuple[int, ...] | None:
    """Integer offset (|component| <= 6) mapping ``clean`` onto ``shifted``, if any."""
    guess = np.round(np.argwhere(shifted).mean(0) - np.argwhere(clean).mean(0)).astype(int)
    candidates = itertools.chain([tuple(guess)], itertools.product(range(-6, 7), repeat=3))
    for offset in candidates:
        if np.array_equal(_translate(clean, offset), shifted):
            return tuple(int(v) for v in offset)
    return None


def test_each_fault_kind_does_what_it_says(small: Path) -> None:
    shape, seed = SMALL["shape"], SMALL["seed"]
    for row in _faults(small):
        index, center = (_index(row["case_id"]), int(row["center"].removeprefix("center")))
        clean = render_clean_label(seed, index, center, shape)
        label = _load(small / "labelsTr" / f"{row['case_id']}.nii.gz")
        kind = row["kind"]
        if kind == "missing":
            assert label.sum() == 0
        elif kind == "shifted":
            offset = _find_shift(clean, label)
            assert offset is not None, "shifted label is not a translation of the clean one"
            assert 4 <= np.linalg.norm(offset) <= 7
        elif kind == "eroded":
            assert 0 < label.sum() < 0.75 * clean.sum()
            assert not (label & ~clean).any()
        elif kind == "dilated":
            assert label.sum() > 1.4 * clean.sum()
            assert not (clean & ~label).any()
        elif kind == "wrong_structure":
            distractor = render_case(seed, index, center, shape).distractor
            assert label.sum() > 0 and (label & clean).sum() == 0
            assert np.array_equal(label.astype(bool), distractor)
        else:
            pytest.fail(f"unexpected kind {kind}")


def test_unfaulted_labels_are_clean(small: Path) -> None:
    data = json.loads((small / "dataset.json").read_text())
    faulty = {r["case_id"] for r in _faults(small)}
    for key in LISTS:
        for e in data[key]:
            if e["case_id"] in faulty:
                continue
            clean = render_clean_label(SMALL["seed"], _index(e["case_id"]), _center(e), SMALL["shape"])
            assert np.array_equal(_load(small / e["label"]), clean), e["case_id"]


def test_foreground_fraction_at_default_shape(default_shape: Path) -> None:
    data = json.loads((default_shape / "dataset.json").read_text())
    fractions = [_load(default_shape / e["label"]).mean() for k in LISTS for e in data[k]]
    assert _load(default_shape / data["training"][0]["label"]).shape == (48, 48, 48)
    assert 0.01 <= np.mean(fractions) <= 0.03
    assert min(fractions) > 0


def _air_stats(image: np.ndarray) -> tuple[float, float]:
    """Mean and std of the 3^3 corner cubes, which are air in every case."""
    corners = [image[a, b, c] for a, b, c in itertools.product((slice(0, 3), slice(-3, None)), repeat=3)]
    values = np.concatenate([c.ravel() for c in corners])
    return float(values.mean()), float(values.std())


def _contrast_to_noise(seed: int, entry: dict, root: Path, shape: tuple[int, ...]) -> float:
    """(target mean - median of a ring around it) / air noise std, for one case."""
    case = render_case(seed, _index(entry["case_id"]), _center(entry), shape)
    image = _load(root / entry["image"]).astype(np.float64)
    ring = binary_dilate(case.target, 3) & ~binary_dilate(case.target, 1) & ~binary_dilate(case.distractor, 2)
    return (image[case.target].mean() - np.median(image[ring])) / _air_stats(image)[1]


def test_centers_differ_in_offset_and_noise(small: Path) -> None:
    data = json.loads((small / "dataset.json").read_text())
    air: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for e in data["training"] + data["validation"] + data["test"]:
        air[_center(e)].append(_air_stats(_load(small / e["image"])))
    means = {c: np.mean([m for m, _ in v]) for c, v in air.items()}
    stds = {c: np.mean([s for _, s in v]) for c, v in air.items()}
    for a, b in itertools.combinations(sorted(means), 2):
        assert abs(means[a] - means[b]) > 50, (means[a], means[b])
        assert abs(stds[a] - stds[b]) > 0.15 * min(stds[a], stds[b])
    # Air is flat and noise is added after blur, so the corner std is the noise std.
    for center, std in stds.items():
        assert std == pytest.approx(center_params(center).noise_std, rel=0.25)


def test_low_contrast_center_is_hardest(default_shape: Path) -> None:
    data = json.loads((default_shape / "dataset.json").read_text())
    cnr: dict[int, list[float]] = defaultdict(list)
    for e in data["training"] + data["validation"] + data["test"]:
        cnr[_center(e)].append(_contrast_to_noise(1, e, default_shape, (48, 48, 48)))
    contrast = {c: float(np.mean(v)) for c, v in cnr.items()}
    hardest = min(contrast, key=contrast.get)
    assert hardest == min(contrast, key=lambda c: center_params(c).contrast)
    assert contrast[hardest] < 0.5 * max(contrast.values())


def test_distractor_has_target_like_intensity(default_shape: Path) -> None:
    data = json.loads((default_shape / "dataset.json").read_text())
    for e in data["training"]:
        if _center(e) != 1:
            continue
        case = render_case(1, _index(e["case_id"]), 1, (48, 48, 48))
        image = _load(default_shape / e["image"]).astype(np.float64)
        assert case.distractor.sum() > 0 and not (case.distractor & case.target).any()
        ring = binary_dilate(case.target, 3) & ~binary_dilate(case.target, 1)
        delta = image[case.target].mean() - np.median(image[ring])
        assert delta > 30
        assert abs(image[case.distractor].mean() - image[case.target].mean()) < 0.3 * delta


def test_more_centers_are_derived_deterministically(tmp_path: Path) -> None:
    assert center_params(6) == center_params(6)
    assert len({center_params(c) for c in range(1, 9)}) == 8
    generate_dataset(tmp_path, num_train=6, num_val=0, num_test=0, num_centers=6, shape=(16, 16, 16))
    data = json.loads((tmp_path / "dataset.json").read_text())
    assert sorted({e["center"] for e in data["training"]}) == [f"center{c}" for c in range(1, 7)]


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_fault_fraction(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(ValueError, match="fault_fraction"):
        generate_dataset(tmp_path, fault_fraction=fraction, **TINY)
    assert not (tmp_path / "dataset.json").exists()


@pytest.mark.parametrize("centers", [0, -2, 1.5])
def test_bad_num_centers(tmp_path: Path, centers: float) -> None:
    with pytest.raises(ValueError, match="num_centers"):
        generate_dataset(tmp_path, num_centers=centers, **TINY)


def test_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        generate_dataset(tmp_path, num_train=2, shape=(24, 24))


def test_single_center_and_no_faults(tmp_path: Path) -> None:
    generate_dataset(tmp_path, num_centers=1, fault_fraction=0.0, **TINY)
    assert (tmp_path / "faults.csv").read_text() == "case_id,center,kind\n"


def test_ensure_dataset_keeps_existing(tmp_path: Path) -> None:
    folder = tmp_path / "real"
    folder.mkdir()
    existing = folder / "dataset.json"
    existing.write_text('{"training": []}\n')
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert ensure_dataset(folder, **TINY) == str(existing)
    finally:
        folder.chmod(stat.S_IRWXU)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    assert existing.read_text() == '{"training": []}\n'


def test_ensure_dataset_generates_into_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    path = ensure_dataset(folder, **TINY)
    assert isinstance(path, str) and path == str(folder / "dataset.json")
    assert len(load_decathlon_datalist(path, data_list_key="training")) == TINY["num_train"]
    stamp = os.stat(path).st_mtime_ns
    assert ensure_dataset(folder, **TINY) == path and os.stat(path).st_mtime_ns == stamp


def test_interrupted_generation_leaves_no_dataset_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_dataset(tmp_path, **TINY)
    calls = {"n": 0}
    real_save = synthetic._save_nifti

    def failing_save(array: np.ndarray, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        real_save(array, path)

    monkeypatch.setattr(synthetic, "_save_nifti", failing_save)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, **TINY)
    assert not (tmp_path / "dataset.json").exists()


def test_morphology_helpers() -> None:
    mask = np.zeros((9, 9, 9), dtype=bool)
    mask[3:6, 3:6, 3:6] = True
    assert binary_dilate(mask).sum() == 27 + 6 * 9
    assert binary_erode(mask).sum() == 1
    assert np.array_equal(translate_mask(mask, (2, -1, 0)), _translate(mask, (2, -1, 0)))
    assert not translate_mask(mask, (9, 0, 0)).any()


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "scripts.data.synthetic", "--out_dir", str(out), "--num_train", "3"]
    cmd += ["--num_val", "1", "--num_test", "1", "--shape", "16,16,16"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == str(out / "dataset.json")
    assert json.loads((out / "dataset.json").read_text())["generator"]["shape"] == [16, 16, 16]


def _ensure_together(out: str, barrier, results) -> None:
    from scripts.data.synthetic import ensure_dataset

    barrier.wait()  # every process asks at the same moment, as torchrun's ranks do
    try:
        results.put(ensure_dataset(out, num_train=24, num_val=2, num_test=2, num_centers=2, shape=(24, 24, 24)))
    except Exception as e:  # the parent asserts on it
        results.put(f"error: {e}")


def test_processes_starting_together_share_one_generation(tmp_path):
    # the ranks of a torchrun all call ensure_dataset on a folder that does not exist yet: without the
    # lock, a second rank found the first one's half-written folder and refused it as a user's folder
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = str(tmp_path / "data" / "synthetic")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_ensure_together, args=(out, barrier, results)) for _ in range(3)]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert got == [str(Path(out) / "dataset.json")] * 3
    content = json.loads(Path(out, "dataset.json").read_text())
    assert len(content["training"]) == 24 and all(Path(out, d["image"]).is_file() for d in content["training"])
