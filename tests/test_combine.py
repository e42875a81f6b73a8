"""scripts.data.combine: combining labelled sources into one seeded, checked, center-tagged datalist."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scripts.data.combine import (
    CombineError,
    combine_sources,
    ensure_combined,
    make_datalist,
    parse_sources,
    read_source,
    split_counts,
)
from scripts.data.lists import load_datalist
from scripts.data.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (16, 16, 16)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two small synthetic sources: 'alpha' (12 train + 3 val + 5 test listed) and 'beta' (8 + 0 + 2)."""
    base = tmp_path_factory.mktemp("sources")
    generate_dataset(base / "alpha", 12, 3, 5, 2, SHAPE, 0.0, 0)
    generate_dataset(base / "beta", 8, 0, 2, 1, SHAPE, 0.0, 1)
    return {"alpha": str(base / "alpha"), "beta": str(base / "beta")}


def _ids(combined, key):
    return [d["case_id"] for d in combined[key]]


def _copy(sources, tmp_path):
    """Writable copies of the sources (for breaking them)."""
    out = {}
    for name, path in sources.items():
        out[name] = str(shutil.copytree(path, tmp_path / name))
    return out


def test_combine_tags_centers_and_makes_ids_unique(sources, tmp_path):
    path = combine_sources(sources, tmp_path / "c" / "datalist.json", seed=0)
    combined = json.loads(path.read_text())
    all_cases = [d for key in ("training", "validation", "test") for d in combined[key]]
    # every labelled case of each source (training, validation and test lists all carry labels here)
    assert len(all_cases) == 20 + 10
    ids = [d["case_id"] for d in all_cases]
    assert len(set(ids)) == len(ids)
    # both synthetic sets start their ids at c1_0000: the prefix keeps them apart
    assert "alpha_c1_0000" in ids and "beta_c1_0000" in ids
    for d in all_cases:
        assert d["center"] in sources and d["case_id"].startswith(d["center"] + "_")
        assert Path(d["image"]).is_absolute() and Path(d["image"]).is_file() and Path(d["label"]).is_file()
    alpha = [d for d in all_cases if d["center"] == "alpha"]
    assert {d["source_center"] for d in alpha} == {"center1", "center2"}  # the source's own tag is kept
    assert combined["sources"] == {n: str(Path(p).resolve()) for n, p in sources.items()}
    assert combined["seed"] == 0 and combined["test_fraction"] == 0.2 and combined["val_fraction"] == 0.1
    assert combined["counts"]["alpha"] == {"available": 20, "training": 14, "validation": 2, "test": 4}
    assert combined["counts"]["beta"] == {"available": 10, "training": 7, "validation": 1, "test": 2}
    assert combined["numTraining"] == 21 and combined["numValidation"] == 3 and combined["numTest"] == 6
    # the training workflow reads it with the project's loader
    train = load_datalist(path, "training")
    assert [d["case_id"] for d in train] == _ids(combined, "training")
    assert {d["center"] for d in train} == {"alpha", "beta"}


