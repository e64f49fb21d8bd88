"""The trainer's unit tests import training/ (make_mnist_split, mnist_trainer) directly."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TRAINING = Path(__file__).resolve().parents[3] / "training"
if str(TRAINING) not in sys.path:
    sys.path.insert(0, str(TRAINING))

import make_mnist_split  # noqa: E402


@pytest.fixture(scope="session")
def mnist_split(tmp_path_factory):
    """The real 8,000 / 2,000 split in torchvision's raw layout: (root, make_split's result)."""
    root = tmp_path_factory.mktemp("mnist-unit")
    return root, make_mnist_split.make_split(make_mnist_split.DEFAULT_SOURCE, root, 8000)
