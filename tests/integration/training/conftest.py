"""Fixtures for the trainer's end-to-end tests: a real-data split and a way to run train.py."""
from __future__ import annotations

import pytest
from trainer_helpers import run_train

import make_mnist_split  # found through trainer_helpers, which puts hacking/ on sys.path


@pytest.fixture(scope="session")
def mnist_data(tmp_path_factory):
    """A dataset root with the real 8,000 / 2,000 split in torchvision's raw layout."""
    root = tmp_path_factory.mktemp("mnist")
    make_mnist_split.make_split(make_mnist_split.DEFAULT_SOURCE, root, 8000)
    return root


@pytest.fixture
def train(mnist_data):
    """train(*args): run train.py with the split as --data-dir; returns the CompletedProcess."""

    def _run(*args, timeout=300):
        return run_train(mnist_data, *args, timeout=timeout)

    return _run
