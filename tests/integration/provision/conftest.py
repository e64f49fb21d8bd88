"""Fixtures for the provision/teardown tests: the shared AWS emulator, found without downloading its state."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "standin"))

import emulator  # noqa: E402  (tests/standin is plumbing, not a package)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def emulator_env():
    """The client environment for a running emulator (started when nothing listens on its port).

    Not the shared ``aws`` fixture: these tests never reset the emulator (others use it at the same
    time), they use run names of their own and look only at what carries those names.
    """
    if not _listening(emulator.PORT):
        emulator.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(emulator.CLIENT_ENV)
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    return env


@pytest.fixture
def clients(emulator_env):
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", aws_session_token="testing",
        region_name="us-east-1",
    )
    endpoint = emulator_env["AWS_ENDPOINT_URL"]
    return {name: session.client(name, endpoint_url=endpoint) for name in ("ec2", "iam", "ssm")}
