"""The trainer's unit tests import training/mnist_trainer and hacking/make_mnist_split directly."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
for folder in (REPO / "training", REPO / "hacking"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import make_mnist_split  # noqa: E402


@pytest.fixture(scope="session")
def mnist_split(tmp_path_factory):
    """The real 8,000 / 2,000 split in torchvision's raw layout: (root, make_split's result)."""
    root = tmp_path_factory.mktemp("mnist-unit")
    return root, make_mnist_split.make_split(make_mnist_split.DEFAULT_SOURCE, root, 8000)
