"""Fixtures shared by the bad-input tests."""

import pytest
from scripts.data.synthetic import generate_dataset


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A small clean embedded data set (6 training cases of 16^3), made once per test module, to copy and break."""
    return generate_dataset(tmp_path_factory.mktemp("clean"), num_train=6, num_val=2, num_test=2, shape=(16, 16, 16))
