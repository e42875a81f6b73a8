"""Fixtures shared by the bad-input tests."""

import json
import shutil
from pathlib import Path

import pytest
from scripts.data.synthetic import generate_dataset


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A small clean embedded data set (6 training cases of 16^3), made once per test module, to copy and break."""
    return generate_dataset(tmp_path_factory.mktemp("clean"), num_train=6, num_val=2, num_test=2, shape=(16, 16, 16))


@pytest.fixture
def data(tmp_path, clean):
    """A private copy of the clean data set to break: (dataset.json, image of case 0, label of case 0, id)."""
    shutil.copytree(clean.parent, tmp_path / "data")
    path = tmp_path / "data" / "dataset.json"
    entry = json.loads(path.read_text())["training"][0]
    return path, path.parent / entry["image"], path.parent / entry["label"], Path(entry["image"]).name.split(".")[0]
