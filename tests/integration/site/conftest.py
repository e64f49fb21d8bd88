"""Fixtures for the site.yml tests: the stand-in with an instance container of their own."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from site_helpers import BIN, DATA, INSTANCE, REPO, STANDIN


def _needs_docker():
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker daemon")


@pytest.fixture(scope="session")
def _emulator_emptied():
    """Empty an emulator left running by an earlier session before `aws_emulator` probes it.

    emulator.is_up() reads /moto-api/data.json with a 2 s timeout; once a run has touched IAM that
    dump is megabytes (the managed policies) and a loaded machine misses the timeout, so start()
    wrongly launches a second server on the busy port. A reset makes the dump small again.
    """
    import urllib.request

    sys.path.insert(0, str(STANDIN))
    import emulator

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        opener.open(urllib.request.Request(emulator.URL + "/moto-api/reset", data=b"", method="POST"), timeout=30)
    except OSError:
        pass  # nothing listening: aws_emulator starts one


@pytest.fixture(scope="session")
def standin(_emulator_emptied, aws_emulator):
    """`standin.py up` for INSTANCE, the MNIST split; yields the play variables file."""
    _needs_docker()
    subprocess.run([str(BIN / "python"), str(REPO / "training" / "make_mnist_split.py"),
                    "--source", str(REPO.parent / "shared" / "data" / "mnist"), "--dest", str(DATA)],
                   check=True, capture_output=True)
    subprocess.run([str(BIN / "python"), str(STANDIN / "standin.py"), "up", "--instance-name", INSTANCE],
                   check=True)
    state = Path(os.environ.get("CLOUDTRAIN_STANDIN_STATE", REPO / ".cache" / "standin"))
    yield state / f"vars-{INSTANCE}.yml"