def test_splits_are_seeded_disjoint_and_per_source(sources, tmp_path):
    a = json.loads(combine_sources(sources, tmp_path / "a.json", seed=3).read_text())
    b = json.loads(combine_sources(sources, tmp_path / "b.json", seed=3).read_text())
    c = json.loads(combine_sources(sources, tmp_path / "c.json", seed=4).read_text())
    for key in ("training", "validation", "test"):
        assert _ids(a, key) == _ids(b, key)
    assert _ids(a, "test") != _ids(c, "test")
    parts = [set(_ids(a, k)) for k in ("training", "validation", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # each source is split on its own: the beta cases get the same split without alpha
    alone = json.loads(combine_sources({"beta": sources["beta"]}, tmp_path / "beta.json", seed=3).read_text())
    for key in ("training", "validation", "test"):
        assert _ids(alone, key) == [i for i in _ids(a, key) if i.startswith("beta_")]


@pytest.mark.parametrize(
    ("n", "test_fraction", "val_fraction", "expected"),
    [
        (100, 0.2, 0.1, (72, 8, 20)),
        (82, 0.2, 0.1, (59, 7, 16)),
        (260, 0.2, 0.1, (187, 21, 52)),
        (5, 0.2, 0.1, (3, 1, 1)),  # at least one validation case from 5 cases on
        (4, 0.2, 0.1, (3, 0, 1)),
        (10, 0.2, 0.0, (8, 0, 2)),
        (1, 0.2, 0.1, (1, 0, 0)),  # training keeps a case
    ],
)
def test_split_counts(n, test_fraction, val_fraction, expected):
    assert split_counts(n, test_fraction, val_fraction) == expected
    assert sum(expected) == n


def test_fractions_and_max_cases_are_honoured(sources, tmp_path):
    combined = json.loads(
        combine_sources(sources, tmp_path / "f.json", test_fraction=0.5, val_fraction=0.25, seed=1).read_text()
    )
    assert combined["counts"]["alpha"] == {"available": 20, "training": 7, "validation": 3, "test": 10}
    assert combined["counts"]["beta"] == {"available": 10, "training": 4, "validation": 1, "test": 5}
    limited = json.loads(combine_sources(sources, tmp_path / "m.json", max_cases={"alpha": 10}).read_text())
    assert limited["counts"]["alpha"] == {"available": 20, "training": 7, "validation": 1, "test": 2}
    assert limited["counts"]["beta"]["available"] == 10 and limited["max_cases"] == {"alpha": 10}


def test_datalist_json_source_and_unlabelled_entries(sources, tmp_path):
    # a datalist JSON in another folder, paths relative to it, an unlabelled Decathlon-style test list
    rel = os.path.relpath(sources["alpha"], tmp_path)
    training = [
        {"image": f"{rel}/imagesTr/c1_000{i}.nii.gz", "label": f"{rel}/labelsTr/c1_000{i}.nii.gz"} for i in (0, 2, 4, 6)
    ]
    (tmp_path / "gamma.json").write_text(json.dumps({"training": training, "test": [f"{rel}/imagesTs/c1_0015.nii.gz"]}))
    cases = read_source("gamma", tmp_path / "gamma.json")
    assert [c["case_id"] for c in cases] == ["gamma_c1_0000", "gamma_c1_0002", "gamma_c1_0004", "gamma_c1_0006"]
    assert all(Path(c["image"]).is_file() for c in cases)


def test_cli_form(sources, tmp_path):
    out = tmp_path / "cli" / "datalist.json"
    cmd = [
        sys.executable, "-m", "scripts.data.combine",
        "--out", str(out),
        "--sources", f"{{'alpha': '{sources['alpha']}', 'beta': '{sources['beta']}'}}",
        "--test_fraction", "0.2", "--val_fraction", "0.1", "--seed", "0",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert str(out) in result.stdout
    assert "alpha: 20 labelled, training 14, validation 2, test 4" in result.stderr
    via_cli = json.loads(out.read_text())
    direct = json.loads(combine_sources(sources, tmp_path / "direct.json", seed=0).read_text())
    assert via_cli["training"] == direct["training"] and via_cli["test"] == direct["test"]
    # the name=path form
    out2 = tmp_path / "cli2.json"
    cmd2 = [sys.executable, "-m", "scripts.data.combine", "--out", str(out2), "--sources",
            f"alpha={sources['alpha']},beta={sources['beta']}"]  # fmt: skip
    result = subprocess.run(cmd2, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(out2.read_text())["training"] == direct["training"]


def test_cli_error_is_clear(sources, tmp_path):
    broken = _copy(sources, tmp_path)
    (Path(broken["beta"]) / "labelsTr" / "c1_0003.nii.gz").unlink()
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "scripts.data.combine", "--out", str(out), "--sources",
           f"alpha={broken['alpha']},beta={broken['beta']}"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "source 'beta', case 'c1_0003': label file not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_missing_file_names_the_case_and_writes_nothing(sources, tmp_path):
    broken = _copy(sources, tmp_path)
    (Path(broken["alpha"]) / "imagesTr" / "c2_0005.nii.gz").unlink()
    out = tmp_path / "out" / "datalist.json"
    with pytest.raises(CombineError, match=r"source 'alpha', case 'c2_0005': image file not found") as info:
        combine_sources(broken, out)
    assert "nothing written" in str(info.value)
    assert not out.exists() and not out.parent.exists()
    # check=False skips the check (the caller takes responsibility)
    assert combine_sources(broken, out, check=False).is_file()


def test_shape_mismatch_names_the_case_and_writes_nothing(sources, tmp_path):
    broken = _copy(sources, tmp_path)
    label = Path(broken["beta"]) / "labelsTr" / "c1_0004.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 12), np.uint8), np.eye(4)), label)
    out = tmp_path / "datalist.json"
    out.write_text("old")  # an existing file stays as it was
    with pytest.raises(CombineError, match=r"source 'beta', case 'c1_0004': image shape \(16, 16, 16\) != label shape"):
        combine_sources(broken, out)
    assert out.read_text() == "old"


def test_bad_sources_are_clear(sources, tmp_path):
    with pytest.raises(CombineError, match="source 'nope': no such folder"):
        combine_sources({"nope": str(tmp_path / "missing")}, tmp_path / "x.json")
    with pytest.raises(CombineError, match="has no dataset.json"):
        combine_sources({"empty": str(tmp_path)}, tmp_path / "x.json")
    with pytest.raises(CombineError, match="test_fraction"):
        combine_sources(sources, tmp_path / "x.json", test_fraction=1.0)
    with pytest.raises(CombineError, match="max_cases must be >= 1"):
        combine_sources(sources, tmp_path / "x.json", max_cases=0)
    with pytest.warns(UserWarning, match=r"ignoring sources that are not combined: \['gamma'\]"):
        combine_sources(sources, tmp_path / "y.json", max_cases={"gamma": 3})
    (tmp_path / "y.json").unlink()
    with pytest.raises(CombineError, match="source name"):
        parse_sources({"a b": "x"})
    assert not (tmp_path / "x.json").exists()


def test_ensure_combined_writes_once_and_guards_settings(sources, tmp_path):
    out = tmp_path / "run" / "datalist.json"
    first = ensure_combined(out, sources, seed=5)
    stamp = out.stat().st_mtime_ns
    assert ensure_combined(out, sources, seed=5) == first == str(out)
    assert out.stat().st_mtime_ns == stamp  # reused, not rewritten
    with pytest.raises(CombineError, match="seed: file has 5, asked 6"):
        ensure_combined(out, sources, seed=6)
    with pytest.raises(CombineError, match="sources"):
        ensure_combined(out, {"alpha": sources["alpha"]}, seed=5)


def test_make_datalist_pairs_by_number(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in (1, 2, 10):
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), images / f"PANCREAS_{i:04d}.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), np.eye(4)), labels / f"label{i:04d}.nii.gz")
    out = make_datalist(str(images), str(labels), str(tmp_path / "nih.json"))
    cases = read_source("nih", out)
    assert [c["case_id"] for c in cases] == ["nih_PANCREAS_0001", "nih_PANCREAS_0002", "nih_PANCREAS_0010"]
    assert all(c["label"].endswith(f"label{c['case_id'][-4:]}.nii.gz") for c in cases)
    # several folders (WORD: imagesTr, imagesVal, imagesTs), comma-separated or a list
    images_val, labels_val = tmp_path / "imagesVal", tmp_path / "labelsVal"
    images_val.mkdir()
    labels_val.mkdir()
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), images_val / "word_0003.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), np.eye(4)), labels_val / "word_0003.nii.gz")
    both = make_datalist(f"{images},{images_val}", [str(labels), str(labels_val)], str(tmp_path / "two.json"))
    assert len(read_source("w", both)) == 4
    (labels / "label0002.nii.gz").unlink()
    with pytest.raises(CombineError, match="number 2"):
        make_datalist(str(images), str(labels), str(tmp_path / "nih2.json"))
    assert not (tmp_path / "nih2.json").exists()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a/hippocampus_001.nii.gz", "hippocampus_001"),
        ("x.nii", "x"),
        ("c1_0000.nrrd", "c1_0000"),
        ("y.mha", "y"),
        ("z.npy", "z"),
        ("w.tar.gz", "w.tar"),
    ],
)
def test_case_id_of(name, expected):
    from scripts.data.case_ids import case_id_of

    assert case_id_of(name) == expected


def test_keep_test_keeps_a_sources_labelled_test_list(sources, tmp_path):
    # alpha's dataset.json has 5 labelled test cases: kept as they are, its 15 others give training and validation
    out = combine_sources(sources, tmp_path / "kept.json", test_fraction=0.2, val_fraction=0.2, keep_test=True)
    combined = json.loads(Path(out).read_text())
    alpha_json = json.loads((Path(sources["alpha"]) / "dataset.json").read_text())
    given = sorted("alpha_" + Path(e["image"]).name.split(".")[0] for e in alpha_json["test"])
    assert sorted(c for c in _ids(combined, "test") if c.startswith("alpha_")) == given
    assert combined["counts"]["alpha"] == {"available": 20, "training": 12, "validation": 3, "test": 5}
    # without keep_test the same source is re-split from all its cases: round(0.2 * 20) = 4 test cases
    resplit = json.loads(Path(combine_sources(sources, tmp_path / "resplit.json", 0.2, 0.2)).read_text())
    assert resplit["counts"]["alpha"]["test"] == 4


def test_sources_that_share_an_image_file_are_refused_naming_both_cases(sources, tmp_path):
    # 'gamma' lists two of alpha's own files (one by another path: a symlinked folder) beside a case of its own
    alpha = json.loads((Path(sources["alpha"]) / "dataset.json").read_text())
    link = tmp_path / "alpha_link"
    link.symlink_to(sources["alpha"])
    first, second = alpha["training"][0], alpha["training"][1]
    gamma = tmp_path / "gamma.json"
    gamma.write_text(json.dumps({"labels": alpha["labels"], "training": [
        {"image": str(Path(sources["alpha"]) / first["image"]), "label": str(Path(sources["alpha"]) / first["label"]),
         "case_id": "g1"},
        {"image": str(link / second["image"]), "label": str(link / second["label"]), "case_id": "g2"},
    ]}))  # fmt: skip
    out = tmp_path / "combined.json"
    with pytest.raises(CombineError) as err:
        combine_sources({**sources, "gamma": str(gamma)}, out)
    message = str(err.value)
    assert message.startswith("2 problem(s) found, nothing written")
    stem = Path(first["image"]).name.split(".")[0]
    assert f"source 'gamma', case 'g1': its image {Path(sources['alpha']) / first['image']} is also source " in message
    assert f"'alpha''s case '{stem}'" in message and "case 'g2'" in message
    assert "fix: list each image in one source only" in message
    assert not out.exists()


def test_the_combined_list_carries_the_sources_labels_so_training_counts_its_classes(sources, tmp_path):
    from scripts.data.plan import classes_of

    combined = json.loads(combine_sources(sources, tmp_path / "c.json").read_text())
    assert combined["labels"] == {"0": "background", "1": "target"}  # both synthetic sources name them so
    assert classes_of(tmp_path / "c.json") == 2  # no --num_classes needed
    # nnU-Net v2's form, a third class and a disagreeing name merge into one MSD-form map, with a warning
    beta = _copy({"beta": sources["beta"]}, tmp_path)["beta"]
    content = json.loads((Path(beta) / "dataset.json").read_text())
    (Path(beta) / "dataset.json").write_text(
        json.dumps({**content, "labels": {"background": 0, "organ": 1, "tumour": 2}})
    )
    with pytest.warns(
        UserWarning, match="label 1 is named differently by the sources \\('alpha': 'target', 'beta': 'organ'\\)"
    ):
        merged = json.loads(combine_sources({"alpha": sources["alpha"], "beta": beta}, tmp_path / "m.json").read_text())
    assert merged["labels"] == {"0": "background", "1": "target / organ", "2": "tumour"}
    assert classes_of(tmp_path / "m.json") == 3
