"""Shared pytest fixtures: the AWS emulator with its guard rails."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# torch first, with its compiler (torch._dynamo, which torch imports lazily): imported after
# ansible.module_utils.basic, torch 2.14 fails there ("substitute_in_graph expects a function"),
# and one pytest process holds both.
try:
    import torch._dynamo  # noqa: F401  pylint: disable=unused-import
except ImportError:
    pass

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "standin"))

import emulator  # noqa: E402  (tests/standin is plumbing, not a package)


@pytest.fixture(scope="session")
def aws_emulator():
    """A running moto server on 127.0.0.1 and the client environment that points at it."""
    emulator.start()
    saved = {k: os.environ.get(k) for k in emulator.CLIENT_ENV}
    os.environ.update(emulator.CLIENT_ENV)
    yield emulator
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def aws(aws_emulator):
    """The emulator, emptied before the test."""
    aws_emulator.reset()
    return aws_emulator
