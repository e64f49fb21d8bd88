"""Fixtures for the site.yml tests: the stand-in (the emulator's instances become containers)."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from site_helpers import BIN, DATA, REPO, STANDIN


def _needs_docker():
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no Docker daemon")


@pytest.fixture(scope="session")
def standin(aws_emulator):
    """`standin.py up` and the MNIST split; yields the play variables file."""
    _needs_docker()
    subprocess.run([str(BIN / "python"), str(REPO / "hacking" / "make_mnist_split.py"),
                    "--source", str(REPO.parent / "shared" / "data" / "mnist"), "--dest", str(DATA)],
                   check=True, capture_output=True)
    subprocess.run([str(BIN / "python"), str(STANDIN / "standin.py"), "up"], check=True)
    # The controller trusts the stand-in's registry as it trusts ECR (standin.py env).
    trust = subprocess.run([str(BIN / "python"), str(STANDIN / "standin.py"), "env"], check=True,
                           capture_output=True, text=True).stdout
    exported = dict(line.removeprefix("export ").split("=", 1) for line in trust.splitlines())
    saved = {key: os.environ.get(key) for key in exported}
    os.environ.update({key: shlex.split(value)[0] for key, value in exported.items()})
    yield Path(os.environ.get("CLOUDTRAIN_STANDIN_STATE", REPO / ".cache" / "standin")) / "vars.yml"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
